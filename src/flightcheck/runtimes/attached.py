"""attached: check a service that something else built and started, through its memory guard.

The Dagger module builds the image with ``Directory.dockerBuild``, starts it as a Dagger service
under the guard (``guard.py --status-port``: Dagger has no per-container memory limit) and runs
``flightcheck ci --runtime attached`` in a checker container bound to it. This runtime builds and
starts nothing: ``build`` names the image (or reports the build error the module caught),
``start`` attaches to the endpoint, and exit status, OOM verdict, peak memory, logs and the
import check come from the guard's status port. The stages cannot tell it from docker.

Where things are (environment; the Dagger module sets them):

- ``FLIGHTCHECK_ATTACH_ENDPOINT``: the service, e.g. ``http://svc:8080`` (required)
- ``FLIGHTCHECK_ATTACH_GUARD``: the guard's status port, e.g. ``http://svc:8931``
- ``FLIGHTCHECK_ATTACH_SIDECAR``: the fake model server, e.g. ``http://fakemodel:8929``
- ``FLIGHTCHECK_ATTACH_IMAGE``, ``FLIGHTCHECK_ATTACH_BUILD_SECONDS``: what the build made, how fast
- ``FLIGHTCHECK_ATTACH_BUILD_ERROR``: a file with the image build's error; ``build`` fails with it

What a starter needs to start the service the way the local runtimes would (build context,
Dockerfile, port, memory limit, environment, fake model server) comes from the graph, so it lives
above the runtimes: ``python -m flightcheck.attached_cli plan`` (``flightcheck/attached_cli.py``).
"""

from __future__ import annotations

import os
import re
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import httpx

from flightcheck.errors import StageError, UsageError
from flightcheck.runtimes import _proc
from flightcheck.runtimes.base import BuildFailed, DependencyEnv, Exit, Image, Running, Sidecar
from flightcheck.secrets import Redactor

ENV_PREFIX = "FLIGHTCHECK_ATTACH_"
ATTACH_WAIT_S = 30.0  # how long start() waits for the guard / the sidecar to answer
_HTTP_TIMEOUT_S = 5.0
_STEP = re.compile(r'process "([^"]+)" did not complete successfully')

LogFn = Callable[[str], None]


@dataclass(frozen=True)
class AttachSettings:
    """Where the already-running service, its guard and the fake model server are."""

    endpoint: str
    guard: str | None = None
    sidecar: str | None = None
    image: str = ""
    build_seconds: float = 0.0
    build_error: Path | None = None
    sources: Path | None = None  # the image's packages as a tar (the build stage's type gate)
    python: str = ""  # the image's Python, "3.11"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AttachSettings:
        env = os.environ if environ is None else environ

        def get(name: str) -> str:
            return env.get(ENV_PREFIX + name, "").strip()

        endpoint = get("ENDPOINT")
        if not endpoint:
            raise UsageError(
                "--runtime attached needs the service's endpoint",
                why=f"{ENV_PREFIX}ENDPOINT is not set: this runtime starts nothing, it checks a "
                "service something else started (the Dagger module does)",
                fix=f"export {ENV_PREFIX}ENDPOINT=http://HOST:PORT (and {ENV_PREFIX}GUARD="
                "http://HOST:STATUS_PORT for memory and exit status), or use --runtime docker",
            )
        for name in ("ENDPOINT", "GUARD", "SIDECAR"):
            if get(name):
                _check_url(ENV_PREFIX + name, get(name))
        try:
            seconds = float(get("BUILD_SECONDS") or 0)
        except ValueError:
            seconds = 0.0
        error = get("BUILD_ERROR")
        sources = get("SOURCES")
        return cls(
            endpoint=endpoint.rstrip("/"),
            guard=get("GUARD").rstrip("/") or None,
            sidecar=get("SIDECAR").rstrip("/") or None,
            image=get("IMAGE"),
            build_seconds=seconds,
            build_error=Path(error) if error else None,
            sources=Path(sources) if sources else None,
            python=get("PYTHON"),
        )


def _extract_file(tar: Path, site: Path) -> None:
    with open(tar, "rb") as f:
        _proc.extract_sources(f, site)


def _check_url(name: str, value: str) -> None:
    url = urlsplit(value)
    if url.scheme not in ("http", "https") or not url.hostname or not url.port:
        raise UsageError(
            f"{name}={value!r} is not an http://HOST:PORT URL",
            fix=f"set {name} like http://svc:8080 (scheme, host and port)",
        )


def _exit_of(data: Mapping[str, object]) -> Exit | None:
    """The guard's report → how the service ended (None while it runs)."""
    rc = data.get("exit")
    if not isinstance(rc, int):
        return None
    if data.get("oom"):
        return Exit("oom", 137, str(data.get("detail") or "OOM-killed at the guard's limit"))
    if rc < 0:
        return Exit("signal", -rc, f"killed by signal {-rc}")
    return Exit("exited", rc)


class _Guard:
    """The guard's status port: GET / (verdict), /logs, /imports."""

    def __init__(self, url: str, client: httpx.AsyncClient) -> None:
        self.url = url
        self._client = client

    async def verdict(self) -> dict[str, object] | None:
        """The guard's report, None when it does not answer."""
        try:
            response = await self._client.get(self.url + "/")
            response.raise_for_status()
            data = response.json()
        except (httpx.HTTPError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    async def wait(self, wait_s: float) -> dict[str, object]:
        deadline = time.monotonic() + wait_s
        while True:
            data = await self.verdict()
            if data is not None:
                return data
            if time.monotonic() > deadline:
                raise StageError(
                    f"the memory guard at {self.url} does not answer",
                    why="--runtime attached reads exit status, OOM verdict and peak memory from "
                    f"the guard's status port ({ENV_PREFIX}GUARD)",
                    fix="start the service under the guard with a status port: python3 guard.py "
                    "--limit 1Gi --status-port 8931 --status-host 0.0.0.0 -- CMD (the Dagger "
                    f"module does), or unset {ENV_PREFIX}GUARD to check without it",
                )
            await anyio.sleep(0.1)

    async def logs(self, tail: int) -> str | None:
        try:
            response = await self._client.get(self.url + "/logs", params={"tail": tail})
            response.raise_for_status()
        except httpx.HTTPError:
            return None
        return response.text

    async def imports(self, modules: Sequence[str], timeout_s: float) -> str | None:
        """None when every module imports, else the error text."""
        params: list[tuple[str, str | int | float | bool | None]] = [
            ("module", m) for m in modules
        ]
        params.append(("timeout", f"{timeout_s:g}"))
        try:
            response = await self._client.get(
                self.url + "/imports", params=params, timeout=timeout_s + _HTTP_TIMEOUT_S
            )
            data = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            return f"the guard at {self.url} could not run the import check: {exc}"
        if not isinstance(data, dict):
            return f"the guard at {self.url} answered the import check with {data!r}"
        return None if data.get("ok") else str(data.get("output") or data)


class AttachedRunning:
    """The service something else started, seen through its guard (when there is one)."""

    def __init__(
        self,
        settings: AttachSettings,
        *,
        memory_limit: int,
        sidecar_endpoint: str | None,
        redactor: Redactor,
        client: httpx.AsyncClient,
    ) -> None:
        self.endpoint = settings.endpoint
        self.memory_limit = memory_limit
        self.sidecar_endpoint = sidecar_endpoint
        self.started_at = time.time()
        self.guard_kind = "none"
        self._guard = _Guard(settings.guard, client) if settings.guard else None
        self._client = client
        self._redactor = redactor
        self._final: Exit | None = None
        self._peak: int | None = None
        self._seen = False
        self._closed = False

    def _take(self, data: Mapping[str, object]) -> None:
        self._seen = True
        peak = data.get("peak")
        if isinstance(peak, int):
            self._peak = max(self._peak or 0, peak)
        if self._final is None:
            self._final = _exit_of(data)

    async def attach(self, wait_s: float, on_log: LogFn | None) -> None:
        """Wait for the guard; take its start time, limit and kind."""
        if self._guard is None:
            if on_log is not None:
                on_log(f"runtime: attached to {self.endpoint} without a guard ({ENV_PREFIX}GUARD "
                       "unset): no memory limit check, no exit status, no logs")
            return
        data = await self._guard.wait(wait_s)
        self._take(data)
        self.guard_kind = str(data.get("kind") or "unknown")
        started = data.get("started_at")
        if isinstance(started, int | float):
            self.started_at = float(started)
        limit = data.get("limit")
        if isinstance(limit, int) and limit != self.memory_limit:
            if on_log is not None:
                on_log(f"runtime: the guard enforces {limit} bytes, not the requested "
                       f"{self.memory_limit}: reporting against the guard's limit")
            self.memory_limit = limit

    async def status(self) -> Exit | None:
        if self._final is not None or self._guard is None or self._closed:
            return self._final
        data = await self._guard.verdict()
        if data is None:
            if self._seen:  # it answered before: its container is gone
                self._final = Exit("exited", None, f"the guard at {self._guard.url} stopped "
                                   "answering: the service's container ended")
            return self._final
        self._take(data)
        return self._final

    async def peak_memory(self) -> int | None:
        if self._guard is not None and not self._closed:
            data = await self._guard.verdict()
            if data is not None:
                self._take(data)
        return self._peak

    def memory_usage(self) -> int | None:
        """Memory in use now, as the guard reports it (a short blocking GET: call it from a
        sampling thread)."""
        if self._guard is None or self._closed:
            return None
        try:
            data = httpx.get(self._guard.url + "/", timeout=2.0, trust_env=False).json()
        except (httpx.HTTPError, ValueError):
            return None
        current = data.get("current") if isinstance(data, dict) else None
        return current if isinstance(current, int) else None

    async def logs(self, tail: int = 50) -> str:
        if self._guard is None:
            return ""
        if self._closed:
            return "(logs unavailable: detached)"
        text = await self._guard.logs(tail)
        if text is None:
            return f"(logs unavailable: the guard at {self._guard.url} does not answer)"
        return self._redactor(text)

    async def stop(self) -> None:
        """Detach. The service belongs to whoever started it (Dagger stops its services)."""
        if self._closed:
            return
        with anyio.CancelScope(shield=True):
            await self.status()
            self._closed = True
            await self._client.aclose()


class AttachedRuntime:
    """Checks a service something else built and started (the Dagger module)."""

    name = "attached"

    def __init__(
        self,
        settings: AttachSettings | None = None,
        *,
        redactor: Redactor | None = None,
        on_log: LogFn | None = None,
        wait_s: float = ATTACH_WAIT_S,
    ) -> None:
        self.settings = settings or AttachSettings.from_env()
        self._redactor = redactor or Redactor()
        self._on_log = on_log
        self._wait_s = wait_s

    def _log(self, line: str) -> None:
        if self._on_log is not None:
            self._on_log(line)

    def _client(self) -> httpx.AsyncClient:
        # trust_env=False: a proxy from the environment must not sit between us and the service.
        return httpx.AsyncClient(trust_env=False, timeout=_HTTP_TIMEOUT_S)

    async def build(self, context: Path, dockerfile: str) -> Image:
        del context, dockerfile  # built by whoever started the service
        s = self.settings
        if s.build_error is not None:
            try:
                text = s.build_error.read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                text = f"the build failed (its error file {s.build_error} is unreadable: {exc})"
            text = self._redactor(text.strip())
            step = _STEP.search(text)
            lines = text.splitlines()
            raise BuildFailed(
                lines[0] if lines else "the image build failed",
                step=step.group(1) if step else "",
                log_tail="\n".join(lines[-30:]),
            )
        return Image(ref=s.image or f"attached:{s.endpoint}", build_seconds=s.build_seconds)

    async def dependency_env(self, image: Image, dest: Path) -> DependencyEnv | str:
        s = self.settings
        if s.sources is None or not s.python:
            return (f"the service was started elsewhere (--runtime attached) and "
                    f"{ENV_PREFIX}SOURCES (a tar of its packages) and {ENV_PREFIX}PYTHON are not "
                    "set: its packages are not readable from here")
        try:
            site = _proc.venv_site(dest, s.python)
            await anyio.to_thread.run_sync(_extract_file, s.sources, site)
        except (OSError, tarfile.TarError) as exc:
            return f"the image's packages ({s.sources}) could not be read: {exc}"
        return DependencyEnv(dest, s.python, (site,))

    async def import_check(
        self, image: Image, modules: list[str], timeout_s: float,
        env: Mapping[str, str] | None = None,
    ) -> str | None:
        del image, env  # the guard imports inside the service's container, with its env
        if not modules:
            return None
        if self.settings.guard is None:
            self._log("runtime: no guard to ask, so the imports inside the image are not checked")
            return None
        async with self._client() as client:
            guard = _Guard(self.settings.guard, client)
            await guard.wait(self._wait_s)
            return await guard.imports(modules, timeout_s)

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
        # Port, environment and command were applied by the starter (from `attached plan`).
        del image, port, env, command
        s = self.settings
        sidecar_endpoint: str | None = None
        if sidecar is not None:
            if s.sidecar is None:
                self._log(f"runtime: the fake model server was requested but {ENV_PREFIX}SIDECAR "
                          "is not set")
            else:
                await self._wait_listening(s.sidecar, "the fake model server")
                sidecar_endpoint = s.sidecar
        client = self._client()
        running = AttachedRunning(
            s, memory_limit=memory_limit, sidecar_endpoint=sidecar_endpoint,
            redactor=self._redactor, client=client,
        )
        try:
            await running.attach(self._wait_s, self._on_log)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await client.aclose()
            raise
        return running

    async def _wait_listening(self, url: str, what: str) -> None:
        from flightcheck.runtimes import listening

        deadline = time.monotonic() + self._wait_s
        while not await anyio.to_thread.run_sync(listening, url):
            if time.monotonic() > deadline:
                raise StageError(
                    f"{what} at {url} does not listen",
                    why=f"--runtime attached expects it started already ({ENV_PREFIX}SIDECAR)",
                    fix="start it (python -m flightcheck.fakemodel.server --host 0.0.0.0 --port "
                    f"PORT), or unset {ENV_PREFIX}SIDECAR",
                )
            await anyio.sleep(0.1)

    async def cleanup_stale(self) -> int:
        return 0  # nothing of ours to clean: the starter owns the service
