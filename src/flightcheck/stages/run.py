"""run-with-memory-limit: the service starts, and stays up, under the deploy target's ceiling.

Starts the built service with a hard memory limit (``--memory``/``[run].memory_limit``, like
Cloud Run's) on ``[service].port`` with the service environment (and the sidecar a prepare hook
asked for), then watches it for a few seconds: a crash on start fails here with the exit code
and the last log lines, an OOM kill with the peak and the limit. The service stays under watch
for the rest of the run (the runtime samples its memory); :func:`finalize` — after health-poll
and ai-smoke — fails the stage if it was OOM-killed or exited meanwhile and reports peak memory
against the limit, the evidence for sizing the deploy target. Leaves ``ctx.artifacts["running"]``.
"""

from __future__ import annotations

import threading
import time

import anyio
import anyio.to_thread

from flightcheck.context import Context
from flightcheck.errors import StageError
from flightcheck.results import Finding, Severity, StageResult, Status
from flightcheck.runtimes import listening
from flightcheck.runtimes.base import Exit, Image, MemorySampling, Running, Runtime
from flightcheck.runtimes.guard import Sampler
from flightcheck.stages.health import wait_ready

STAGE = "run-with-memory-limit"
TIMELINE = "memory-timeline"  # ctx.artifacts key of the MemoryTimeline
SETTLE_S = 3.0  # watched right after start: a crash or the first listen usually happens here
NEAR_LIMIT = 0.9  # peak above this share of the limit is a warning
_LOG_LINES = 50


async def run(ctx: Context) -> StageResult:
    res = ctx.result(STAGE)
    runtime = ctx.artifacts.get("runtime")
    image = ctx.artifacts.get("image")
    if not isinstance(runtime, Runtime) or not isinstance(image, Image):
        raise StageError(
            f"{STAGE} needs a built image",
            why="the build stage did not leave a runtime and an image",
            fix="run it after build: flightcheck ci --until run-with-memory-limit",
        )
    limit = ctx.memory_limit_bytes
    ctx.log(STAGE, f"starting {image.ref} on {runtime.name} with a {ctx.memory_limit} limit")
    started = time.perf_counter()
    running = await runtime.start(
        image,
        port=ctx.config.service.port,
        env=ctx.service_environment(),
        memory_limit=limit,
        sidecar=ctx.sidecar,
    )
    ctx.stack.push_async_callback(running.stop)
    ctx.artifacts["running"] = running
    if isinstance(running, MemorySampling):
        # Memory over time through health-poll and ai-smoke: the report's chart.
        timeline = MemoryTimeline(running)
        ctx.stack.callback(timeline.stop)  # LIFO: before running.stop
        ctx.artifacts[TIMELINE] = timeline
    res.measure("start_seconds", round(time.perf_counter() - started, 3), "s")
    res.measure("memory_limit_bytes", limit, "bytes")
    res.details.update(
        endpoint=running.endpoint,
        sidecar_endpoint=running.sidecar_endpoint,
        memory_limit=ctx.memory_limit,
        guard=getattr(running, "guard_kind", runtime.name),
    )

    exit_, listen_s = await _settle(running, started)
    if listen_s is not None:
        res.measure("listening_seconds", round(listen_s, 3), "s")
    if exit_ is not None:
        after = time.perf_counter() - started
        await _ended(ctx, res, running, exit_, when=f"{after:.1f} s after start")
        return res
    res.summary = f"running at {running.endpoint} under a {ctx.memory_limit} limit" + (
        f", listening after {listen_s:.2f} s"
        if listen_s is not None
        else f", not listening yet after {SETTLE_S:g} s (health-poll waits for startup)"
    )
    return res


async def _settle(running: Running, started: float) -> tuple[Exit | None, float | None]:
    """Watch until the service listens, exits, or SETTLE_S pass after start() returned:
    (exit, seconds from the start request to listening)."""
    deadline = time.perf_counter() + SETTLE_S
    while True:
        exit_ = await running.status()
        if exit_ is not None:
            return exit_, None
        probed = time.perf_counter()  # the probe connects at once, then waits to tell a proxy
        if await anyio.to_thread.run_sync(listening, running.endpoint):
            # Listening is not yet surviving: one more look catches a crash right after bind.
            return await running.status(), probed - started
        if time.perf_counter() > deadline:
            return None, None
        await anyio.sleep(0.05)


async def finalize(ctx: Context, result: StageResult) -> StageResult:
    """After health-poll and ai-smoke: OOM or exit meanwhile fails; report peak vs limit."""
    running = ctx.artifacts.get("running")
    if not isinstance(running, Running):
        return result
    if (
        result.status is not Status.FAIL
        and ctx.selected
        and "health-poll" not in ctx.selected
        and not ctx.interrupted
    ):
        # Run on its own (--only run-with-memory-limit): the model load that may OOM happens
        # after the port opens, so watch until the startup probe passes (or its window ends).
        ctx.log(STAGE, f"watching until {ctx.config.health.startup.path} passes (model load)")
        await wait_ready(running.endpoint, ctx.config.health.startup, status=running.status,
                         started_at=running.started_at, redact=ctx.redactor,
                         fail_fast_404=not ctx.config.health.strict_cloud_run)
    exit_ = await running.status()
    peak, sampled = await _peak(running, exit_)
    limit = running.memory_limit
    timeline = ctx.artifacts.get(TIMELINE)
    if isinstance(timeline, MemoryTimeline):
        result.details["memory_samples"] = timeline.series()
    result.measure("peak_memory_bytes", peak, "bytes")
    if sampled != peak:
        result.measure("peak_sampled_bytes", sampled, "bytes")
    result.measure("memory_limit_bytes", limit, "bytes")
    if peak is not None and limit:
        # peak/limit: 1.0 means the service used its whole ceiling.
        result.measure("peak_to_limit", round(peak / limit, 3), "ratio")
        result.measure("headroom_bytes", limit - peak, "bytes")
    usage = f"peak {ctx.memory_text(peak)} of {ctx.memory_text(limit)}" + (
        f" ({peak / limit:.0%})" if peak is not None and limit else ""
    )
    if result.status is Status.FAIL:
        if usage not in result.summary:
            result.summary += f"; {usage}"
        return result
    if exit_ is not None:
        await _ended(ctx, result, running, exit_, when="while the service was under test")
        return result
    if peak is not None and limit and peak >= NEAR_LIMIT * limit:
        result.status = Status.WARN
        result.findings.append(
            Finding(
                code="run.near-limit",
                category="memory",
                severity=Severity.WARNING,
                message=f"{usage}: little headroom; traffic or a bigger input can push it over "
                "and the instance is OOM-killed",
                fix="raise [run].memory_limit and [deploy].memory, or reduce what the service "
                "holds in memory",
            )
        )
    result.summary = f"ran under the {ctx.memory_text(limit)} limit; {usage}"
    return result


async def _peak(running: Running, exit_: Exit | None) -> tuple[int | None, int | None]:
    """The peak to report and the sampler's own maximum.

    An OOM kill means the service's memory reached its limit, but the sampler polls and the
    cgroup vanishes with the service, so its last sample can fall short of the kill (113 of
    128 MiB seen under load): after an OOM kill the peak is the limit, the sample kept beside it.
    """
    sampled = await running.peak_memory()
    limit = running.memory_limit
    if exit_ is not None and exit_.oom and limit and (sampled is None or sampled < limit):
        return limit, sampled
    return sampled, sampled


async def _ended(
    ctx: Context, res: StageResult, running: Running, exit_: Exit, *, when: str
) -> None:
    """Fail ``res`` because the service ended: OOM with peak/limit, else the exit and logs."""
    peak, sampled = await _peak(running, exit_)
    limit = running.memory_limit
    logs = ctx.redactor(await running.logs(_LOG_LINES))
    res.status = Status.FAIL
    res.details["exit"] = {"kind": exit_.kind, "code": exit_.code, "detail": exit_.detail}
    res.details["log_tail"] = logs
    tail = f"\nlast {_LOG_LINES} log lines:\n{logs}" if logs.strip() else "\n(no log output)"
    if exit_.oom:
        seen = (
            f" (the last sample before the kill: {ctx.memory_text(sampled)})"
            if sampled != peak and sampled is not None
            else ""
        )
        res.summary = (
            f"OOM-killed {when}: peak {ctx.memory_text(peak)}{seen}, "
            f"limit {ctx.memory_text(limit)}"
        )
        res.findings.append(
            Finding(
                code="run.oom",
                category="oom",
                message=f"{res.summary} — {exit_.detail}{tail}",
                fix="the service needs more memory than the deploy target gives it: raise "
                "[run].memory_limit and [deploy].memory above the peak, or load less at startup "
                "(smaller model, lazy loading)",
            )
        )
        return
    if exit_.kind == "exited" and exit_.code is not None:
        how = f"exited with code {exit_.code}" + (f" ({exit_.detail})" if exit_.detail else "")
    else:
        how = exit_.detail or f"ended ({exit_.kind})"
    res.summary = f"service {how} {when}"
    res.findings.append(
        Finding(
            code="run.exited",
            category="crash",
            message=f"{res.summary}{tail}",
            fix="read the log lines above; reproduce with the repro command",
        )
    )
    if "address already in use" in logs.lower():
        res.findings.append(
            Finding(
                code="run.port",
                category="config",
                message="the service could not bind its port: something else already listens there",
                fix="listen on $PORT (flightcheck gives every run its own port, and so does "
                "Cloud Run) instead of a fixed port",
            )
        )


class MemoryTimeline:
    """Samples a running service's memory in a thread: ``series()`` is [[epoch s, bytes], …]
    (thinned to at most ``max_points``), ``peak_between`` the highest sample in a window."""

    def __init__(self, running: MemorySampling, *, interval: float = 0.2,
                 max_points: int = 600) -> None:
        self._samples: list[tuple[float, int]] = []
        self._lock = threading.Lock()
        self._max = max_points
        self._sampler = Sampler(running.memory_usage, interval=interval, on_value=self._add)

    def _add(self, value: int) -> None:
        with self._lock:
            self._samples.append((time.time(), value))

    def samples(self) -> list[tuple[float, int]]:
        with self._lock:
            return list(self._samples)

    def peak_between(self, start: float, end: float) -> int | None:
        inside = [v for t, v in self.samples() if start <= t <= end]
        return max(inside) if inside else None

    def series(self) -> list[list[float]]:
        points = self.samples()
        step = max(1, -(-len(points) // self._max))  # ceil: thin evenly, keep the peak
        thinned = points[::step]
        if points and max(points, key=lambda p: p[1]) not in thinned:
            thinned = sorted([*thinned, max(points, key=lambda p: p[1])])
        return [[round(t, 3), v] for t, v in thinned]

    def stop(self) -> None:
        self._sampler.stop()
