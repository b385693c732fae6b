"""Shared fixtures: free ports, a Docker client, and real mathcoach processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
BASE_IMAGE = "python:3.11-slim"
# Variables the service reads: never inherited from the developer's shell into a test.
_SERVICE_PREFIXES = ("AI_", "FAULT_", "OPENAI_", "GEMINI_", "GOOGLE_", "EVAL_", "MAX_OUTPUT")


def find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def free_port() -> int:
    return find_free_port()


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """A docker SDK client; skips (with the reason) when no daemon or no base image."""
    try:
        import docker
        from docker.errors import DockerException, ImageNotFound
    except ImportError:
        pytest.skip("the docker SDK is not installed: pip install -e '.[dev]'")
    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except DockerException as exc:
        pytest.skip(f"no Docker daemon reachable ({exc}); start dockerd to run this test")
    try:
        client.images.get(BASE_IMAGE)
    except ImageNotFound:
        client.close()
        pytest.skip(f"base image {BASE_IMAGE} is not present locally (no registry to pull from)")
    yield client
    client.close()


@dataclass
class ServiceProcess:
    """A `python -m mathcoach` subprocess; stdout (JSON logs) goes to a file."""

    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    started: float = field(default_factory=time.time)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        """Every stdout line parsed as JSON (fails the test on a non-JSON line)."""
        return [json.loads(line) for line in self.log_text().splitlines() if line.strip()]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.log_records() if r.get("event") == name]

    def wait_ready(self, path: str = "/health/startup", timeout: float = 30) -> float:
        """Poll `path` until 200; returns seconds since the process was launched."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"mathcoach exited with {self.proc.returncode}:\n{self.log_text()[-2000:]}"
                )
            try:
                if httpx.get(self.url + path, timeout=1).status_code == 200:
                    return time.time() - self.started
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(
            f"{self.url}{path} not 200 after {timeout}s:\n{self.log_text()[-2000:]}"
        )

    def wait_exit(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


class MathcoachLauncher:
    """Starts mathcoach processes with a clean environment and stops them all by pid."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._running: list[ServiceProcess] = []

    def __call__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        wait: Literal["startup", "health", "none"] = "startup",
        timeout: float = 30,
    ) -> ServiceProcess:
        port = find_free_port()
        child_env = {k: v for k, v in os.environ.items() if not k.startswith(_SERVICE_PREFIXES)}
        child_env.update(
            {
                "HOST": "127.0.0.1",
                "PORT": str(port),
                "PYTHONPATH": str(REPO / "src"),
                "PYTHONUNBUFFERED": "1",
                **(env or {}),
            }
        )
        log_path = self._log_dir / f"mathcoach-{port}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "mathcoach"],
                env=child_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        service = ServiceProcess(f"http://127.0.0.1:{port}", proc, log_path)
        self._running.append(service)
        if wait == "startup":
            service.wait_ready("/health/startup", timeout)
        elif wait == "health":
            service.wait_ready("/health", timeout)
        return service

    def stop_all(self) -> None:
        for service in self._running:
            service.stop()
        self._running.clear()


@pytest.fixture
def start_mathcoach(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """start_mathcoach(env, wait="startup"|"health"|"none") → a running ServiceProcess."""
    launcher = MathcoachLauncher(tmp_path)
    try:
        yield launcher
    finally:
        launcher.stop_all()


@pytest.fixture(scope="module")
def start_mathcoach_module(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., ServiceProcess]]:
    """Like start_mathcoach, but the processes live until the test module ends."""
    launcher = MathcoachLauncher(tmp_path_factory.mktemp("mathcoach"))
    try:
        yield launcher
    finally:
        launcher.stop_all()
