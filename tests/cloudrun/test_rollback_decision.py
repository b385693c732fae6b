"""The one rollback decision: thresholds (the seed's as defaults), reasons that say why."""

from __future__ import annotations

from flightcheck.lessons.rollback import (
    DEFAULT_MAX_COST_RATIO,
    DEFAULT_MAX_ERROR_RATE,
    DEFAULT_MAX_RESPONSE_TIME_MS,
    DEFAULT_MIN_QUALITY,
    Observed,
    Thresholds,
    decide,
    health_reasons,
)


def test_the_seeds_thresholds_are_the_defaults() -> None:
    t = Thresholds()
    assert (t.max_error_rate, t.min_quality, t.max_p95_ms, t.max_cost_ratio) == (
        DEFAULT_MAX_ERROR_RATE, DEFAULT_MIN_QUALITY, DEFAULT_MAX_RESPONSE_TIME_MS,
        DEFAULT_MAX_COST_RATIO) == (0.15, 0.70, 5000.0, 2.0)


def test_a_good_candidate_is_kept() -> None:
    good = Observed(requests=100, errors=1, p95_ms=120, quality=0.98, cost_per_request_usd=1e-4)
    assert not decide(good, baseline=good).rollback


def test_each_threshold_rolls_back_with_its_reason() -> None:
    t = Thresholds(max_error_rate=0.01, min_quality=0.9, max_p95_ms=2000)
    bad = Observed(requests=100, errors=31, p95_ms=2500, quality=0.5, cost_per_request_usd=3e-4)
    base = Observed(requests=100, cost_per_request_usd=1e-4)
    d = decide(bad, baseline=base, thresholds=t)
    assert d.rollback
    assert d.because("at 10%") == ("error rate 0.31 > 0.01; p95 latency 2500 ms > 2000 ms; "
                                   "quality 0.50 < 0.90; cost per request $0.000300 > 2 × "
                                   "$0.000100 at 10%")


def test_cost_needs_a_baseline_and_a_ratio_over_the_limit() -> None:
    c = Observed(requests=10, cost_per_request_usd=1.9e-4)
    assert not decide(c, baseline=Observed(cost_per_request_usd=1e-4)).rollback
    assert not decide(c).rollback  # nothing to compare with
    assert decide(c, baseline=Observed(cost_per_request_usd=0.9e-4)).rollback


def test_cost_per_hour_projects_the_observed_rate() -> None:
    t = Thresholds(max_cost_per_hour_usd=1.0)
    o = Observed(requests=10, cost_per_request_usd=1e-3, requests_per_s=0.5)  # $1.80/h
    assert health_reasons(o, t) == ["cost $1.8000/h at 0.5 req/s > $1.0000/h"]
    assert health_reasons(Observed(requests=10, cost_per_request_usd=1e-3,
                                   requests_per_s=0.2), t) == []


def test_unknown_values_never_fail_a_revision_on_their_own() -> None:
    assert not decide(Observed()).rollback
    assert not decide(Observed(requests=5, p95_ms=None, quality=None)).rollback
