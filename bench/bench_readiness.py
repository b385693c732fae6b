"""Readiness detection latency: health-poll vs the seed's fixed-2-second sleep loop.

Latency = (moment the poller reports ready) − (the service's own "startup_complete" log
timestamp). Both pollers watch the same service (mathcoach, or a stdlib stand-in with
--service stub) started fresh for every run, with a random extra startup delay so readiness
falls at a random phase of each poller's loop. Runs of the two alternate, in one process.

    python bench/bench_readiness.py [--runs 20] [--service mathcoach|stub] [--seed 1]

Target: health-poll p95 <= 100 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from flightcheck.config import ProbeConfig  # noqa: E402
from flightcheck.runtimes.base import Exit  # noqa: E402
from flightcheck.stages.health import wait_ready  # noqa: E402

PROBE = ProbeConfig(path="/health/startup", period_s=1, timeout_s=1, failure_threshold=120)
TARGET_P95_MS = 100.0
STUB = REPO / "tests" / "fakemodel" / "svc.py"

Poller = Callable[[str, Callable[[], Awaitable[Exit | None]]], Awaitable[float | None]]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def health_poll(endpoint: str, status: Callable[[], Awaitable[Exit | None]]) -> float | None:
    outcome = await wait_ready(endpoint, PROBE, status=status)
    return outcome.ready_at


async def seed_loop(endpoint: str, status: Callable[[], Awaitable[Exit | None]]) -> float | None:
    """The seed's loop: try, and if not ready, sleep a fixed 2 s."""
    async with httpx.AsyncClient(trust_env=False) as client:
        for _ in range(60):
            try:
                resp = await client.get(endpoint + PROBE.path, timeout=5)
                if resp.status_code == 200:
                    return time.time()
            except httpx.HTTPError:
                pass
            if await status() is not None:
                return None
            await anyio.sleep(2)
    return None


def _start(service: str, port: int, delay_s: float, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AI_", "FAULT_", "OPENAI_", "GEMINI_", "GOOGLE_", "SVC_"))}
    if service == "mathcoach":
        cmd = [sys.executable, "-m", "mathcoach"]
        env.update(HOST="127.0.0.1", PORT=str(port), PYTHONPATH=str(REPO / "src"),
                   PYTHONUNBUFFERED="1", FAULT_STARTUP_DELAY_S=f"{delay_s:.3f}")
    else:
        cmd = [sys.executable, str(STUB)]
        env.update(SVC_PORT=str(port), SVC_READY_DELAY_S=f"{delay_s:.3f}")
    with log.open("wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _complete_ts(log: Path) -> float | None:
    for line in log.read_text(errors="replace").splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and item.get("event") == "startup_complete":
            return float(item["ts"])
    return None


async def _one(poller: Poller, service: str, delay_s: float, tmp: Path) -> float:
    port = _free_port()
    log = tmp / f"run-{port}.log"
    proc = _start(service, port, delay_s, log)

    async def status() -> Exit | None:
        code = proc.poll()
        return None if code is None else Exit("exited", code)

    try:
        ready_at = await poller(f"http://127.0.0.1:{port}", status)
        if ready_at is None:
            raise SystemExit(f"the service never became ready; its log:\n{log.read_text()[-2000:]}")
        complete = _complete_ts(log)
        if complete is None:
            raise SystemExit(f"no startup_complete line in the service log:\n{log.read_text()[-2000:]}")
        return (ready_at - complete) * 1000
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


def _row(name: str, values: list[float]) -> str:
    return (f"{name:<28} {_pct(values, 50):>9.1f} {_pct(values, 95):>9.1f} "
            f"{statistics.mean(values):>9.1f} {max(values):>9.1f}")


async def main() -> int:
    parser = argparse.ArgumentParser(description="readiness detection latency benchmark")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--service", choices=("mathcoach", "stub"), default="mathcoach")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    ours: list[float] = []
    seed: list[float] = []
    with tempfile.TemporaryDirectory(prefix="fc-bench-") as tmp:
        for i in range(args.runs):
            for poller, sink in ((health_poll, ours), (seed_loop, seed)):
                sink.append(await _one(poller, args.service, rng.uniform(0.2, 1.5), Path(tmp)))
            print(f"run {i + 1:>2}/{args.runs}: health-poll {ours[-1]:7.1f} ms   "
                  f"seed loop {seed[-1]:7.1f} ms", file=sys.stderr)
    print(f"\nreadiness detection latency ({args.runs} runs each, service: {args.service})")
    print(f"{'poller':<28} {'p50 ms':>9} {'p95 ms':>9} {'mean ms':>9} {'max ms':>9}")
    print(_row("health-poll (adaptive)", ours))
    print(_row("seed loop (fixed 2 s sleep)", seed))
    p95 = _pct(ours, 95)
    print(f"\np95 speedup vs seed loop: {_pct(seed, 95) / max(p95, 0.001):.1f}x; "
          f"p50 speedup: {_pct(seed, 50) / max(_pct(ours, 50), 0.001):.1f}x")
    verdict = "met" if p95 <= TARGET_P95_MS else "MISSED"
    print(f"target p95 <= {TARGET_P95_MS:.0f} ms: {verdict} ({p95:.1f} ms)")
    return 0 if p95 <= TARGET_P95_MS else 1


if __name__ == "__main__":
    try:
        sys.exit(anyio.run(main))
    except KeyboardInterrupt:
        sys.exit(130)
