"""The rollout's transitions, driven against an in-process fake of the *client interface*
(``cloudrun.client.CloudRun``) — no HTTP. The real wire (the official client against the local
Cloud Run) is tested end to end in tests/e2e/test_deploy*.py; here every branch of the state
machine is reached on purpose: promote, roll back, halt, not ready, validation, lock, etag,
IAM 403, API errors and cancellation."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from google.cloud import run_v2
from google.iam.v1 import policy_pb2

from flightcheck.cloudrun import spec
from flightcheck.cloudrun.client import AccessDenied, CloudRunError, ConcurrentChange
from flightcheck.cloudrun.rollout import (
    CANDIDATE_TAG,
    DeployRefused,
    Rollout,
    Settings,
    Split,
    StepObservation,
    StepPlan,
    Validation,
    recorded_split,
    rollback,
    step_split,
)
from flightcheck.lessons.rollback import Decision, Observed, Thresholds

TARGET = spec.Target("p", "europe-west1", "svc")
READY = run_v2.Condition.State.CONDITION_SUCCEEDED
FAILED = run_v2.Condition.State.CONDITION_FAILED
REVISION = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
LATEST = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST


class FakeCloudRun:
    """Just enough Cloud Run semantics: revisions from templates, traffic with tags, etags."""

    def __init__(self) -> None:
        self.target = TARGET
        self.service: run_v2.Service | None = None
        self.revisions: dict[str, run_v2.Revision] = {}
        self.fail_revisions: dict[str, str] = {}  # name → reason it never gets ready
        self.policy = policy_pb2.Policy(etag=b"1")
        self.deny_iam = False
        self.etag = 0
        self.writes: list[list[tuple[str, int, str]]] = []  # traffic after every write
        self.on_update: Callable[[run_v2.Service], None] | None = None
        self.fail_next_update: Exception | None = None

    def _ready(self, name: str, ok: bool, reason: str = "") -> None:
        state = READY if ok else FAILED
        self.revisions[name] = run_v2.Revision(
            name=self.target.revision(name),
            conditions=[run_v2.Condition(
                type_="Ready", state=state, message=reason and f"container failed: {reason}",
                revision_reason="HEALTH_CHECK_CONTAINER_ERROR" if reason else
                "REVISION_REASON_UNDEFINED")])

    def _apply(self, body: run_v2.Service) -> run_v2.Service:
        if self.fail_next_update is not None:
            exc, self.fail_next_update = self.fail_next_update, None
            raise exc
        if self.service is not None and body.etag and body.etag != self.service.etag:
            raise ConcurrentChange("etag mismatch")
        name = body.template.revision
        if name and name not in self.revisions:
            reason = self.fail_revisions.get(name)
            self._ready(name, reason is None, reason or "")
            if reason:
                raise CloudRunError(f"revision {name} is not ready: {reason}")
        svc = run_v2.Service(body)
        self.etag += 1
        svc.etag = str(self.etag)
        svc.uri = "http://svc"
        statuses = []
        for t in svc.traffic:
            revision = t.revision or name
            statuses.append(run_v2.TrafficTargetStatus(
                type_=REVISION, revision=revision, percent=t.percent, tag=t.tag,
                uri=f"http://{t.tag}.svc" if t.tag else ""))
        del svc.traffic_statuses[:]
        svc.traffic_statuses.extend(statuses)
        self.service = svc
        self.writes.append([(t.revision, t.percent, t.tag) for t in svc.traffic])
        if self.on_update is not None:
            self.on_update(svc)
        return run_v2.Service(svc)

    def serving(self) -> list[tuple[str, int]]:
        assert self.service is not None
        return [(t.revision, t.percent) for t in self.service.traffic if t.percent]

    async def get_service(self) -> run_v2.Service | None:
        return None if self.service is None else run_v2.Service(self.service)

    async def create_service(self, service: run_v2.Service, *, timeout_s: float) -> run_v2.Service:
        assert self.service is None
        return self._apply(service)

    async def update_service(self, service: run_v2.Service, *, timeout_s: float) -> run_v2.Service:
        return self._apply(service)

    async def get_revision(self, name: str) -> run_v2.Revision | None:
        return self.revisions.get(name)

    async def get_iam_policy(self) -> policy_pb2.Policy:
        return self.policy

    async def set_iam_policy(self, policy: policy_pb2.Policy) -> policy_pb2.Policy:
        if self.deny_iam:
            raise AccessDenied("set IAM policy: permission denied (HTTP 403): Permission "
                               "'run.services.setIamPolicy' denied")
        self.policy = policy
        return policy

    async def revision_logs(self, name: str, tail: int = 50) -> str:
        return f"{name}: Traceback (most recent call last)\nRuntimeError: boom"

    async def revision_sidecar(self, name: str) -> str | None:
        return None

    async def metrics(self, since: float) -> dict[str, Any] | None:
        return None


class FakeAnalysis:
    """Per step, what the candidate and the rollback point 'served'."""

    def __init__(self, by_step: dict[int, tuple[Observed, Observed | None]] | None = None,
                 *, hang_at: int | None = None, point_answers: int | None = None) -> None:
        self.by_step = by_step or {}
        self.point_answers = point_answers  # fewer than the Observed's count: thin evidence
        self.plans: list[StepPlan] = []
        self.hang_at = hang_at
        self.entered = anyio.Event()

    async def run_step(self, plan: StepPlan, judge: Callable[[Observed, Observed | None],
                                                             Decision]) -> StepObservation:
        self.plans.append(plan)
        if plan.percent == self.hang_at:
            self.entered.set()
            await anyio.sleep_forever()
        good = Observed(requests=50, errors=0, p95_ms=40, quality=1.0,
                        cost_per_request_usd=1e-5)
        cand, stable = self.by_step.get(plan.percent, (good, good))
        decision = judge(cand, stable)
        return StepObservation(candidate=cand, stable=stable, decision=decision, complete=True,
                               duration_s=0.01, metrics={
                                   plan.candidate: {"requests": cand.requests},
                                   **({plan.stable: {"requests": self.point_answers
                                                     or stable.requests}}
                                      if plan.stable and stable else {})},
                               first_bad_at=1.0 if decision.rollback else None,
                               crossed_at=2.0 if decision.rollback else None)


def _desired(revision: str) -> run_v2.Service:
    return run_v2.Service(
        labels={"managed-by": "flightcheck"},
        template=run_v2.RevisionTemplate(revision=revision, containers=[
            run_v2.Container(image=f"r/svc@sha256:{'a' * 64}")]),
        traffic=[run_v2.TrafficTarget(type_=REVISION, revision=revision, percent=100)])


async def _valid(url: str, revision: str) -> Validation:
    return Validation(True, details={"url": url})


async def _invalid(url: str, revision: str) -> Validation:
    return Validation(False, reason="ai-smoke: 3/8 passed; quality 0.40 < 0.90")


def _rollout(api: FakeCloudRun, revision: str, analysis: FakeAnalysis | None = None, *,
             validator: Any = _valid, log: list[str] | None = None, **settings: Any) -> Rollout:
    lines = log if log is not None else []
    return Rollout(api, _desired(revision), validator=validator,
                   analyzer=analysis or FakeAnalysis(),
                   settings=Settings(thresholds=Thresholds(max_error_rate=0.01, min_quality=0.9,
                                                           max_p95_ms=2000), **settings),
                   log=lines.append)


def _deployed(api: FakeCloudRun, revision: str = "svc-v1") -> None:
    outcome = anyio.run(_rollout(api, revision).run)
    assert outcome.status == "promoted" and outcome.first_deploy


# --- traffic arithmetic ---------------------------------------------------------------------------


def test_steps_split_the_rest_in_the_recorded_proportions() -> None:
    point = [Split("a", 70), Split("b", 30), Split("c", 0, "preview")]
    assert step_split(point, "new", 10) == [Split("a", 63), Split("b", 27),
                                           Split("c", 0, "preview"), Split("new", 10, "candidate")]
    assert sum(s.percent for s in step_split(point, "new", 33)) == 100
    assert step_split(point, "new", 100)[-1] == Split("new", 100, "candidate")
    tagged = step_split([Split("a", 100)], "new", 50, stable_tag="stable")
    assert tagged == [Split("a", 50, "stable"), Split("new", 50, "candidate")]


def test_latest_is_recorded_as_the_revision_it_points_at() -> None:
    svc = run_v2.Service(latest_ready_revision="projects/p/locations/l/services/s/revisions/s-1",
                         traffic=[run_v2.TrafficTarget(type_=LATEST, percent=100)])
    assert recorded_split(svc) == [Split("s-1", 100)]


# --- the runs -----------------------------------------------------------------------------------------


def test_first_deploy_gets_all_traffic_after_validation_and_no_steps() -> None:
    api = FakeCloudRun()
    log: list[str] = []
    outcome = anyio.run(_rollout(api, "svc-v1", log=log).run)
    assert outcome.status == "promoted" and outcome.first_deploy and not outcome.steps
    assert api.serving() == [("svc-v1", 100)]
    assert spec.LOCK_ANNOTATION not in api.service.annotations  # type: ignore[union-attr]
    assert [e["to"] for e in outcome.events] == [
        "rollback point recorded", "creating candidate", "validating", "promoting", "promoted"]
    assert all(e["reason"] for e in outcome.events)
    assert any("first deploy" in line for line in log)


def test_a_good_candidate_goes_through_every_step_and_is_promoted() -> None:
    api = FakeCloudRun()
    _deployed(api)
    analysis = FakeAnalysis()
    outcome = anyio.run(_rollout(api, "svc-v2", analysis).run)
    assert outcome.status == "promoted", outcome.reason
    assert [p.percent for p in analysis.plans] == [10, 50, 100]
    assert [s.verdict for s in outcome.steps] == ["pass"] * 3
    # traffic after each write: candidate at 0% with its tag, 10/50/100, then promoted
    assert api.writes[2:] == [
        [("svc-v1", 100, ""), ("svc-v2", 0, CANDIDATE_TAG)],
        [("svc-v1", 90, ""), ("svc-v2", 10, CANDIDATE_TAG)],
        [("svc-v1", 50, ""), ("svc-v2", 50, CANDIDATE_TAG)],
        [("svc-v2", 100, CANDIDATE_TAG)],
        [("svc-v2", 100, "")],
    ]
    annotations = api.service.annotations  # type: ignore[union-attr]
    assert spec.LOCK_ANNOTATION not in annotations
    assert json.loads(annotations[spec.PREVIOUS_ANNOTATION]) == [
        {"revision": "svc-v1", "percent": 100, "tag": ""}]
    assert analysis.plans[0].candidate_url == "http://candidate.svc"


def test_a_failed_step_puts_the_recorded_split_back_with_the_reason() -> None:
    api = FakeCloudRun()
    _deployed(api)
    bad = Observed(requests=40, errors=12, p95_ms=50, quality=0.7)
    good = Observed(requests=400, errors=0, p95_ms=40, quality=1.0)
    analysis = FakeAnalysis({10: (bad, good)})
    outcome = anyio.run(_rollout(api, "svc-v2", analysis).run)
    assert outcome.status == "rolled_back" and outcome.rolled_back
    assert outcome.reason.startswith("error rate 0.30 > 0.01; quality 0.70 < 0.90 at 10%")
    assert "traffic is back on svc-v1 100%" in outcome.reason
    assert api.serving() == [("svc-v1", 100)]
    assert api.writes[-1] == [("svc-v1", 100, "")]  # candidate tag gone too
    assert [p.percent for p in analysis.plans] == [10]
    assert outcome.steps[0].verdict == "fail"
    assert outcome.rollback_s is not None and outcome.verdict_to_rollback_s is not None
    # The transition back says what the rollback point was judged on.
    (back,) = [e["reason"] for e in outcome.events if e["to"] == "rolling back"]
    assert back.endswith("; svc-v1 held every threshold on its 400 answers at 10%")
    assert spec.LOCK_ANNOTATION not in api.service.annotations  # type: ignore[union-attr]


def test_an_unhealthy_rollback_point_is_left_alone_and_a_person_is_asked_to_act() -> None:
    api = FakeCloudRun()
    _deployed(api)
    bad = Observed(requests=40, errors=12, p95_ms=50, quality=1.0)
    also_bad = Observed(requests=400, errors=200, p95_ms=50, quality=1.0)
    outcome = anyio.run(_rollout(api, "svc-v2", FakeAnalysis({10: (bad, also_bad)})).run)
    assert outcome.status == "halted" and not outcome.rolled_back
    assert "rollback point is unhealthy too (svc-v1: error rate 0.50 > 0.01)" in outcome.reason
    assert "a person must act" in outcome.reason
    assert api.serving() == [("svc-v1", 90), ("svc-v2", 10)]  # traffic left as it was
    assert spec.LOCK_ANNOTATION not in api.service.annotations  # type: ignore[union-attr]


def test_at_100_percent_the_rollback_point_is_judged_on_its_answers_at_the_step_before() -> None:
    # The last step sends the rollback point nothing: its own answers at 50% are the evidence.
    bad = Observed(requests=40, errors=12, p95_ms=50, quality=1.0)
    good = Observed(requests=50, errors=0, p95_ms=40, quality=1.0)
    also_bad = Observed(requests=60, errors=30, p95_ms=50, quality=1.0)
    api = FakeCloudRun()
    _deployed(api)
    halted = anyio.run(_rollout(api, "svc-v2", FakeAnalysis(
        {50: (good, also_bad), 100: (bad, None)})).run)
    assert halted.status == "halted", halted.reason
    assert ("rollback point is unhealthy too (svc-v1: error rate 0.50 > 0.01 (its 60 answers "
            "at 50%))") in halted.reason
    assert api.serving() == [("svc-v2", 100)]  # left as it was

    api = FakeCloudRun()
    _deployed(api)
    back = anyio.run(_rollout(api, "svc-v3", FakeAnalysis({100: (bad, None)})).run)
    assert back.status == "rolled_back", back.reason
    (line,) = [e["reason"] for e in back.events if e["to"] == "rolling back"]
    assert line.endswith("; svc-v1 held every threshold on its 50 answers at 50%")
    assert api.serving() == [("svc-v1", 100)]


def test_a_point_judged_on_fewer_than_min_requests_answers_says_what_it_saw() -> None:
    # The analysis counts a thin sample's errors against min_requests (20): 0.10 is the rate
    # no further answers could bring under the threshold, not what was seen.
    bad = Observed(requests=40, errors=12, p95_ms=50, quality=1.0)
    thin = Observed(requests=20, errors=2)
    api = FakeCloudRun()
    _deployed(api)
    outcome = anyio.run(_rollout(api, "svc-v2", FakeAnalysis({10: (bad, thin)},
                                                             point_answers=3)).run)
    assert outcome.status == "halted", outcome.reason
    assert "(svc-v1: error rate 0.10 > 0.01 (2 of its 3 answers failed))" in outcome.reason


def test_a_candidate_that_never_gets_ready_never_gets_traffic() -> None:
    api = FakeCloudRun()
    _deployed(api)
    api.fail_revisions["svc-v2"] = "exit code 1"
    log: list[str] = []
    outcome = anyio.run(_rollout(api, "svc-v2", log=log).run)
    assert outcome.status == "failed"
    assert "did not become ready" in outcome.reason and "exit code 1" in outcome.reason
    assert outcome.conditions[0]["state"] == "CONDITION_FAILED"
    assert "RuntimeError: boom" in outcome.logs_tail
    assert any("log: RuntimeError: boom" in line for line in log)
    assert all(("svc-v2", p, t) not in w for w in api.writes for p, t in [(10, CANDIDATE_TAG)])
    assert api.serving() == [("svc-v1", 100)]


def test_a_template_the_api_refuses_fails_fast_with_its_message() -> None:
    api = FakeCloudRun()
    _deployed(api)
    api.fail_next_update = CloudRunError("update service svc: HTTP 400: template.timeout: bad")
    outcome = anyio.run(_rollout(api, "svc-v2").run)
    assert outcome.status == "failed"
    assert outcome.reason == ("Cloud Run refused the new revision: update service svc: HTTP 400: "
                              "template.timeout: bad; no traffic moved")
    assert api.serving() == [("svc-v1", 100)]
    assert spec.LOCK_ANNOTATION not in api.service.annotations  # type: ignore[union-attr]


def test_a_candidate_failing_validation_is_untagged_and_never_served() -> None:
    api = FakeCloudRun()
    _deployed(api)
    analysis = FakeAnalysis()
    outcome = anyio.run(_rollout(api, "svc-v2", analysis, validator=_invalid).run)
    assert outcome.status == "failed"
    assert "failed validation on its tag URL: ai-smoke: 3/8 passed; quality 0.40 < 0.90" in (
        outcome.reason)
    assert analysis.plans == [] and api.writes[-1] == [("svc-v1", 100, "")]


def test_a_second_deploy_while_one_runs_is_refused() -> None:
    api = FakeCloudRun()
    _deployed(api)
    first_analysis = FakeAnalysis(hang_at=10)
    first = _rollout(api, "svc-v2", first_analysis)
    refused: list[DeployRefused] = []

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(first.run)
            await first_analysis.entered.wait()  # the first holds the lock, at 10%
            with pytest.raises(DeployRefused) as info:
                await _rollout(api, "svc-v3").run()
            refused.append(info.value)
            assert api.serving() == [("svc-v1", 90), ("svc-v2", 10)]  # untouched by it
            tg.cancel_scope.cancel()

    anyio.run(main)
    (error,) = refused
    assert "another deploy of svc is in progress" in error.what and "svc-v2" in error.what
    assert "flightcheck rollback" in error.fix
    assert "svc-v3" not in api.revisions
    assert api.serving() == [("svc-v1", 100)]  # the first, interrupted, restored its point


def test_someone_elses_change_mid_rollout_wins_and_is_not_overwritten() -> None:
    api = FakeCloudRun()
    _deployed(api)

    def person(svc: run_v2.Service) -> None:
        if len(api.writes) == 4:  # at 10%: a person moves traffic back by hand
            api.on_update = None
            body = run_v2.Service(svc)
            del body.traffic[:]
            body.traffic.append(run_v2.TrafficTarget(type_=REVISION, revision="svc-v1",
                                                     percent=100))
            api._apply(body)

    api.on_update = person
    with pytest.raises(ConcurrentChange):
        anyio.run(_rollout(api, "svc-v2").run)
    assert api.serving() == [("svc-v1", 100)]
    assert api.writes[-1] == [("svc-v1", 100, "")]  # the person's write was the last


def test_iam_403_fails_clearly_and_moves_no_traffic() -> None:
    api = FakeCloudRun()
    _deployed(api)
    api.deny_iam = True
    outcome = anyio.run(_rollout(api, "svc-v2", allow_unauthenticated=True).run)
    assert outcome.status == "failed"
    assert "run.services.setIamPolicy" in outcome.reason and "roles/run.admin" in outcome.reason
    assert api.serving() == [("svc-v1", 100)]


def test_allow_unauthenticated_binds_all_users_as_invoker() -> None:
    api = FakeCloudRun()
    outcome = anyio.run(_rollout(api, "svc-v1", allow_unauthenticated=True).run)
    assert outcome.status == "promoted"
    assert [(b.role, list(b.members)) for b in api.policy.bindings] == [
        ("roles/run.invoker", ["allUsers"])]
    anyio.run(_rollout(api, "svc-v2", allow_unauthenticated=False).run)
    assert list(api.policy.bindings) == []


def test_an_api_error_mid_rollout_restores_the_split_then_reports() -> None:
    api = FakeCloudRun()
    _deployed(api)

    def explode(svc: run_v2.Service) -> None:
        if len(api.writes) == 4:  # just shifted to 10%
            api.on_update = None
            api.fail_next_update = CloudRunError("update service svc: HTTP 400: bad field")

    api.on_update = explode
    analysis = FakeAnalysis()
    with pytest.raises(CloudRunError):
        anyio.run(_rollout(api, "svc-v2", analysis).run)
    assert api.serving() == [("svc-v1", 100)]
    assert spec.LOCK_ANNOTATION not in api.service.annotations  # type: ignore[union-attr]


def test_cancelled_mid_step_traffic_goes_back_to_the_recorded_split() -> None:
    api = FakeCloudRun()
    _deployed(api)
    analysis = FakeAnalysis(hang_at=50)
    rollout = _rollout(api, "svc-v2", analysis)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(rollout.run)
            await analysis.entered.wait()
            assert api.serving() == [("svc-v1", 50), ("svc-v2", 50)]
            tg.cancel_scope.cancel()

    anyio.run(main)
    assert rollout.outcome.status == "interrupted"
    assert api.serving() == [("svc-v1", 100)]
    assert spec.LOCK_ANNOTATION not in api.service.annotations  # type: ignore[union-attr]


def test_rollback_on_demand_uses_the_recorded_point_or_a_named_revision() -> None:
    api = FakeCloudRun()
    _deployed(api)
    anyio.run(_rollout(api, "svc-v2").run)
    before, after = anyio.run(lambda: rollback(api))
    assert (before, after) == ([Split("svc-v2", 100)], [Split("svc-v1", 100)])
    assert api.serving() == [("svc-v1", 100)]
    anyio.run(lambda: rollback(api, to="svc-v2"))
    assert api.serving() == [("svc-v2", 100)]
    api.fail_revisions["svc-v3"] = "crash"
    with pytest.raises(CloudRunError, match="svc-v9 cannot take traffic: it does not exist"):
        anyio.run(lambda: rollback(api, to="svc-v9"))
