"""FC102: syntax is judged with the service's Python (the Dockerfile's final FROM python:X.Y,
else requires-python), not with the Python flightcheck runs on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from lint_support import hits, write

from flightcheck.config import LintConfig
from flightcheck.lint import lint_paths
from flightcheck.lint.target import Service

NEW_SYNTAX = {
    "app/aliases.py": "type UserId = int\n",  # 3.12
    "app/fstrings.py": 'row = {"a": 1}\nmsg = f"{row["a"]}"\n',  # 3.12 quoting
    "app/groups.py": "try:\n    pass\nexcept* ValueError:\n    pass\n",  # 3.11
    "app/matching.py": "def f(x):\n    match x:\n        case 1:\n            return 1\n",  # 3.10
}


def _lint(root: Path, files: dict[str, str], **kw: object) -> set[tuple[str, int, str]]:
    write(root, files)
    (root / ".git").mkdir(exist_ok=True)
    report = lint_paths(root, [root], LintConfig(exclude=[]), **kw)  # type: ignore[arg-type]
    return {h for h in hits(report, "FC1")}


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="host Python matters here")
def test_dockerfile_python_310_rejects_what_311_accepts(tmp_path: Path) -> None:
    dockerfile = "FROM python:3.12-slim AS build\nFROM python:3.10-slim\nUSER 1000\n"
    found = _lint(tmp_path, {**NEW_SYNTAX, "Dockerfile": dockerfile})
    # 3.10 lacks except* and 3.12's syntax; 3.11 (the host) rejects the 3.12 ones itself (FC101)
    assert ("app/groups.py", 3, "FC102") in found
    assert ("app/matching.py", 2, "FC102") not in found  # match exists in 3.10
    assert {f for f, _, c in found if c == "FC101"} == {"app/aliases.py", "app/fstrings.py"}


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="host Python matters here")
def test_a_newer_target_spares_syntax_this_python_lacks(tmp_path: Path) -> None:
    # scoped.py goes to the compiler (tab indentation could mix with spaces, which ruff does
    # not flag), which rejects its 3.12 syntax: spared, and said so
    scoped = "type Alias = int\n\nif Alias:\n\tx = 1\n"
    files = {**NEW_SYNTAX, "app/broken.py": "def f(:\n    pass\n", "app/scoped.py": scoped,
             "Dockerfile": "ARG PY=3.12\nFROM python:${PY}-slim\n"}
    write(tmp_path, files)
    (tmp_path / ".git").mkdir()
    report = lint_paths(tmp_path, [tmp_path], LintConfig(exclude=[]))
    # the service runs 3.12: everything above is valid there; a real syntax error still counts
    assert hits(report, "FC1") == {("app/broken.py", 1, "FC101")}
    assert any("1 file(s) use syntax newer than Python 3.11" in n for n in report.notes)


def test_requires_python_when_there_is_no_python_image(tmp_path: Path) -> None:
    pyproject = '[project]\nname = "s"\nrequires-python = ">=3.9"\ndependencies = []\n'
    found = _lint(tmp_path, {"app/m.py": NEW_SYNTAX["app/matching.py"], "pyproject.toml": pyproject,
                             "Dockerfile": "FROM gcr.io/distroless/python3\n"})
    assert found == {("app/m.py", 2, "FC102")}


def test_same_version_and_the_service_dockerfile_named_in_config(tmp_path: Path) -> None:
    # near-miss: the service runs 3.11 (its Dockerfile is deploy/Dockerfile, named by config)
    # while another Dockerfile in the tree says 3.9
    files = {"app/groups.py": NEW_SYNTAX["app/groups.py"],
             "deploy/Dockerfile": "FROM python:3.11-slim\n",
             "tools/Dockerfile": "FROM python:3.9-slim\n"}
    svc = Service(dockerfile=tmp_path / "deploy" / "Dockerfile")
    assert _lint(tmp_path, files, service=svc) == set()
    svc = Service(dockerfile=tmp_path / "tools" / "Dockerfile")
    assert _lint(tmp_path, {}, service=svc) == {("app/groups.py", 3, "FC102")}


def test_message_names_the_target_and_where_it_came_from(tmp_path: Path) -> None:
    write(tmp_path, {"a.py": NEW_SYNTAX["app/groups.py"], "Dockerfile": "FROM python:3.10\n"})
    report = lint_paths(tmp_path, [tmp_path], LintConfig(exclude=[]))
    (finding,) = [f for f in report.findings if f.code == "FC102"]
    assert "Python 3.10" in finding.message and "Dockerfile:1" in finding.message
    assert finding.severity.value == "error" and finding.category == "syntax"
