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
name carries the owner token so :func:`remove_stale_cgroups` can clean up after a crashed run.

The service joins the cgroup *before* it allocates: it is started through :func:`launch_argv`,
a tiny launcher that writes its own pid to ``cgroup.procs`` and then execs the service.

``python -m flightcheck.runtimes.guard --limit 512Mi [--report FILE] -- CMD...`` runs CMD under
the guard and exits with its status (137 on OOM); the report (JSON: kind, limit, peak, oom) is
rewritten every second — the in-container guard of runtimes without a memory limit of their own.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from flightcheck.runtimes import _proc

GuardKind = Literal["cgroup-v1", "cgroup-v2", "rss"]
GuardMode = Literal["auto", "cgroup", "rss"]

POLL_S = 0.05
_PREFIX = "flightcheck-"

# Joins the cgroup (argv[1], may be empty), dies with flightcheck (PR_SET_PDEATHSIG=1, SIGKILL),
# then becomes the service. The pid stays the same, so nothing runs outside the cgroup.
_LAUNCHER = """\
import ctypes, os, sys
procs, parent, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
if procs:
    with open(procs, "w") as f:
        f.write(str(os.getpid()))
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
    """(root inside the hierarchy, mount point, fs type, super options) of cgroup mounts."""
    out: list[tuple[str, Path, str, list[str]]] = []
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        fields, tail = pre.split(), post.split()
        if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
            out.append((fields[3], Path(fields[4]), tail[0], tail[2].split(",")))
    return out


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


def remove_stale_cgroups() -> int:
    """Remove guard cgroups whose owning flightcheck process is gone; returns how many."""
    found = _parents()
    if found is None:
        return 0
    removed = 0
    for parent in found[1]:
        with contextlib.suppress(OSError):
            for d in parent.iterdir():
                if not d.name.startswith(_PREFIX) or not d.is_dir():
                    continue
                owner = d.name[len(_PREFIX) :].split("-")[0]
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
        name = f"{_PREFIX}{_proc.owner_token()}-{secrets.token_hex(4)}"
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


def main(argv: list[str] | None = None) -> int:
    import argparse

    from flightcheck.config import parse_memory

    parser = argparse.ArgumentParser(prog="python -m flightcheck.runtimes.guard")
    parser.add_argument("--limit", required=True, help="memory ceiling, e.g. 512Mi")
    parser.add_argument("--report", type=Path, help="JSON file with kind, limit, peak, oom")
    parser.add_argument("--mode", choices=["auto", "cgroup", "rss"], default="auto")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")
    guard = create_guard(parse_memory(args.limit), mode=args.mode)
    child = subprocess.Popen(launch_argv(command, guard.procs_file), start_new_session=True)
    guard.watch(child.pid, child.pid)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, _f: _proc.kill_group(child.pid, s))

    def report() -> None:
        if args.report is not None:
            data = {"kind": guard.kind, "limit": guard.limit, "peak": guard.peak(),
                    "oom": guard.oom_killed(), "exit": child.returncode}
            tmp = args.report.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            tmp.replace(args.report)

    try:
        while child.poll() is None:
            report()
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=1)
        oom = guard.oom_killed()
        report()
    finally:
        guard.close()
    if oom:
        print(f"flightcheck guard: {guard.oom_detail()}", file=sys.stderr)
        return 137
    rc = child.returncode
    return 128 - rc if rc < 0 else rc


if __name__ == "__main__":
    raise SystemExit(main())
