"""The stage graph, written once: order, inputs, gates.

lint → build → run-with-memory-limit → health-poll → ai-smoke (→ deploy)

``needs`` are inputs a stage cannot run without (health-poll needs a running service);
``gates`` are earlier stages that must pass in a full run (build is gated by lint, but
``--only build`` does not pull lint in). A stage whose needs or gates failed is reported
as skipped with the reason. ``finalize`` hooks run after the last stage, before cleanup,
so run-with-memory-limit can report the peak memory over the whole health and smoke phase.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

import anyio

from flightcheck.context import Context
from flightcheck.errors import FlightcheckError
from flightcheck.results import Finding, StageName, StageResult, Status

StageFn = Callable[[Context], Awaitable[StageResult]]
FinalizeFn = Callable[[Context, StageResult], Awaitable[StageResult]]


@dataclass(frozen=True)
class Stage:
    name: StageName
    run: StageFn
    needs: tuple[StageName, ...] = ()
    gates: tuple[StageName, ...] = ()
    finalize: FinalizeFn | None = None
    prepare: Callable[[Context], Awaitable[None]] | None = None  # before any stage runs


def default_graph() -> tuple[Stage, ...]:
    """The implemented stages, in order. Unimplemented stages are absent, not faked."""
    from flightcheck.stages import build, deploy, health, lint, run, smoke

    return (
        Stage("lint", lint.run),
        Stage("build", build.run, gates=("lint",), prepare=build.prepare),
        Stage("run-with-memory-limit", run.run, needs=("build",), finalize=run.finalize),
        Stage("health-poll", health.run, needs=("run-with-memory-limit",)),
        Stage(
            "ai-smoke",
            smoke.run,
            needs=("health-poll",),  # a smoke test of a service that is not ready tests nothing
            prepare=smoke.prepare,
        ),
        # Last, gated by every check. It needs only the image: `flightcheck deploy` is build →
        # deploy, and the candidate is checked with health-poll and ai-smoke on its tag URL.
        Stage(
            "deploy",
            deploy.run,
            needs=("build",),
            gates=("lint", "run-with-memory-limit", "health-poll", "ai-smoke"),
            prepare=deploy.prepare,
        ),
    )


def for_config(stages: Sequence[Stage], *, deploy_enabled: bool,
               wanted: Sequence[str | None] = (), prebuilt: bool = False) -> list[Stage]:
    """Drop deploy unless ``[deploy].enabled`` or it was asked for by name. ``prebuilt``: the
    image was built and pushed elsewhere (the Dagger module), so deploy needs no build."""
    out = list(stages) if deploy_enabled or "deploy" in wanted else [
        s for s in stages if s.name != "deploy"]
    if prebuilt:
        out = [replace(s, needs=()) if s.name == "deploy" else s for s in out if s.name != "build"]
    return out


def select(
    stages: Sequence[Stage], *, only: StageName | None = None, until: StageName | None = None
) -> list[Stage]:
    """The stages to run: all; up to ``until`` inclusive; or ``only`` plus its inputs."""
    names = [s.name for s in stages]
    for wanted in (only, until):
        if wanted is not None and wanted not in names:
            from flightcheck.errors import UsageError

            raise UsageError(
                f"unknown or unavailable stage {wanted!r}",
                fix=f"choose one of: {', '.join(names)}",
            )
    if until is not None:
        return list(stages[: names.index(until) + 1])
    if only is not None:
        by_name = {s.name: s for s in stages}
        keep: set[StageName] = set()
        todo: list[StageName] = [only]
        while todo:
            name = todo.pop()
            if name not in keep:
                keep.add(name)
                todo.extend(by_name[name].needs)
        return [s for s in stages if s.name in keep]
    return list(stages)


async def run(ctx: Context, stages: Sequence[Stage]) -> list[StageResult]:
    """Run ``stages`` in order with gating; always finalize and clean up (Ctrl-C included)."""
    results: dict[StageName, StageResult] = {}
    ctx.selected = tuple(s.name for s in stages)
    selected = set(ctx.selected)
    try:
        for stage in stages:
            if stage.prepare is not None:
                await stage.prepare(ctx)
        for stage in stages:
            blockers = [
                n
                for n in (*stage.needs, *stage.gates)
                if n in selected and n in results and not results[n].gate_passed
            ]
            missing = [n for n in stage.needs if n not in selected]
            if blockers or missing:
                why = (
                    f"{', '.join(blockers)} did not pass"
                    if blockers
                    else f"needs {', '.join(missing)}, which is not part of this run"
                )
                res = ctx.result(stage.name, Status.SKIPPED, f"skipped: {why}")
                results[stage.name] = res
                ctx.log(stage.name, res.summary)
                continue
            ctx.log(stage.name, "started")
            results[stage.name] = await _run_one(ctx, stage)
            ctx.log(stage.name, f"{results[stage.name].status.value}: {results[stage.name].summary}")
    except BaseException:  # cancelled: Ctrl-C, SIGTERM, a timeout around the run
        ctx.interrupted = True
        raise
    finally:
        with anyio.CancelScope(shield=True):
            for stage in reversed(stages):
                res = results.get(stage.name)
                if stage.finalize is not None and res is not None and res.status is not Status.SKIPPED:
                    try:
                        results[stage.name] = await stage.finalize(ctx, res)
                    except Exception as exc:  # a finalizer must not mask the run's outcome
                        res.findings.append(_internal_finding(ctx, exc))
            await ctx.stack.aclose()
    return [results[s.name] for s in stages if s.name in results]


async def _run_one(ctx: Context, stage: Stage) -> StageResult:
    started = time.perf_counter()
    started_at = time.time()  # the report's timeline
    try:
        res = await stage.run(ctx)
    except FlightcheckError as exc:
        res = ctx.result(stage.name, Status.FAIL, ctx.redactor(exc.what))
        res.findings.append(
            Finding(
                code=f"{stage.name}.error",
                category="error",
                message=ctx.redactor(exc.what + (f" — {exc.why}" if exc.why else "")),
                fix=ctx.redactor(exc.fix) or None,
            )
        )
    except Exception as exc:
        res = ctx.result(stage.name, Status.FAIL, f"internal error: {type(exc).__name__}")
        res.findings.append(_internal_finding(ctx, exc))
    res.duration_s = round(time.perf_counter() - started, 3)
    res.started_at = round(started_at, 3)
    return res


def _internal_finding(ctx: Context, exc: BaseException) -> Finding:
    return Finding(
        code="internal",
        category="error",
        message=ctx.redactor(f"{type(exc).__name__}: {exc}"),
        fix="this is a flightcheck bug; rerun with the repro command and file an issue",
    )


def overall_ok(results: Sequence[StageResult], *, strict: bool = False) -> bool:
    """Exit 0 only if every gate passed (warnings fail too under ``--strict``)."""
    bad = {Status.FAIL, Status.WARN} if strict else {Status.FAIL}
    return not any(r.status in bad for r in results)
