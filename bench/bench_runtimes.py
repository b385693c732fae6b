"""Runtime timings, each against a baseline measured in the same run.

- build: warm rebuild of an unchanged context vs the cold build of that context (docker)
- start-to-listening (first 200 from /health): each runtime vs a bare ``python app.py``
- OOM verdict: seconds from "allocating" to ``status()`` reporting OOM, vs the seconds the
  same fixture needs to allocate up to the limit when nothing stops it

Run: ``.venv/bin/python bench/bench_runtimes.py [--repeat 3]`` (docker parts are skipped when
no daemon answers). Prints medians; no thresholds — read the ratios.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import httpx

from flightcheck.errors import RuntimeUnavailable
from flightcheck.runtimes import _proc
from flightcheck.runtimes.base import Exit, Image, Running, Runtime
from flightcheck.runtimes.process import ProcessRuntime

SERVICES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "services"
MiB = 1024 * 1024
LIMIT = 128 * MiB
_AT = re.compile(r"allocating \d+ MiB at ([\d.]+)")
_DONE = re.compile(r"allocated \d+ MiB at ([\d.]+)")


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def _row(name: str, value: float, baseline: float, unit: str = "s") -> None:
    print(f"  {name:<44} {value:8.3f} {unit}   x{value / baseline:6.2f} of baseline")


async def _first_ok(url: str) -> float:
    start = time.perf_counter()
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            try:
                if (await client.get(url)).status_code == 200:
                    return time.perf_counter() - start
            except httpx.TransportError:
                pass
            await anyio.sleep(0.005)


async def _bare_listening() -> float:
    port = _proc.free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1"}
    started = time.perf_counter()
    proc = await anyio.open_process([sys.executable, "app.py"], cwd=SERVICES / "hello", env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await _first_ok(f"http://127.0.0.1:{port}/health")
        return time.perf_counter() - started
    finally:
        proc.kill()
        await proc.wait()


async def _runtime_listening(rt: Runtime, image: Image) -> float:
    started = time.perf_counter()
    running = await rt.start(image, port=8080, env={}, memory_limit=LIMIT)
    try:
        await _first_ok(running.endpoint + "/health")
        return time.perf_counter() - started
    finally:
        await running.stop()


async def _alloc_seconds(rt: Runtime, image: Image) -> float:
    """Seconds the hog needs to allocate LIMIT bytes when nothing stops it."""
    running = await rt.start(image, port=8080, env={"ALLOC_MB": str(LIMIT // MiB)},
                             memory_limit=8 * LIMIT)
    try:
        while True:
            logs = await running.logs(20)
            at, done = _AT.search(logs), _DONE.search(logs)
            if at and done:
                return float(done.group(1)) - float(at.group(1))
            await anyio.sleep(0.01)
    finally:
        await running.stop()


async def _oom_latency(rt: Runtime, image: Image) -> float:
    running = await rt.start(image, port=8080, env={"ALLOC_MB": "400"}, memory_limit=LIMIT)
    try:
        exit_ = await _poll(running)
        seen = time.time()
        assert exit_.oom, exit_
        at = _AT.search(await running.logs(20))
        assert at, await running.logs(20)
        return seen - float(at.group(1))
    finally:
        await running.stop()


async def _poll(running: Running) -> Exit:
    while True:
        exit_ = await running.status()
        if exit_ is not None:
            return exit_
        await anyio.sleep(0.005)


async def _repeat(n: int, fn: Callable[..., Awaitable[float]], *args: object) -> float:
    return _median([await fn(*args) for _ in range(n)])


async def main(repeat: int) -> None:
    runtimes: list[tuple[str, Runtime, Callable[[str], Awaitable[Image]]]] = []
    proc_rt = ProcessRuntime(command=["python", "app.py"])
    rss_rt = ProcessRuntime(command=["python", "app.py"], guard="rss")

    async def source(name: str) -> Image:
        return Image(ref=str(SERVICES / name))

    from flightcheck.runtimes.docker import DockerRuntime

    docker_rt: DockerRuntime | None = None
    try:
        docker_rt = DockerRuntime(name="fcbench")
    except RuntimeUnavailable as exc:
        print(f"(docker skipped: {exc.what})")
    if docker_rt is not None:
        builder = docker_rt

        async def built(name: str) -> Image:
            return await builder.build(SERVICES / name, "Dockerfile")

        runtimes.append(("docker", docker_rt, built))
    runtimes += [("process/" + g, rt, source) for g, rt in (("auto", proc_rt), ("rss", rss_rt))]

    if docker_rt is not None:
        print("build (docker, hello fixture, base image local)")
        cold: list[float] = []
        warm: list[float] = []
        for i in range(repeat):
            with tempfile.TemporaryDirectory() as tmp:
                ctx = Path(tmp) / "hello"
                shutil.copytree(SERVICES / "hello", ctx)
                (ctx / "app.py").write_text((ctx / "app.py").read_text() + f"\n# {tmp} {i}\n")
                first = await docker_rt.build(ctx, "Dockerfile")
                second = await docker_rt.build(ctx, "Dockerfile")
                assert second.cached and not first.cached
                cold.append(first.build_seconds)
                warm.append(second.build_seconds)
                docker_rt.client.images.remove(first.ref, force=True)
        _row("cold build (baseline)", _median(cold), _median(cold))
        _row("warm rebuild, unchanged context", _median(warm), _median(cold))

    print("start to first 200 from /health (hello fixture)")
    bare = await _repeat(repeat, _bare_listening)
    _row("bare `python app.py` (baseline)", bare, bare)
    for name, rt, image_of in runtimes:
        image = await image_of("hello")
        _row(f"{name} runtime", await _repeat(repeat, _runtime_listening, rt, image), bare)

    print(f"OOM verdict: allocation start -> status() says OOM ({LIMIT // MiB} MiB limit)")
    for name, rt, image_of in runtimes:
        image = await image_of("hog")
        base = await _repeat(repeat, _alloc_seconds, rt, image)
        lat = await _repeat(repeat, _oom_latency, rt, image)
        _row(f"{name}: allocate {LIMIT // MiB} MiB, no limit (baseline)", base, base)
        _row(f"{name}: OOM verdict (detection +{lat - base:.3f} s)", lat, base)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    anyio.run(main, parser.parse_args().repeat)
