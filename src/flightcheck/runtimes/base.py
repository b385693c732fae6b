"""The seam between stages and where images/containers/processes come from.

Stages call only this protocol; a runtime knows nothing about what a stage checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import httpx


@dataclass(frozen=True)
class Image:
    """A built image (docker) or a prepared source tree (process)."""

    ref: str  # image id/tag, or the source dir for the process runtime
    size_bytes: int | None = None
    build_seconds: float = 0.0
    cached: bool = False
    log_tail: str = ""
    digest: str = ""  # what was built, by content (docker: the image ID); "" when unknown


@dataclass(frozen=True)
class Exit:
    """How a service ended: OOM-killed, exited with a code, or killed by a signal."""

    kind: Literal["oom", "exited", "signal"]
    code: int | None = None
    detail: str = ""

    @property
    def oom(self) -> bool:
        return self.kind == "oom"


@dataclass(frozen=True)
class Sidecar:
    """A stdlib-only Python script run beside the service (the fake model server).

    The service reaches it at ``http://127.0.0.1:{port}`` (docker: a container sharing the
    service's network namespace, started first from the service's own image; process: a host
    subprocess); flightcheck reaches it at ``Running.sidecar_endpoint``.
    """

    script: Path
    port: int = 8929
    args: tuple[str, ...] = ()


class BuildFailed(Exception):
    """The image did not build. ``step`` is the failing Dockerfile step, ``log_tail`` its output."""

    def __init__(self, message: str, *, step: str = "", log_tail: str = "") -> None:
        super().__init__(message)
        self.step = step
        self.log_tail = log_tail


@runtime_checkable
class Running(Protocol):
    """A started service."""

    endpoint: str  # http://127.0.0.1:PORT (or http://svc:PORT inside Dagger)
    memory_limit: int  # bytes
    sidecar_endpoint: str | None  # where flightcheck reaches the sidecar, if one was started
    started_at: float  # time.time() when the service was started (probe windows count from it)

    async def status(self) -> Exit | None:
        """None while running; otherwise how it ended."""
        ...

    async def peak_memory(self) -> int | None:
        """Peak memory in bytes so far, None when it cannot be measured."""
        ...

    async def logs(self, tail: int = 50) -> str:
        """The last ``tail`` lines of stdout+stderr, secrets redacted."""
        ...

    async def stop(self) -> None:
        """Stop and remove; idempotent and safe on every path."""
        ...


def request_auth(running: Running) -> httpx.Auth | None:
    """How requests to ``running`` authenticate: a deployed private revision's tag URL wants an
    identity token (``RevisionRunning.auth``); everything else needs nothing."""
    auth = getattr(running, "auth", None)
    return auth if isinstance(auth, httpx.Auth) else None


@runtime_checkable
class MemorySampling(Protocol):
    """A Running that can say how much memory it uses now (the report's memory-over-time
    chart, ``flightcheck resources``' memory under load). Optional: runtimes without it report
    peak memory only."""

    def memory_usage(self) -> int | None:
        """Bytes in use now; None when unknown or ended. Cheap and thread-safe: it is polled
        from a sampling thread."""
        ...


@dataclass(frozen=True)
class DependencyEnv:
    """The service's installed packages, readable on this host (for a type checker)."""

    python: Path  # a venv-shaped directory or an interpreter (ty --python)
    version: str  # "3.11"
    sites: tuple[Path, ...]  # the directories the packages are in


@runtime_checkable
class Runtime(Protocol):
    """Where the service is built and started."""

    name: str

    async def build(self, context: Path, dockerfile: str) -> Image:
        """Build (or prepare) the service. Raises BuildFailed."""
        ...

    async def import_check(
        self, image: Image, modules: list[str], timeout_s: float,
        env: Mapping[str, str] | None = None,
    ) -> str | None:
        """Import ``modules`` inside the image, with the service's environment ``env``; None if
        all import, else the error text."""
        ...

    async def dependency_env(self, image: Image, dest: Path) -> DependencyEnv | str:
        """The packages installed where the service runs (copied under ``dest`` when they are
        in an image), or why they cannot be read."""
        ...

    async def start(
        self,
        image: Image,
        *,
        port: int,
        env: Mapping[str, str],
        memory_limit: int,
        command: list[str] | None = None,
        sidecar: Sidecar | None = None,
    ) -> Running:
        """Start the service with a hard memory ceiling."""
        ...

    async def cleanup_stale(self) -> int:
        """Remove leftovers of crashed earlier runs; returns how many."""
        ...
