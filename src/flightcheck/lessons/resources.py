"""Resource sizing: Cloud Run memory, CPU, startup probe and min instances from measurements.

Deploy guides size AI services with a fixed formula (1.5 GB per model + 1 GB + 0.2 GB per
concurrent request, at least 2 GB). Here the numbers are measured: peak memory (startup and
under load), time-to-ready, and memory under N concurrent smoke requests that
``flightcheck resources`` drives itself, so memory per concurrent request is a measurement,
not a guess. The formula's answer is printed beside the measured one.

Recommendation: the smallest Cloud Run memory size ≥ measured need × (1 + headroom) (≥ 512Mi
on gen2), the smallest CPU Cloud Run allows for it (never below ``[deploy].cpu``), a startup
probe whose window covers the slowest measured time-to-ready twice within Cloud Run's 240 s,
and min instances 1 when time-to-ready exceeds ``[resources].cold_start_s``. Verdict against
``[deploy]``: memory below the measured need fails (the instance would be OOM-killed), far above
the recommendation warns (cost), a startup window shorter than the measured startup fails.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from flightcheck.config import Config, format_memory, parse_memory
from flightcheck.lessons import defaults
from flightcheck.lessons.evidence import Evidence
from flightcheck.results import Finding, LessonResult, Severity, Status

if TYPE_CHECKING:
    from flightcheck.context import Context

COMMAND = ["resources"]
MiB = 1024**2
GiB = 1024**3
# Cloud Run memory sizes recommended (any value in between is accepted; these are the steps
# its console offers) and the minimum CPU each needs.
MEMORY_SIZES: tuple[int, ...] = (
    128 * MiB, 256 * MiB, 512 * MiB, 1 * GiB, 2 * GiB, 4 * GiB, 8 * GiB, 16 * GiB, 24 * GiB,
    32 * GiB,
)
_MIN_CPU: tuple[tuple[int, str], ...] = (
    (4 * GiB, "1"), (8 * GiB, "2"), (16 * GiB, "4"), (24 * GiB, "6"), (32 * GiB, "8"),
)
GEN2_MIN = 512 * MiB
STARTUP_WINDOW_MAX_S = 240.0  # Cloud Run: initial delay + period × failure threshold


@dataclass
class RunSample:
    """One start of the service: what it used and how long it took to be ready."""

    peak_bytes: int | None = None
    time_to_ready_s: float | None = None
    idle_bytes: int | None = None  # after ready, before load
    load_peak_bytes: int | None = None  # under N concurrent requests
    requests: int = 0
    errors: int = 0


@dataclass
class Measured:
    runs: list[RunSample] = field(default_factory=list)
    concurrency: int | None = None  # None: no load was driven
    memory_limit_bytes: int | None = None
    source: str = "the ci run"

    @property
    def peak_bytes(self) -> int | None:
        peaks = [p for r in self.runs for p in (r.peak_bytes, r.load_peak_bytes) if p]
        return max(peaks) if peaks else None

    @property
    def time_to_ready_s(self) -> float | None:
        ready = [r.time_to_ready_s for r in self.runs if r.time_to_ready_s is not None]
        return max(ready) if ready else None

    @property
    def per_request_bytes(self) -> int | None:
        """Memory each concurrent request adds: (peak under load − idle) / N, the median over
        runs (never below 0: memory a request needs may already be there)."""
        if not self.concurrency:
            return None
        deltas = [max(0, r.load_peak_bytes - r.idle_bytes) / self.concurrency
                  for r in self.runs if r.load_peak_bytes is not None and r.idle_bytes is not None]
        return int(statistics.median(deltas)) if deltas else None


def size_for(need: int, *, gen2: bool) -> int | None:
    """The smallest recommended Cloud Run memory size ≥ ``need``; None above 32Gi."""
    floor = GEN2_MIN if gen2 else 0
    return next((s for s in MEMORY_SIZES if s >= max(need, floor)), None)


def min_cpu_for(memory: int) -> str:
    return next(cpu for limit, cpu in _MIN_CPU if memory <= limit) if memory <= 32 * GiB else "8"


def formula_gb(models: int, concurrency: int) -> float:
    """The fixed formula deploy guides use (named constants in lessons/defaults.py)."""
    raw = (models * defaults.FORMULA_GB_PER_MODEL + defaults.FORMULA_BASE_GB
           + concurrency * defaults.FORMULA_GB_PER_REQUEST)
    return round(max(defaults.FORMULA_MIN_GB, raw), 2)


def probe_for(ready_s: float, period_s: float) -> dict[str, float | int] | None:
    """Startup probe settings whose window is ≥ 2× the measured time-to-ready, within Cloud
    Run's limits; None when even 240 s cannot cover the startup once."""
    if ready_s > STARTUP_WINDOW_MAX_S:
        return None
    period = max(1.0, min(period_s, 240.0))
    window = min(STARTUP_WINDOW_MAX_S, max(ready_s * defaults.RESOURCES_PROBE_SAFETY, 10.0))
    threshold = max(1, math.ceil(window / period))
    while period * threshold > STARTUP_WINDOW_MAX_S:
        threshold -= 1
    return {"initial_delay_s": 0, "period_s": period, "timeout_s": min(1.0, period),
            "failure_threshold": threshold, "window_s": period * threshold}


def recommend(config: Config, measured: Measured, res: LessonResult) -> LessonResult:
    """Fill ``res`` with the recommendation and the verdict against ``[deploy]``."""
    rcfg, deploy = config.resources, config.deploy
    peak, ready, per_req = measured.peak_bytes, measured.time_to_ready_s, measured.per_request_bytes
    res.details["measured"] = {
        "source": measured.source, "runs": [asdict(r) for r in measured.runs],
        "concurrency": measured.concurrency, "memory_limit_bytes": measured.memory_limit_bytes,
    }
    res.measure("runs", len(measured.runs))
    res.measure("peak_memory_bytes", peak, "bytes")
    res.measure("time_to_ready_s", ready, "s")
    if measured.concurrency:
        res.measure("concurrency", measured.concurrency)
        res.measure("memory_per_request_bytes", per_req, "bytes")
    formula = formula_gb(rcfg.models, measured.concurrency or rcfg.concurrency)
    res.measure("formula_gb", formula, "GB")
    res.details["formula"] = (
        f"{formula:g} GB = max({defaults.FORMULA_MIN_GB:g}, {defaults.FORMULA_GB_PER_MODEL:g} × "
        f"{rcfg.models} model(s) + {defaults.FORMULA_BASE_GB:g} + {defaults.FORMULA_GB_PER_REQUEST:g} × "
        f"{measured.concurrency or rcfg.concurrency} concurrent requests)"
    )
    if peak is None:
        res.status = Status.SKIPPED
        res.summary = ("skipped: no peak memory was measured (run-with-memory-limit did not run "
                       "or its runtime cannot measure memory)")
        return res

    gen2 = deploy.execution_environment == "gen2"
    need = int(peak)
    recommended = size_for(int(need * (1 + rcfg.headroom)), gen2=gen2)
    configured = parse_memory(deploy.memory)
    rec: dict[str, object] = {"memory": None, "cpu": None}
    if recommended is None:
        res.findings.append(Finding(
            code="resources.too-big", category="resources",
            message=f"measured need {format_memory(need)} (+{rcfg.headroom:.0%} headroom) is more "
            "than Cloud Run's largest instance (32Gi)",
            fix="load less at startup (smaller or quantized model, lazy loading) or serve the "
            "model elsewhere",
        ))
    else:
        cpu = max(min_cpu_for(recommended), deploy.cpu, key=float)
        rec.update(memory=format_memory(recommended), cpu=cpu)
        res.measure("recommended_memory_bytes", recommended, "bytes")
    res.measure("need_bytes", need, "bytes")
    res.measure("configured_memory_bytes", configured, "bytes")
    if configured < need:
        res.findings.append(Finding(
            code="resources.memory-below-need", category="resources",
            message=f"[deploy].memory {deploy.memory} is below the measured need "
            f"{format_memory(need)} (peak over {len(measured.runs)} run(s)"
            + (f" with {measured.concurrency} concurrent requests" if measured.concurrency else "")
            + "): Cloud Run would OOM-kill the instance",
            fix=f"set [deploy].memory = \"{rec['memory'] or format_memory(need)}\" "
            f"(and cpu = \"{rec['cpu'] or min_cpu_for(need)}\")",
        ))
    elif recommended is not None and configured < recommended:
        res.findings.append(Finding(
            code="resources.little-headroom", category="resources", severity=Severity.WARNING,
            message=f"[deploy].memory {deploy.memory} leaves less than {rcfg.headroom:.0%} headroom "
            f"over the measured need {format_memory(need)}",
            fix=f"set [deploy].memory = \"{rec['memory']}\"",
        ))
    elif recommended is not None and configured > rcfg.far_above * recommended:
        res.findings.append(Finding(
            code="resources.memory-far-above", category="resources", severity=Severity.WARNING,
            message=f"[deploy].memory {deploy.memory} is {configured / recommended:.0f}× the "
            f"recommended {rec['memory']} (measured need {format_memory(need)}): you pay for "
            "memory the service does not use",
            fix=f"set [deploy].memory = \"{rec['memory']}\" unless real inputs need more than "
            "the smoke suite's",
        ))

    probe = probe_for(ready, config.health.startup.period_s) if ready is not None else None
    rec["startup_probe"] = probe
    startup = config.health.startup
    if ready is not None:
        if probe is None:
            res.findings.append(Finding(
                code="resources.startup-too-slow", category="resources",
                message=f"time-to-ready {ready:.1f} s is longer than Cloud Run's startup probe "
                f"can wait ({STARTUP_WINDOW_MAX_S:g} s)",
                fix="load the model lazily or in the background and answer the startup probe "
                "once the HTTP server is up",
            ))
        elif startup.window_s < ready:
            res.findings.append(Finding(
                code="resources.startup-window", category="resources",
                message=f"[health.startup] window {startup.window_s:g} s is shorter than the "
                f"measured time-to-ready {ready:.1f} s: Cloud Run would restart the instance "
                "before it is ready",
                fix=f"period_s = {probe['period_s']:g}, failure_threshold = "
                f"{probe['failure_threshold']} (window {probe['window_s']:g} s)",
            ))
        elif startup.window_s < ready * defaults.RESOURCES_PROBE_SAFETY:
            res.findings.append(Finding(
                code="resources.startup-margin", category="resources", severity=Severity.WARNING,
                message=f"[health.startup] window {startup.window_s:g} s is less than twice the "
                f"measured time-to-ready {ready:.1f} s: a slower cold start fails the probe",
                fix=f"failure_threshold = {probe['failure_threshold']} with period_s = "
                f"{probe['period_s']:g}",
            ))
    rec["min_instances"] = 1 if ready is not None and ready > rcfg.cold_start_s else deploy.min_instances
    if ready is not None and ready > rcfg.cold_start_s and deploy.min_instances == 0:
        res.findings.append(Finding(
            code="resources.cold-start", category="resources", severity=Severity.WARNING,
            message=f"time-to-ready {ready:.1f} s > {rcfg.cold_start_s:g} s and [deploy]."
            "min_instances = 0: the first request after idle waits for a cold start",
            fix="set [deploy].min_instances = 1 (one warm instance) if users must not wait",
        ))
    res.details["recommended"] = rec
    res.details["configured"] = {"memory": deploy.memory, "cpu": deploy.cpu,
                                 "min_instances": deploy.min_instances,
                                 "startup_window_s": startup.window_s}
    errors = [f for f in res.findings if f.severity is Severity.ERROR]
    res.status = Status.FAIL if errors else (Status.WARN if res.findings else Status.PASS)
    formula_size = size_for(int(formula * 1e9), gen2=gen2)
    res.summary = (
        f"measured need {format_memory(need)}"
        + (f" ({format_memory(per_req)} per concurrent request)" if per_req is not None else "")
        + (f", ready in {ready:.1f} s" if ready is not None else "")
        + f" → recommend {rec['memory'] or '-'} / {rec['cpu'] or '-'} CPU"
        + f" (fixed formula: {formula:g} GB → {format_memory(formula_size) if formula_size else '>32Gi'});"
        + f" configured {deploy.memory}"
    )
    return res


def evaluate(ev: Evidence) -> LessonResult:
    """Sizing from the ci run's single start (no load driven: `flightcheck resources` does)."""
    res = ev.result("resources", COMMAND, "resources")
    run = ev.stage("run-with-memory-limit")
    peak = ev.number("run-with-memory-limit", "peak_memory_bytes")
    ready = ev.number("health-poll", "time_to_ready_s")
    limit = ev.number("run-with-memory-limit", "memory_limit_bytes")
    measured = Measured(
        runs=[RunSample(peak_bytes=int(peak) if peak else None, time_to_ready_s=ready)] if run else [],
        memory_limit_bytes=int(limit) if limit else None,
    )
    return recommend(ev.config, measured, res)


# --- measuring on purpose -----------------------------------------------------------------------


async def measure(ctx: Context, *, runs: int, concurrency: int, rounds: int = 3) -> Measured:
    """Build once, then start the service ``runs`` times: time-to-ready, idle memory, and
    memory while ``concurrency`` clients send the smoke suite's requests ``rounds`` times."""
    import anyio

    from flightcheck.errors import StageError
    from flightcheck.runtimes.base import Image, MemorySampling, Runtime
    from flightcheck.stages import build, smoke
    from flightcheck.stages.health import describe_exit, wait_ready
    from flightcheck.stages.run import MemoryTimeline

    built = await build.run(ctx)
    runtime, image = ctx.artifacts.get("runtime"), ctx.artifacts.get("image")
    if built.status.value == "fail" or not isinstance(runtime, Runtime) or not isinstance(image, Image):
        raise StageError(f"build failed: {built.summary}",
                         fix="fix the build first: flightcheck build")
    await smoke.prepare(ctx)
    requests = _load_requests(ctx)
    measured = Measured(concurrency=concurrency, memory_limit_bytes=ctx.memory_limit_bytes,
                        source=f"flightcheck resources ({runtime.name})")
    for i in range(runs):
        ctx.log("run-with-memory-limit", f"resources: run {i + 1}/{runs} under {ctx.memory_limit}")
        running = await runtime.start(image, port=ctx.config.service.port,
                                      env=ctx.service_environment(),
                                      memory_limit=ctx.memory_limit_bytes, sidecar=ctx.sidecar)
        timeline = MemoryTimeline(running) if isinstance(running, MemorySampling) else None
        sample = RunSample()
        try:
            outcome = await wait_ready(running.endpoint, ctx.config.health.startup,
                                       status=running.status, started_at=running.started_at)
            if not outcome.ready:
                why = describe_exit(outcome.exit) if outcome.exit else "did not become ready"
                raise StageError(
                    f"run {i + 1}: the service {why} within the startup window "
                    f"({outcome.window_s:g} s) under {ctx.memory_limit}",
                    fix="raise --memory if it was OOM-killed; see flightcheck ci --only health-poll",
                )
            sample.time_to_ready_s = outcome.ready_after_s
            await anyio.sleep(1.0)  # settle: the idle level after startup
            now = time.time()
            sample.idle_bytes = _median_between(timeline, now - 0.8, now)
            started = time.time()
            sample.requests, sample.errors = await _drive(running.endpoint, requests,
                                                          concurrency, rounds)
            await anyio.sleep(0.3)  # one more sample after the last answer
            if timeline is not None:
                sample.load_peak_bytes = timeline.peak_between(started, time.time())
            sample.peak_bytes = await running.peak_memory()
            exit_ = await running.status()
            if exit_ is not None:
                raise StageError(f"run {i + 1}: the service {describe_exit(exit_)} under "
                                 f"{concurrency} concurrent requests with {ctx.memory_limit}",
                                 fix="the measured need is above this limit: raise --memory")
        finally:
            if timeline is not None:
                timeline.stop()
            await running.stop()
        measured.runs.append(sample)
    return measured


def _median_between(timeline: object, start: float, end: float) -> int | None:
    from flightcheck.stages.run import MemoryTimeline

    if not isinstance(timeline, MemoryTimeline):
        return None
    values = [v for t, v in timeline.samples() if start <= t <= end]
    return int(statistics.median(values)) if values else None


def _load_requests(ctx: Context) -> list[tuple[str, str, object]]:
    """The smoke suite's requests that need no scripted model reply (+ the AI health path)."""
    from flightcheck.smoke.suite import load_suite

    out: list[tuple[str, str, object]] = []
    if ctx.config.health.ai_path:
        out.append(("GET", ctx.config.health.ai_path, None))
    path = ctx.config.resolve(ctx.config.smoke.suite)
    if path.is_file():
        for case in load_suite(path).cases:
            if case.model is None:
                req = case.request
                out.append((req.method, req.path,
                            req.body if "body" in req.model_fields_set else None))
    if not out:
        from flightcheck.errors import UsageError

        raise UsageError("nothing to send: no [health].ai_path and no smoke case without a "
                         "scripted model reply", fix="write a smoke suite (docs/smoke.md)")
    return out


async def _drive(endpoint: str, requests: Sequence[tuple[str, str, object]], concurrency: int,
                 rounds: int) -> tuple[int, int]:
    """``concurrency`` clients, each sending every request ``rounds`` times: (sent, errors)."""
    import anyio
    import httpx

    counts = {"sent": 0, "errors": 0}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=endpoint, trust_env=False, limits=limits,
                                 timeout=30.0) as client:

        async def worker() -> None:
            for _ in range(rounds):
                for method, path, body in requests:
                    counts["sent"] += 1
                    try:
                        resp = await client.request(method, path, json=body)
                        if resp.status_code >= 500:
                            counts["errors"] += 1
                    except httpx.HTTPError:
                        counts["errors"] += 1

        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker)
    return counts["sent"], counts["errors"]


def text(res: LessonResult) -> list[str]:
    rec = res.details.get("recommended")
    conf = res.details.get("configured")
    lines: list[str] = []
    measured = res.details.get("measured")
    if isinstance(measured, Mapping):
        for i, r in enumerate(measured.get("runs") or [], 1):
            if isinstance(r, Mapping):
                lines.append(
                    f"run {i}: ready {_s(r.get('time_to_ready_s'))}, peak {_mem(r.get('peak_bytes'))}"
                    f", idle {_mem(r.get('idle_bytes'))}, under load {_mem(r.get('load_peak_bytes'))}"
                    f" ({r.get('requests', 0)} requests, {r.get('errors', 0)} errors)")
    if isinstance(rec, Mapping) and isinstance(conf, Mapping):
        lines.append(f"{'':<16} {'measured-based':<18} {'configured':<12}")
        lines.append(f"{'memory':<16} {rec.get('memory')!s:<18} {conf.get('memory')!s:<12}")
        lines.append(f"{'cpu':<16} {rec.get('cpu')!s:<18} {conf.get('cpu')!s:<12}")
        lines.append(f"{'min instances':<16} {rec.get('min_instances')!s:<18} "
                     f"{conf.get('min_instances')!s:<12}")
        probe = rec.get("startup_probe")
        if isinstance(probe, Mapping):
            lines.append(f"{'startup probe':<16} {'period ' + str(probe.get('period_s')) + ' s × ' + str(probe.get('failure_threshold')):<18} "
                         f"window {conf.get('startup_window_s')} s")
    lines.append(f"fixed formula: {res.details.get('formula')}")
    return lines


def _mem(v: object) -> str:
    return format_memory(int(v)) if isinstance(v, int | float) and v else "-"


def _s(v: object) -> str:
    return f"{v:.2f} s" if isinstance(v, int | float) else "-"
