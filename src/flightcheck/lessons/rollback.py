"""The rollback decision: one function, the seed's thresholds as named defaults.

A canary is judged on what its users saw — error rate, p95 latency, AI quality (the share of
smoke assertions that held) and cost per request against the revision it replaces. The same
rules, minus the cost comparison, tell whether the rollback point itself is healthy: traffic is
never moved back onto a revision that fails them too.

Pure: numbers in, a decision with its reasons out. The rollout (``cloudrun/rollout.py``) and the
lessons report use it; the thresholds come from ``[deploy.canary]`` or these defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The seed's thresholds.
DEFAULT_MAX_ERROR_RATE = 0.15
DEFAULT_MIN_QUALITY = 0.70
DEFAULT_MAX_RESPONSE_TIME_MS = 5000.0
DEFAULT_MAX_COST_RATIO = 2.0


@dataclass(frozen=True)
class Thresholds:
    """Where a revision stops being acceptable."""

    max_error_rate: float = DEFAULT_MAX_ERROR_RATE
    min_quality: float = DEFAULT_MIN_QUALITY
    max_p95_ms: float = DEFAULT_MAX_RESPONSE_TIME_MS
    max_cost_ratio: float = DEFAULT_MAX_COST_RATIO
    max_cost_per_hour_usd: float | None = None


@dataclass(frozen=True)
class Observed:
    """What one revision served during a window."""

    requests: int = 0
    errors: int = 0  # 5xx answers and requests that got no answer
    p95_ms: float | None = None
    quality: float | None = None  # passed / all assertions; None: nothing was asserted
    cost_per_request_usd: float | None = None  # None: unknown (no usage or no price)
    requests_per_s: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Decision:
    """``rollback`` with every reason, or not."""

    rollback: bool
    reasons: tuple[str, ...] = field(default_factory=tuple)

    def because(self, where: str = "") -> str:
        text = "; ".join(self.reasons)
        return f"{text} {where}".strip() if text else ""


def _fmt(x: float) -> str:
    return f"{x:.2f}" if x >= 0.01 or x == 0 else f"{x:.4f}"


def health_reasons(observed: Observed, thresholds: Thresholds) -> list[str]:
    """Why ``observed`` is unacceptable on its own (error rate, latency, quality, cost/hour)."""
    reasons: list[str] = []
    if observed.requests and observed.error_rate > thresholds.max_error_rate:
        reasons.append(f"error rate {_fmt(observed.error_rate)} > "
                       f"{_fmt(thresholds.max_error_rate)}")
    if observed.p95_ms is not None and observed.p95_ms > thresholds.max_p95_ms:
        reasons.append(f"p95 latency {observed.p95_ms:.0f} ms > {thresholds.max_p95_ms:.0f} ms")
    if observed.quality is not None and observed.quality < thresholds.min_quality:
        reasons.append(f"quality {_fmt(observed.quality)} < {_fmt(thresholds.min_quality)}")
    if (
        thresholds.max_cost_per_hour_usd is not None
        and observed.cost_per_request_usd is not None
        and observed.requests_per_s
    ):
        per_hour = observed.cost_per_request_usd * observed.requests_per_s * 3600
        if per_hour > thresholds.max_cost_per_hour_usd:
            reasons.append(f"cost ${per_hour:.4f}/h at {observed.requests_per_s:.1f} req/s > "
                           f"${thresholds.max_cost_per_hour_usd:.4f}/h")
    return reasons


def decide(candidate: Observed, *, baseline: Observed | None = None,
           thresholds: Thresholds = Thresholds()) -> Decision:
    """Roll back when the candidate breaks a threshold, or costs more than
    ``max_cost_ratio`` × the baseline (the revision it replaces) per request."""
    reasons = health_reasons(candidate, thresholds)
    base = baseline.cost_per_request_usd if baseline is not None else None
    cost = candidate.cost_per_request_usd
    if cost is not None and base is not None and base > 0 and cost > thresholds.max_cost_ratio * base:
        reasons.append(f"cost per request ${cost:.6f} > {thresholds.max_cost_ratio:g} × "
                       f"${base:.6f}")
    return Decision(rollback=bool(reasons), reasons=tuple(reasons))

