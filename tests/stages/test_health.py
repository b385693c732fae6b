"""health-poll against real host processes (tests/fakemodel/svc.py) on 127.0.0.1."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakemodel"))
from fc_support import ProcRunning, free_port, make_context, start_svc  # noqa: E402  # pyright: ignore[reportMissingImports]

from flightcheck.config import ProbeConfig  # noqa: E402
from flightcheck.context import Context  # noqa: E402
from flightcheck.errors import StageError  # noqa: E402
from flightcheck.results import Status  # noqa: E402
from flightcheck.stages import health  # noqa: E402

pytestmark = pytest.mark.anyio

Start = Callable[..., tuple[Context, ProcRunning]]


def _health(period: float = 1, threshold: int = 3, delay: float = 0, timeout: float = 1,
            liveness_threshold: int = 2) -> dict[str, object]:
    return {
        "startup": {"path": "/health/startup", "initial_delay_s": delay, "period_s": period,
                    "timeout_s": timeout, "failure_threshold": threshold},
        "liveness": {"path": "/health", "period_s": 1, "timeout_s": 1,
                     "failure_threshold": liveness_threshold},
    }


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    started: list[ProcRunning] = []

    def _start(health_cfg: dict[str, object], **faults: str) -> tuple[Context, ProcRunning]:
        ctx = make_context(tmp_path, health=health_cfg)
        running = start_svc(ctx, free_port(), **faults)
        started.append(running)
        return ctx, running

    yield _start
    for running in started:
        await running.stop()


async def test_ready_after_refused_then_503(start: Start) -> None:
    ctx, _ = start(_health(), SVC_BIND_DELAY_S="0.3", SVC_READY_DELAY_S="0.4")
    res = await health.run(ctx)
    assert res.status is Status.PASS, res.summary
    reasons = [r["reason"] for r in res.details["startup"]["reasons"]]  # type: ignore[index]
    assert "connection refused" in reasons
    assert any(r.startswith("HTTP 503") for r in reasons)
    ttr = res.measurement("time_to_ready_s")
    assert isinstance(ttr, float) and ttr >= 0.7
    outcome_probes = res.measurement("probes_sent")
    assert isinstance(outcome_probes, int) and outcome_probes > 3
    assert res.details["liveness"]["ended"] == "ready"  # type: ignore[index]
    # Cloud Run's once-per-period probe: the first probe after readiness (1 s periods). On a
    # loaded machine the service itself may take longer than its 0.7 s of delays.
    assert res.measurement("failed_periods") == math.ceil(ttr)
    assert res.measurement("cloud_run_ready_s") == float(math.ceil(ttr))


async def test_ready_at_is_never_before_the_service_is_ready(start: Start) -> None:
    ctx, running = start(_health(), SVC_READY_DELAY_S="0.3")
    outcome = await health.wait_ready(running.endpoint, ctx.config.health.startup,
                                      status=running.status)
    assert outcome.ready and outcome.ready_at is not None
    complete = next(e["ts"] for e in running.log_lines() if e["event"] == "startup_complete")
    assert outcome.ready_at >= complete


async def test_startup_slower_than_window_fails_with_measured_time_and_fix(start: Start) -> None:
    ctx, _ = start(_health(period=1, threshold=1), SVC_READY_DELAY_S="1.6")
    res = await health.run(ctx)
    assert res.status is Status.FAIL
    assert "longer than the startup probe window of 1 s" in res.summary
    ttr = res.measurement("time_to_ready_s")
    assert isinstance(ttr, float) and ttr > 1.6
    (finding,) = res.findings
    assert finding.code == "health.startup-timeout"
    # The window that would have admitted the measured startup, with 50% headroom (3 when the
    # machine is idle: 1.6 s of delay).
    assert finding.fix is not None and f"failure_threshold = {math.ceil(ttr * 1.5)}" in finding.fix
    assert "startup_complete" in finding.message  # the log tail is in the verdict


async def test_health_never_200_fails_with_counted_reasons_and_logs(start: Start) -> None:
    ctx, _ = start(_health(period=1, threshold=1), SVC_NEVER_READY="1")
    res = await health.run(ctx)
    assert res.status is Status.FAIL
    assert "never succeeded" in res.summary
    reasons = res.details["startup"]["reasons"]  # type: ignore[index]
    assert {r["reason"] for r in reasons} <= {"connection refused", 'HTTP 503: {"status": "loading"}'}
    assert reasons[-1]["reason"].startswith("HTTP 503") and reasons[-1]["count"] > 5
    assert res.findings[0].code == "health.startup-timeout"
    assert "HTTP 503" in res.findings[0].message and "listening" in res.findings[0].message
    assert res.measurement("time_to_ready_s") is None
    assert res.measurement("failed_periods") == 1


async def test_hanging_endpoint_is_bounded_by_the_probe_timeout(start: Start) -> None:
    ctx, _ = start(_health(period=1, threshold=2, timeout=1), SVC_STARTUP_HANG="1")
    began = time.perf_counter()
    res = await health.run(ctx)
    took = time.perf_counter() - began
    assert res.status is Status.FAIL
    reasons = res.details["startup"]["reasons"]  # type: ignore[index]
    assert reasons[-1] == {**reasons[-1], "reason": "timeout: no answer within 1 s", "count": 7}
    assert all(r["reason"] in ("connection refused", "timeout: no answer within 1 s")
               for r in reasons)
    # window 2 s + grace 5 s, plus at most one probe timeout in flight.
    assert took < 2 + 5 + 1 + 1.5


async def test_service_dying_during_polling_stops_the_poll_at_once(start: Start) -> None:
    ctx, _ = start(_health(period=1, threshold=60), SVC_NEVER_READY="1", SVC_DIE_AFTER_S="0.5")
    began = time.perf_counter()
    res = await health.run(ctx)
    took = time.perf_counter() - began
    assert res.status is Status.FAIL
    assert res.findings[0].code == "health.exited"
    assert "exited with code 3" in res.summary
    assert '"dying"' in res.findings[0].message  # last log lines included
    assert res.details["startup"]["ended"] == "exited"  # type: ignore[index]
    assert took < 5  # the window was 60 s
    assert res.measurement("failed_periods") == 1  # it died in the first period, not the 60th


async def test_service_already_dead_before_polling(start: Start) -> None:
    ctx, running = start(_health(period=1, threshold=60), SVC_PORT="notaport")
    running.proc.wait(10)
    res = await health.run(ctx)
    assert res.status is Status.FAIL and res.findings[0].code == "health.exited"
    assert "ValueError" in res.details["logs_tail"]  # type: ignore[operator]


async def test_liveness_failure_after_ready_fails(start: Start) -> None:
    ctx, _ = start(_health(liveness_threshold=2), SVC_LIVENESS_FAIL="1")
    res = await health.run(ctx)
    assert res.status is Status.FAIL
    assert res.findings[0].code == "health.liveness"
    live = res.details["liveness"]
    assert live["probes_sent"] == 2  # type: ignore[index]
    assert live["reasons"][0]["reason"].startswith("HTTP 500")  # type: ignore[index]
    assert res.measurement("time_to_ready_s") is not None


async def test_initial_delay_is_honoured(start: Start) -> None:
    ctx, running = start(_health(delay=1, threshold=2))
    outcome = await health.wait_ready(running.endpoint, ctx.config.health.startup)
    assert outcome.ready and outcome.ready_after_s is not None
    assert outcome.ready_after_s >= 1.0
    assert outcome.probes_sent == 1


async def test_window_counts_from_the_service_start_not_the_poll(start: Start) -> None:
    ctx, running = start(_health(period=1, threshold=2), SVC_READY_DELAY_S="1.2")
    await anyio.sleep(1.0)  # as if an earlier stage had watched the service for a while
    res = await health.run(ctx)
    assert res.status is Status.PASS, res.summary
    ttr = res.measurement("time_to_ready_s")
    assert isinstance(ttr, float) and ttr >= 1.2  # since start, not since the poll began
    assert res.details["startup"]["poll_began_s"] >= 1.0  # type: ignore[index]


async def test_poll_that_begins_after_the_window_warns_instead_of_guessing(start: Start) -> None:
    ctx, _ = start(_health(period=1, threshold=1))
    await anyio.sleep(1.5)
    res = await health.run(ctx)
    assert res.status is Status.WARN
    assert res.findings[0].code == "health.late-poll"
    assert res.details["startup"]["ready_on_first_probe"] is True  # type: ignore[index]


async def test_no_running_service_is_a_clear_stage_error(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    with pytest.raises(StageError, match="needs a running service"):
        await health.run(ctx)


async def test_failed_periods_follow_cloud_run_counting() -> None:
    probe = ProbeConfig(path="/h", initial_delay_s=2, period_s=3, failure_threshold=4)
    outcome = health.ProbeOutcome(path="/h", window_s=probe.window_s, ready_after_s=6.5)
    assert outcome.failed_periods(probe) == 2  # probes at 2 s and 5 s failed, 8 s succeeds
    outcome.ready_after_s, outcome.ended_after_s = None, 30.0
    assert outcome.failed_periods(probe) == 4
    outcome.ended_after_s = 4.0  # died during the second period
    assert outcome.failed_periods(probe) == 1


def test_log_tail_collapses_repeated_probe_lines() -> None:
    text = "\n".join(
        ["booting", "loading model"]
        + [f'{{"ts": {i}.5, "path": "/health/startup", "status": 503}}' for i in range(50)]
        + ["Traceback: boom"]
    )
    tail = health.compact_log_tail(text, keep=5).splitlines()
    assert tail == [
        "booting",
        "loading model",
        '{"ts": 0.5, "path": "/health/startup", "status": 503}',
        "  … 49 more like the line above",
        "Traceback: boom",
    ]
