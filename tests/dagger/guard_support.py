"""Test support: the memory guard with a status port as a host process (what the Dagger module
runs as the service's entrypoint), and a fake model server started by hand."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from flightcheck.runtimes._proc import free_port

REPO = Path(__file__).resolve().parents[2]
# Variables a service reads: never inherited from the developer's shell into a test.
_PRIVATE = ("AI_", "FAULT_", "OPENAI_", "GEMINI_", "GOOGLE_", "MAX_OUTPUT", "FLIGHTCHECK")
ALLOC = "b = [bytearray(8 << 20) for _ in range(40)]; print('survived', flush=True)"


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_PRIVATE)}
    env.update(extra or {})
    return env


@dataclass
class Proc:
    """A process a test started; stopped by pid (SIGTERM, then SIGKILL)."""

    proc: subprocess.Popen[bytes]
    log: Path
    url: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


class Starter:
    """Starts guards and fake model servers; the fixture stops whatever is left."""

    def __init__(self, log_dir: Path) -> None:
        self._dir = log_dir
        self._procs: list[Proc] = []

    def _popen(self, argv: Sequence[str], env: Mapping[str, str], name: str) -> Proc:
        log = self._dir / f"{name}-{len(self._procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(list(argv), env=dict(env), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=REPO)
        started = Proc(proc, log)
        self._procs.append(started)
        return started

    def guard(self, command: Sequence[str], *, limit: str = "256Mi",
              env: Mapping[str, str] | None = None, extra: Sequence[str] = (),
              python: Sequence[str] = (sys.executable, "-m", "flightcheck.runtimes.guard"),
              wait: bool = True) -> Proc:
        """``command`` under the guard with a status port on 127.0.0.1."""
        port = free_port()
        argv = [*python, "--limit", limit, "--status-port", str(port), *extra, "--", *command]
        started = self._popen(argv, clean_env(env), "guard")
        started.url = f"http://127.0.0.1:{port}"
        if wait:
            wait_for(lambda: verdict(started.url) is not None, 15, started)
        return started

    def fake_model(self, port: int) -> Proc:
        argv = [sys.executable, "-m", "flightcheck.fakemodel.server", "--port", str(port),
                "--quiet"]
        started = self._popen(argv, clean_env(), "fakemodel")
        started.url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(started.url + "/v1/models"), 15, started)
        return started

    def stop_all(self) -> None:
        for p in reversed(self._procs):
            p.stop()
        self._procs.clear()


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.TransportError:
        return False
    return True


def verdict(url: str) -> dict[str, Any] | None:
    """The guard's GET / (None when it does not answer)."""
    try:
        response = httpx.get(url + "/", timeout=2)
    except httpx.TransportError:
        return None
    return response.json() if response.status_code == 200 else None


def wait_for(check: Any, timeout: float, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and proc.proc.poll() is not None:
            raise AssertionError(f"exited with {proc.proc.returncode}:\n{proc.text()[-3000:]}")
        if time.monotonic() > deadline:
            tail = proc.text()[-3000:] if proc is not None else ""
            raise AssertionError(f"not within {timeout} s\n{tail}")
        time.sleep(0.05)


@pytest.fixture
def starter(tmp_path: Path) -> Iterator[Starter]:
    s = Starter(tmp_path)
    try:
        yield s
    finally:
        s.stop_all()
