"""Ctrl-C hit repeatedly (three SIGINTs 10 ms apart) in the middle of `flightcheck ci` on
docker: the service and the fake model server containers are still removed, the exit code is
130, and no traceback is printed. A real subprocess of the CLI, real containers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from trust_support import REPO

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _start(tmp_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "flightcheck.cli", "ci", "--runtime", "docker",
         "--only", "ai-smoke", "--report-dir", str(tmp_path / "report"),
         "--service-env", "FAULT_STARTUP_DELAY_S=60"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _wait_for(proc: subprocess.Popen[str], needle: str, seen: list[str]) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return
    proc.kill()
    raise AssertionError(f"never saw {needle!r}:\n{''.join(seen)}")


def _ours(client: Any, pid: int) -> list[Any]:
    """Containers the CLI process ``pid`` started (its owner label), running or not."""
    return [c for c in client.containers.list(all=True, filters={"label": "flightcheck=1"})
            if c.labels.get("flightcheck.owner", "").startswith(f"{pid}.")]


@pytest.mark.parametrize("moment", [
    "[health-poll] started",  # service and fake model server both running
    "[run-with-memory-limit] starting",  # while the containers are being created
])
def test_three_quick_sigints_still_remove_every_container(
    tmp_path: Path, docker_client: Any, moment: str
) -> None:
    proc = _start(tmp_path)
    seen: list[str] = []
    out = ""
    try:
        _wait_for(proc, moment, seen)
        for _ in range(3):
            proc.send_signal(signal.SIGINT)
            time.sleep(0.01)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        left = _ours(docker_client, proc.pid)
        for c in left:  # never leave them to the next test
            c.remove(force=True)
    text = "".join(seen) + out
    assert left == [], f"left behind: {[c.labels.get('flightcheck.role') for c in left]}\n{text}"
    assert proc.returncode == 130, text
    assert "Traceback" not in text and "Exception ignored" not in text, text
    assert not (tmp_path / "report" / "flightcheck-report.json").exists()
