"""Runtimes: where images, containers and processes come from (docker, process).

Stages see only the :class:`~flightcheck.runtimes.base.Runtime` protocol; :func:`select_runtime`
turns ``--runtime auto|docker|process`` into one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from flightcheck.errors import RuntimeUnavailable, UsageError
from flightcheck.runtimes.base import BuildFailed, Exit, Image, Running, Runtime, Sidecar
from flightcheck.secrets import Redactor

__all__ = [
    "BuildFailed",
    "Exit",
    "Image",
    "Running",
    "Runtime",
    "Sidecar",
    "listening",
    "select_runtime",
]

RUNTIMES = ("auto", "docker", "process", "attached")


def select_runtime(
    requested: str,
    *,
    redactor: Redactor | None = None,
    on_log: Callable[[str], None] | None = None,
    name: str = "service",
    command: Sequence[str] | None = None,
    pythonpath: Sequence[Path] = (),
) -> Runtime:
    """The runtime for ``requested``: ``auto`` is docker when a daemon answers within a few
    seconds, else process (with a one-line notice through ``on_log``).

    ``name`` names the images (``flightcheck/<name>:<digest>``); ``command`` and ``pythonpath``
    are how the process runtime starts the service.
    """
    from flightcheck.runtimes.process import ProcessRuntime

    def process() -> Runtime:
        return ProcessRuntime(
            redactor=redactor, on_log=on_log, command=command, pythonpath=pythonpath
        )

    if requested == "process":
        return process()
    if requested == "attached":  # a service the Dagger module started: see runtimes/attached.py
        from flightcheck.runtimes.attached import AttachedRuntime

        return AttachedRuntime(redactor=redactor, on_log=on_log)
    if requested not in ("auto", "docker"):
        raise UsageError(
            f"unknown runtime {requested!r}", fix=f"choose one of: {', '.join(RUNTIMES)}"
        )
    try:
        from flightcheck.runtimes.docker import DockerRuntime

        return DockerRuntime(redactor=redactor, on_log=on_log, name=name)
    except RuntimeUnavailable as exc:
        if requested == "docker":
            raise
        if on_log is not None:
            reason = (exc.why or exc.what).strip().splitlines() or ["no answer"]
            on_log(f"runtime: Docker not reachable ({reason[0][:120]}); using the process runtime")
        return process()


def listening(endpoint: str, *, wait_s: float = 0.2) -> bool:
    """True when something serves at ``endpoint`` (``http://host:port``): the connection is
    accepted and held open — docker-proxy accepts and closes at once while the container
    does not listen yet. Blocking; call it from a worker thread."""
    from flightcheck.runtimes._proc import accepts

    url = urlsplit(endpoint)
    if not url.hostname or not url.port:
        return False
    return accepts(url.port, host=url.hostname, wait_s=wait_s)
