"""A hard memory ceiling and peak measurement for a service that is not a container.

The process runtime runs the service as a host subprocess; this guard gives it what
``docker run --memory`` gives a container. Mechanisms, best first:

- **cgroup v1** (these machines): a child memory cgroup with ``memory.limit_in_bytes`` (and
  ``memory.memsw.limit_in_bytes``, so swap cannot dodge the limit). The kernel OOM-kills at the
  limit, ``memory.max_usage_in_bytes`` is the exact peak, ``memory.oom_control`` counts kills.
- **cgroup v2**: ``memory.max`` (+ ``memory.swap.max`` 0, ``memory.oom.group`` 1 so an OOM kills
  the whole service like a container), ``memory.peak``, ``memory.events`` ``oom_kill``.
- **RSS watchdog** when no cgroup is writable: the resident memory of the whole process tree is
  polled every 50 ms and the group is SIGKILLed at the limit. An approximation: shared pages
  count once per process, an allocation spike shorter than the poll interval can overshoot.

The cgroup is created inside flightcheck's own cgroup when that is writable (the service then
stays within whatever limits flightcheck itself runs under), else at the hierarchy root. Its
name carries the owner token and pid namespace so :func:`remove_stale_cgroups` can clean up
after a crashed run (and leaves alone what a guard in a container made).

The service joins the cgroup *before* it allocates: it is started through :func:`launch_argv`,
a tiny launcher that writes its own pid to ``cgroup.procs`` and then execs the service.

``python -m flightcheck.runtimes.guard --limit 512Mi [--report FILE] -- CMD...`` runs CMD under
the guard and exits with its status (137 on OOM); the report (JSON: kind, limit, peak, oom) is
rewritten every second — the in-container guard of runtimes without a memory limit of their own.

With ``--status-port N`` the guard also serves that report over HTTP (``GET /``; ``GET
/logs?tail=N``: the command's last output lines, which the guard then tees; ``GET
/imports?module=M``: imports M with the command's interpreter and user), and stays up after the
command ended (``--linger`` seconds, or until SIGTERM) so a checker in another container can read
the verdict: the Dagger module runs the service this way. ``--user`` runs the command as that
user while the guard stays root (a cgroup needs root to create). The file runs without
flightcheck installed: ``python3 guard.py ...`` beside a copy of ``_proc.py`` (stdlib only).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Literal
from urllib.parse import parse_qs, urlsplit

try:
    from flightcheck.runtimes import _proc
except ImportError:  # a standalone copy beside _proc.py, in an image without flightcheck
    import _proc  # pyright: ignore[reportMissingImports]

GuardKind = Literal["cgroup-v1", "cgroup-v2", "rss"]
GuardMode = Literal["auto", "cgroup", "rss"]

POLL_S = 0.05
_PREFIX = "flightcheck-"

# Joins the cgroup (argv[1], may be empty), dies with flightcheck (PR_SET_PDEATHSIG=1, SIGKILL),
# then becomes the service. The pid stays the same, so nothing runs outside the cgroup.
_LAUNCHER = """\
import ctypes, os, sys
procs, parent, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
user = os.environ.pop("FLIGHTCHECK_GUARD_USER", "")
if procs:
    with open(procs, "w") as f:
        f.write(str(os.getpid()))
if user and os.getuid() == 0:  # joined the cgroup as root; now become the service's user
    import grp, pwd
    name, _, group = user.partition(":")
    try:
        pw = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        pw = None
    try:
        uid = pw.pw_uid if pw else int(name)
        gid = (int(group) if group.isdigit() else grp.getgrnam(group).gr_gid) if group else (
            pw.pw_gid if pw else uid)
        if pw and not group:
            os.initgroups(pw.pw_name, gid)
        else:
            os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    except (KeyError, ValueError, OSError) as exc:
        print(f"flightcheck: cannot run as user {user!r}: {exc}", file=sys.stderr, flush=True)
        os._exit(126)
    if pw:
        os.environ["HOME"] = pw.pw_dir
try:
    ctypes.CDLL(None).prctl(1, 9)
except Exception:
    pass
if os.getppid() != parent:
    os._exit(137)
try:
    os.execvp(argv[0], argv)
except OSError as exc:
    print(f"flightcheck: cannot execute {argv[0]!r}: {exc.strerror}", file=sys.stderr, flush=True)
    os._exit(127)
"""


def launch_argv(argv: list[str], procs: Path | None) -> list[str]:
    """``argv`` wrapped in the launcher. Spawn it from a long-lived thread: the death signal
    fires when the thread that forked it ends."""
    return [sys.executable, "-c", _LAUNCHER, str(procs or ""), str(os.getpid()), *argv]


# --- cgroup discovery ------------------------------------------------------------------------


def _mounts() -> list[tuple[str, Path, str, list[str]]]:
    """(root inside the hierarchy, mount point, fs type, super options) of cgroup mounts. Of
    several mounts on one mount point only the last is visible (a writable cgroupfs mounted
    over a container's read-only one): that one counts."""
    out: dict[Path, tuple[str, Path, str, list[str]]] = {}
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        fields, tail = pre.split(), post.split()
        if len(fields) >= 5 and len(tail) >= 3:
            point = Path(fields[4])
            out.pop(point, None)  # shadowed, whatever it was
            if tail[0] in ("cgroup", "cgroup2"):
                out[point] = (fields[3], point, tail[0], tail[2].split(","))
    return list(out.values())


def _memory_hierarchy() -> tuple[int, str, Path] | None:
    """(version, root inside the hierarchy, mount point) of the memory controller."""
    mounts = _mounts()
    for root, point, fstype, opts in mounts:
        if fstype == "cgroup" and "memory" in opts:
            return 1, root, point
    for root, point, fstype, _ in mounts:
        if fstype == "cgroup2":
            with contextlib.suppress(OSError):
                if "memory" in (point / "cgroup.controllers").read_text().split():
                    return 2, root, point
    return None


def _cgroup_path(pid: int | str, version: int) -> str | None:
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        if (version == 1 and "memory" in controllers.split(",")) or (
            version == 2 and controllers == ""
        ):
            return path
    return None


def _host_dir(path: str, root: str, point: Path) -> Path | None:
    if root != "/" and not path.startswith(root):
        return None
    rel = path[len(root) :] if root != "/" else path
    return point / rel.lstrip("/")


def cgroup_memory_dir(pid: int) -> tuple[int, Path] | None:
    """(cgroup version, directory) of ``pid``'s memory cgroup, if this host can see it."""
    found = _memory_hierarchy()
    if found is None:
        return None
    version, root, point = found
    path = _cgroup_path(pid, version)
    d = _host_dir(path, root, point) if path else None
    return (version, d) if d is not None and d.is_dir() else None


def read_peak(version: int, d: Path) -> int | None:
    """The cgroup's peak (v1 max_usage, v2 memory.peak, else memory.current); None if gone."""
    names = (
        ("memory.max_usage_in_bytes",) if version == 1 else ("memory.peak", "memory.current")
    )
    for name in names:
        with contextlib.suppress(OSError, ValueError):
            return int((d / name).read_text().split()[0])
    return None


def read_usage(version: int, d: Path) -> int | None:
    """The cgroup's memory use now (v1 usage_in_bytes, v2 memory.current); None if gone."""
    name = "memory.usage_in_bytes" if version == 1 else "memory.current"
    with contextlib.suppress(OSError, ValueError):
        return int((d / name).read_text().split()[0])
    return None


def _parents() -> tuple[int, list[Path]] | None:
    """Where a guard cgroup may be created: inside our own cgroup, then at the root."""
    found = _memory_hierarchy()
    if found is None:
        return None
    version, root, point = found
    own = _cgroup_path("self", version)
    mine = _host_dir(own, root, point) if own else None
    dirs = [d for d in (mine, point) if d is not None]
    return version, list(dict.fromkeys(dirs))


def _write(path: Path, value: str | int) -> None:
    with open(path, "w") as f:
        f.write(str(value))


def _counter(path: Path, key: str) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    return 0


def remove_cgroup(d: Path, timeout_s: float = 3.0) -> bool:
    """SIGKILL every task in cgroup ``d`` and remove it. True when it is gone (or never was)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            pids = [int(p) for p in (d / "cgroup.procs").read_text().split()]
        except OSError:
            pids = []
        _proc.kill_pids(pids)
        try:
            d.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)


def _pid_namespace() -> str:
    """This process's pid namespace: an owner token (pid and start time) only means something
    inside the namespace it was taken in."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "0"


def cgroup_name() -> str:
    """``flightcheck-<pid>.<start>-<random>-ns<pid namespace>`` (the owner, and where it lives)."""
    return f"{_PREFIX}{_proc.owner_token()}-{secrets.token_hex(4)}-ns{_pid_namespace()}"


def remove_stale_cgroups() -> int:
    """Remove guard cgroups whose owning flightcheck process is gone; returns how many.

    A guard in a container (the Dagger module's, with a writable cgroupfs) may create its cgroup
    where host processes see it; its owner's pid means nothing here, so a cgroup from another
    pid namespace is never taken for stale (that killed the service under it)."""
    found = _parents()
    if found is None:
        return 0
    here = _pid_namespace()
    removed = 0
    for parent in found[1]:
        with contextlib.suppress(OSError):
            for d in parent.iterdir():
                if not d.name.startswith(_PREFIX) or not d.is_dir():
                    continue
                rest = d.name[len(_PREFIX) :]
                owner = rest.split("-")[0]
                namespace = rest.rpartition("-ns")[2] if "-ns" in rest else here
                if namespace != here:
                    continue
                if not _proc.owner_alive(owner) and remove_cgroup(d):
                    removed += 1
    return removed


# --- sampling ------------------------------------------------------------------------------


class Sampler:
    """A daemon thread that polls ``read`` and keeps the maximum, so a peak survives the
    process (and its cgroup). ``read`` returning None means "gone": the thread ends."""

    def __init__(
        self,
        read: Callable[[], int | None],
        *,
        interval: float = POLL_S,
        on_value: Callable[[int], None] | None = None,
    ) -> None:
        self.peak: int | None = None
        self._read = read
        self._interval = interval
        self._on_value = on_value
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="flightcheck-sampler", daemon=True)
        self._thread.start()

    def sample(self) -> int | None:
        value = self._read()
        if value is not None:
            self.peak = value if self.peak is None else max(self.peak, value)
            if self._on_value is not None:
                self._on_value(value)
        return value

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self.sample() is None:
                return
            self._stop.wait(self._interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2)


# --- guards --------------------------------------------------------------------------------


class MemoryGuard:
    """Enforces ``limit`` bytes on one service and records its peak."""

    kind: GuardKind
    limit: int
    cgroup: Path | None = None  # the guard's own cgroup, when it has one
    procs_file: Path | None = None  # the service's launcher writes its pid here

    def watch(self, pid: int, pgid: int) -> None:
        """Start watching the spawned service (``pid`` leads process group ``pgid``)."""
        raise NotImplementedError

    def peak(self) -> int | None:
        raise NotImplementedError

    def current(self) -> int | None:
        """Memory in use now (for the report's memory-over-time chart); None if unknown."""
        return None

    def oom_killed(self) -> bool:
        raise NotImplementedError

    def oom_detail(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        """Kill whatever is left, remove the cgroup; idempotent."""
        raise NotImplementedError


class _CgroupGuard(MemoryGuard):
    def __init__(self, version: int, d: Path, limit: int) -> None:
        self.kind = "cgroup-v1" if version == 1 else "cgroup-v2"
        self.version = version
        self.cgroup = self._dir = d
        self.limit = limit
        self.procs_file = d / "cgroup.procs"
        self._peak: int | None = None
        self._oom = 0
        self._closed = False
        # Kernels before 5.19 have no memory.peak on v2: sample memory.current instead.
        self._sampler: Sampler | None = None

    def watch(self, pid: int, pgid: int) -> None:
        del pid, pgid
        if self.version == 2 and not (self._dir / "memory.peak").exists():
            self._sampler = Sampler(lambda: read_peak(2, self._dir))

    def _refresh(self) -> None:
        if self._closed:
            return
        peak = read_peak(self.version, self._dir)
        if self._sampler is not None and self._sampler.peak is not None:
            peak = max(peak or 0, self._sampler.peak)
        if peak is not None:
            self._peak = max(self._peak or 0, peak)
        if self.version == 1:
            kills = _counter(self._dir / "memory.oom_control", "oom_kill")
        else:
            kills = _counter(self._dir / "memory.events", "oom_kill")
        self._oom = max(self._oom, kills)

    def peak(self) -> int | None:
        self._refresh()
        return self._peak

    def current(self) -> int | None:
        return None if self._closed else read_usage(self.version, self._dir)

    def oom_killed(self) -> bool:
        self._refresh()
        return self._oom > 0

    def oom_detail(self) -> str:
        return f"OOM-killed by the kernel at the {self.kind} memory limit ({self._oom} kill(s))"

    def close(self) -> None:
        if self._closed:
            return
        self._refresh()
        self._closed = True
        if self._sampler is not None:
            self._sampler.stop()
        remove_cgroup(self._dir)


class _RssGuard(MemoryGuard):
    kind: GuardKind = "rss"

    def __init__(self, limit: int, reason: str) -> None:
        self.limit = limit
        self.reason = reason  # why not a cgroup
        self._sampler: Sampler | None = None
        self._root = 0
        self._pgid = 0
        self._oom_at: int | None = None

    def watch(self, pid: int, pgid: int) -> None:
        self._root, self._pgid = pid, pgid
        self._sampler = Sampler(self._read, on_value=self._check)

    def _read(self) -> int | None:
        pids = _proc.process_tree(self._root, self._pgid)
        return _proc.rss_bytes(pids) if pids else None

    def _check(self, rss: int) -> None:
        if rss >= self.limit and self._oom_at is None:
            self._oom_at = rss
            _proc.kill_group(self._pgid)
            _proc.kill_pids(_proc.process_tree(self._root, self._pgid))

    def peak(self) -> int | None:
        return self._sampler.peak if self._sampler else None

    def current(self) -> int | None:
        return self._read() if self._root else None

    def oom_killed(self) -> bool:
        return self._oom_at is not None

    def oom_detail(self) -> str:
        return (
            f"killed by the RSS watchdog: the process tree's resident memory reached "
            f"{self._oom_at} bytes (limit {self.limit}); RSS watchdog because {self.reason}"
        )

    def close(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()


def create_guard(limit: int, *, mode: GuardMode = "auto") -> MemoryGuard:
    """The best guard this host allows: a cgroup (v1 or v2), else the RSS watchdog.

    ``mode="cgroup"`` raises OSError when no cgroup is writable; ``"rss"`` forces the watchdog.
    """
    if mode == "rss":
        return _RssGuard(limit, "it was requested")
    found = _parents()
    problem = "no cgroup memory controller is mounted"
    if found is not None:
        version, parents = found
        name = cgroup_name()
        for parent in parents:
            d = parent / name
            try:
                d.mkdir()
            except OSError as exc:
                problem = f"cannot create {d}: {exc.strerror}"
                continue
            try:
                _configure(version, d, limit)
            except OSError as exc:
                problem = f"cannot set the limit in {d}: {exc.strerror}"
                remove_cgroup(d)
                continue
            return _CgroupGuard(version, d, limit)
    if mode == "cgroup":
        raise OSError(problem)
    return _RssGuard(limit, problem)


def _configure(version: int, d: Path, limit: int) -> None:
    if version == 1:
        _write(d / "memory.limit_in_bytes", limit)
        if (d / "memory.memsw.limit_in_bytes").exists():
            _write(d / "memory.memsw.limit_in_bytes", limit)
        return
    if not (d / "memory.max").exists():  # memory not delegated to this subtree
        raise OSError(0, "the memory controller is not enabled here")
    _write(d / "memory.max", limit)
    for name, value in (("memory.swap.max", 0), ("memory.oom.group", 1)):
        if (d / name).exists():
            _write(d / name, value)


# --- command line: the in-container guard ----------------------------------------------------

LINGER_S = 600.0  # with --status-port: how long the verdict stays readable after the command ended
LOG_LINES = 2000  # with --status-port: output lines kept for GET /logs
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def _parse_limit(text: str) -> int:
    """``--limit``: flightcheck's quantity grammar (512Mi, 1Gi, 1G), also without flightcheck."""
    try:
        from flightcheck.config import parse_memory
    except ImportError:  # standalone: the same grammar, without pydantic
        m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|K|M|G)", text.strip())
        if not m:
            raise ValueError(f"{text!r} is not a memory quantity: write 512Mi, 1Gi or 1G") from None
        units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "K": 10**3, "M": 10**6, "G": 10**9}
        return int(float(m.group(1)) * units[m.group(2)])
    return parse_memory(text)


class _Verdict:
    """What the guard knows, shared by the main loop, the report file and the status port."""

    def __init__(self, guard: MemoryGuard, log_lines: int) -> None:
        self.guard = guard
        self.started_at = time.time()
        self.exit: int | None = None
        self.lines: deque[str] = deque(maxlen=log_lines)
        self._lock = threading.Lock()

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            oom = self.guard.oom_killed()
            return {"kind": self.guard.kind, "limit": self.guard.limit,
                    "peak": self.guard.peak(), "oom": oom, "exit": self.exit,
                    "current": self.guard.current() if self.exit is None else None,
                    "detail": self.guard.oom_detail() if oom else "",
                    "started_at": self.started_at}

    def close(self) -> None:
        with self._lock:
            self.guard.close()

    def tail(self, n: int) -> str:
        lines = list(self.lines)
        return "\n".join(lines[-n:]) if n > 0 else ""


def _pump(pipe: IO[bytes], verdict: _Verdict) -> None:
    """Tee the command's output to our stdout (the container log) and keep the last lines."""
    out = sys.stdout.buffer
    for raw in iter(lambda: pipe.readline(1 << 16), b""):
        with contextlib.suppress(OSError, ValueError):
            out.write(raw)
            out.flush()
        verdict.lines.append(raw.decode("utf-8", errors="replace").rstrip("\r\n"))


def _import_check(modules: list[str], timeout_s: float, run_as: str) -> tuple[int, dict[str, object]]:
    """Import ``modules`` with the interpreter running the guard, as the command's user."""
    bad = [m for m in modules if not _MODULE_NAME.fullmatch(m)]
    if bad or not modules:
        return 400, {"ok": False, "exit": None,
                     "output": f"not module names: {bad!r}" if bad else "give ?module=NAME"}
    env = dict(os.environ)
    if run_as:
        env["FLIGHTCHECK_GUARD_USER"] = run_as
    argv = launch_argv([sys.executable, "-c", _proc.IMPORT_SCRIPT, *modules], None)
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return 200, {"ok": False, "exit": None,
                     "output": f"importing {', '.join(modules)} took over {timeout_s:g} s"}
    output = (done.stdout + done.stderr).strip()
    return 200, {"ok": done.returncode == 0, "exit": done.returncode, "output": output}


def _serve_status(host: str, port: int, verdict: _Verdict, run_as: str) -> ThreadingHTTPServer:
    """``GET /`` the verdict (JSON), ``/logs?tail=N`` output lines, ``/imports?module=M``."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            del format, args  # our stdout is the service's log: keep it the service's

        def _send(self, code: int, body: str, kind: str = "application/json") -> None:
            data = body.encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", f"{kind}; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            try:
                if url.path == "/":
                    self._send(200, json.dumps(verdict.snapshot()))
                elif url.path == "/logs":
                    tail = int(query.get("tail", ["50"])[0])
                    self._send(200, verdict.tail(tail), "text/plain")
                elif url.path == "/imports":
                    timeout_s = float(query.get("timeout", ["60"])[0])
                    code, body = _import_check(query.get("module", []), timeout_s, run_as)
                    self._send(code, json.dumps(body))
                else:
                    self._send(404, json.dumps({"error": "GET /, /logs?tail=N, /imports?module=M"}))
            except ValueError as exc:
                self._send(400, json.dumps({"error": str(exc)}))

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="flightcheck-guard-status",
                     daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m flightcheck.runtimes.guard")
    parser.add_argument("--limit", required=True, help="memory ceiling, e.g. 512Mi")
    parser.add_argument("--report", type=Path, help="JSON file with kind, limit, peak, oom")
    parser.add_argument("--mode", choices=["auto", "cgroup", "rss"], default="auto")
    parser.add_argument("--status-port", type=int, help="serve the report over HTTP on this port")
    parser.add_argument("--status-host", default="127.0.0.1",
                        help="address the status port binds (0.0.0.0 inside a container)")
    parser.add_argument("--linger", type=float, default=LINGER_S,
                        help="with --status-port: seconds the verdict stays readable after the "
                        "command ended (SIGTERM ends it sooner)")
    parser.add_argument("--user", default="",
                        help="run the command as USER[:GROUP] (names or ids); the guard stays root")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")
    try:
        limit = _parse_limit(args.limit)
    except ValueError as exc:
        parser.error(f"--limit: {exc}")
    guard = create_guard(limit, mode=args.mode)
    verdict = _Verdict(guard, LOG_LINES)
    server: ThreadingHTTPServer | None = None
    if args.status_port is not None:
        try:
            server = _serve_status(args.status_host, args.status_port, verdict, args.user)
        except OSError as exc:
            guard.close()
            print(f"flightcheck guard: cannot serve the status port {args.status_host}:"
                  f"{args.status_port}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    env = dict(os.environ, FLIGHTCHECK_GUARD_USER=args.user) if args.user else None
    piped = subprocess.PIPE if server is not None else None
    child = subprocess.Popen(launch_argv(command, guard.procs_file), start_new_session=True,
                             env=env, stdout=piped, stderr=subprocess.STDOUT if piped else None)
    guard.watch(child.pid, child.pid)
    pump: threading.Thread | None = None
    if child.stdout is not None:
        pump = threading.Thread(target=_pump, args=(child.stdout, verdict), daemon=True)
        pump.start()
    stopping = threading.Event()

    def on_signal(sig: int, _frame: object) -> None:
        stopping.set()  # a signalled guard does not linger
        if verdict.exit is None:  # once reaped, the pid may belong to someone else
            _proc.kill_group(child.pid, sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)

    def report() -> None:
        if args.report is not None:
            tmp = args.report.with_suffix(".tmp")
            tmp.write_text(json.dumps(verdict.snapshot()))
            tmp.replace(args.report)

    try:
        while child.poll() is None:
            report()
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=1)
        verdict.exit = child.returncode
        oom = guard.oom_killed()
        report()
    finally:
        verdict.close()
    if pump is not None:
        pump.join(timeout=2)
    if oom:
        print(f"flightcheck guard: {guard.oom_detail()}", file=sys.stderr, flush=True)
    if server is not None:
        stopping.wait(args.linger)
        server.shutdown()
    if oom:
        return 137
    rc = child.returncode
    return 128 - rc if rc < 0 else rc


if __name__ == "__main__":
    raise SystemExit(main())
