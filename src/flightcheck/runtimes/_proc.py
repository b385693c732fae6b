"""Small /proc helpers shared by the runtimes: owner tokens, process trees, RSS, free ports.

An *owner token* (``"<pid>.<start time>"``) names the flightcheck process that started a
container or service process. Leftovers of crashed runs are recognised by a dead owner; the start
time guards against a recycled pid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import tarfile
from pathlib import Path, PurePosixPath
from typing import IO

_PAGE = os.sysconf("SC_PAGE_SIZE")


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat.rpartition(")")[2].split()
    return int(fields[19]) if len(fields) > 19 else None


def owner_token(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{pid}.{start_time(pid) or 0}"


def owner_alive(token: str) -> bool:
    """True when the process named by ``token`` still runs (same pid and start time)."""
    pid_text, _, started = token.partition(".")
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    now = start_time(pid)
    return now is not None and str(now) == started


def _scan() -> list[tuple[int, int, int]]:
    """(pid, parent pid, process group) of every process."""
    out: list[tuple[int, int, int]] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 2:
            out.append((int(entry.name), int(fields[1]), int(fields[2])))
    return out


def process_tree(root: int, pgid: int | None = None) -> list[int]:
    """``root``, its live descendants (by parent pid, so setsid'd children count too) and,
    given ``pgid``, every member of that process group (orphans reparented to init)."""
    procs = _scan()
    children: dict[int, list[int]] = {}
    for pid, ppid, _ in procs:
        children.setdefault(ppid, []).append(pid)
    alive = {pid for pid, _, _ in procs}
    seen: set[int] = set()
    todo = [root] if root in alive else []
    todo += [pid for pid, _, group in procs if pgid is not None and group == pgid]
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo.extend(children.get(pid, ()))
    return sorted(seen)


def rss_bytes(pids: list[int]) -> int:
    """Sum of resident set sizes. Shared pages count once per process (an upper bound)."""
    total = 0
    for pid in pids:
        try:
            resident = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        total += resident * _PAGE
    return total


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def kill_pids(pids: list[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def free_port() -> int:
    """A port nothing listens on at 127.0.0.1 right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_busy(port: int) -> bool:
    """True when binding 127.0.0.1:``port`` fails (someone listens or holds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Servers set SO_REUSEADDR; without it a TIME_WAIT leftover would look busy.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def tail_lines(text: str, n: int) -> str:
    lines = text.splitlines()
    return "\n".join(lines[-n:]) if n > 0 else ""


def tail_file(path: Path, n: int, *, max_bytes: int = 1 << 20) -> str:
    """The last ``n`` lines of a log file (reads at most the last ``max_bytes``)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    if size > max_bytes:
        # The first line read is cut at its start: drop it (a cut secret is not redactable).
        data = data.partition(b"\n")[2]
    return tail_lines(data.decode("utf-8", errors="replace"), n)


# Imports each module named in argv and prints one line per failure; run inside the image
# (or with the process runtime's interpreter) so it sees exactly the service's dependencies.
IMPORT_SCRIPT = """\
import importlib, sys
bad = []
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except BaseException as exc:
        bad.append(f"import {name}: {type(exc).__name__}: {exc}")
if bad:
    print("\\n".join(bad), flush=True)
    sys.exit(1)
"""

# Where the service's interpreter finds installed packages, and its version (JSON on stdout);
# with a path argument it also writes there a tar of what a type checker reads (sources,
# stubs, dist-info), so that an image's binaries never leave it. extract_sources keeps the
# same files on this side.
_SOURCE_SUFFIXES = (".py", ".pyi", "py.typed", ".pth")
SITES_SCRIPT = """\
import json, os, sys, tarfile
sites = [p for p in sys.path if p.rstrip("/").endswith(("site-packages", "dist-packages"))]
if len(sys.argv) > 1:
    with tarfile.open(sys.argv[1], "w") as tar:
        for site in sites:
            for here, dirs, files in os.walk(site):
                dirs[:] = [d for d in dirs if d != "__pycache__"]
                info = here.endswith(".dist-info")
                for name in files:
                    if info or name.endswith(SUFFIXES):
                        path = os.path.join(here, name)
                        tar.add(path, arcname=os.path.relpath(path, site), recursive=False)
print(json.dumps({"version": "%d.%d" % sys.version_info[:2], "sites": sites}))
""".replace("SUFFIXES", repr(_SOURCE_SUFFIXES))

SOURCES_TAR = "/tmp/flightcheck-sources.tar"  # where SITES_SCRIPT writes it in an image


def venv_site(dest: Path, version: str) -> Path:
    """``dest`` shaped as a venv of Python ``version`` (what ``ty --python`` reads): its
    site-packages directory, created."""
    site = dest / "lib" / f"python{version}" / "site-packages"
    site.mkdir(parents=True, exist_ok=True)
    (dest / "pyvenv.cfg").write_text(f"home = /nonexistent\nversion = {version}\n")
    return site


def extract_sources(fileobj: IO[bytes], site: Path) -> None:
    """SITES_SCRIPT's tar under ``site``: sources, stubs and dist-info only, regular files
    only, every path kept inside ``site``, the first of two same-named files kept (sys.path
    order). The tar comes from the service's image: nothing in it is trusted."""
    with tarfile.open(fileobj=fileobj, mode="r|") as tar:
        for info in tar:
            parts = PurePosixPath(info.name).parts
            if (not info.isfile() or not parts or ".." in parts or info.name.startswith("/")
                    or not (info.name.endswith(_SOURCE_SUFFIXES)
                            or any(p.endswith(".dist-info") for p in parts[:-1]))):
                continue
            target = site.joinpath(*parts)
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(info)
            if source is not None:
                with source, open(target, "wb") as f:
                    shutil.copyfileobj(source, f)


def accepts(port: int, *, host: str = "127.0.0.1", wait_s: float = 0.2) -> bool:
    """True when a server accepts and holds a connection on ``host:port``.

    Connecting alone is not enough: docker-proxy accepts on a published port even when nothing
    listens in the container, then closes at once. A real server keeps the connection open,
    waiting for a request, so a connection that is neither refused nor closed within
    ``wait_s`` means "listening".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(wait_s)
        try:
            if s.connect_ex((host, port)) != 0:
                return False
            return s.recv(1) != b""
        except TimeoutError:
            return True
        except OSError:
            return False
