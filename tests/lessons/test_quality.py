"""Quality: smoke metrics against a saved baseline; degraded answers trip it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lessons_support import Run, ci, evidence, flightcheck, measurement, stage

from flightcheck.lessons import defaults
from flightcheck.lessons.quality import QualityMetrics, compare, evaluate, save_baseline
from flightcheck.results import Status

BASE = QualityMetrics(assertion_pass_rate=1.0, format_compliance=1.0, latency_p95_ms=1000.0,
                      cost_per_request_usd=0.001)


def test_named_defaults_warn_at_20_and_fail_at_40_percent() -> None:
    assert (defaults.QUALITY_WARN_WORSE, defaults.QUALITY_FAIL_WORSE) == (0.20, 0.40)
    assert compare(BASE, BASE).status is Status.PASS
    assert compare(BASE, QualityMetrics(0.85, 1.0, 1000.0, 0.001)).status is Status.PASS
    warn = compare(BASE, QualityMetrics(0.75, 1.0, 1000.0, 0.001))
    assert warn.status is Status.WARN and "25% worse > 20%" in warn.reason
    fail = compare(BASE, QualityMetrics(0.55, 1.0, 1000.0, 0.001))
    assert fail.status is Status.FAIL and fail.reason.startswith("assertion_pass_rate 0.55 vs 1")


def test_lower_is_better_metrics_and_their_noise_floors() -> None:
    slow = compare(BASE, QualityMetrics(1.0, 1.0, 1500.0, 0.001))  # +50 %
    assert [c.status for c in slow.changes if c.metric == "latency_p95_ms"] == [Status.FAIL]
    pricey = compare(BASE, QualityMetrics(1.0, 1.0, 1000.0, 0.00125))  # +25 %
    assert pricey.status is Status.WARN
    # 10 ms → 150 ms on a busy runner is noise: against the 500 ms floor it is 28 % (warn).
    fast = QualityMetrics(1.0, 1.0, 10.0, 0.001)
    assert compare(fast, QualityMetrics(1.0, 1.0, 14.0, 0.001)).status is Status.PASS
    assert compare(fast, QualityMetrics(1.0, 1.0, 150.0, 0.001)).status is Status.WARN


def test_thresholds_are_parameters_and_inverted_ones_are_refused() -> None:
    cur = QualityMetrics(0.9, 1.0, 1000.0, 0.001)
    assert compare(BASE, cur, warn_worse=0.05, fail_worse=0.08).status is Status.FAIL
    with pytest.raises(ValueError):
        compare(BASE, cur, warn_worse=0.5, fail_worse=0.4)


def test_a_metric_the_baseline_had_but_this_run_lacks_fails() -> None:
    verdict = compare(BASE, QualityMetrics(1.0, 1.0, 1000.0, None))
    assert verdict.status is Status.FAIL and "not in this run" in verdict.reason


def test_metrics_from_smoke_cases() -> None:
    cases = [
        {"name": "a", "status": "pass", "latency_ms": 10.0, "checks": [
            {"check": "status", "ok": True}, {"check": "equals", "ok": True},
            {"check": "latency_ms", "ok": False}]},
        {"name": "b", "status": "fail", "latency_ms": 30.0, "checks": [
            {"check": "status", "ok": True}, {"check": "schema", "ok": False},
            {"check": "equals", "ok": False}, {"check": "tokens.max_total", "ok": False}]},
        {"name": "c", "status": "skipped", "checks": [{"check": "equals", "ok": False}]},
    ]
    m = QualityMetrics.from_cases(cases, {})
    assert (m.assertion_pass_rate, m.format_compliance, m.latency_p95_ms) == (0.5, 0.6667, 30.0)
    assert m.cost_per_request_usd is None


def test_no_baseline_skips_and_says_how_to_make_one(tmp_path: Path) -> None:
    ev = evidence([stage("ai-smoke", details={"cases": []})],
                  "[service]\nname='x'\n[quality]\nbaseline='b.json'\n", tmp_path)
    res = evaluate(ev)
    assert res.status is Status.SKIPPED and "flightcheck baseline save" in res.summary


def test_a_failed_smoke_run_is_never_saved_as_the_baseline(tmp_path: Path) -> None:
    from flightcheck.errors import UsageError

    ev = evidence([stage("ai-smoke", Status.FAIL, details={"cases": []})], "[service]\nname='x'\n", tmp_path)
    with pytest.raises(UsageError, match="ai-smoke failed"):
        save_baseline(ev, tmp_path / "b.json")
    assert not (tmp_path / "b.json").exists()


def test_quality_thresholds_validate_in_the_config(tmp_path: Path) -> None:
    (tmp_path / "flightcheck.toml").write_text("[service]\nname='x'\n[quality]\nwarn_worse=0.5\nfail_worse=0.3\n")
    proc = flightcheck("config", "--config", str(tmp_path / "flightcheck.toml"))
    assert proc.returncode == 2 and "warn_worse" in proc.stderr


@pytest.mark.slow
def test_baseline_from_a_healthy_run_then_degraded_answers_fail(healthy: Run, tmp_path: Path) -> None:
    baseline = tmp_path / "baseline.json"
    saved = flightcheck("baseline", "save", "--report-dir", str(healthy.report_dir), "--output", str(baseline))
    assert saved.returncode == 0, saved.stderr
    data = json.loads(baseline.read_text())
    assert data["metrics"]["assertion_pass_rate"] == 1.0 and data["service"] == "mathcoach"
    same = flightcheck("quality", "--report-dir", str(healthy.report_dir), "--baseline", str(baseline))
    assert same.returncode == 0 and same.stdout.startswith("PASS  quality"), same.stdout

    degraded = ci(tmp_path / "report", "--service-env", "FAULT_DEGRADE_ANSWERS=1",
                  env={"FLIGHTCHECK__QUALITY__BASELINE": str(baseline)})
    assert degraded.rc == 1, degraded.why()
    lesson = degraded.lesson("quality")
    assert lesson["status"] == "fail", lesson
    assert measurement(lesson, "assertion_pass_rate") < 0.6
    assert "quality.assertion_pass_rate" in [f["code"] for f in lesson["findings"]]
    assert "FAIL  lesson quality" in degraded.stderr
    again = flightcheck("quality", "--report-dir", str(degraded.report_dir), "--baseline", str(baseline))
    assert again.returncode == 1 and "assertion_pass_rate" in again.stdout
    refused = flightcheck("baseline", "save", "--report-dir", str(degraded.report_dir), "--output",
                          str(tmp_path / "bad.json"))
    assert refused.returncode == 2 and "ai-smoke failed" in refused.stderr


@pytest.mark.slow
def test_quality_with_a_missing_baseline_file_is_a_usage_error(healthy: Run, tmp_path: Path) -> None:
    proc = flightcheck("quality", "--report-dir", str(healthy.report_dir), "--baseline", str(tmp_path / "no.json"))
    assert proc.returncode == 2 and "baseline save" in proc.stderr
