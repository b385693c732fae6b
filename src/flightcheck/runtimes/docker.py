"""The ``docker`` runtime: a real Docker Engine, driven through the Docker SDK for Python.

Why the SDK and not the ``docker`` CLI: it talks to the Engine API directly, so it does not
matter which client is first on PATH (these machines have two: a v28 client without the buildx
plugin, where ``DOCKER_BUILDKIT=1`` fails, and Debian's 20.10), and failures arrive as typed
errors (``APIError``, ``NotFound``, ...) with the daemon's explanation instead of CLI text to
parse. Builds use the classic builder through the low-level ``APIClient.build``: log lines stream
as they happen (live progress, and the failing ``Step N/M`` is known), the SDK honours
``.dockerignore``, and ``forcerm`` removes the intermediate container of a failed step.

Images are tagged by content — ``flightcheck/<service>:<digest of the build context>[:12]`` —
and every build still goes through the daemon's layer cache (a warm build takes ~0.15 s), so a
changed base image is never missed; ``cached`` says the tag already named the same image.

Containers get a hard memory limit (``mem_limit = memswap_limit``, so swap cannot dodge it),
publish their port on 127.0.0.1 only (random host port, read back), and carry labels: the run id,
the owner process token and host, so :meth:`DockerRuntime.cleanup_stale` removes exactly the
containers of flightcheck processes that died. Peak memory comes from the container's cgroup
(v1 ``memory.max_usage_in_bytes``, v2 ``memory.peak``), sampled every 50 ms so the value survives
the container (its cgroup disappears when it exits).

A sidecar (the fake model server) runs first, as ``python /fc-sidecar.py --host 0.0.0.0 --port P
ARGS...`` from the service's own image with the script bind-mounted read-only; it publishes
both ports, and the service joins its network namespace (``network_mode=container:<id>``), so
the service reaches it at 127.0.0.1:P. The memory limit is the service container's alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import socket
import tarfile
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import docker
import docker.errors
import requests
from anyio.lowlevel import EventLoopToken
from docker.models.containers import Container
from docker.utils.build import exclude_paths

from flightcheck.errors import RuntimeUnavailable, StageError
from flightcheck.runtimes import _proc
from flightcheck.runtimes.base import BuildFailed, DependencyEnv, Exit, Image, Sidecar
from flightcheck.runtimes.guard import Sampler, cgroup_memory_dir, read_peak, read_usage
from flightcheck.secrets import Redactor

LogFn = Callable[[str], None]
T = TypeVar("T")

_STEP = re.compile(r"^Step \d+/\d+ : ")
_TAIL = 30
_SIDECAR_PATH = "/fc-sidecar.py"
_SIDECAR_WAIT_S = 10.0
_API_TIMEOUT_S = 120
_DOCKER_ERRORS = (docker.errors.DockerException, requests.RequestException)


def _unavailable(detail: str) -> RuntimeUnavailable:
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    return RuntimeUnavailable(
        f"the Docker daemon at {host} is not reachable",
        why=detail,
        fix="start it (`sudo systemctl start docker`, or `sudo dockerd &` where there is no "
        "systemd; check DOCKER_HOST), or run without Docker: `flightcheck ci --runtime process`",
        repro="docker info",
    )


def connect(timeout_s: float = 3.0) -> docker.DockerClient:
    """A client for the daemon DOCKER_HOST names; RuntimeUnavailable when it does not answer."""
    try:
        client = docker.from_env(timeout=int(max(1, timeout_s)))
        client.ping()
    except _DOCKER_ERRORS as exc:
        raise _unavailable(str(exc)) from None
    client.api.timeout = _API_TIMEOUT_S  # the ping timeout was only for the handshake
    return client


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("._-")
    return slug or "service"


def _dockerignore(context: Path) -> list[str]:
    """.dockerignore patterns, parsed exactly as the SDK does when it builds the context tar."""
    try:
        text = (context / ".dockerignore").read_text()
    except OSError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip() and line.strip()[0] != "#"]


def context_digest(context: Path, dockerfile: str) -> str:
    """sha256 over the files the build would send (names, exec bits, contents, links)."""
    h = hashlib.sha256(dockerfile.encode() + b"\0")
    h.update((context / dockerfile).read_bytes())  # also when it lives outside the context
    for rel in sorted(exclude_paths(str(context), _dockerignore(context), dockerfile=dockerfile)):
        path = context / rel
        h.update(rel.encode() + b"\0")
        if path.is_symlink():
            h.update(b"L" + os.readlink(path).encode())
        elif path.is_file():
            h.update(b"X" if os.access(path, os.X_OK) else b"F")
            with open(path, "rb") as f:
                for chunk in iter(partial(f.read, 1 << 20), b""):
                    h.update(chunk)
        else:
            h.update(b"D")
    return h.hexdigest()


async def _thread(fn: Callable[[], T]) -> T:
    return await anyio.to_thread.run_sync(fn)


async def _daemon(fn: Callable[[EventLoopToken], T]) -> T:
    """Run a long blocking call (a build, waiting for a container) in a daemon thread.

    On cancellation (Ctrl-C) the thread is abandoned. Unlike anyio's worker threads a daemon
    thread does not hold up interpreter exit, and exiting closes the API connection, which makes
    the daemon cancel the build. ``fn`` gets the loop token to hand log lines back.
    """
    token = anyio.lowlevel.current_token()
    done = anyio.Event()
    box: list[tuple[bool, Any]] = []

    def target() -> None:
        try:
            box.append((True, fn(token)))
        except BaseException as exc:
            box.append((False, exc))
        with contextlib.suppress(RuntimeError):  # the loop is gone after a Ctrl-C
            anyio.from_thread.run_sync(done.set, token=token)

    threading.Thread(target=target, name="flightcheck-docker", daemon=True).start()
    await done.wait()
    ok, value = box[0]
    if ok:
        return value
    raise value


def _emitter(on_log: LogFn | None, token: EventLoopToken) -> Callable[[str], None]:
    """Hands log lines from a daemon thread to ``on_log`` on the event loop."""

    def emit(line: str) -> None:
        if on_log is not None:
            with contextlib.suppress(Exception):  # the loop may be gone after a Ctrl-C
                anyio.from_thread.run_sync(on_log, line, token=token)

    return emit


class DockerRunning:
    """A service container (and its sidecar container, if any) started by DockerRuntime."""

    def __init__(self, runtime: DockerRuntime, memory_limit: int) -> None:
        self.endpoint = ""
        self.memory_limit = memory_limit
        self.sidecar_endpoint: str | None = None
        self.started_at = time.time()
        self.guard_kind = "docker"
        self.container_id = ""
        self._rt = runtime
        self._service: Container | None = None
        self._sidecar: Container | None = None
        self._sampler: Sampler | None = None
        self._cgroup: tuple[int, Path] | None = None
        self._final: Exit | None = None
        self._final_logs: str | None = None
        self._stopped = False
        self._lock = threading.Lock()

    # --- started from a worker thread --------------------------------------------------

    def _start(
        self,
        image: Image,
        *,
        port: int,
        env: Mapping[str, str],
        command: list[str] | None,
        sidecar: Sidecar | None,
    ) -> None:
        rt = self._rt
        service_env = {"PYTHONUNBUFFERED": "1", **env, "PORT": str(port)}
        published: dict[str, tuple[str, int]] = {f"{port}/tcp": ("127.0.0.1", 0)}  # 0: any free port
        limits: dict[str, Any] = {
            "mem_limit": self.memory_limit,
            "memswap_limit": self.memory_limit,
        }
        if sidecar is not None:
            published[f"{sidecar.port}/tcp"] = ("127.0.0.1", 0)
            self._sidecar = rt.client.containers.create(
                image.ref,
                entrypoint=[
                    "python", _SIDECAR_PATH, "--host", "0.0.0.0", "--port", str(sidecar.port),
                    *sidecar.args,
                ],
                ports=published,
                volumes={str(sidecar.script.resolve()): {"bind": _SIDECAR_PATH, "mode": "ro"}},
                labels=rt.labels("sidecar"),
                environment={"PYTHONUNBUFFERED": "1"},
                detach=True,
            )
            self._sidecar.start()
            ports = self._host_ports(self._sidecar)
            side_port = ports.get(f"{sidecar.port}/tcp")
            self.sidecar_endpoint = f"http://127.0.0.1:{side_port}" if side_port else None
            self._wait_sidecar(sidecar, side_port, image.ref)
            network: dict[str, Any] = {"network_mode": f"container:{self._sidecar.id}"}
        else:
            network = {"ports": published}
        self._service = rt.client.containers.create(
            image.ref,
            command=command,
            environment=service_env,
            labels=rt.labels("service"),
            detach=True,
            **limits,
            **network,
        )
        self.container_id = self._service.id or ""
        self.started_at = time.time()
        self._service.start()
        self._watch(self._service)
        host_port = self._host_ports(self._sidecar or self._service).get(f"{port}/tcp")
        self.endpoint = f"http://127.0.0.1:{host_port or 0}"

    def _host_ports(self, container: Container) -> dict[str, int]:
        """Published host ports; empty when the container already exited."""
        for _ in range(50):
            container.reload()
            raw = container.attrs.get("NetworkSettings", {}).get("Ports") or {}
            ports = {
                name: int(b[0]["HostPort"])
                for name, b in raw.items()
                if b and b[0].get("HostPort")
            }
            if ports or not container.attrs["State"]["Running"]:
                return ports
            time.sleep(0.02)
        return {}

    def _wait_sidecar(self, sidecar: Sidecar, host_port: int | None, image: str) -> None:
        assert self._sidecar is not None
        deadline = time.monotonic() + _SIDECAR_WAIT_S
        while host_port is None or not _proc.accepts(host_port):
            self._sidecar.reload()
            if not self._sidecar.attrs["State"]["Running"] or time.monotonic() > deadline:
                logs = self._sidecar.logs(tail=30).decode("utf-8", errors="replace")
                raise StageError(
                    f"the sidecar {sidecar.script.name} did not start listening on port "
                    f"{sidecar.port} in its container\n{self._rt.redact(logs)}",
                    why="it runs as `python /fc-sidecar.py ...` from the service's own image, "
                    "which needs a `python` on PATH",
                    fix=f"run it by hand: docker run --rm -v {sidecar.script}:{_SIDECAR_PATH}:ro "
                    f"--entrypoint python {image} {_SIDECAR_PATH} {' '.join(sidecar.args)}",
                )
            time.sleep(0.05)

    def _watch(self, container: Container) -> None:
        container.reload()
        pid = int(container.attrs["State"].get("Pid") or 0)
        found = cgroup_memory_dir(pid) if pid else None
        self._cgroup = found
        if found is not None:
            version, d = found
            self._sampler = Sampler(lambda: read_peak(version, d))
        else:  # remote daemon or hidden cgroupfs: ask the API, less often
            self._sampler = Sampler(partial(_stats_peak, container), interval=1.0)

    # --- the Running protocol -------------------------------------------------------------

    def _status(self) -> Exit | None:
        if self._final is not None:
            return self._final
        if self._service is None:
            return None
        try:
            self._service.reload()
        except docker.errors.NotFound:
            self._final = Exit("exited", None, "the container was removed outside flightcheck")
            return self._final
        state = self._service.attrs["State"]
        if state.get("Running") or state.get("Status") in ("created", "restarting"):
            return None
        code = int(state.get("ExitCode", -1))
        if state.get("OOMKilled"):
            return Exit("oom", code, "OOMKilled: the kernel killed it at the container's limit")
        detail = f"killed by signal {code - 128}" if code > 128 else ""
        return Exit("exited", code, detail)

    async def status(self) -> Exit | None:
        try:
            return await _thread(self._status)
        except _DOCKER_ERRORS as exc:
            raise _unavailable(str(exc)) from None

    async def peak_memory(self) -> int | None:
        return self._sampler.peak if self._sampler is not None else None

    def memory_usage(self) -> int | None:
        """Memory in use now, from the container's cgroup (thread-safe); None without one."""
        if self._cgroup is None or self._stopped:
            return None
        return read_usage(*self._cgroup)

    def _logs(self, tail: int) -> str:
        if self._final_logs is not None or self._service is None:
            return _proc.tail_lines(self._final_logs or "", tail)
        raw = self._service.logs(stdout=True, stderr=True, tail=tail)
        return self._rt.redact(raw.decode("utf-8", errors="replace"))

    async def logs(self, tail: int = 50) -> str:
        try:
            return await _thread(partial(self._logs, tail))
        except _DOCKER_ERRORS as exc:
            return f"(logs unavailable: {exc})"

    async def sidecar_logs(self, tail: int = 50) -> str:
        side = self._sidecar
        if side is None:
            return ""
        with contextlib.suppress(*_DOCKER_ERRORS):
            raw = await _thread(partial(side.logs, stdout=True, stderr=True, tail=tail))
            return self._rt.redact(raw.decode("utf-8", errors="replace"))
        return ""

    def _stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        if self._service is not None:
            with contextlib.suppress(*_DOCKER_ERRORS):
                self._final = self._status() or Exit("signal", 9, "stopped by flightcheck")
                self._final_logs = self._logs(500)
        if self._sampler is not None:
            self._sampler.sample()
            self._sampler.stop()
        for container in (self._service, self._sidecar):
            if container is not None:
                with contextlib.suppress(*_DOCKER_ERRORS):
                    container.remove(force=True)  # SIGKILL + remove, also when it exited

    async def stop(self) -> None:
        with anyio.CancelScope(shield=True):
            await _thread(self._stop)


def _extract_sources(stream: Iterator[bytes], site: Path) -> None:
    """``docker cp`` of the sources tar arrives wrapped in a tar of its own."""
    with tempfile.TemporaryFile() as buf:
        for chunk in stream:
            buf.write(chunk)
        buf.seek(0)
        with tarfile.open(fileobj=buf) as outer:
            member = outer.next()
            inner = outer.extractfile(member) if member is not None else None
            if inner is None:
                raise tarfile.TarError("empty archive")
            _proc.extract_sources(inner, site)


def _stats_peak(container: Container) -> int | None:
    try:
        stats: dict[str, Any] = container.stats(stream=False, one_shot=True)  # type: ignore[assignment]
    except _DOCKER_ERRORS:
        return None
    mem = stats.get("memory_stats") or {}
    value = mem.get("max_usage") or mem.get("usage")
    return int(value) if value else None


class DockerRuntime:
    """Builds images and runs containers on the Docker daemon DOCKER_HOST names."""

    name = "docker"

    def __init__(
        self,
        *,
        redactor: Redactor | None = None,
        on_log: LogFn | None = None,
        name: str = "service",
        run_id: str | None = None,
        client: docker.DockerClient | None = None,
        ping_timeout_s: float = 3.0,
    ) -> None:
        self.client = client or connect(ping_timeout_s)
        self.run_id = run_id or secrets.token_hex(6)
        self.repository = f"flightcheck/{_slug(name)}"
        self._redactor = redactor or Redactor()
        self._on_log = on_log
        self._owner = _proc.owner_token()
        self._host = socket.gethostname()

    def redact(self, text: str) -> str:
        return self._redactor(text)

    def labels(self, role: str) -> dict[str, str]:
        return {
            "flightcheck": "1",
            "flightcheck.run": self.run_id,
            "flightcheck.owner": self._owner,
            "flightcheck.host": self._host,
            "flightcheck.role": role,
        }

    # --- build ---------------------------------------------------------------------------

    async def build(self, context: Path, dockerfile: str) -> Image:
        on_log = self._on_log
        return await _daemon(lambda token: self._build(context, dockerfile, _emitter(on_log, token)))

    def _build(self, context: Path, dockerfile: str, emit: Callable[[str], None]) -> Image:
        started = time.perf_counter()
        if not context.is_dir():
            raise BuildFailed(f"build context {context} does not exist or is not a directory")
        if not (context / dockerfile).is_file():
            raise BuildFailed(
                f"no Dockerfile: {context / dockerfile} does not exist",
                step=f"set [service].dockerfile (now {dockerfile!r}) or add the file",
            )
        try:
            tag = f"{self.repository}:{context_digest(context, dockerfile)[:12]}"
        except OSError as exc:
            raise BuildFailed(
                f"cannot read the build context {context}: {exc}",
                step="make the file readable or list it in .dockerignore",
            ) from None
        before = self._image_id(tag)
        tail: deque[str] = deque(maxlen=_TAIL)
        step = ""
        image_id = ""
        error = ""
        try:
            stream: Iterator[dict[str, Any]] = self.client.api.build(
                path=str(context), dockerfile=dockerfile, tag=tag,
                rm=True, forcerm=True, decode=True, timeout=3600,
            )
            for line, event in _lines(stream):
                if line is not None:
                    line = self.redact(line)
                    if _STEP.match(line):
                        step = line
                    tail.append(line)
                    emit(line)
                elif "error" in event:
                    error = self.redact(str(event["error"]).strip())
                elif "ID" in (event.get("aux") or {}):
                    image_id = event["aux"]["ID"]
        except docker.errors.APIError as exc:
            explanation = self.redact(str(exc.explanation or exc))
            raise BuildFailed(
                f"docker could not build {context / dockerfile}: {explanation}",
                log_tail="\n".join(tail),
            ) from None
        except _DOCKER_ERRORS as exc:
            raise _unavailable(str(exc)) from None
        if error or not image_id:
            raise BuildFailed(
                f"{step or 'the build'} failed: {error or 'no image was produced'}",
                step=step,
                log_tail="\n".join(tail),
            )
        size = self.client.images.get(image_id).attrs.get("Size")
        return Image(
            ref=tag,
            size_bytes=int(size) if size is not None else None,
            build_seconds=time.perf_counter() - started,
            cached=before == image_id,
            log_tail="\n".join(tail),
            digest=image_id,
        )

    def _image_id(self, ref: str) -> str | None:
        try:
            return self.client.images.get(ref).id
        except docker.errors.ImageNotFound:
            return None

    # --- checks and services ---------------------------------------------------------------

    async def import_check(
        self, image: Image, modules: list[str], timeout_s: float,
        env: Mapping[str, str] | None = None,
    ) -> str | None:
        if not modules:
            return None
        self._redactor.add_env(env or {})
        try:
            container = await _thread(
                partial(
                    self.client.containers.create,
                    image.ref,
                    entrypoint=["python", "-c", _proc.IMPORT_SCRIPT, *modules],
                    environment={"PYTHONDONTWRITEBYTECODE": "1", **(env or {})},
                    network_disabled=True,
                    labels=self.labels("import-check"),
                    detach=True,
                )
            )
        except _DOCKER_ERRORS as exc:
            raise StageError(f"cannot create a container of {image.ref}: {exc}") from None
        try:
            await _thread(container.start)
            try:
                with anyio.fail_after(timeout_s):
                    result = await _daemon(lambda _token: container.wait())
            except TimeoutError:
                return f"importing {', '.join(modules)} did not finish within {timeout_s:g} s"
            if int(result.get("StatusCode", 1)) == 0:
                return None
            raw = await _thread(partial(container.logs, stdout=True, stderr=True))
            return self.redact(raw.decode("utf-8", errors="replace").strip())
        except _DOCKER_ERRORS as exc:
            raise StageError(f"the import check in {image.ref} could not run: {exc}") from None
        finally:
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(*_DOCKER_ERRORS):
                    await _thread(partial(container.remove, force=True))

    async def dependency_env(self, image: Image, dest: Path) -> DependencyEnv | str:
        try:
            return await _thread(partial(self._dependency_env, image, dest))
        except _DOCKER_ERRORS as exc:
            return f"the image's packages could not be read: {self.redact(str(exc))}"

    def _dependency_env(self, image: Image, dest: Path) -> DependencyEnv | str:
        container = self.client.containers.create(
            image.ref, entrypoint=["python", "-c", _proc.SITES_SCRIPT, _proc.SOURCES_TAR],
            network_disabled=True, labels=self.labels("dependencies"), detach=True)
        try:
            container.start()
            status = int(container.wait(timeout=120).get("StatusCode", 1))
            out = container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
            if status != 0:
                return (f"`python` in the image exited {status} when asked for its packages "
                        f"(it writes {_proc.SOURCES_TAR})")
            version = str(json.loads(out.strip().splitlines()[-1])["version"])
            site = _proc.venv_site(dest, version)
            stream, _ = container.get_archive(_proc.SOURCES_TAR)
            try:
                _extract_sources(stream, site)
            except requests.RequestException:
                raise
            except OSError as exc:  # writing them out: a full disk
                return (f"the image's packages could not be written to {dest.parent} "
                        f"({exc.strerror or type(exc).__name__})")
        except (ValueError, KeyError, IndexError, tarfile.TarError,
                requests.exceptions.ReadTimeout) as exc:
            return f"the image's packages could not be read ({type(exc).__name__})"
        finally:
            with contextlib.suppress(*_DOCKER_ERRORS):
                container.remove(force=True)
        return DependencyEnv(dest, version, (site,))

    async def start(
        self,
        image: Image,
        *,
        port: int,
        env: Mapping[str, str],
        memory_limit: int,
        command: list[str] | None = None,
        sidecar: Sidecar | None = None,
    ) -> DockerRunning:
        self._redactor.add_env(env)  # credential-named values never reach the logs we show
        running = DockerRunning(self, memory_limit)
        try:
            await _thread(
                partial(running._start, image, port=port, env=env, command=command, sidecar=sidecar)
            )
        except BaseException as exc:
            await running.stop()  # shielded: runs on Ctrl-C too
            if isinstance(exc, docker.errors.APIError):
                raise StageError(
                    f"docker could not start {image.ref}: {self.redact(str(exc.explanation))}"
                ) from None
            if isinstance(exc, _DOCKER_ERRORS):
                raise _unavailable(str(exc)) from None
            raise
        return running

    async def cleanup_stale(self) -> int:
        try:
            return await _thread(self._cleanup_stale)
        except _DOCKER_ERRORS as exc:
            raise _unavailable(str(exc)) from None

    def _cleanup_stale(self) -> int:
        removed = 0
        # ignore_removed: another run on this host may remove a leftover between list and
        # inspect; that is not an unreachable daemon.
        for container in self.client.containers.list(
            all=True, filters={"label": "flightcheck=1"}, ignore_removed=True
        ):
            labels = container.labels
            if labels.get("flightcheck.host") != self._host:
                continue  # another machine's run on a shared daemon: its owner is not ours to judge
            if _proc.owner_alive(labels.get("flightcheck.owner", "")):
                continue
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
                removed += 1
        return removed


def _lines(stream: Iterator[dict[str, Any]]) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """Build events as (complete log line, event) — the classic builder splits lines across
    events (``Step 1/4 : FROM x`` then ``\\n``) — or (None, event) for non-text events."""
    buf = ""
    for event in stream:
        text = event.get("stream")
        if text is None and "status" in event:  # pulling a base image
            text = f"{event['status']} {event.get('progress', '')}".rstrip() + "\n"
        if text is None:
            yield None, event
            continue
        buf += text
        while "\n" in buf:
            line, buf = buf.split("\n", 1)
            if line.strip():
                yield line.rstrip(), event
    if buf.strip():
        yield buf.rstrip(), {}
