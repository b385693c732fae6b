"""Quality degradation: this run's smoke metrics against a saved baseline.

``flightcheck baseline save`` keeps the smoke metrics of a good run as a JSON file;
``flightcheck quality`` (and every ``ci`` run, when the file exists) compares the current run
with it. A metric more than ``warn_worse`` (20 %) worse warns, more than ``fail_worse`` (40 %)
worse fails; the named defaults live in ``lessons/defaults.py`` and ``[quality]`` overrides them.

Metrics (from ai-smoke's per-case checks):

- ``assertion_pass_rate`` — share of answer assertions that held (equals, approx, regex, …):
  are the answers still right?
- ``format_compliance`` — share of status / JSON / schema checks that held: is the shape right?
- ``latency_p95_ms`` — p95 of the cases' latency (lower is better; changes are measured against at least 500 ms: below that a CI runner's noise dominates)
- ``cost_per_request_usd`` — mean cost of the requests that used tokens (lower is better)

The canary analysis (``cloudrun/analysis.py``) calls the same comparison on each step's
candidate, for the two shares only (:data:`CANARY_METRICS`): the canary's latency and cost are
measured on another network and another case mix than a saved smoke run, so they are judged by
``[deploy.canary]``'s thresholds and against the live rollback point instead::

    from flightcheck.lessons.quality import QualityMetrics, compare
    verdict = compare(baseline, QualityMetrics.from_cases(cases, prices))
    verdict.status   # Status.PASS | WARN | FAIL
    verdict.reason   # "assertion_pass_rate 0.50 vs 1.00 (50 % worse > 40 %)"
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from flightcheck.errors import UsageError
from flightcheck.lessons import defaults
from flightcheck.lessons.cost import Price, request_costs, resolve_prices
from flightcheck.lessons.evidence import Evidence
from flightcheck.results import Finding, LessonResult, Severity, Status

COMMAND = ["quality"]
BASELINE_FORMAT = 1

# Checks that judge the response's shape rather than its content; budgets and the fake
# model's control API judge neither.
_FORMAT_CHECKS = frozenset({"status", "schema", "json", "response"})
_NOT_QUALITY = frozenset({"latency_ms", "cost_usd", "fake-model"})

# metric → (higher is better, noise floor for relative change)
METRICS: dict[str, tuple[bool, float]] = {
    "assertion_pass_rate": (True, 0.0),
    "format_compliance": (True, 0.0),
    "latency_p95_ms": (False, defaults.QUALITY_LATENCY_FLOOR_MS),
    "cost_per_request_usd": (False, defaults.QUALITY_COST_FLOOR_USD),
}


CANARY_METRICS = ("assertion_pass_rate", "format_compliance")


@dataclass(frozen=True)
class QualityMetrics:
    """The smoke metrics a baseline keeps; None where a run measured nothing."""

    assertion_pass_rate: float | None = None
    format_compliance: float | None = None
    latency_p95_ms: float | None = None
    cost_per_request_usd: float | None = None

    @classmethod
    def from_cases(cls, cases: Sequence[Mapping[str, Any]], prices: Mapping[str, Price]) -> QualityMetrics:
        """From ai-smoke's ``details["cases"]`` (CaseResult.to_json()); skipped cases ignored."""
        answers: list[bool] = []
        shapes: list[bool] = []
        latencies: list[float] = []
        ran = [c for c in cases if c.get("status") != "skipped"]
        for case in ran:
            for check in case.get("checks") or []:
                if not isinstance(check, Mapping):
                    continue
                kind = check_kind(str(check.get("check", "")))
                ok = bool(check.get("ok"))
                if kind == "format":
                    shapes.append(ok)
                elif kind == "answer":
                    answers.append(ok)
            latency = case.get("latency_ms")
            if isinstance(latency, int | float):
                latencies.append(float(latency))
        costs = [r.cost_usd for r in request_costs(ran, prices) if r.cost_usd is not None]
        return cls(
            assertion_pass_rate=_share(answers),
            format_compliance=_share(shapes),
            latency_p95_ms=_p95(latencies),
            cost_per_request_usd=round(sum(costs) / len(costs), 10) if costs else None,
        )

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


def check_kind(name: str) -> Literal["answer", "format"] | None:
    """Which quality metric a smoke check counts towards (None: budgets and the fake model's
    control API judge neither)."""
    if name in _FORMAT_CHECKS:
        return "format"
    if name in _NOT_QUALITY or name.startswith("tokens"):
        return None
    return "answer"


def _share(flags: list[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None


def _p95(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(0.95 * len(ordered))) - 1]


@dataclass(frozen=True)
class MetricChange:
    metric: str
    baseline: float | None
    current: float | None
    worse: float | None  # relative worsening, 0.25 = 25 % worse; negative = better
    status: Status
    note: str = ""

    def to_json(self) -> dict[str, object]:
        return {"metric": self.metric, "baseline": self.baseline, "current": self.current,
                "worse": None if self.worse is None else round(self.worse, 4),
                "status": self.status.value, **({"note": self.note} if self.note else {})}


@dataclass(frozen=True)
class Comparison:
    """The verdict of current vs baseline: the worst metric's status and why."""

    status: Status
    changes: list[MetricChange] = field(default_factory=list)

    @property
    def reason(self) -> str:
        bad = [c for c in self.changes if c.status in (Status.FAIL, Status.WARN)]
        return "; ".join(c.note for c in bad) if bad else "no metric is worse than allowed"


def compare(
    baseline: QualityMetrics,
    current: QualityMetrics,
    *,
    warn_worse: float = defaults.QUALITY_WARN_WORSE,
    fail_worse: float = defaults.QUALITY_FAIL_WORSE,
) -> Comparison:
    """Compare two runs' metrics: > ``warn_worse`` worse warns, > ``fail_worse`` fails.

    Relative change against the baseline (for lower-is-better metrics against at least the
    metric's noise floor). A metric measured in the baseline but not now fails — the check
    that would have caught a regression did not run; one not in the baseline is skipped.
    """
    if not 0 < warn_worse < fail_worse:
        raise ValueError(f"need 0 < warn_worse ({warn_worse}) < fail_worse ({fail_worse})")
    changes: list[MetricChange] = []
    for metric, (higher_better, floor) in METRICS.items():
        base, cur = getattr(baseline, metric), getattr(current, metric)
        if base is None:
            changes.append(MetricChange(metric, base, cur, None, Status.SKIPPED,
                                        f"{metric}: not in the baseline"))
            continue
        if cur is None:
            changes.append(MetricChange(metric, base, cur, None, Status.FAIL,
                                        f"{metric}: measured in the baseline ({base:g}) but not "
                                        "in this run"))
            continue
        if higher_better:
            worse = (base - cur) / base if base > 0 else 0.0
        else:
            worse = (cur - base) / max(base, floor) if max(base, floor) > 0 else 0.0
        status = (Status.FAIL if worse > fail_worse
                  else Status.WARN if worse > warn_worse else Status.PASS)
        limit = fail_worse if status is Status.FAIL else warn_worse
        note = f"{metric} {cur:g} vs {base:g} ({worse:.0%} worse" + (
            f" > {limit:.0%})" if status is not Status.PASS else ")")
        changes.append(MetricChange(metric, base, cur, worse, status, note))
    statuses = [c.status for c in changes if c.status is not Status.SKIPPED]
    overall = (Status.FAIL if Status.FAIL in statuses else Status.WARN if Status.WARN in statuses
               else Status.PASS if statuses else Status.SKIPPED)
    return Comparison(overall, changes)


# --- baseline files ---------------------------------------------------------------------------


def current_metrics(ev: Evidence) -> QualityMetrics | None:
    smoke = ev.stage("ai-smoke")
    cases = smoke.details.get("cases") if smoke is not None else None
    if not isinstance(cases, list):
        return None
    return QualityMetrics.from_cases([c for c in cases if isinstance(c, Mapping)], resolve_prices(ev))


def baseline_path(ev: Evidence, override: Path | None = None) -> Path:
    return override if override is not None else ev.config.resolve(ev.config.quality.baseline)


def save_baseline(ev: Evidence, output: Path | None = None) -> tuple[Path, QualityMetrics]:
    """Write the run's metrics as the baseline; refuses a run whose ai-smoke did not pass."""
    smoke = ev.stage("ai-smoke")
    if smoke is None or smoke.status is Status.FAIL:
        state = "did not run" if smoke is None else "failed"
        raise UsageError(
            f"not saving a baseline: ai-smoke {state} in {ev.report_dir}",
            why="a baseline is what a good run looks like; later runs are judged against it",
            fix="fix the run until ai-smoke passes, then save the baseline",
            repro="flightcheck ci && flightcheck baseline save",
        )
    metrics = current_metrics(ev)
    assert metrics is not None  # a passing ai-smoke always has its cases
    path = baseline_path(ev, output)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "flightcheck_baseline": BASELINE_FORMAT,
        "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "service": ev.config.service.name,
        "environment": ev.environment,
        "source_report": str(ev.report_dir),
        "metrics": metrics.as_dict(),
    }
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path, metrics


def load_baseline(path: Path) -> QualityMetrics:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("flightcheck_baseline") != BASELINE_FORMAT:
            raise ValueError(f"format {data.get('flightcheck_baseline')!r}, expected {BASELINE_FORMAT}")
        raw = data["metrics"]
        return QualityMetrics(**{k: (None if raw.get(k) is None else float(raw[k])) for k in METRICS})
    except FileNotFoundError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(
            f"{path} is not a flightcheck baseline: {exc}",
            fix="save a new one from a good run: flightcheck baseline save",
        ) from None


def evaluate(ev: Evidence, *, baseline: Path | None = None) -> LessonResult:
    """The quality lesson: the run's smoke metrics against the baseline file."""
    cfg = ev.config.quality
    res = ev.result("quality", COMMAND + (["--baseline", str(baseline)] if baseline else []),
                    "quality", dagger_args=[f"--baseline={baseline}"] if baseline else [])
    path = baseline_path(ev, baseline)
    res.details["baseline"] = str(path)
    res.details["thresholds"] = {"warn_worse": cfg.warn_worse, "fail_worse": cfg.fail_worse}
    current = current_metrics(ev)
    if current is None:
        res.status = Status.SKIPPED
        res.summary = "skipped: ai-smoke did not run, so there is nothing to compare"
        return res
    res.details["current"] = current.as_dict()
    try:
        base = load_baseline(path)
    except FileNotFoundError:
        res.status = Status.SKIPPED
        res.summary = (f"skipped: no baseline at {path}; after a good run, save one with "
                       "`flightcheck baseline save`")
        return res
    res.details["baseline_metrics"] = base.as_dict()
    verdict = compare(base, current, warn_worse=cfg.warn_worse, fail_worse=cfg.fail_worse)
    res.details["changes"] = [c.to_json() for c in verdict.changes]
    for c in verdict.changes:
        if c.current is not None:
            res.measure(c.metric, c.current)
        if c.worse is not None:
            res.measure(f"{c.metric}_worse", round(c.worse, 4), "ratio")
        if c.status in (Status.FAIL, Status.WARN):
            res.findings.append(Finding(
                code=f"quality.{c.metric}", category="quality",
                severity=Severity.ERROR if c.status is Status.FAIL else Severity.WARNING,
                message=f"worse than the baseline: {c.note}",
                fix="compare this run's failed smoke cases and the model/parameters with the "
                "baseline run's; if the change is intended, save a new baseline",
            ))
    res.status = verdict.status
    res.summary = (f"{verdict.reason} (baseline {path.name})" if verdict.status is not Status.PASS
                   else "every metric within "
                   f"{cfg.warn_worse:.0%} of the baseline ({path.name})")
    return res


def text(res: LessonResult) -> list[str]:
    rows = res.details.get("changes")
    if not isinstance(rows, list):
        return []
    lines = [f"{'metric':<22} {'baseline':>12} {'current':>12} {'worse':>8}  verdict"]
    for r in rows:
        if isinstance(r, Mapping):
            worse = r.get("worse")
            lines.append(f"{r.get('metric')!s:<22} {_num(r.get('baseline')):>12} "
                         f"{_num(r.get('current')):>12} "
                         f"{(f'{worse:.0%}' if isinstance(worse, float | int) else '-'):>8}  "
                         f"{r.get('status')}")
    return lines


def _num(value: object) -> str:
    return f"{value:.6g}" if isinstance(value, float | int) else "-"
