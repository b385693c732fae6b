"""The build stage end to end: runtime selection, image build, failures, the import check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from flightcheck.config import load
from flightcheck.context import Context
from flightcheck.results import Status
from flightcheck.stages import build

SERVICES = Path(__file__).resolve().parent.parent / "fixtures" / "services"


def make_ctx(tmp_path: Path, service: str, runtime: str, **service_keys: Any) -> Context:
    # A copy beside the config: a build context must be inside the config's directory.
    shutil.copytree(SERVICES / service, tmp_path / service,
                    ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    keys = {
        "name": f"fctest-{service}",
        "source": service,
        "command": ["python", "app.py"],
        "pythonpath": [],
        "import_check": [],
        **service_keys,
    }
    body = "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())
    (tmp_path / "flightcheck.toml").write_text(f"[service]\n{body}")
    return Context(loaded=load(tmp_path / "flightcheck.toml"), runtime_name=runtime)


def test_distribution_names_for_common_import_names() -> None:
    assert build.distribution_for("yaml") == "PyYAML"
    assert build.distribution_for("google.genai.types") == "google-genai"
    assert build.distribution_for("sklearn.linear_model") == "scikit-learn"
    assert build.distribution_for("fastapi.responses") == "fastapi"
    assert build.distribution_for("typing_extensions") == "typing-extensions"


@pytest.mark.docker
@pytest.mark.anyio
async def test_build_passes_and_reports_the_image(docker_client: Any, tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, "hello", "docker", import_check=["app", "http.server"])
    res = await build.run(ctx)
    assert res.status is Status.PASS, res
    assert res.details["runtime"] == "docker"
    assert str(res.details["image"]).startswith("flightcheck/fctest-hello:")
    assert isinstance(res.measurement("image_size_bytes"), int)
    assert isinstance(res.measurement("build_seconds"), float)
    assert res.measurement("cached") in (True, False)
    assert ctx.artifacts["image"].ref == res.details["image"]  # type: ignore[attr-defined]
    assert "imports ok: app, http.server" in res.summary
    again = await build.run(ctx)
    assert again.measurement("cached") is True


@pytest.mark.docker
@pytest.mark.anyio
async def test_dockerfile_syntax_error_points_at_the_line(docker_client: Any, tmp_path: Path) -> None:
    res = await build.run(make_ctx(tmp_path, "bad-syntax", "docker"))
    assert res.status is Status.FAIL
    [finding] = res.findings
    assert (finding.code, finding.file, finding.line) == ("build.dockerfile-syntax", "Dockerfile", 3)
    assert "unknown instruction: RUNN" in finding.message


@pytest.mark.docker
@pytest.mark.anyio
async def test_missing_dockerfile_is_a_clear_failure(docker_client: Any, tmp_path: Path) -> None:
    res = await build.run(make_ctx(tmp_path, "missing-dockerfile", "docker"))
    assert res.status is Status.FAIL
    [finding] = res.findings
    assert finding.code == "build.dockerfile-missing"
    assert finding.fix and "--runtime process" in finding.fix
    assert "no Dockerfile at" in res.summary


@pytest.mark.docker
@pytest.mark.anyio
async def test_failing_step_is_named_with_its_log(docker_client: Any, tmp_path: Path) -> None:
    res = await build.run(make_ctx(tmp_path, "failing-step", "docker"))
    assert res.status is Status.FAIL
    assert res.summary.startswith("Step 4/5 : RUN python -c") and res.summary.endswith("failed")
    [finding] = res.findings
    assert finding.code == "build.step-failed"
    assert "returned a non-zero code: 3" in finding.message
    assert "error: assets/ is missing" in finding.message
    assert finding.fix and "docker build -f Dockerfile" in finding.fix


@pytest.mark.docker
@pytest.mark.anyio
async def test_import_check_names_module_and_distribution(
    docker_client: Any, tmp_path: Path
) -> None:
    ctx = make_ctx(tmp_path, "missing-import", "docker", import_check=["app"])
    res = await build.run(ctx)
    assert res.status is Status.FAIL
    assert res.summary == "inside the image, import fails: no module 'yaml'"
    [finding] = res.findings
    assert finding.category == "dependency" and "likely distribution: PyYAML" in finding.message
    assert finding.fix and "add PyYAML to the image's dependencies" in finding.fix
    assert "image" in ctx.artifacts  # the image itself built


@pytest.mark.anyio
async def test_process_runtime_import_failure_says_what_to_install(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, "hello", "process", import_check=["app", "no_such_module_abc"])
    res = await build.run(ctx)
    assert res.status is Status.FAIL
    [finding] = res.findings
    assert "No module named 'no_such_module_abc'" in finding.message
    assert finding.fix is not None and finding.fix.endswith(
        "install it into the interpreter flightcheck runs with: pip install no-such-module-abc"
    )
    assert "[service].import_check" in finding.fix


@pytest.mark.anyio
async def test_process_runtime_build_passes(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, "hello", "process", import_check=["app"])
    res = await build.run(ctx)
    assert res.status is Status.PASS, res
    assert res.details["image"] == str((tmp_path / "hello").resolve())
    assert res.measurement("image_size_bytes") is None
