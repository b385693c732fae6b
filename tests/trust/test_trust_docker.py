"""The same promises on the docker runtime: real images, real containers."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from trust_support import ci, project, reports

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _build(proj: Path) -> dict[str, Any]:
    data = json.loads(reports(proj)["flightcheck-report.json"])
    return next(s for s in data["stages"] if s["name"] == "build")


def _with_import_check(proj: Path) -> None:
    toml = (proj / "flightcheck.toml").read_text().replace("import_check = []",
                                                            'import_check = ["needkey"]')
    (proj / "flightcheck.toml").write_text(toml)


def test_the_import_check_in_the_image_gets_the_service_environment(
    tmp_path: Path, docker_client: Any
) -> None:
    proj = project(tmp_path)
    _with_import_check(proj)
    out = ci(proj, "--runtime", "docker", "--until", "build")
    assert out.returncode == 0, out.stderr
    # Real mode and no key: the import really fails, and the fix names the real image.
    failed = ci(proj, "--runtime", "docker", "--until", "build", "--real-model")
    assert failed.returncode == 1, failed.stderr
    build = _build(proj)
    finding = build["findings"][0]
    assert "KeyError" in finding["message"] and "OPENAI_API_KEY" in finding["message"]
    assert "<image>" not in finding["fix"]
    assert f"docker run --rm --entrypoint python {build['details']['image']}" in finding["fix"]


def test_a_process_run_does_not_change_the_next_image(tmp_path: Path, docker_client: Any) -> None:
    proj = project(tmp_path)
    _with_import_check(proj)
    first = ci(proj, "--runtime", "docker", "--until", "build")
    assert first.returncode == 0, first.stderr
    image = _build(proj)["details"]["image"]
    local = ci(proj, "--runtime", "process", "--until", "health-poll")
    assert local.returncode == 0, local.stderr
    again = ci(proj, "--runtime", "docker", "--until", "build")
    assert again.returncode == 0, again.stderr
    build = _build(proj)
    assert build["details"]["image"] == image
    assert {m["name"]: m["value"] for m in build["measurements"]}["cached"] is True


@pytest.mark.anyio
async def test_a_leftover_another_run_removes_meanwhile_is_not_a_daemon_failure(
    docker_client: Any,
) -> None:
    """Two runs on one host clean up the same leftover: one lists it, the other removes it
    before the first inspects it. The first must go on, not report an unreachable daemon."""
    from flightcheck.runtimes.docker import DockerRuntime

    rt = DockerRuntime(name="fctest-race", client=docker_client)
    labels = {**rt.labels("service"), "flightcheck.owner": "1.1"}  # pid 1 never has start time 1
    gone = docker_client.containers.create("python:3.11-slim", ["sleep", "60"], labels=labels)
    inspect = docker_client.api.inspect_container

    def removed_first(container: str) -> Any:  # the other run wins the race, for real
        if container == gone.id:
            docker_client.api.remove_container(container, force=True)
        return inspect(container)

    docker_client.api.inspect_container = removed_first  # type: ignore[method-assign]
    try:
        assert await rt.cleanup_stale() >= 0
    finally:
        docker_client.api.inspect_container = inspect  # type: ignore[method-assign]
        with contextlib.suppress(Exception):
            gone.remove(force=True)
