"""Start, find and stop the background emulator of a state directory.

``ensure_running`` returns the API endpoint, starting ``python -m flightcheck.cloudrun.local
serve`` in its own session (it outlives the caller and does not get the caller's Ctrl-C) when
none answers. ``stop`` sends SIGTERM (the emulator removes its instances), waits, and as a
backstop removes any container still carrying the state's label.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from flightcheck.errors import StageError

DEFAULT_STATE_DIR = Path(".flightcheck") / "emulator"
INFO_FILE = "emulator.json"  # pid, API URL, runtime, label: written by the running emulator
LOCK_FILE = "emulator.lock"
LOG_FILE = "emulator.log"
_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 60.0


def run_id_for(state_dir: Path) -> str:
    """The ``flightcheck.run`` label of this state's containers."""
    return "emulator-" + hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]


def _dir(state_dir: Path | str | None) -> Path:
    return (Path(state_dir) if state_dir is not None else Path.cwd() / DEFAULT_STATE_DIR).resolve()


def _info(state_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((state_dir / INFO_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    return True


def _answers(api: str) -> dict[str, Any] | None:
    try:
        resp = httpx.get(f"{api}/flightcheck/v1/status", timeout=2, trust_env=False)
    except httpx.HTTPError:
        return None
    return resp.json() if resp.status_code == 200 else None


@dataclass
class Status:
    running: bool
    state_dir: Path
    api: str | None = None
    pid: int | None = None
    runtime: str | None = None
    detail: dict[str, Any] | None = None


def status(state_dir: Path | str | None = None) -> Status:
    """Whether an emulator serves ``state_dir``, and what it serves."""
    d = _dir(state_dir)
    info = _info(d)
    if info is None or not _alive(int(info.get("pid", 0))):
        return Status(False, d)
    detail = _answers(str(info["api"]))
    if detail is None:
        return Status(False, d, pid=int(info["pid"]))
    return Status(True, d, str(info["api"]), int(info["pid"]), str(info.get("runtime")), detail)


def endpoint(state_dir: Path | str | None = None) -> str | None:
    """The API endpoint of the emulator serving ``state_dir``, or None; never starts one."""
    now = status(state_dir)
    return now.api if now.running else None


def _tail(path: Path, n: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    return ""


def ensure_running(state_dir: Path | str | None = None, *, runtime: str = "auto",
                   port: int = 0) -> str:
    """The emulator's API endpoint (``http://127.0.0.1:PORT``), started when needed."""
    d = _dir(state_dir)
    now = status(d)
    if now.running and now.api:
        return now.api
    d.mkdir(parents=True, exist_ok=True)
    log_path = d / LOG_FILE
    cmd = [sys.executable, "-m", "flightcheck.cloudrun.local", "serve", "--state-dir", str(d),
           "--runtime", runtime, "--port", str(port)]
    with log_path.open("a") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, close_fds=True)
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StageError("the local Cloud Run emulator exited while starting "
                             f"(code {proc.returncode})", why=_tail(log_path),
                             fix="read the log above; another emulator may hold the state "
                             "directory, or Docker may be unreachable",
                             repro=" ".join(cmd))
        info = _info(d)
        if info is not None and info.get("pid") == proc.pid and _answers(str(info["api"])):
            return str(info["api"])
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    raise StageError(f"the local Cloud Run emulator did not answer within {_START_TIMEOUT_S:g} s",
                     why=_tail(log_path), repro=" ".join(cmd))


def stop(state_dir: Path | str | None = None, *, timeout_s: float = _STOP_TIMEOUT_S) -> int:
    """Stop the emulator of ``state_dir``; returns how many leftover containers the backstop
    removed (0 when the emulator cleaned up after itself, as it should)."""
    d = _dir(state_dir)
    info = _info(d)
    if info is not None:
        pid = int(info.get("pid", 0))
        if pid and _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                time.sleep(0.2)
        with contextlib.suppress(OSError):
            (d / INFO_FILE).unlink()
    return remove_leftovers(d)


def remove_leftovers(state_dir: Path) -> int:
    """Remove containers labelled with this state's run id (an emulator that was killed)."""
    try:
        import docker
        import docker.errors

        client = docker.from_env(timeout=10)
        leftovers = client.containers.list(
            all=True, filters={"label": f"flightcheck.run={run_id_for(state_dir)}"})
    except Exception:  # no daemon: nothing of ours can be left there
        return 0
    removed = 0
    for container in leftovers:
        with contextlib.suppress(docker.errors.DockerException):
            container.remove(force=True)
            removed += 1
    client.close()
    return removed


def containers(state_dir: Path | str | None = None) -> list[str]:
    """Ids of the containers carrying this state's label (running or not)."""
    d = _dir(state_dir)
    try:
        import docker

        client = docker.from_env(timeout=10)
        found = client.containers.list(
            all=True, filters={"label": f"flightcheck.run={run_id_for(d)}"})
    except Exception:
        return []
    ids = [c.id or "" for c in found]
    client.close()
    return ids
