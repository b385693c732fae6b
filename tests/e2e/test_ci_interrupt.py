"""Ctrl-C (SIGINT) and SIGTERM in the middle of `flightcheck ci`: everything it started is gone.

The service is held in its startup phase (FAULT_STARTUP_DELAY_S) so the signal lands while
health-poll waits, with the service and the fake model sidecar both running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _start_ci(tmp_path: Path, runtime: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable, "-m", "flightcheck.cli", "ci", "--runtime", runtime,
            "--only", "ai-smoke", "--report-dir", str(tmp_path / "report"),
            "--service-env", "FAULT_STARTUP_DELAY_S=60",
        ],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _wait_for(proc: subprocess.Popen[str], needle: str, timeout: float = 120) -> list[str]:
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return seen
    proc.kill()
    raise AssertionError(f"never saw {needle!r}:\n{''.join(seen)}")


def _interrupt(proc: subprocess.Popen[str], sig: signal.Signals) -> tuple[int, str]:
    proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, out


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_run_removes_service_and_sidecar_containers(
    tmp_path: Path, docker_client: object, sig: signal.Signals
) -> None:
    import docker

    client = docker.from_env()
    proc = _start_ci(tmp_path, "docker")
    _wait_for(proc, "[health-poll] started")
    # Its own containers (owner label): other runs on this machine come and go meanwhile.
    mine = [
        c for c in client.containers.list(all=True, filters={"label": "flightcheck=1"})
        if c.labels.get("flightcheck.owner", "").startswith(f"{proc.pid}.")
    ]
    assert len(mine) >= 2, "expected the service and the fake model sidecar to be running"
    code, out = _interrupt(proc, sig)
    assert code == 130, out
    assert "interrupted" in out and "Traceback" not in out
    left = {c.id for c in client.containers.list(all=True, filters={"label": "flightcheck=1"})}
    assert not (left & {c.id for c in mine}), "containers left behind after the signal"


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_ctrl_c_mid_run_ends_service_and_sidecar_processes(tmp_path: Path) -> None:
    proc = _start_ci(tmp_path, "process")
    lines = _wait_for(proc, "[health-poll] started")
    endpoint = next(
        (ln.split("running at ")[1].split()[0] for ln in lines if "running at " in ln), None
    )
    fake_port = next(
        int(ln.split("fake model server on port ")[1].split()[0])
        for ln in lines if "fake model server on port " in ln
    )
    assert _listening(fake_port), "fake model sidecar should be up"
    code, out = _interrupt(proc, signal.SIGINT)
    assert code == 130, out
    assert not _listening(fake_port), "the fake model sidecar survived Ctrl-C"
    if endpoint:
        port = int(endpoint.rsplit(":", 1)[1])
        assert not _listening(port), "the service survived Ctrl-C"
