"""The ``process`` runtime: the service as a host subprocess — the fast dev loop, no container.

There is no image: :meth:`ProcessRuntime.build` checks the source tree and hands it on. The
service runs in its own session (so ``stop`` kills the whole tree by process group), under a
:mod:`~flightcheck.runtimes.guard` that enforces the memory ceiling and records the peak, and
on a free port on 127.0.0.1 that it receives as ``$PORT`` (runs never collide; the port used is
in ``Running.endpoint``). stdout+stderr go to a temp file that ``logs()`` tails.

The environment is built like a container's: only what the service is given plus a few host
basics (PATH, HOME, locale, CA bundle), so a key in the developer's shell does not silently
reach the service and runs behave the same on every runtime. ``python``/``python3`` at the
head of the command means flightcheck's own interpreter (the venv it was installed into).

A sidecar runs as ``python SCRIPT --host 127.0.0.1 --port P ARGS...`` on the host; its port is
fixed (the service is configured with it), so a busy port is reported, not worked around.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path

import anyio

from flightcheck.errors import StageError
from flightcheck.runtimes import _proc
from flightcheck.runtimes.base import BuildFailed, DependencyEnv, Exit, Image, Sidecar
from flightcheck.runtimes.guard import (
    GuardMode,
    MemoryGuard,
    create_guard,
    launch_argv,
    remove_cgroup,
    remove_stale_cgroups,
)
from flightcheck.secrets import Redactor

LogFn = Callable[[str], None]

_INHERITED = (
    "PATH", "HOME", "USER", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "VIRTUAL_ENV",
)
_SIDECAR_WAIT_S = 10.0


def _state_dir() -> Path:
    """Where started processes are recorded, so a crashed run's leftovers can be found."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    d = Path(base) / f"flightcheck-{os.getuid()}"
    d.mkdir(mode=0o700, exist_ok=True)
    return d


def _interpreter(argv: Sequence[str]) -> list[str]:
    head, *rest = argv
    return [sys.executable, *rest] if head in ("python", "python3") else [head, *rest]


def service_python(argv: Sequence[str], *, cwd: Path, path: str | None = None) -> str:
    """The interpreter the service's command runs on: flightcheck's for ``python``/``python3``
    (the convention above), the named one for a path to a python, the shebang's for a console
    script (``uvicorn``, ``.venv/bin/gunicorn``); flightcheck's own when it cannot tell."""
    if not argv or argv[0] in ("python", "python3"):
        return sys.executable
    head = argv[0]
    found = str(cwd / head) if "/" in head else shutil.which(head, path=path)
    if found is None or not Path(found).is_file():
        return sys.executable
    if Path(found).name.startswith("python"):
        return found
    try:
        with open(found, "rb") as f:
            first = f.readline(512).decode("utf-8", "replace").strip()
    except OSError:
        return sys.executable
    if not first.startswith("#!"):
        return sys.executable
    words = first[2:].split()
    if words and Path(words[0]).name == "env" and len(words) > 1:
        words = [shutil.which(words[1], path=path) or "", *words[2:]]
    if words and words[0] and Path(words[0]).name.startswith("python"):
        return words[0]
    return sys.executable


def _exit_of(returncode: int) -> Exit:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return Exit("signal", -returncode, f"killed by {name}")
    return Exit("exited", returncode)


class _Child:
    """One spawned process group with its log file and state record."""

    def __init__(
        self, argv: list[str], *, cwd: Path, env: Mapping[str, str], guard: MemoryGuard | None
    ) -> None:
        fd, log = tempfile.mkstemp(prefix="flightcheck-", suffix=".log")
        self.log = Path(log)
        self.guard = guard
        try:
            # Popen from the event-loop thread: the launcher's death signal is tied to the
            # thread that forked it.
            self.proc = subprocess.Popen(
                launch_argv(argv, guard.procs_file if guard else None),
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            self.log.unlink(missing_ok=True)
            raise StageError(
                f"cannot start {argv[0]!r} in {cwd}: {exc.strerror}",
                fix="check [service].command and [service].source in flightcheck.toml",
            ) from None
        finally:
            os.close(fd)
        if guard is not None:
            guard.watch(self.proc.pid, self.proc.pid)
        self.state = _state_dir() / f"{self.proc.pid}.json"
        self.state.write_text(
            json.dumps(
                {
                    "owner": _proc.owner_token(),
                    "pgid": self.proc.pid,
                    "started": _proc.start_time(self.proc.pid),
                    "cgroup": str(guard.cgroup or "") if guard else "",
                    "log": str(self.log),
                }
            )
        )
        self._final_log = ""
        self.stopped = False

    def poll(self) -> int | None:
        return self.proc.poll()

    def logs(self, tail: int) -> str:
        if self.stopped:
            return _proc.tail_lines(self._final_log, tail)
        return _proc.tail_file(self.log, tail)

    async def stop(self, grace_s: float) -> None:
        if self.stopped:
            return
        if self.proc.poll() is None:
            _proc.kill_group(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                await anyio.to_thread.run_sync(self.proc.wait, grace_s)
        # The leader may be gone while children it forked still hold the group.
        _proc.kill_group(self.proc.pid, signal.SIGKILL)
        await anyio.to_thread.run_sync(self.proc.wait)
        if self.guard is not None:
            self.guard.close()
        self._final_log = _proc.tail_file(self.log, 500)
        self.stopped = True
        self.log.unlink(missing_ok=True)
        self.state.unlink(missing_ok=True)


class ProcessRunning:
    """A service started by :class:`ProcessRuntime`."""

    def __init__(
        self,
        child: _Child,
        guard: MemoryGuard,
        *,
        port: int,
        memory_limit: int,
        sidecar: _Child | None,
        sidecar_port: int | None,
        redactor: Redactor,
        grace_s: float,
    ) -> None:
        self.endpoint = f"http://127.0.0.1:{port}"
        self.port = port
        self.memory_limit = memory_limit
        self.sidecar_endpoint = f"http://127.0.0.1:{sidecar_port}" if sidecar_port else None
        self.guard_kind = guard.kind
        self.cgroup = guard.cgroup
        self.started_at = time.time()
        self._child = child
        self._guard = guard
        self._sidecar = sidecar
        self._redactor = redactor
        self._grace_s = grace_s
        self._final: Exit | None = None
        self._stopped = False

    @property
    def pid(self) -> int:
        return self._child.proc.pid

    async def status(self) -> Exit | None:
        if self._final is not None:
            return self._final
        rc = self._child.poll()
        if rc is None:
            return None
        if self._guard.oom_killed():
            self._final = Exit("oom", 137, self._guard.oom_detail())
        else:
            self._final = _exit_of(rc)
        return self._final

    async def peak_memory(self) -> int | None:
        return self._guard.peak()

    def memory_usage(self) -> int | None:
        """Memory in use now (thread-safe, cheap: a cgroup file or /proc)."""
        return None if self._final is not None else self._guard.current()

    async def logs(self, tail: int = 50) -> str:
        return self._redactor(self._child.logs(tail))

    async def sidecar_logs(self, tail: int = 50) -> str:
        return self._redactor(self._sidecar.logs(tail)) if self._sidecar else ""

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        with anyio.CancelScope(shield=True):
            alive = self._child.poll() is None
            await self.status()
            await self._child.stop(self._grace_s)
            if alive and self._final is None:
                self._final = Exit("signal", int(signal.SIGTERM), "stopped by flightcheck")
            if self._sidecar is not None:
                await self._sidecar.stop(self._grace_s)


class ProcessRuntime:
    """Runs the service as a host subprocess under a memory guard."""

    name = "process"

    def __init__(
        self,
        *,
        redactor: Redactor | None = None,
        on_log: LogFn | None = None,
        command: Sequence[str] | None = None,
        pythonpath: Sequence[Path] = (),
        guard: GuardMode = "auto",
        grace_s: float = 3.0,
    ) -> None:
        self._redactor = redactor or Redactor()
        self._on_log = on_log
        self._command = list(command) if command else None
        self._pythonpath = list(pythonpath)
        self._guard_mode: GuardMode = guard
        self._grace_s = grace_s

    async def build(self, context: Path, dockerfile: str) -> Image:
        del dockerfile  # no image: the source tree is what runs
        started = time.perf_counter()
        source = _source_dir(context)
        return Image(ref=str(source), build_seconds=time.perf_counter() - started)

    def _env(self, source: Path, env: Mapping[str, str]) -> dict[str, str]:
        out = {k: os.environ[k] for k in _INHERITED if k in os.environ}
        out["PYTHONUNBUFFERED"] = "1"
        # No __pycache__ in the service's source: it would change the next image's context
        # digest (and force a full rebuild) just because the process runtime ran.
        out["PYTHONDONTWRITEBYTECODE"] = "1"
        out.update(env)
        paths = [str(p if p.is_absolute() else source / p) for p in self._pythonpath]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        if paths:
            out["PYTHONPATH"] = os.pathsep.join(paths)
        return out

    async def dependency_env(self, image: Image, dest: Path) -> DependencyEnv | str:
        source = Path(image.ref)
        env = self._env(source, {})
        python = service_python(self._command or [], cwd=source, path=env.get("PATH"))
        try:
            with anyio.fail_after(60):
                done = await anyio.run_process([python, "-c", _proc.SITES_SCRIPT], cwd=source,
                                               env=env, check=False)
            found = json.loads(done.stdout.decode("utf-8", "replace").strip().splitlines()[-1])
            sites = tuple(Path(p) for p in found["sites"])  # a missing one matches no file
            return DependencyEnv(Path(python), str(found["version"]), sites)
        except (TimeoutError, OSError, ValueError, KeyError, IndexError) as exc:
            return f"{python} could not list its site-packages ({type(exc).__name__})"

    async def import_check(
        self, image: Image, modules: list[str], timeout_s: float,
        env: Mapping[str, str] | None = None,
    ) -> str | None:
        if not modules:
            return None
        source = Path(image.ref)
        self._redactor.add_env(env or {})
        child_env = self._env(source, env or {})
        python = service_python(self._command or [], cwd=source, path=child_env.get("PATH"))
        argv = [python, "-c", _proc.IMPORT_SCRIPT, *modules]
        try:
            with anyio.fail_after(timeout_s):
                done = await anyio.run_process(
                    argv,
                    cwd=source,
                    env=child_env,
                    check=False,
                    stderr=subprocess.STDOUT,
                )
        except TimeoutError:
            return f"importing {', '.join(modules)} did not finish within {timeout_s:g} s"
        if done.returncode == 0:
            return None
        return self._redactor(done.stdout.decode("utf-8", errors="replace").strip())

    async def start(
        self,
        image: Image,
        *,
        port: int,
        env: Mapping[str, str],
        memory_limit: int,
        command: list[str] | None = None,
        sidecar: Sidecar | None = None,
    ) -> ProcessRunning:
        del port  # the configured port is for containers; a host process gets a free one
        argv = command or self._command
        if not argv:
            raise StageError(
                "the process runtime needs a command to start the service",
                fix="set [service].command in flightcheck.toml, e.g. "
                '["python", "-m", "yourservice"]',
            )
        source = Path(image.ref)
        self._redactor.add_env(env)  # credential-named values never reach the logs we show
        side: _Child | None = None
        guard: MemoryGuard | None = None
        try:
            if sidecar is not None:
                side = await self._start_sidecar(sidecar)
            # in a thread: it blocks (stale-cgroup cleanup, bounded at 3 s; cgroup writes). Not
            # abandoned on cancel, so the guard it makes is always handed back and closed on
            # every path, never left behind with its cgroup.
            guard = await anyio.to_thread.run_sync(
                partial(create_guard, memory_limit, mode=self._guard_mode))
            listen = _proc.free_port()
            service_env = self._env(source, {**env, "PORT": str(listen), "HOST": "127.0.0.1"})
            child = _Child(_interpreter(argv), cwd=source, env=service_env, guard=guard)
        except BaseException:
            with anyio.CancelScope(shield=True):
                if side is not None:
                    await side.stop(0)
                if guard is not None:
                    guard.close()
            raise
        return ProcessRunning(
            child,
            guard,
            port=listen,
            memory_limit=memory_limit,
            sidecar=side,
            sidecar_port=sidecar.port if sidecar else None,
            redactor=self._redactor,
            grace_s=self._grace_s,
        )

    async def _start_sidecar(self, sidecar: Sidecar) -> _Child:
        if _proc.port_busy(sidecar.port):
            raise StageError(
                f"port {sidecar.port} on 127.0.0.1 is already in use, so the sidecar "
                f"({sidecar.script.name}) cannot listen there",
                why="the process runtime runs the sidecar on the host, at its fixed port",
                fix=f"stop what listens there (`ss -ltnp 'sport = :{sidecar.port}'`), "
                "or use --runtime docker where every run has its own network",
            )
        env = {k: os.environ[k] for k in _INHERITED if k in os.environ}
        env["PYTHONUNBUFFERED"] = "1"
        script = sidecar.script.resolve()
        argv = [sys.executable, str(script), "--host", "127.0.0.1", "--port", str(sidecar.port)]
        side = _Child([*argv, *sidecar.args], cwd=script.parent, env=env, guard=None)
        deadline = time.monotonic() + _SIDECAR_WAIT_S
        while not _proc.accepts(sidecar.port):
            if side.poll() is not None or time.monotonic() > deadline:
                logs = self._redactor(side.logs(30))
                await side.stop(0)
                raise StageError(
                    f"the sidecar {sidecar.script.name} did not start listening on "
                    f"127.0.0.1:{sidecar.port}\n{logs}",
                    fix=f"run it by hand: {sys.executable} {sidecar.script} "
                    + " ".join(sidecar.args),
                )
            await anyio.sleep(0.05)
        return side

    async def cleanup_stale(self) -> int:
        return await anyio.to_thread.run_sync(_cleanup_stale)


def _source_dir(context: Path) -> Path:
    if not context.is_dir():
        raise BuildFailed(
            f"source directory {context} does not exist",
            step="check [service].source in flightcheck.toml",
        )
    return context.resolve()


def _cleanup_stale() -> int:
    """Kill process groups and remove cgroups recorded by flightcheck runs that are gone."""
    removed = 0
    for record in _state_dir().glob("*.json"):
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            record.unlink(missing_ok=True)
            continue
        if _proc.owner_alive(str(data.get("owner", ""))):
            continue
        pgid = int(data.get("pgid", 0))
        leader = _proc.start_time(pgid) if pgid else None
        # A live leader with another start time is a new process that reused the pid.
        if pgid and (leader is None or leader == data.get("started")):
            _proc.kill_group(pgid)
        if data.get("cgroup"):
            remove_cgroup(Path(data["cgroup"]))
        if data.get("log"):
            Path(data["log"]).unlink(missing_ok=True)
        record.unlink(missing_ok=True)
        removed += 1
    return removed + remove_stale_cgroups()

