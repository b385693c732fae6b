"""The rollout: a small state machine that can never leave users on a bad revision.

    recording → creating → validating → step 1 … step n → promoted
                    ↓           ↓            ↓
                  failed      failed     rolled back (or halted: the rollback point is
                 (no traffic moved)       unhealthy too — traffic stays, a person must act)

1. Record the rollback point: the traffic split as served now, LATEST resolved to revision
   names (so restoring it never lands on the new revision), and take the lock (an annotation
   written with the service's etag: a second deploy is refused, a concurrent writer loses).
2. Create the candidate with an explicit unique revision name at 0% with the tag
   ``candidate``; wait for it to be ready with a deadline. A revision that is not ready gets
   no traffic: its conditions, reason and last log lines are reported.
3. Validate its tag URL (the deploy stage runs health-poll and ai-smoke against it).
4. Each canary step moves ``percent`` to the candidate and the rest to the rollback point in
   its recorded proportions, then lets the analysis (``cloudrun/analysis.py``) drive and
   judge traffic. A failed step puts the recorded split back at once, with the reason.
5. Promote: 100% to the candidate, IAM for ``allow_unauthenticated``, lock released, the
   rollback point kept in an annotation for ``flightcheck rollback``.

Every transition is logged with its reason (Flagger style) and kept in ``Outcome.events``.
Cancelled (Ctrl-C, SIGTERM) at any point: the recorded split is restored, shielded from the
cancellation, before the cancellation goes on.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, Protocol

import anyio
from google.cloud import run_v2

from flightcheck.cloudrun import spec
from flightcheck.cloudrun.client import (
    AccessDenied,
    CloudRun,
    CloudRunError,
    ConcurrentChange,
    allows_unauthenticated,
    with_unauthenticated,
)
from flightcheck.lessons.rollback import Decision, Observed, Thresholds, decide, health_reasons

CANDIDATE_TAG = "candidate"
STABLE_TAG = "stable"
_REVISION = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
_LATEST = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
_SUCCEEDED = run_v2.Condition.State.CONDITION_SUCCEEDED
_FAILED = run_v2.Condition.State.CONDITION_FAILED
LOG_LINES = 30


class Phase(StrEnum):
    STARTING = "starting"
    RECORDED = "rollback point recorded"
    CREATING = "creating candidate"
    VALIDATING = "validating"
    PROGRESSING = "progressing"
    PROMOTING = "promoting"
    PROMOTED = "promoted"
    ROLLING_BACK = "rolling back"
    ROLLED_BACK = "rolled back"
    FAILED = "failed"
    HALTED = "halted"
    INTERRUPTED = "interrupted"


OutcomeStatus = Literal["promoted", "rolled_back", "failed", "halted", "interrupted"]


# --- traffic ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """One traffic entry, always by revision name."""

    revision: str
    percent: int
    tag: str = ""

    def to_json(self) -> dict[str, object]:
        return {"revision": self.revision, "percent": self.percent, "tag": self.tag}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Split:
        return cls(str(data["revision"]), int(data["percent"]), str(data.get("tag", "")))


def condition_reason(c: run_v2.Condition) -> str:
    """The reason a condition gives, whichever of its reason fields is set."""
    for value in (c.revision_reason, c.reason, c.execution_reason):
        name = getattr(value, "name", "")
        if value and name and not name.endswith(("_UNDEFINED", "_UNSPECIFIED")):
            return name
    return ""


def short_name(name: str) -> str:
    return name.rpartition("/")[2]


def recorded_split(service: run_v2.Service) -> list[Split]:
    """The split as served now, LATEST resolved to the revision it points at."""
    entries: list[Split] = []
    statuses = list(service.traffic_statuses)
    source = statuses or list(service.traffic)
    for t in source:
        revision = short_name(t.revision)
        if not revision and t.type_ == _LATEST:
            revision = short_name(service.latest_ready_revision)
        if revision:
            entries.append(Split(revision, int(t.percent), t.tag))
    return entries


def describe(splits: Sequence[Split]) -> str:
    parts = [f"{s.revision} {s.percent}%" + (f" (tag {s.tag})" if s.tag else "")
             for s in splits if s.percent or s.tag]
    return ", ".join(parts) or "no traffic"


def main_revision(splits: Sequence[Split]) -> str | None:
    serving = [s for s in splits if s.percent > 0]
    return max(serving, key=lambda s: s.percent).revision if serving else None


def step_split(point: Sequence[Split], candidate: str, percent: int, *,
               stable_tag: str | None = None) -> list[Split]:
    """``percent`` to the candidate (tag ``candidate``), the rest over the rollback point's
    serving revisions in their recorded proportions (largest remainder); tag-only entries kept.
    ``stable_tag`` tags the main revision when it has no tag yet (per-revision URLs)."""
    serving = [s for s in point if s.percent > 0]
    total = sum(s.percent for s in serving) or 1
    rest = 100 - percent
    shares = [(s, s.percent * rest / total) for s in serving]
    floors = {s.revision: int(share) for s, share in shares}
    left = rest - sum(floors.values())
    for s, _share in sorted(shares, key=lambda x: x[1] - int(x[1]), reverse=True)[:left]:
        floors[s.revision] += 1
    main = main_revision(point)
    out: list[Split] = []
    for s in point:
        tag = s.tag or (stable_tag if stable_tag and s.revision == main else "")
        pct = floors.get(s.revision, 0) if s.percent > 0 else 0
        if pct or tag:
            out.append(Split(s.revision, pct, tag))
    out.append(Split(candidate, percent, CANDIDATE_TAG))
    return out


def traffic_targets(splits: Sequence[Split]) -> list[run_v2.TrafficTarget]:
    return [run_v2.TrafficTarget(type_=_REVISION, revision=s.revision, percent=s.percent,
                                 tag=s.tag) for s in splits]


def tag_url(service: run_v2.Service, tag: str) -> str | None:
    for status in service.traffic_statuses:
        if status.tag == tag and status.uri:
            return status.uri
    return None


# --- what the state machine is given ------------------------------------------------------------


@dataclass
class Validation:
    """What checking the candidate's tag URL found."""

    ok: bool
    reason: str = ""
    details: dict[str, object] = field(default_factory=dict)


_NOT_RUN = Validation(ok=False, reason="not validated")
Validator = Callable[[str, str], Awaitable[Validation]]  # (tag URL, revision) → verdict


@dataclass(frozen=True)
class StepPlan:
    """One canary step as the analysis sees it."""

    index: int
    percent: int
    candidate: str
    stable: str | None
    service_url: str
    candidate_url: str | None
    stable_url: str | None


Judge = Callable[[Observed, Observed | None], Decision]


@dataclass
class StepObservation:
    """What the analysis saw in one step."""

    candidate: Observed
    stable: Observed | None
    decision: Decision
    complete: bool  # enough evidence was gathered (else ``decision`` says why not)
    duration_s: float
    metrics: dict[str, dict[str, object]] = field(default_factory=dict)  # per revision
    proxy: dict[str, Any] | None = None
    first_bad_at: float | None = None  # time.time() of the candidate's first bad response
    crossed_at: float | None = None  # when the verdict was reached


def _answers(seen: StepObservation, revision: str | None) -> int:
    """How many answers ``revision`` gave in the step (``Observed.requests`` is the count the
    decision used, which below ``min_requests`` is ``min_requests``)."""
    if revision is None or seen.stable is None:
        return 0
    count = seen.metrics.get(revision, {}).get("requests")
    return count if isinstance(count, int) else seen.stable.requests


class Analyzer(Protocol):
    async def run_step(self, plan: StepPlan, judge: Judge) -> StepObservation: ...


@dataclass(frozen=True)
class Settings:
    steps: tuple[int, ...] = (10, 50, 100)
    thresholds: Thresholds = Thresholds()
    allow_unauthenticated: bool = False
    ready_timeout_s: float = 600.0
    stable_tag: bool = False  # tag the rollback point so the analysis can reach it directly


@dataclass
class StepRecord:
    percent: int
    verdict: Literal["pass", "fail"]
    reason: str
    duration_s: float
    metrics: dict[str, dict[str, object]]
    proxy: dict[str, Any] | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"percent": self.percent, "verdict": self.verdict,
                                  "reason": self.reason, "duration_s": round(self.duration_s, 3),
                                  "metrics": self.metrics}
        if self.proxy is not None:
            out["proxy"] = self.proxy
        return out


@dataclass
class Outcome:
    status: OutcomeStatus
    revision: str
    image: str
    reason: str = ""
    url: str | None = None
    tag_url: str | None = None
    rolled_back: bool = False
    first_deploy: bool = False
    rollback_point: list[Split] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    events: list[dict[str, object]] = field(default_factory=list)
    validation: dict[str, object] = field(default_factory=dict)
    conditions: list[dict[str, object]] = field(default_factory=list)
    logs_tail: str = ""
    traffic: list[Split] = field(default_factory=list)  # as left at the end
    rollback_s: float | None = None  # first bad response → traffic back on the rollback point
    verdict_to_rollback_s: float | None = None  # threshold crossed → traffic back

    @property
    def ok(self) -> bool:
        return self.status == "promoted"

    def to_json(self) -> dict[str, object]:
        return {
            "status": self.status, "revision": self.revision, "image": self.image,
            "url": self.url, "tag_url": self.tag_url, "rolled_back": self.rolled_back,
            "reason": self.reason, "first_deploy": self.first_deploy,
            "rollback_point": [s.to_json() for s in self.rollback_point],
            "traffic": [s.to_json() for s in self.traffic],
            "steps": [s.to_json() for s in self.steps], "events": self.events,
            "validation": self.validation, "conditions": self.conditions,
            "logs_tail": self.logs_tail, "rollback_s": self.rollback_s,
            "verdict_to_rollback_s": self.verdict_to_rollback_s,
        }


class DeployRefused(CloudRunError):
    """Another deploy of the same service holds the lock."""


# --- the state machine ----------------------------------------------------------------------------


class Rollout:
    """One deploy of ``desired`` (a Service from ``spec.build_service``) through ``api``."""

    def __init__(self, api: CloudRun, desired: run_v2.Service, *, validator: Validator,
                 analyzer: Analyzer, settings: Settings = Settings(),
                 log: Callable[[str], None] | None = None) -> None:
        self.api = api
        self.desired = desired
        self.validator = validator
        self.analyzer = analyzer
        self.settings = settings
        self._log = log or (lambda _line: None)
        self.revision = desired.template.revision
        self.image = desired.template.containers[0].image
        self.phase = Phase.STARTING
        self.outcome = Outcome(status="failed", revision=self.revision, image=self.image)
        self._lock_id = uuid.uuid4().hex[:12]
        self._point: list[Split] = []
        self._service: run_v2.Service | None = None  # as last seen (its etag is ours)
        self._locked = False
        self._baseline_cost: float | None = None
        # The rollback point's latest answers (Observed, how many, at which step's percent): a
        # 100% step sends it nothing, so its health is judged on what it served before.
        self._point_seen: tuple[Observed, int, int] | None = None

    # --- logging ---------------------------------------------------------------------------

    def _to(self, phase: Phase, reason: str) -> None:
        old, self.phase = self.phase, phase
        self.outcome.events.append({"at": round(time.time(), 3), "from": old.value,
                                    "to": phase.value, "reason": reason})
        self._log(f"{old.value} → {phase.value}: {reason}")

    def _finish(self, status: OutcomeStatus, phase: Phase, reason: str) -> Outcome:
        self.outcome.status = status
        self.outcome.reason = reason
        self._to(phase, reason)
        return self.outcome

    # --- the run -------------------------------------------------------------------------------

    async def run(self) -> Outcome:
        try:
            return await self._run()
        except BaseException as exc:
            if isinstance(exc, Exception) and not isinstance(exc, anyio.get_cancelled_exc_class()):
                # An API error mid-way: put traffic back, then report it.
                with anyio.CancelScope(shield=True):
                    await self._restore_after_error(exc)
                raise
            with anyio.CancelScope(shield=True):
                await self._interrupted()
            raise

    async def _run(self) -> Outcome:
        current = await self.api.get_service()
        if current is not None:
            self._refuse_if_locked(current)
        if current is None or not recorded_split(current):
            return await self._first_deploy(current)
        self._point = recorded_split(current)
        self.outcome.rollback_point = list(self._point)
        self._to(Phase.RECORDED, f"rollback point: {describe(self._point)}")

        # 2. the candidate, at 0% with its tag, under our lock
        body = self._with_template(current)
        body.traffic = traffic_targets(
            step_split(self._point, self.revision, 0,
                       stable_tag=STABLE_TAG if self.settings.stable_tag else None))
        self._lock(body)
        self._to(Phase.CREATING, f"candidate {self.revision} ({self.image}) at 0% with tag "
                                 f"{CANDIDATE_TAG}; waiting up to "
                                 f"{self.settings.ready_timeout_s:g} s for it to be ready")
        stopped, verdict = await self._create(body, create=False)
        if stopped is not None:
            return stopped
        if not verdict.ok:
            await self._restore()
            return self._finish("failed", Phase.FAILED,
                                f"candidate failed validation on its tag URL: {verdict.reason}; "
                                "it never got traffic")

        # 4. the steps
        for index, percent in enumerate(self.settings.steps, start=1):
            stopped = await self._step(index, percent)
            if stopped is not None:
                return stopped
        # 5. promote
        return await self._promote()

    async def _first_deploy(self, current: run_v2.Service | None) -> Outcome:
        """No revision serves yet: all traffic to the new one (Cloud Run needs 100%), validate,
        no canary steps (there is nothing to compare with and no user to protect)."""
        self.outcome.first_deploy = True
        self._to(Phase.RECORDED, "first deploy: no revision serves yet, nothing to roll back to")
        body = self._with_template(current) if current is not None else run_v2.Service(
            self.desired)
        body.traffic = traffic_targets([Split(self.revision, 100, CANDIDATE_TAG)])
        self._lock(body)
        self._to(Phase.CREATING, f"revision {self.revision} ({self.image}) with 100% (first "
                                 f"deploy); waiting up to {self.settings.ready_timeout_s:g} s")
        stopped, verdict = await self._create(body, create=current is None)
        if stopped is not None:
            return stopped
        if not verdict.ok:
            await self._release(traffic=[Split(self.revision, 100)])
            return self._finish(
                "failed", Phase.FAILED,
                f"first deploy failed validation: {verdict.reason}; there is no earlier "
                f"revision to roll back to, so {self.revision} still serves the new service — "
                "fix it and deploy again")
        return await self._promote()

    # --- pieces ----------------------------------------------------------------------------------

    async def _create(self, body: run_v2.Service, *, create: bool
                      ) -> tuple[Outcome | None, Validation]:
        """Write the new revision under our lock, wait for it to be ready, apply IAM, then
        validate its tag URL. Returns the outcome when the rollout stops before validation
        judged anything, else the validation's verdict."""
        self._locked = True
        try:
            call = self.api.create_service if create else self.api.update_service
            svc = await call(body, timeout_s=self.settings.ready_timeout_s)
        except ConcurrentChange as exc:
            self._locked = False
            return self._finish("failed", Phase.FAILED, f"refused: {exc.what}"), _NOT_RUN
        except CloudRunError as exc:
            return await self._not_ready(str(exc.what)), _NOT_RUN
        self._service = svc
        if not await self._ready():
            return await self._not_ready(""), _NOT_RUN
        self.outcome.url = svc.uri or None
        self.outcome.tag_url = tag_url(svc, CANDIDATE_TAG)
        # IAM first: validation must reach the tag URL the way users will.
        if not await self._iam():
            return self.outcome, _NOT_RUN
        return None, await self._validate()

    def _refuse_if_locked(self, current: run_v2.Service) -> None:
        held = current.annotations.get(spec.LOCK_ANNOTATION)
        if not held:
            return
        try:
            lock = json.loads(held)
        except ValueError:
            lock = {"raw": held}
        since = lock.get("since", "?")
        who = f"{lock.get('host', '?')} pid {lock.get('pid', '?')}"
        raise DeployRefused(
            f"another deploy of {self.api.target.service} is in progress (since {since}, "
            f"{who}, candidate {lock.get('revision', '?')})",
            why="two rollouts of one service would fight over its traffic",
            fix="wait for it to finish; if it died, `flightcheck rollback` restores the "
            "recorded traffic and clears the lock",
        )

    def _with_template(self, current: run_v2.Service) -> run_v2.Service:
        """The current service (its etag, annotations) with our template and labels."""
        body = run_v2.Service(current)
        body.template = run_v2.RevisionTemplate(self.desired.template)
        body.labels.clear()
        body.labels.update(dict(self.desired.labels))
        return body

    def _lock(self, body: run_v2.Service) -> None:
        body.annotations[spec.LOCK_ANNOTATION] = json.dumps({
            "id": self._lock_id, "host": socket.gethostname(), "pid": os.getpid(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"), "revision": self.revision,
        }, sort_keys=True)

    async def _fresh(self) -> run_v2.Service:
        """The service as it is now; ConcurrentChange when someone else wrote since our last
        write (our etag is no longer current)."""
        svc = await self.api.get_service()
        if svc is None:
            raise ConcurrentChange(f"service {self.api.target.service} was deleted meanwhile")
        held = svc.annotations.get(spec.LOCK_ANNOTATION, "")
        if self._locked and self._lock_id not in held:
            raise ConcurrentChange(
                f"service {self.api.target.service} was changed by someone else during the "
                "rollout (flightcheck's lock is gone)",
                fix="look at its traffic (flightcheck rollback moves it back on demand)")
        if self._service is not None and self._service.etag and svc.etag != self._service.etag:
            raise ConcurrentChange(
                f"service {self.api.target.service} changed during the rollout (etag "
                f"{self._service.etag} → {svc.etag})",
                fix="look at its traffic (flightcheck rollback moves it back on demand)")
        return svc

    async def _shift(self, splits: Sequence[Split], *, release: bool = False,
                     previous: Sequence[Split] | None = None) -> run_v2.Service:
        svc = await self._fresh()
        body = run_v2.Service(svc)
        body.traffic = traffic_targets(splits)
        if release:
            body.annotations.pop(spec.LOCK_ANNOTATION, None)
        if previous is not None:
            body.annotations[spec.PREVIOUS_ANNOTATION] = json.dumps(
                [s.to_json() for s in previous], sort_keys=True)
        self._service = await self.api.update_service(body, timeout_s=self.settings.ready_timeout_s)
        if release:
            self._locked = False
        self.outcome.traffic = list(splits)
        return self._service

    async def _ready(self) -> bool:
        revision = await self.api.get_revision(self.revision)
        if revision is None:
            return False
        ready = next((c for c in revision.conditions if c.type_ == "Ready"), None)
        return ready is not None and ready.state == _SUCCEEDED

    async def _not_ready(self, api_message: str) -> Outcome:
        """The candidate did not become ready: report why; traffic stays where it was."""
        revision = await self.api.get_revision(self.revision)
        if revision is None and api_message:  # refused outright: no revision was made
            await self._put_back()
            return self._finish("failed", Phase.FAILED,
                                f"Cloud Run refused the new revision: {api_message}; no "
                                "traffic moved")
        conditions: list[dict[str, object]] = []
        if revision is not None:
            for c in revision.conditions:
                conditions.append({"type": c.type_, "state": c.state.name,
                                   "reason": condition_reason(c), "message": c.message})
        self.outcome.conditions = conditions
        failed = next((c for c in conditions if c["type"] == "Ready"), None)
        why = api_message or (f"{failed['reason']}: {failed['message']}" if failed
                              else "no Ready condition")
        if failed and api_message and str(failed["message"]) not in api_message:
            why += f" ({failed['reason']}: {failed['message']})"
        self.outcome.logs_tail = await self.api.revision_logs(self.revision, LOG_LINES)
        for c in conditions:
            self._log(f"  condition {c['type']}: {c['state']} {c['reason']} {c['message']}")
        for line in self.outcome.logs_tail.splitlines()[-LOG_LINES:]:
            self._log(f"  log: {line}")
        moved = ("traffic stays on the rollback point" if self._point
                 else "no revision serves (first deploy)")
        await self._put_back()
        return self._finish("failed", Phase.FAILED,
                            f"candidate {self.revision} did not become ready: {why}; {moved}")

    async def _put_back(self) -> None:
        """After a failed create: the recorded split (candidate tag gone) and no lock."""
        now = await self.api.get_service()
        if now is None or self._lock_id not in now.annotations.get(spec.LOCK_ANNOTATION, ""):
            self._locked = False  # our write never landed: nothing to put back
            return
        try:
            if self._point:
                await self._restore()
            else:
                await self._release(traffic=None)
        except CloudRunError as exc:
            self._log(f"could not put the service back in order: {exc.what}")

    async def _iam(self) -> bool:
        allow = self.settings.allow_unauthenticated
        policy = await self.api.get_iam_policy()
        new = with_unauthenticated(policy, allow)
        if new is None:
            return True
        what = "allow" if allow else "stop allowing"
        try:
            await self.api.set_iam_policy(new)
        except AccessDenied as exc:
            if self._point:
                await self._restore()
            else:
                await self._release(traffic=None)
            self._finish("failed", Phase.FAILED,
                         f"cannot {what} unauthenticated calls (allow_unauthenticated = "
                         f"{str(allow).lower()}): the deployer lacks "
                         "run.services.setIamPolicy (roles/run.admin, or set the policy once "
                         f"by hand and keep allow_unauthenticated as it is): {exc.what}")
            return False
        self._log(f"IAM: {'allUsers may' if allow else 'only authorised callers may'} invoke "
                  f"{self.api.target.service} ({'roles/run.invoker for allUsers' if allow else 'allUsers removed'})")
        assert allows_unauthenticated(new) == allow
        return True

    async def _validate(self) -> Validation:
        url = self.outcome.tag_url
        if url is None:
            return Validation(False, f"the service has no URL for tag {CANDIDATE_TAG}")
        self._to(Phase.VALIDATING, f"health-poll and ai-smoke against {url}")
        verdict = await self.validator(url, self.revision)
        self.outcome.validation = verdict.details
        return verdict

    def _judge(self, candidate: Observed, stable: Observed | None) -> Decision:
        base = stable if stable is not None and stable.cost_per_request_usd is not None else (
            Observed(cost_per_request_usd=self._baseline_cost) if self._baseline_cost else None)
        return decide(candidate, baseline=base, thresholds=self.settings.thresholds)

    async def _step(self, index: int, percent: int) -> Outcome | None:
        """Shift, analyse, judge; None when the step passed, else how the rollout ended."""
        splits = step_split(self._point, self.revision, percent,
                            stable_tag=STABLE_TAG if self.settings.stable_tag else None)
        svc = await self._shift(splits)
        stable = main_revision(self._point)
        self._to(Phase.PROGRESSING, f"step {index}/{len(self.settings.steps)}: {describe(splits)}")
        plan = StepPlan(index=index, percent=percent, candidate=self.revision, stable=stable,
                        service_url=svc.uri, candidate_url=tag_url(svc, CANDIDATE_TAG),
                        stable_url=tag_url(svc, STABLE_TAG) if self.settings.stable_tag else None)
        seen = await self.analyzer.run_step(plan, self._judge)
        if seen.stable is not None and seen.stable.cost_per_request_usd is not None:
            self._baseline_cost = seen.stable.cost_per_request_usd
        answers = _answers(seen, stable)
        if seen.stable is not None and answers:
            self._point_seen = (seen.stable, answers, percent)
        decision = seen.decision
        failed = decision.rollback or not seen.complete
        reason = decision.because(f"at {percent}%") if decision.reasons else ""
        self.outcome.steps.append(StepRecord(percent, "fail" if failed else "pass",
                                             reason or "all thresholds held", seen.duration_s,
                                             seen.metrics, seen.proxy))
        if not failed:
            self._log(f"step {index} at {percent}%: thresholds held "
                      f"({_brief(seen.candidate)})")
            return None
        # The rollback point must itself be fit to take the traffic back.
        unhealthy = await self._rollback_point_problems(percent)
        if unhealthy:
            await self._release(traffic=None)  # traffic stays; the next deploy may fix forward
            return self._finish(
                "halted", Phase.HALTED,
                f"{reason}; but the rollback point is unhealthy too ({unhealthy}): traffic left "
                f"as it is ({describe(splits)}) — a person must act: fix forward with a new "
                "deploy, or move traffic with `flightcheck rollback --to REVISION`")
        evidence = self._point_evidence(stable)
        self._to(Phase.ROLLING_BACK, f"{reason}; {evidence}")
        await self._restore()
        done = time.time()
        if seen.first_bad_at is not None:
            self.outcome.rollback_s = round(done - seen.first_bad_at, 3)
        if seen.crossed_at is not None:
            self.outcome.verdict_to_rollback_s = round(done - seen.crossed_at, 3)
        self.outcome.rolled_back = True
        return self._finish("rolled_back", Phase.ROLLED_BACK,
                            f"{reason}; traffic is back on {describe(self._point)}")

    async def _rollback_point_problems(self, seen_percent: int) -> str:
        stable = main_revision(self._point)
        if stable is None:
            return ""
        revision = await self.api.get_revision(stable)
        if revision is None:
            return f"revision {stable} no longer exists"
        ready = next((c for c in revision.conditions if c.type_ == "Ready"), None)
        if ready is None or ready.state != _SUCCEEDED:
            return f"revision {stable} is not ready" + (f": {ready.message}" if ready else "")
        if self._point_seen is not None:
            observed, answers, percent = self._point_seen
            reasons = health_reasons(observed, self.settings.thresholds)
            if reasons:
                # Below min_requests the decision counted errors against min_requests: say what
                # it actually saw, and from which step when not this one.
                thin = answers < observed.requests
                said = f"{observed.errors} of its {answers} answers failed" if thin else \
                    f"its {answers} answers"
                at = f" at {percent}%" if percent != seen_percent else ""
                suffix = f" ({said}{at})" if thin or at else ""
                return f"{stable}: " + "; ".join(reasons) + suffix
        return ""

    def _point_evidence(self, stable: str | None) -> str:
        """What the rollback point was judged on, for the transition that moves traffic back."""
        if stable is None:
            return "the rollback point serves no revision to judge"
        if self._point_seen is None:
            return f"{stable} took none of the steps' traffic: judged by its Ready condition only"
        _, answers, percent = self._point_seen
        return f"{stable} held every threshold on its {answers} answers at {percent}%"

    async def _promote(self) -> Outcome:
        self._to(Phase.PROMOTING, f"100% to {self.revision}")
        # Keep the rollback point's tag-only entries (user tags) so their URLs keep working.
        keep = [Split(s.revision, 0, s.tag) for s in self._point
                if s.tag and s.tag not in (CANDIDATE_TAG, STABLE_TAG)]
        final = [Split(self.revision, 100), *keep]
        await self._shift(final, release=True, previous=self._point or None)
        summary = (f"{self.revision} serves 100% at {self.outcome.url}" if not
                   self.outcome.first_deploy else
                   f"first deploy: {self.revision} serves 100% at {self.outcome.url}")
        return self._finish("promoted", Phase.PROMOTED, summary)

    async def _restore(self) -> None:
        """Traffic back to the recorded split (candidate tag gone), lock released."""
        await self._shift(self._point, release=True)

    async def _release(self, *, traffic: Sequence[Split] | None) -> None:
        """Drop the lock (and set ``traffic`` when given) without judging anything."""
        try:
            svc = await self._fresh()
        except ConcurrentChange as exc:
            self._log(f"lock not released: {exc.what}")
            self._locked = False
            return
        body = run_v2.Service(svc)
        body.annotations.pop(spec.LOCK_ANNOTATION, None)
        if traffic is not None:
            body.traffic = traffic_targets(traffic)
        try:
            self._service = await self.api.update_service(
                body, timeout_s=self.settings.ready_timeout_s)
        except CloudRunError as exc:
            self._log(f"could not release the lock: {exc.what}")
            return
        self._locked = False

    async def _restore_after_error(self, exc: BaseException) -> None:
        if isinstance(exc, ConcurrentChange) or not self._locked:
            return  # someone else's change wins; never overwrite it
        self._log(f"error mid-rollout ({type(exc).__name__}): restoring the recorded split")
        try:
            if self._point:
                await self._restore()
            else:
                await self._release(traffic=None)
        except Exception as again:  # report the first error, say the second
            self._log(f"restoring failed too: {again}")

    async def _interrupted(self) -> None:
        self._to(Phase.INTERRUPTED, "cancelled (Ctrl-C or SIGTERM)")
        self.outcome.status = "interrupted"
        if not self._locked:
            return
        try:
            if self._point:
                await self._restore()
                self._log(f"interrupted: traffic is back on {describe(self._point)}")
            else:
                await self._release(traffic=None)
        except Exception as exc:
            self._log(f"interrupted, and restoring the recorded split failed: {exc}")


def _brief(o: Observed) -> str:
    parts = [f"{o.requests} requests", f"error rate {o.error_rate:.2f}"]
    if o.p95_ms is not None:
        parts.append(f"p95 {o.p95_ms:.0f} ms")
    if o.quality is not None:
        parts.append(f"quality {o.quality:.2f}")
    if o.cost_per_request_usd is not None:
        parts.append(f"${o.cost_per_request_usd:.6f}/request")
    return ", ".join(parts)


# --- rollback on demand -------------------------------------------------------------------------


async def rollback(api: CloudRun, *, to: str | None = None, timeout_s: float = 600.0,
                   log: Callable[[str], None] | None = None) -> tuple[list[Split], list[Split]]:
    """Move traffic back: to the split recorded before the last promotion, or all to ``to``.
    Clears a dead rollout's lock. Returns (before, after)."""
    say = log or (lambda _line: None)
    svc = await api.get_service()
    if svc is None:
        raise CloudRunError(f"service {api.target.service} does not exist",
                            fix="deploy it first: flightcheck deploy")
    before = recorded_split(svc)
    if to is not None:
        after = [Split(to, 100)]
    else:
        raw = svc.annotations.get(spec.PREVIOUS_ANNOTATION)
        if not raw:
            raise CloudRunError(
                f"no recorded rollback point on {api.target.service}",
                why="only a promotion by flightcheck records one (first deploys have none)",
                fix="name the revision: flightcheck rollback --to REVISION",
            )
        after = [Split.from_json(x) for x in json.loads(raw)]
    for s in after:
        if s.percent == 0:
            continue
        revision = await api.get_revision(s.revision)
        ready = None if revision is None else next(
            (c for c in revision.conditions if c.type_ == "Ready"), None)
        if ready is None or ready.state != _SUCCEEDED:
            raise CloudRunError(
                f"revision {s.revision} cannot take traffic: "
                + ("it does not exist" if revision is None else
                   f"{condition_reason(ready) or ready.message if ready else 'not ready'}"),
                fix="pick a ready revision: flightcheck rollback --to REVISION")
    body = run_v2.Service(svc)
    body.traffic = traffic_targets(after)
    body.annotations.pop(spec.LOCK_ANNOTATION, None)
    body.annotations[spec.PREVIOUS_ANNOTATION] = json.dumps([s.to_json() for s in before],
                                                            sort_keys=True)
    await api.update_service(body, timeout_s=timeout_s)
    say(f"traffic: {describe(before)} → {describe(after)}")
    return before, after
