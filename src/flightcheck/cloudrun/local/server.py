"""The emulator process: the API server, the proxies and the revision instances in one loop.

``serve`` runs in the foreground until SIGTERM/SIGINT (or the admin shutdown call), then stops
every listener and removes every container or process it started. While it runs,
``<state dir>/emulator.json`` says where it is (pid, API URL, runtime, the label of its
containers); a lock file keeps a second emulator off the same state.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import IO

import anyio

from flightcheck.cloudrun.local.api import Api
from flightcheck.cloudrun.local.control import Emulator
from flightcheck.cloudrun.local.lifecycle import INFO_FILE, LOCK_FILE, LOG_FILE, run_id_for
from flightcheck.cloudrun.local.runner import RevisionRunner
from flightcheck.errors import FlightcheckError, UsageError
from flightcheck.runtimes.base import Runtime
from flightcheck.secrets import Redactor

API_PORT_KEY = "@api"


def _runtime(kind: str, state_dir: Path, redactor: Redactor, log: IO[str]) -> Runtime:
    from flightcheck.runtimes import select_runtime

    def on_log(line: str) -> None:
        print(line, file=log, flush=True)

    runtime = select_runtime(kind, redactor=redactor, on_log=on_log, name="cloudrun-local")
    if runtime.name == "docker":
        runtime.run_id = run_id_for(state_dir)  # type: ignore[attr-defined]
    return runtime


async def serve(state_dir: Path, *, port: int = 0, runtime: str = "auto",
                log: IO[str] | None = None) -> None:
    """Run the emulator until it is told to stop; always cleans up what it started."""
    out = log or sys.stderr

    def say(message: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {message}", file=out, flush=True)

    await anyio.Path(state_dir).mkdir(parents=True, exist_ok=True)
    await anyio.Path(state_dir).chmod(0o700)  # its state holds revision env (keys)
    lock = (state_dir / LOCK_FILE).open("w")  # noqa: ASYNC230 - once, at startup
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UsageError(f"another emulator already serves {state_dir}",
                         fix="use it (`flightcheck emulator status`) or stop it first "
                         "(`flightcheck emulator stop`)") from None
    redactor = Redactor()
    rt = _runtime(runtime, state_dir, redactor, out)
    if rt.name == "docker":
        with contextlib.suppress(Exception):
            removed = await rt.cleanup_stale()
            if removed:
                say(f"removed {removed} container(s) left by a crashed earlier run")
    emu = Emulator(state_dir, RevisionRunner(rt, redactor=redactor), log=say)
    stop = asyncio.Event()
    api = Api(emu, runtime=rt.name, on_shutdown=stop.set)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    info = state_dir / INFO_FILE
    try:
        await emu.load()
        # The API keeps its port across restarts when it is free, like the service URLs.
        wanted = port or emu.ports.get(API_PORT_KEY, 0)
        try:
            api_port = await api.start(wanted)
        except OSError:
            if port:
                raise UsageError(f"port {port} on 127.0.0.1 is taken",
                                 fix="choose another --port, or 0 for a free one") from None
            api_port = await api.start(0)
        emu.ports[API_PORT_KEY] = api_port
        emu.identity.serve_at(f"http://127.0.0.1:{api_port}")
        emu.save()
        info.write_text(json.dumps({
            "pid": os.getpid(), "api": f"http://127.0.0.1:{api_port}", "port": api_port,
            "runtime": rt.name, "run_id": run_id_for(state_dir), "started": time.time(),
            "log": str(state_dir / LOG_FILE),
        }, indent=1))
        say(f"local Cloud Run at http://127.0.0.1:{api_port} (runtime {rt.name}, "
            f"state {state_dir})")
        watcher = asyncio.ensure_future(emu.watch())
        await stop.wait()
        watcher.cancel()
        say("stopping: removing every instance this emulator started")
    finally:
        await api.stop()
        await emu.shutdown()
        with contextlib.suppress(OSError):
            if json.loads(info.read_text()).get("pid") == os.getpid():
                info.unlink()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        lock.close()
        say("stopped")


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m flightcheck.cloudrun.local",
                                     description="the local Cloud Run (foreground)")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--state-dir", type=Path, default=Path(".flightcheck/emulator"))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--runtime", default="auto", choices=["auto", "docker", "process"])
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.state_dir.resolve(), port=args.port, runtime=args.runtime))
    except FlightcheckError as exc:
        print(exc.render(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return 0
