"""Choosing a runtime, and a Docker daemon that is not there."""

from __future__ import annotations

from pathlib import Path

import pytest

from flightcheck.errors import RuntimeUnavailable, UsageError
from flightcheck.runtimes import select_runtime
from flightcheck.runtimes.process import ProcessRuntime


@pytest.fixture
def no_daemon(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    host = f"unix://{tmp_path}/missing-docker.sock"
    monkeypatch.setenv("DOCKER_HOST", host)
    return host


def test_docker_requested_but_unreachable_says_what_to_do(no_daemon: str) -> None:
    from flightcheck.runtimes.docker import DockerRuntime

    with pytest.raises(RuntimeUnavailable) as info:
        DockerRuntime()
    err = info.value
    assert no_daemon in err.what
    assert "--runtime process" in err.fix and "dockerd" in err.fix
    assert err.repro == "docker info" and err.exit_code == 2
    with pytest.raises(RuntimeUnavailable):
        select_runtime("docker")


def test_auto_falls_back_to_process_with_a_notice(no_daemon: str) -> None:
    notices: list[str] = []
    rt = select_runtime("auto", on_log=notices.append, command=["python", "app.py"])
    assert isinstance(rt, ProcessRuntime) and rt.name == "process"
    assert len(notices) == 1 and "Docker not reachable" in notices[0]
    assert "using the process runtime" in notices[0]


def test_process_and_unknown_runtimes() -> None:
    assert select_runtime("process").name == "process"
    with pytest.raises(UsageError, match="choose one of: auto, docker, process"):
        select_runtime("podman")


@pytest.mark.docker
def test_auto_picks_docker_when_the_daemon_answers(docker_client: object) -> None:
    del docker_client  # skips when there is no daemon
    assert select_runtime("auto").name == "docker"
