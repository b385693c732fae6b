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


def _calls(res: Any) -> list[tuple[str, str | None, int | None]]:
    return sorted((f.code, f.file, f.line) for f in res.findings if f.category == "type")


@pytest.mark.docker
@pytest.mark.anyio
async def test_calls_into_the_images_packages_that_fail_whatever_the_input(
    docker_client: Any, tmp_path: Path
) -> None:
    # greetlib 1.2.0 is installed in the image only (not on this host): the build reads it
    # out of the image and ty judges the service's calls against it
    ctx = make_ctx(tmp_path, "dependency-calls", "docker", import_check=["app.main"])
    res = await build.run(ctx)
    assert res.status is Status.FAIL, (res.summary, res.findings)
    assert _calls(res) == [("FC902", "app/main.py", 9), ("FC902", "app/main.py", 13)]
    by_line = {f.line: f.message for f in res.findings}
    assert "`loud`" in by_line[9] and "the image's greetlib 1.2.0" in by_line[9]
    assert by_line[13] == "`retry` is not a parameter of Client.send() in the image's greetlib 1.2.0"
    assert "2 call(s) into the installed dependencies fail" in res.summary
    assert res.measurement("dependency_calls_failing") == 2
    # app/__init__.py, app/main.py and the copy of greetlib the Dockerfile installs from
    assert res.measurement("dependency_check_files") == 3
    assert "image" in ctx.artifacts  # the image itself built and imports

    # the fixed calls pass, and the summary says what was checked
    main = tmp_path / "dependency-calls" / "app" / "main.py"
    main.write_text(main.read_text().replace("loud=True", "shout=True").replace("retry=3", "retries=3"))
    fixed = await build.run(ctx)
    assert fixed.status is Status.PASS, fixed
    assert "calls into the installed dependencies ok (3 file(s), ty)" in fixed.summary
    assert _calls(fixed) == []


@pytest.mark.docker
@pytest.mark.anyio
async def test_the_type_gate_turned_off_in_lint_is_off_here_and_says_so(
    docker_client: Any, tmp_path: Path
) -> None:
    ctx = make_ctx(tmp_path, "dependency-calls", "docker")
    cfg = tmp_path / "flightcheck.toml"
    cfg.write_text(cfg.read_text() + '\n[lint]\ndisable = ["type"]\n')
    ctx = Context(loaded=load(cfg), runtime_name="docker")
    res = await build.run(ctx)
    assert res.status is Status.PASS, res
    assert res.summary.endswith("calls into dependencies not checked ([lint] turns the type gate off)")
    assert res.measurement("dependency_calls_failing") is None


@pytest.mark.anyio
async def test_process_runtime_checks_calls_into_its_interpreters_packages(tmp_path: Path) -> None:
    # the process runtime runs the service on flightcheck's interpreter: its httpx is the pin
    import httpx

    ctx = make_ctx(tmp_path, "hello", "process")
    (tmp_path / "hello" / "fetch.py").write_text(
        "import httpx\n\n\ndef fetch(url: str) -> str:\n"
        "    return httpx.get(url, timout=3).text\n\n\n"
        "def fine(url: str) -> str:\n    return httpx.get(url, timeout=3).text\n")
    res = await build.run(ctx)
    assert res.status is Status.FAIL, res
    [finding] = res.findings
    assert (finding.code, finding.file, finding.line) == ("FC902", "fetch.py", 5)
    assert f"the image's httpx {httpx.__version__}" in finding.message


@pytest.mark.anyio
async def test_attached_reads_the_packages_tar_it_is_given_or_says_why_not(tmp_path: Path) -> None:
    # the Dagger module hands the checker the service image's packages as SITES_SCRIPT's tar;
    # here this interpreter writes that tar itself
    import sys

    import anyio

    from flightcheck.runtimes import _proc
    from flightcheck.runtimes.attached import AttachedRuntime, AttachSettings
    from flightcheck.runtimes.base import DependencyEnv, Image

    bare = AttachedRuntime(AttachSettings(endpoint="http://127.0.0.1:9"))
    why = await bare.dependency_env(Image("attached:x"), tmp_path / "a")
    assert isinstance(why, str) and "FLIGHTCHECK_ATTACH_SOURCES" in why

    tar = tmp_path / "sources.tar"
    await anyio.run_process([sys.executable, "-c", _proc.SITES_SCRIPT, str(tar)])
    given = AttachedRuntime(AttachSettings.from_env({
        "FLIGHTCHECK_ATTACH_ENDPOINT": "http://127.0.0.1:9",
        "FLIGHTCHECK_ATTACH_SOURCES": str(tar), "FLIGHTCHECK_ATTACH_PYTHON": "3.11"}))
    env = await given.dependency_env(Image("attached:x"), tmp_path / "b")
    assert isinstance(env, DependencyEnv) and env.version == "3.11"
    [site] = env.sites
    assert (site / "httpx" / "__init__.py").is_file()
    assert any(site.glob("httpx-*.dist-info/METADATA"))
    assert not any(site.rglob("*.so")) and not any(site.rglob("__pycache__"))
