"""Test support: a minimal host-subprocess ``Running`` (with an optional fake-model sidecar),
free ports, contexts. Test-only; the real runtimes live in flightcheck.runtimes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio

from flightcheck.config import Config, Loaded
from flightcheck.context import Context
from flightcheck.fakemodel import SERVER_SCRIPT
from flightcheck.runtimes.base import Exit, Sidecar

HERE = Path(__file__).resolve().parent
SVC = HERE / "svc.py"
REPO = HERE.parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.01)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


class ProcRunning:
    """A service as a host subprocess, satisfying flightcheck's ``Running`` protocol."""

    def __init__(self, cmd: list[str], *, port: int, env: Mapping[str, str],
                 sidecar: Sidecar | None = None) -> None:
        self.endpoint = f"http://127.0.0.1:{port}"
        self.memory_limit = 0
        self.sidecar_endpoint: str | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="fc-svc-", suffix=".log", delete=False)
        self._side: subprocess.Popen[bytes] | None = None
        # The developer's own provider settings must not leak into a test service.
        base_env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("SVC_", "FAULT_", "AI_", "OPENAI_", "GEMINI_",
                                         "GOOGLE_", "MAX_OUTPUT"))}
        if sidecar is not None:
            self._side = subprocess.Popen(
                [sys.executable, str(sidecar.script), "--port", str(sidecar.port), "--quiet",
                 *sidecar.args],
                stdout=subprocess.DEVNULL, stderr=self._log, start_new_session=True,
            )
            _wait_port(sidecar.port)
            self.sidecar_endpoint = f"http://127.0.0.1:{sidecar.port}"
        self.started_at = time.time()  # what the real runtimes record too
        self.proc = subprocess.Popen(
            cmd, env={**base_env, **env}, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=REPO,
        )

    async def status(self) -> Exit | None:
        code = self.proc.poll()
        if code is None:
            return None
        if code < 0:
            return Exit("signal", -code, signal.Signals(-code).name)
        return Exit("exited", code)

    async def peak_memory(self) -> int | None:
        return None

    def _text(self) -> str:
        return Path(self._log.name).read_text(encoding="utf-8", errors="replace")

    async def logs(self, tail: int = 50) -> str:
        return "\n".join(self._text().splitlines()[-tail:])

    def log_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self._text().splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if isinstance(item, dict):
                out.append(item)
        return out

    async def stop(self) -> None:
        for proc in (self.proc, self._side):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    await anyio.to_thread.run_sync(proc.wait, 5)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        self._log.close()
        os.unlink(self._log.name)


def make_context(tmp: Path, **sections: Any) -> Context:
    """A Context over a config built from ``sections`` (TOML-shaped dicts). The AI health
    path defaults to /health/ai here (both test services serve it; pass health={"ai_path":
    ""} to switch it off) and [environments.dev] to the default AI parameters."""
    health = {"ai_path": "/health/ai", **sections.pop("health", {})}
    sections.setdefault("environments", {"dev": {}})  # the reference service's AI parameters
    config = Config.model_validate({**sections, "health": health, "root": tmp})
    return Context(loaded=Loaded(config=config, path=None), report_dir=tmp / "report")


def start_svc(ctx: Context, port: int, **faults: str) -> ProcRunning:
    """Start tests/fakemodel/svc.py with the context's service env (and sidecar, if any)."""
    env = {**ctx.service_environment(), "SVC_PORT": str(port), **faults}
    running = ProcRunning([sys.executable, str(SVC)], port=port, env=env, sidecar=ctx.sidecar)
    ctx.artifacts["running"] = running
    return running


def start_fake_model(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, str(SERVER_SCRIPT), "--port", str(port), "--quiet"],
                            stdout=subprocess.DEVNULL, start_new_session=True)
    _wait_port(port)
    return proc


def start_mathcoach(ctx: Context, **env: str) -> ProcRunning:
    """``python -m mathcoach`` on a free port with the context's service env (and sidecar)."""
    port = free_port()
    child_env = {
        **ctx.service_environment(), "HOST": "127.0.0.1", "PORT": str(port),
        "PYTHONPATH": str(REPO / "src"), "PYTHONUNBUFFERED": "1", **env,
    }
    running = ProcRunning([sys.executable, "-m", "mathcoach"], port=port, env=child_env,
                          sidecar=ctx.sidecar)
    ctx.artifacts["running"] = running
    return running
