"""Graph gating: a failed gate skips what depends on it; cleanup always runs."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from config_support import REPO_CONFIG

from flightcheck import graph
from flightcheck.config import load
from flightcheck.context import Context
from flightcheck.errors import StageError, UsageError
from flightcheck.results import StageName, StageResult, Status


def _ctx(tmp_path: Path) -> Context:
    return Context(loaded=load(REPO_CONFIG, environ={}), report_dir=tmp_path)


def _stage(name: StageName, status: Status, calls: list[str], **kw: object) -> graph.Stage:
    async def run(ctx: Context) -> StageResult:
        calls.append(name)
        return ctx.result(name, status, f"{name} {status.value}")

    return graph.Stage(name=name, run=run, **kw)  # type: ignore[arg-type]


def _chain(calls: list[str], fail_at: StageName | None = None) -> list[graph.Stage]:
    names: list[StageName] = ["lint", "build", "run-with-memory-limit", "health-poll", "ai-smoke"]
    stages = []
    for i, n in enumerate(names):
        status = Status.FAIL if n == fail_at else Status.PASS
        needs = (names[i - 1],) if i >= 2 else ()
        gates = ("lint",) if n == "build" else ()
        stages.append(_stage(n, status, calls, needs=needs, gates=gates))
    return stages


def test_all_pass(tmp_path: Path) -> None:
    calls: list[str] = []
    results = anyio.run(graph.run, _ctx(tmp_path), _chain(calls))
    assert [r.status for r in results] == [Status.PASS] * 5
    assert graph.overall_ok(results)


def test_failed_gate_skips_dependents_with_reason(tmp_path: Path) -> None:
    calls: list[str] = []
    results = anyio.run(graph.run, _ctx(tmp_path), _chain(calls, fail_at="build"))
    assert calls == ["lint", "build"]
    by = {r.name: r for r in results}
    assert by["run-with-memory-limit"].status is Status.SKIPPED
    assert "build did not pass" in by["run-with-memory-limit"].summary
    assert by["ai-smoke"].status is Status.SKIPPED
    assert not graph.overall_ok(results)


def test_warn_passes_the_gate_unless_strict(tmp_path: Path) -> None:
    calls: list[str] = []
    stages = _chain(calls)
    stages[0] = _stage("lint", Status.WARN, calls)
    results = anyio.run(graph.run, _ctx(tmp_path), stages)
    assert len(calls) == 5
    assert graph.overall_ok(results)
    assert not graph.overall_ok(results, strict=True)


def test_only_pulls_in_inputs_not_gates() -> None:
    stages = _chain([])
    picked = [s.name for s in graph.select(stages, only="health-poll")]
    assert picked == ["build", "run-with-memory-limit", "health-poll"]


def test_until() -> None:
    assert [s.name for s in graph.select(_chain([]), until="build")] == ["lint", "build"]


def test_unknown_stage() -> None:
    with pytest.raises(UsageError):
        graph.select(_chain([]), only="deploy")


def test_exceptions_become_failed_results(tmp_path: Path) -> None:
    async def boom(ctx: Context) -> StageResult:
        raise StageError("the thing broke", why="because", fix="do this")

    async def bug(ctx: Context) -> StageResult:
        raise KeyError("oops")

    stages = [graph.Stage("lint", boom), graph.Stage("build", bug)]
    results = anyio.run(graph.run, _ctx(tmp_path), stages)
    assert results[0].status is Status.FAIL
    assert results[0].findings[0].message == "the thing broke — because"
    assert results[0].findings[0].fix == "do this"
    assert results[1].status is Status.FAIL
    assert "KeyError" in results[1].findings[0].message


def test_finalize_and_cleanup_run_even_when_cancelled(tmp_path: Path) -> None:
    events: list[str] = []
    ctx = _ctx(tmp_path)

    async def start(ctx: Context) -> StageResult:
        async def stop() -> None:
            events.append("stopped")

        ctx.stack.push_async_callback(stop)
        return ctx.result("run-with-memory-limit")

    async def finalize(ctx: Context, res: StageResult) -> StageResult:
        events.append("finalized")
        return res

    async def hang(ctx: Context) -> StageResult:
        await anyio.sleep(30)
        raise AssertionError("not reached")

    stages = [
        graph.Stage("run-with-memory-limit", start, finalize=finalize),
        graph.Stage("health-poll", hang, needs=("run-with-memory-limit",)),
    ]

    async def main() -> None:
        with anyio.move_on_after(0.2):
            await graph.run(ctx, stages)

    anyio.run(main)
    assert events == ["finalized", "stopped"]
    assert ctx.interrupted  # finalizers can tell a cancelled run and must not wait
    assert ctx.selected == ("run-with-memory-limit", "health-poll")


def test_repro_masks_secret_env(tmp_path: Path) -> None:
    ctx = Context(
        loaded=load(REPO_CONFIG, environ={}, overrides={"smoke.model": ("real", "--real-model")}),
        service_env={"OPENAI_API_KEY": "sk-live-abcdefghijkl", "MODE": "x"},
        memory_override="512Mi",
        runtime_name="docker",
    )
    r = ctx.repro("ai-smoke")
    assert "sk-live" not in r.local
    assert '--service-env OPENAI_API_KEY="$OPENAI_API_KEY"' in r.local
    assert "--service-env MODE=x" in r.local
    assert r.local.startswith("flightcheck ci --only ai-smoke")
    assert "--runtime docker --memory 512Mi --real-model" in r.local
    # In Dagger a key given as a Secret selects the real provider.
    assert r.dagger == (
        "dagger call ai-smoke --source=. --memory=512Mi --openai-api-key=env:OPENAI_API_KEY"
    )
    fake = Context(loaded=load(REPO_CONFIG, environ={}), service_env={"OPENAI_API_KEY": "sk-live-x"})
    assert "--openai-api-key" not in fake.repro("ai-smoke").dagger  # fake mode replaces it
    assert ctx.redactor("key sk-live-abcdefghijkl here") == "key *** here"


def test_repro_for_another_service_points_dagger_at_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = tmp_path / "svc"
    svc.mkdir()
    (svc / "flightcheck.toml").write_text('[service]\nname = "quotebot"\n')
    monkeypatch.chdir(tmp_path)
    ctx = Context(loaded=load(svc / "flightcheck.toml", environ={}), runtime_name="attached",
                  environment="prod")
    r = ctx.repro("health-poll")
    assert r.local == "flightcheck ci --only health-poll --config svc/flightcheck.toml --env prod"
    assert r.dagger == "dagger call health-poll --source=svc --environment=prod"
