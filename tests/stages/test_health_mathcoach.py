"""health-poll against real mathcoach processes and their startup fault knobs."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakemodel"))
from fc_support import ProcRunning, make_context, start_mathcoach  # noqa: E402  # pyright: ignore[reportMissingImports]

from flightcheck.results import StageResult, Status  # noqa: E402
from flightcheck.stages import health  # noqa: E402

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
async def started(tmp_path: Path) -> AsyncIterator[Callable[..., ProcRunning]]:
    procs: list[ProcRunning] = []

    def _start(threshold: int = 60, **faults: str) -> ProcRunning:
        ctx = make_context(tmp_path, health={"startup": {
            "path": "/health/startup", "period_s": 1, "timeout_s": 1,
            "failure_threshold": threshold}})
        running = start_mathcoach(ctx, **faults)
        running.ctx = ctx  # type: ignore[attr-defined]
        procs.append(running)
        return running

    yield _start
    for running in procs:
        await running.stop()


async def _run(running: ProcRunning) -> StageResult:
    return await health.run(running.ctx)  # type: ignore[attr-defined]


async def test_ready_is_reported_right_after_startup_complete(
    started: Callable[..., ProcRunning],
) -> None:
    running = started()
    res = await _run(running)
    assert res.status is Status.PASS, res.summary
    complete = next(e for e in running.log_lines() if e.get("event") == "startup_complete")
    startup = res.details["startup"]
    assert isinstance(startup, dict)
    assert startup["ended"] == "ready"
    assert startup["ready_at"] >= complete["ts"]  # never "ready" before the service says so


async def test_startup_slower_than_the_probe_window(started: Callable[..., ProcRunning]) -> None:
    running = started(threshold=2, FAULT_STARTUP_DELAY_S="1.5")
    res = await _run(running)
    assert res.status is Status.FAIL
    assert "longer than the startup probe window of 2 s" in res.summary
    ttr = res.measurement("time_to_ready_s")
    complete = next(e for e in running.log_lines() if e.get("event") == "startup_complete")
    assert isinstance(ttr, float) and ttr > 2 and complete["startup_s"] > 1.5
    assert res.findings[0].fix is not None and "failure_threshold =" in res.findings[0].fix


async def test_crash_on_start_stops_the_poll_with_the_logs(
    started: Callable[..., ProcRunning],
) -> None:
    running = started(FAULT_CRASH_ON_START="1")
    res = await _run(running)
    assert res.status is Status.FAIL
    assert res.findings[0].code == "health.exited"
    assert "exited with code 1" in res.summary
    assert "startup_crash" in res.findings[0].message
