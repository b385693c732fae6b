"""Canary analysis: drive traffic during a step, attribute every response to the revision
that served it, and let the rollback decision judge each revision as the evidence comes in.

Separate from traffic shifting: the rollout moves the split, this only watches. The traffic is
the smoke suite's cases (those that need no scripted model reply, plus the AI health path),
round robin at ``[deploy.canary].request_rate`` through the service URL — the way users reach
it. Each answer is judged by the suite's own assertions (status, schema, values, budgets), so
"quality" is the share of assertions that held, and cost comes from the token usage the service
reports × the price table. Attribution: the local Cloud Run's proxy names the revision in the
``x-flightcheck-revision`` response header; where no header says it (real Cloud Run), the step's
share goes to the candidate's tag URL and the rest to the rollback point's (``stable``) tag URL.

A step ends when it has lasted ``step_duration_s`` and the candidate served ``min_requests``
answers covering every canary case at least once (and so did the rollback point, while it takes
traffic): which cases a random split sent where, or which answers came back first under load,
must not decide whether a slow or token-heavy case was judged; or as soon as the judge says roll
back — the error rate counts as crossed once the errors already seen exceed what
``min_requests`` answers could absorb, so a bad canary is stopped within one analysis interval
of its first bad answers; or after ``max_step_s`` without enough evidence. Each target URL runs
through the cases on its own, so a revision reached by its tag URL gets every case too.

A rollback verdict is held back until the rollback point, while it takes traffic, has also
served ``min_requests`` answers covering every case (by tag URL only it is sent to meanwhile), or
one bounded window has passed: the rollout must not move traffic back onto it — nor halt — on
the one or two answers it gave before the candidate's first errors.

With a quality baseline (``flightcheck baseline save``), each step's candidate is also compared
with it (``lessons.quality.compare`` on the answer and format shares): more than ``fail_worse``
worse rolls back with the comparison's reason, more than ``warn_worse`` is logged and recorded.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import httpx

from flightcheck.cloudrun.idtoken import denied_reason
from flightcheck.cloudrun.rollout import Judge, StepObservation, StepPlan
from flightcheck.lessons import defaults as lesson_defaults
from flightcheck.lessons.quality import CANARY_METRICS, QualityMetrics, check_kind, compare
from flightcheck.lessons.rollback import Decision, Observed
from flightcheck.results import Status
from flightcheck.smoke.runner import CaseResult, Mode, Runner, percentile
from flightcheck.smoke.suite import Case, Defaults, Expect, Price, Request, Suite

REVISION_HEADER = "x-flightcheck-revision"
UNATTRIBUTED = "(unattributed)"
_TICK_S = 0.05
MetricsFn = Callable[[float], Any]  # async (since) → the proxy's metrics or None
# (service URL, the URLs a step sends to) → the auth a private service wants, or None
AuthFor = Callable[[str, list[str]], "tuple[httpx.Auth, str] | None"]


def canary_cases(suite: Suite | None, *, ai_path: str | None, mode: Mode) -> list[Case]:
    """The cases that can run as traffic: no scripted model replies (the revision's model
    cannot be scripted per request through a shared URL)."""
    cases: list[Case] = []
    if ai_path:
        cases.append(Case(name="ai-health", request=Request(path=ai_path), expect=Expect(),
                          external=mode.kind == "real"))
    if suite is not None:
        cases += [c for c in suite.cases if c.model is None]
    return cases


@dataclass
class RevisionStats:
    """What one revision served in a step."""

    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    checks: int = 0
    checks_passed: int = 0
    ai_requests: int = 0  # answers that reported token usage
    cost_usd: float = 0.0
    cost_unknown: int = 0
    tokens: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)  # case: failed check → count
    first_bad_at: float | None = None
    cases: set[str] = field(default_factory=set)  # the canary cases it answered
    answers: int = 0  # answer assertions (quality's assertion_pass_rate) …
    answers_passed: int = 0
    shapes: int = 0  # … and status/schema/JSON checks (format_compliance)
    shapes_passed: int = 0

    def add(self, result: CaseResult) -> bool:
        """Record one answer; True when it was bad (an error or a failed assertion)."""
        self.requests += 1
        self.cases.add(result.name)
        status = result.http_status
        key = str(status) if status is not None else "no answer"
        self.statuses[key] = self.statuses.get(key, 0) + 1
        error = status is None or status >= 500
        if error:
            self.errors += 1
        if result.latency_ms is not None:
            self.latencies.append(result.latency_ms)
        for check in result.checks:
            self.checks += 1
            if check.ok:
                self.checks_passed += 1
            else:
                name = f"{result.name}: {check.check}"
                self.failures[name] = self.failures.get(name, 0) + 1
            kind = check_kind(check.check)
            if kind == "answer":
                self.answers += 1
                self.answers_passed += check.ok
            elif kind == "format":
                self.shapes += 1
                self.shapes_passed += check.ok
        if result.tokens:
            self.ai_requests += 1
            self.tokens += int(result.tokens.get("total_tokens", 0))
            if result.cost_usd is None:
                self.cost_unknown += 1
            else:
                self.cost_usd += result.cost_usd
        bad = error or bool(result.failed)
        if bad and self.first_bad_at is None:
            self.first_bad_at = time.time()
        return bad

    def observed(self, seconds: float, *, min_requests: int = 1) -> Observed:
        """As the decision sees it. Before ``min_requests`` answers only the error rate can be
        judged, against ``min_requests`` (the lowest it can still end at): a verdict more
        answers could not change is reached at once."""
        rate = self.requests / seconds if seconds > 0 else None
        if self.requests < min_requests:
            return Observed(requests=min_requests if self.requests else 0, errors=self.errors,
                            requests_per_s=rate)
        known = self.ai_requests - self.cost_unknown
        return Observed(
            requests=self.requests,
            errors=self.errors,
            p95_ms=percentile(self.latencies, 95),
            quality=(self.checks_passed / self.checks) if self.checks else None,
            cost_per_request_usd=(self.cost_usd / known) if known > 0 else None,
            requests_per_s=rate,
        )

    def quality_metrics(self) -> QualityMetrics:
        """The shares the quality baseline keeps, as this revision served them."""
        return QualityMetrics(
            assertion_pass_rate=round(self.answers_passed / self.answers, 4) if self.answers
            else None,
            format_compliance=round(self.shapes_passed / self.shapes, 4) if self.shapes else None)

    def to_json(self, seconds: float) -> dict[str, object]:
        o = self.observed(seconds)
        known = self.ai_requests - self.cost_unknown
        return {
            "requests": self.requests, "errors": self.errors,
            "error_rate": round(o.error_rate, 4),
            "p50_ms": percentile(self.latencies, 50), "p95_ms": percentile(self.latencies, 95),
            "quality": None if o.quality is None else round(o.quality, 4),
            **{k: v for k, v in self.quality_metrics().as_dict().items() if k in CANARY_METRICS},
            "ai_requests": self.ai_requests, "tokens": self.tokens,
            "cost_usd": round(self.cost_usd, 8),
            "cost_per_request_usd": None if known <= 0 else round(self.cost_usd / known, 8),
            "statuses": dict(sorted(self.statuses.items())),
            "failed_checks": dict(sorted(self.failures.items(), key=lambda x: -x[1])[:10]),
        }


@dataclass(frozen=True)
class _Target:
    url: str
    revision: str | None  # None: read it from the response header
    weight: int


class Analysis:
    """Drives and judges the traffic of each canary step."""

    def __init__(
        self,
        *,
        cases: Sequence[Case],
        mode: Mode,
        defaults: Defaults,
        prices: dict[str, Price],
        request_timeout_s: float,
        request_rate: float,
        min_requests: int,
        step_duration_s: float,
        max_step_s: float,
        attribution: Literal["header", "tags"] = "header",
        concurrency: int = 4,
        default_model: str | None = None,
        redact: Callable[[str], str] = lambda s: s,
        metrics: MetricsFn | None = None,
        log: Callable[[str], None] | None = None,
        baseline: QualityMetrics | None = None,
        warn_worse: float = lesson_defaults.QUALITY_WARN_WORSE,
        fail_worse: float = lesson_defaults.QUALITY_FAIL_WORSE,
        auth: AuthFor | None = None,
    ) -> None:
        if not cases:
            raise ValueError("canary analysis needs at least one case to send")
        self.baseline = baseline
        self.warn_worse = warn_worse
        self.fail_worse = fail_worse
        self.cases = list(cases)
        self.mode = mode
        self.defaults = defaults
        self.prices = prices
        self.request_timeout_s = request_timeout_s
        self.rate = request_rate
        self.min_requests = min_requests
        self.step_duration_s = step_duration_s
        self.max_step_s = max_step_s
        self.attribution = attribution
        self.concurrency = max(1, min(concurrency, math.ceil(request_rate)))
        self.default_model = default_model
        self.redact = redact
        self._metrics = metrics
        self._auth = auth
        self._log = log or (lambda _line: None)

    def _targets(self, plan: StepPlan) -> list[_Target]:
        if self.attribution == "header":
            return [_Target(plan.service_url, None, 1)]
        out = []
        if plan.percent > 0 and plan.candidate_url:
            out.append(_Target(plan.candidate_url, plan.candidate, plan.percent))
        if plan.percent < 100 and plan.stable_url and plan.stable:
            out.append(_Target(plan.stable_url, plan.stable, 100 - plan.percent))
        return out

    def compare_with_baseline(self, stats: RevisionStats) -> dict[str, object] | None:
        """The candidate's answer and format shares against the quality baseline (None: no
        baseline). A share the canary's cases do not measure is left out, not failed: the
        baseline's smoke run may have had cases the canary cannot send."""
        if self.baseline is None:
            return None
        current = stats.quality_metrics()
        base = QualityMetrics(**{m: getattr(self.baseline, m) if getattr(current, m) is not None
                                 else None for m in CANARY_METRICS})
        verdict = compare(base, current, warn_worse=self.warn_worse, fail_worse=self.fail_worse)
        return {"status": verdict.status.value, "reason": verdict.reason,
                "changes": [c.to_json() for c in verdict.changes if c.metric in CANARY_METRICS]}

    def _covered(self, stats: RevisionStats | None) -> bool:
        return stats is not None and all(c.name in stats.cases for c in self.cases)

    def _missing(self, stats: RevisionStats | None) -> list[str]:
        seen = stats.cases if stats is not None else set()
        return [c.name for c in self.cases if c.name not in seen]

    async def run_step(self, plan: StepPlan, judge: Judge) -> StepObservation:
        started_wall = time.time()
        started = time.perf_counter()
        stats: dict[str, RevisionStats] = {}
        targets = self._targets(plan)
        if not targets:
            return StepObservation(
                candidate=Observed(), stable=None, complete=False, duration_s=0.0,
                decision=Decision(True, (f"no URL to send step {plan.index}'s traffic to "
                                         f"(attribution by {self.attribution})",)))
        order = itertools.cycle(_weighted(targets))
        # Per target: with one shared cycle, a weighted order could pair a 10% tag URL with the
        # same case every time.
        cases = {t.url: itertools.cycle(self.cases) for t in targets}
        stable_serves = plan.stable is not None and any(
            t.revision in (None, plan.stable) for t in targets) and plan.percent < 100
        verdict: list[Decision] = []
        crossed_at: list[float] = []
        # The candidate's rollback verdict while the rollback point's own evidence is gathered
        # (it must be judged before traffic moves back onto it), and until when.
        pending: list[Decision] = []
        point_deadline = [math.inf]
        auth_who = self._auth(plan.service_url, [t.url for t in targets]) if self._auth else None
        auth, who = auth_who if auth_who else (None, "anonymous (no ID token)")
        done = anyio.Event()
        next_slot = [time.perf_counter()]

        def elapsed() -> float:
            return time.perf_counter() - started

        def evaluate() -> None:
            if done.is_set():
                return
            cand = stats.get(plan.candidate, RevisionStats())
            stable = stats.get(plan.stable) if plan.stable else None
            if pending:
                if self._point_judged(stable) or elapsed() >= point_deadline[0]:
                    verdict.append(pending[0])
                    done.set()
                return
            secs = max(elapsed(), 1e-6)
            decision = judge(cand.observed(secs, min_requests=self.min_requests),
                             stable.observed(secs) if stable and stable.requests else None)
            # Every case answered by both sides before a verdict: otherwise the split's draws
            # and which answers came back first decide what was compared (cost, quality).
            enough = (cand.requests >= self.min_requests and self._covered(cand)
                      and (not stable_serves or self._covered(stable)))
            if enough and not decision.rollback:
                decision = self._with_baseline(decision, cand)
            if decision.rollback:  # before min_requests only a certain error rate gets here
                if stable_serves and not self._point_judged(stable):
                    # A bad candidate's first errors can come before the rollback point has
                    # answered anything: two answers would then call it healthy.
                    crossed_at.append(time.time())
                    pending.append(decision)
                    window = self._point_window(plan, stable)
                    point_deadline[0] = elapsed() + window
                    self._log(
                        f"step {plan.index}: {decision.because()}; the rollback point has "
                        f"answered {stable.requests if stable else 0} of {self.min_requests} "
                        f"requests: judging it before traffic moves back (up to {window:.1f} s)")
                    return
                verdict.append(decision)
            elif enough and elapsed() >= self.step_duration_s:
                verdict.append(decision)
            elif elapsed() >= self.max_step_s:
                verdict.append(Decision(True, (self._not_enough(cand, stable),)))
            else:
                return
            crossed_at.append(time.time())
            done.set()

        async def worker() -> None:
            seen: dict[str, str] = {}

            async def remember(response: httpx.Response) -> None:
                value = response.headers.get(REVISION_HEADER)
                if value:
                    seen["revision"] = value

            async with httpx.AsyncClient(trust_env=False, follow_redirects=False, auth=auth,
                                         event_hooks={"response": [remember]}) as client:
                runners = {t.url: Runner(
                    client, t.url, mode=self.mode, defaults=self.defaults, prices=self.prices,
                    request_timeout_s=self.request_timeout_s, control=None,
                    default_model=self.default_model, redact=self.redact) for t in targets}
                while not done.is_set():
                    slot = max(next_slot[0], time.perf_counter())
                    next_slot[0] = slot + 1.0 / self.rate
                    await anyio.sleep(max(0.0, slot - time.perf_counter()))
                    if done.is_set():
                        return
                    target = next(order)
                    if pending and target.revision == plan.candidate:
                        # The candidate is judged; by tag URL the point can be reached alone.
                        target = next(t for t in targets if t.revision != plan.candidate)
                    seen.clear()
                    result = await runners[target.url].run_case(next(cases[target.url]))
                    if done.is_set():
                        return  # answered after the verdict: not part of this step
                    if result.http_status in (401, 403) and result.failed and \
                            not seen.get("revision"):
                        # Cloud Run's front end turned the request away (no revision saw it):
                        # an identity problem, not the candidate's health.
                        verdict.append(Decision(True, (denied_reason(
                            result.http_status, target.url, who),)))
                        crossed_at.append(time.time())
                        done.set()
                        return
                    revision = target.revision or seen.get("revision") or UNATTRIBUTED
                    stats.setdefault(revision, RevisionStats()).add(result)
                    evaluate()

        async def clock() -> None:
            while not done.is_set():
                await anyio.sleep(_TICK_S)
                evaluate()

        async with anyio.create_task_group() as tg:
            tg.start_soon(clock)
            for _ in range(self.concurrency):
                tg.start_soon(worker)
            await done.wait()
            tg.cancel_scope.cancel()
        duration = elapsed()
        cand = stats.get(plan.candidate, RevisionStats())
        stable = stats.get(plan.stable) if plan.stable else None
        decision = verdict[0]
        complete = (cand.requests >= self.min_requests and self._covered(cand)) or bool(
            decision.rollback and cand.errors)
        proxy = None
        if self._metrics is not None:
            try:
                proxy = await self._metrics(started_wall)
            except Exception:  # the proxy's view is extra evidence, never a verdict
                proxy = None
        if UNATTRIBUTED in stats and self.attribution == "header":
            self._log(f"{stats[UNATTRIBUTED].requests} answers carried no {REVISION_HEADER} "
                      "header and could not be attributed")
        metrics = {rev: s.to_json(duration) for rev, s in sorted(stats.items())}
        against = self.compare_with_baseline(cand) if cand.requests else None
        if against is not None:
            metrics.setdefault(plan.candidate, cand.to_json(duration))["vs_baseline"] = against
            if against["status"] == Status.WARN.value:
                self._log(f"step {plan.index}: worse than the quality baseline (warning): "
                          f"{against['reason']}")
        # After a rollback verdict ``stable`` is the rollback point's health evidence: below
        # min_requests answers only an error rate more answers could not change counts, so a
        # handful of answers never halts a rollback (nor clears a point that failed them).
        point_min = self.min_requests if decision.rollback else 1
        return StepObservation(
            candidate=cand.observed(duration, min_requests=self.min_requests),
            stable=stable.observed(duration, min_requests=point_min)
            if stable and stable.requests else None,
            decision=decision, complete=complete, duration_s=duration,
            metrics=metrics, proxy=proxy, first_bad_at=cand.first_bad_at,
            crossed_at=crossed_at[0] if crossed_at else None,
        )

    def _point_judged(self, stable: RevisionStats | None) -> bool:
        """The rollback point answered enough to be judged as the candidate is."""
        return (stable is not None and stable.requests >= self.min_requests
                and self._covered(stable))

    def _point_window(self, plan: StepPlan, stable: RevisionStats | None) -> float:
        """How long the rollback point may take for its missing answers: twice the time its
        share of the rate needs, plus one request timeout for the answers in flight."""
        missing = self.min_requests - (stable.requests if stable else 0)
        share = 1.0 if self.attribution == "tags" else (100 - plan.percent) / 100
        return self.request_timeout_s + 2 * max(missing, len(self.cases)) / (self.rate * share)

    def _with_baseline(self, decision: Decision, cand: RevisionStats) -> Decision:
        """Roll back when the candidate is more than ``fail_worse`` worse than the baseline."""
        against = self.compare_with_baseline(cand)
        if against is None or against["status"] != Status.FAIL.value:
            return decision
        return Decision(True, (*decision.reasons,
                               f"worse than the quality baseline: {against['reason']}"))

    def _not_enough(self, cand: RevisionStats, stable: RevisionStats | None) -> str:
        if cand.requests < self.min_requests:
            return (f"only {cand.requests} of {self.min_requests} answers from the candidate "
                    f"within {self.max_step_s:g} s")
        who, missing = (("the candidate", self._missing(cand)) if self._missing(cand)
                        else ("the rollback point", self._missing(stable)))
        return (f"{who} answered no {', '.join(map(repr, missing))} request within "
                f"{self.max_step_s:g} s: the step could not judge every canary case")


def _weighted(targets: Sequence[_Target]) -> list[_Target]:
    """One cycle of a smooth weighted round robin over ``targets`` (weights in percent)."""
    total = sum(t.weight for t in targets)
    current = [0] * len(targets)
    out: list[_Target] = []
    for _ in range(total):
        for i, t in enumerate(targets):
            current[i] += t.weight
        best = max(range(len(targets)), key=lambda i: current[i])
        current[best] -= total
        out.append(targets[best])
    return out
