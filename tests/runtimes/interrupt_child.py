"""Runs build + run-with-memory-limit on a fixture service, prints one JSON line once the
service runs, then waits to be interrupted (the Ctrl-C tests send SIGINT).

Usage: python interrupt_child.py docker|process SERVICE
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import anyio

from flightcheck import graph
from flightcheck.config import load
from flightcheck.context import Context
from flightcheck.graph import Stage
from flightcheck.results import StageResult
from flightcheck.stages import build, run

# A shell's `cmd &` starts children with SIGINT ignored, and Python then never raises
# KeyboardInterrupt: Ctrl-C is what this child is for, so take it back.
signal.signal(signal.SIGINT, signal.default_int_handler)

SERVICES = Path(__file__).resolve().parent.parent / "fixtures" / "services"


async def hold(ctx: Context) -> StageResult:
    running = ctx.artifacts["running"]
    info = {
        "run_id": getattr(ctx.artifacts["runtime"], "run_id", None),
        "endpoint": getattr(running, "endpoint", None),
        "pid": getattr(running, "pid", None),
        "cgroup": str(getattr(running, "cgroup", None) or ""),
    }
    print(json.dumps(info), flush=True)
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


def main() -> None:
    runtime_name, service = sys.argv[1:3]
    toml = Path(tempfile.mkdtemp(prefix="fc-interrupt-")) / "flightcheck.toml"
    # A copy beside the config: a build context must be inside the config's directory.
    shutil.copytree(SERVICES / service, toml.parent / service,
                    ignore=shutil.ignore_patterns("__pycache__"))
    toml.write_text(
        f'[service]\nname = "fctest-{service}"\nsource = "{service}"\n'
        'command = ["python", "app.py"]\npythonpath = []\nimport_check = []\n'
        '[run]\nmemory_limit = "128Mi"\n'
    )
    ctx = Context(
        loaded=load(toml),
        runtime_name=runtime_name,
        progress=lambda stage, msg: print(f"[{stage}] {msg}", file=sys.stderr, flush=True),
    )
    stages = [
        Stage("build", build.run),
        Stage("run-with-memory-limit", run.run, needs=("build",), finalize=run.finalize),
        Stage("health-poll", hold, needs=("run-with-memory-limit",)),
    ]
    anyio.run(graph.run, ctx, stages)


if __name__ == "__main__":
    main()
