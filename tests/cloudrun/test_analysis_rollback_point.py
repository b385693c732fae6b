"""The canary analysis judges the rollback point on enough of its own answers before a rollback
verdict is handed to the rollout: a bad candidate's first error can come before the rollback
point has answered anything, and a point judged on two answers looks healthy whatever it is.

A real HTTP server on 127.0.0.1 plays the service URL the way the local Cloud Run's proxy does:
it splits requests between two "revisions" and names the one that answered in the
``x-flightcheck-revision`` header."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anyio
import pytest
from http_support import serving

from flightcheck.cloudrun.analysis import REVISION_HEADER, Analysis
from flightcheck.cloudrun.rollout import StepObservation, StepPlan
from flightcheck.lessons.rollback import Decision, Observed, Thresholds, health_reasons
from flightcheck.smoke.runner import Mode
from flightcheck.smoke.suite import Case, Defaults, Expect, Request

CANDIDATE, STABLE = "svc-candidate", "svc-stable"
THRESHOLDS = Thresholds(max_error_rate=0.01)
MIN_REQUESTS = 10


@dataclass
class Behaviour:
    stable_delay_s: float = 0.02  # the candidate's first (bad) answer comes back first
    stable_error_every: int = 2  # every 2nd answer of the rollback point is a 500; 0: none


class _Split(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, behaviour: Behaviour) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.behaviour = behaviour
        self.lock = threading.Lock()
        self.seen = 0
        self.stable_seen = 0


class _Handler(BaseHTTPRequestHandler):
    server: _Split

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        b = self.server.behaviour
        with self.server.lock:
            n = self.server.seen
            self.server.seen += 1
            candidate = n % 10 == 0  # 10% to the candidate, its first request first
            if not candidate:
                self.server.stable_seen += 1
                k = self.server.stable_seen
        if candidate:
            self._answer(CANDIDATE, 500)
            return
        time.sleep(b.stable_delay_s)
        bad = b.stable_error_every and k % b.stable_error_every == 0
        self._answer(STABLE, 500 if bad else 200)

    def _answer(self, revision: str, status: int) -> None:
        body = b'{"result": "4"}'
        try:
            self.send_response(status)
            self.send_header(REVISION_HEADER, revision)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the step ended and its client went away

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def split() -> Iterator[_Split]:
    with serving(_Split(Behaviour())) as server:
        yield server


def _judge(candidate: Observed, stable: Observed | None) -> Decision:
    reasons = health_reasons(candidate, THRESHOLDS)
    return Decision(bool(reasons), tuple(reasons))


def _step(server: _Split, *, request_timeout_s: float = 5.0) -> tuple[StepObservation, list[str]]:
    lines: list[str] = []
    analysis = Analysis(
        cases=[Case(name="evaluate", request=Request(method="POST", path="/v1/evaluate",
                                                     json={"expression": "2+2"}),
                    expect=Expect())],
        mode=Mode("fake"), defaults=Defaults(), prices={}, request_timeout_s=request_timeout_s,
        request_rate=200, min_requests=MIN_REQUESTS, step_duration_s=0, max_step_s=60,
        attribution="header", log=lines.append)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    plan = StepPlan(index=1, percent=10, candidate=CANDIDATE, stable=STABLE, service_url=url,
                    candidate_url=None, stable_url=None)
    return anyio.run(analysis.run_step, plan, _judge), lines


def test_an_unhealthy_rollback_point_is_judged_on_min_requests_of_its_own_answers(
    split: _Split,
) -> None:
    seen, lines = _step(split)
    assert seen.decision.rollback and seen.decision.reasons[0].startswith("error rate ")
    point = seen.metrics[STABLE]
    assert point["requests"] >= MIN_REQUESTS  # before: 0-3 answers when the verdict came
    assert seen.stable is not None
    assert health_reasons(seen.stable, THRESHOLDS)[0] == (
        f"error rate {seen.stable.error_rate:.2f} > 0.01")
    assert 0.4 <= seen.stable.error_rate <= 0.6
    (line,) = [x for x in lines if "judging it before traffic moves back" in x]
    assert "the rollback point has answered" in line and f"of {MIN_REQUESTS} requests" in line
    # The verdict's time is the candidate's crossing, not the end of the point's evidence.
    assert seen.crossed_at is not None and seen.first_bad_at is not None
    assert seen.crossed_at - seen.first_bad_at < 1.0


def test_a_healthy_rollback_point_is_cleared_on_its_own_answers(split: _Split) -> None:
    split.behaviour.stable_error_every = 0
    seen, _ = _step(split)
    assert seen.decision.rollback
    assert seen.metrics[STABLE]["requests"] >= MIN_REQUESTS
    assert seen.stable is not None and health_reasons(seen.stable, THRESHOLDS) == []


def test_a_slow_rollback_point_delays_the_rollback_one_bounded_window_not_the_whole_step(
    split: _Split,
) -> None:
    # Answers in 1.5 s: within the 2 s request timeout, but the window (one timeout plus twice
    # the time its share needs) ends first. Judged on what it gave: no certain error, so it does
    # not halt the rollback; the step never waits for max_step_s (60 s).
    split.behaviour.stable_error_every = 0
    split.behaviour.stable_delay_s = 1.5
    seen, lines = _step(split, request_timeout_s=2.0)
    assert seen.decision.rollback
    assert 1 <= seen.metrics[STABLE]["requests"] < MIN_REQUESTS
    assert seen.duration_s < 10
    assert seen.stable is not None and health_reasons(seen.stable, THRESHOLDS) == []
    assert any("up to 2.1 s" in x for x in lines), lines
