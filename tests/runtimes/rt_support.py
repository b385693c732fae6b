"""Helpers for runtime and stage tests: fixture service paths, waiting for status and HTTP."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import httpx

from flightcheck.runtimes.base import Exit, Running

SERVICES = Path(__file__).resolve().parent.parent / "fixtures" / "services"
SIDECAR = SERVICES / "sidecar.py"
INTERRUPT_CHILD = Path(__file__).resolve().parent / "interrupt_child.py"
MiB = 1024 * 1024


async def wait_status(running: Running, within_s: float = 20) -> Exit:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        exit_ = await running.status()
        if exit_ is not None:
            return exit_
        await anyio.sleep(0.05)
    raise AssertionError(f"still running after {within_s} s:\n{await running.logs()}")


async def wait_http(url: str, within_s: float = 20) -> httpx.Response:
    deadline = time.monotonic() + within_s
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            try:
                return await client.get(url)
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                await anyio.sleep(0.05)


def await_ready(child: subprocess.Popen[str], timeout: float = 120) -> dict[str, Any]:
    """The JSON line interrupt_child.py prints once its service runs."""
    assert child.stdout is not None
    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline:
        line = child.stdout.readline()
        if line.startswith("{") or not line:
            break
    if not line.startswith("{"):
        child.kill()
        raise AssertionError(f"child did not start: {line}{child.communicate()[1]}")
    return json.loads(line)


def dead_owner_token() -> str:
    """The owner token of a process that has exited (as a crashed flightcheck leaves)."""
    from flightcheck.runtimes import _proc

    gone = subprocess.Popen(["sleep", "60"])
    token = _proc.owner_token(gone.pid)
    gone.kill()
    gone.wait()
    return token


def cgroup_v1_max_usage(container_id: str) -> int | None:
    """The container's memory.max_usage_in_bytes read straight from cgroupfs (v1 docker)."""
    path = Path(f"/sys/fs/cgroup/memory/docker/{container_id}/memory.max_usage_in_bytes")
    return int(path.read_text()) if path.exists() else None
