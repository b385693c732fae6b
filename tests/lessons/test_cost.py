"""Cost: tokens × the shipped price table against budgets; FAULT_TOKEN_MULTIPLIER trips it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from lessons_support import Run, ci, evidence, flightcheck, measurement, stage

from flightcheck.lessons import cost, defaults
from flightcheck.results import Status


def _case(name: str, model: str | None, provider: tuple[int, int] | None,
          service: tuple[int, int] | None = None) -> dict[str, Any]:
    usage: dict[str, dict[str, int]] = {}
    for src, pair in (("provider", provider), ("service", service)):
        if pair is not None:
            usage[src] = {"prompt_tokens": pair[0], "completion_tokens": pair[1],
                          "total_tokens": sum(pair)}
    return {"name": name, "status": "pass", "usage": usage, "model": model}


def _smoke(*cases: dict[str, Any]) -> list[Any]:
    return [stage("ai-smoke", details={"cases": list(cases)})]


def test_named_defaults_are_the_issues_budgets() -> None:
    assert (defaults.COST_MAX_PER_REQUEST_USD, defaults.COST_MAX_PER_HOUR_USD,
            defaults.COST_MAX_PER_DAY_USD) == (0.05, 10.0, 100.0)


def test_the_shipped_price_table_is_versioned_and_prices_pinned_models() -> None:
    table = cost.price_table()
    assert table.version[:4].isdigit()
    assert table.models["gpt-4o-mini-2024-07-18"].input == 0.15
    assert all(not m.endswith("-latest") for m in table.models)


def test_cost_per_request_is_tokens_times_the_table_price(tmp_path: Path) -> None:
    ev = evidence(_smoke(_case("q", "gpt-4o-2024-08-06", (1000, 500)), _case("e", None, None)),
                  "[service]\nname='x'\n[cost]\nrequests_per_hour=100\n", tmp_path)
    res = cost.evaluate(ev)
    # 1000 × 2.50/1M + 500 × 10.00/1M = 0.0075
    assert res.status is Status.PASS, res.summary
    assert res.measurement("cost_per_request_usd") == pytest.approx(0.0075)
    assert res.measurement("cost_per_hour_usd") == pytest.approx(0.75)
    assert res.measurement("cost_per_day_usd") == pytest.approx(18.0)
    assert res.details["prices"] == {"gpt-4o-2024-08-06": {
        "input": 2.5, "output": 10.0, "source": f"price table {cost.price_table().version}"}}


def test_config_prices_win_over_the_table_and_budgets_are_configurable(tmp_path: Path) -> None:
    toml = ("[service]\nname='x'\n[cost]\nmax_per_request_usd=0.001\n"
            "prices={'gpt-4o-2024-08-06'=[0.5, 1.0]}\n")
    res = cost.evaluate(evidence(_smoke(_case("q", "gpt-4o-2024-08-06", (1000, 1000))), toml, tmp_path))
    assert res.measurement("cost_per_request_usd") == pytest.approx(0.0015)
    assert res.status is Status.FAIL
    assert any("per request" in f.message for f in res.findings)


def test_hourly_and_daily_projections_fail_at_a_high_request_rate(tmp_path: Path) -> None:
    ev = evidence(_smoke(_case("q", "gpt-4o-mini-2024-07-18", (1000, 1000))),
                  "[service]\nname='x'\n", tmp_path)
    ok = cost.evaluate(ev)
    busy = cost.evaluate(ev, requests_per_hour=20_000)  # 0.00075 × 20000 = 15 USD/h
    assert ok.status is Status.PASS
    assert busy.status is Status.FAIL
    assert [f.message.split(":")[0] for f in busy.findings] == ["over budget", "over budget"]
    assert "/h at 20000 requests/h" in busy.summary and "/day" in busy.summary


def test_the_higher_of_two_disagreeing_counts_is_priced_and_reported(tmp_path: Path) -> None:
    ev = evidence(_smoke(_case("q", "gpt-4o-mini-2024-07-18", (100, 20), (1000, 200))),
                  "[service]\nname='x'\n", tmp_path)
    res = cost.evaluate(ev)
    assert res.details["requests"][0]["counted_by"] == "service"  # type: ignore[index]
    assert [f.code for f in res.findings] == ["cost.token-disagreement"]
    assert res.status is Status.WARN


def test_an_unknown_model_fails_instead_of_passing_unpriced(tmp_path: Path) -> None:
    smoke = stage("ai-smoke", details={"cases": [_case("q", "my-own-model-7", (10, 10))],
                                       "mode": "real provider (openai)"})
    res = cost.evaluate(evidence([smoke], "[service]\nname='x'\n", tmp_path))
    assert res.status is Status.FAIL
    assert [f.code for f in res.findings] == ["cost.no-price"]
    assert "[cost].prices" in (res.findings[0].fix or "")
    # a fake model's stand-in name has no price to know: checked nothing, so a warning, not a pass
    fake = stage("ai-smoke", details={"cases": [_case("q", "placeholder", (10, 10))],
                                      "mode": "fake model server"})
    warned = cost.evaluate(evidence([fake], "[service]\nname='x'\n", tmp_path))
    assert warned.status is Status.WARN and "cost not checked" in warned.summary


def test_no_usage_warns_and_no_smoke_skips(tmp_path: Path) -> None:
    none = cost.evaluate(evidence(_smoke(_case("e", None, None)), "[service]\nname='x'\n", tmp_path))
    assert none.status is Status.WARN and none.findings[0].code == "cost.no-usage"
    skipped = cost.evaluate(evidence([stage("ai-smoke", Status.SKIPPED)], "[service]\nname='x'\n", tmp_path))
    assert skipped.status is Status.SKIPPED


def test_a_zero_budget_is_a_config_error_not_no_limit(tmp_path: Path) -> None:
    (tmp_path / "flightcheck.toml").write_text("[service]\nname='x'\n[cost]\nmax_per_hour_usd=0\n")
    proc = flightcheck("config", "--config", str(tmp_path / "flightcheck.toml"))
    assert proc.returncode == 2
    assert "cost.max_per_hour_usd" in proc.stderr and "Traceback" not in proc.stderr


# --- on the reference service ----------------------------------------------------------------


@pytest.mark.slow
def test_a_healthy_run_is_within_budget_and_the_command_agrees(healthy: Run) -> None:
    lesson = healthy.lesson("cost")
    assert lesson["status"] == "pass", lesson
    assert 0 < measurement(lesson, "cost_per_request_usd") < 0.001
    proc = flightcheck("cost", "--report-dir", str(healthy.report_dir), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["measurements"] == lesson["measurements"]
    text = flightcheck("cost", "--report-dir", str(healthy.report_dir))
    assert text.stdout.startswith("PASS  cost: ") and "fake-math-1" in text.stdout


@pytest.mark.slow
def test_token_inflation_trips_the_cost_gate(tmp_path: Path) -> None:
    run = ci(tmp_path / "report", "--service-env", "FAULT_TOKEN_MULTIPLIER=1000")
    assert run.rc == 1, run.why()
    lesson = run.lesson("cost")
    assert lesson["status"] == "fail"
    assert any(f["code"] == "cost.budget" and "per request" in f["message"] for f in lesson["findings"])
    assert any(f["code"] == "cost.token-disagreement" for f in lesson["findings"])
    assert "FAIL  lesson cost" in run.stderr
    again = flightcheck("cost", "--report-dir", str(run.report_dir))
    assert again.returncode == 1 and "over budget" in again.stdout


def test_no_report_is_a_usage_error_with_the_command_to_run(tmp_path: Path) -> None:
    proc = flightcheck("cost", "--report-dir", str(tmp_path / "nothing"))
    assert proc.returncode == 2
    assert "flightcheck ci" in proc.stderr and "Traceback" not in proc.stderr


def test_canary_traffic_of_the_candidate_revision_counts_when_dearer(tmp_path: Path) -> None:
    """The deploy stage's steps carry per-revision metrics (cloudrun.analysis.RevisionStats)."""
    step = {"percent": 10, "verdict": "pass", "metrics": {
        "svc-002": {"requests": 40, "ai_requests": 20, "tokens": 400_000, "cost_usd": 0.3,
                    "cost_per_request_usd": 0.015},
        "svc-001": {"requests": 360, "ai_requests": 180, "tokens": 36_000, "cost_usd": 0.01,
                    "cost_per_request_usd": 0.0000556}}}
    deploy = stage("deploy", details={"revision": "svc-002", "steps": [step, step]})
    smoke = _smoke(_case("q", "gpt-4o-mini-2024-07-18", (100, 20)))[0]
    res = cost.evaluate(evidence([smoke, deploy], "[service]\nname='x'\n", tmp_path))
    assert res.measurement("canary_requests") == 40
    assert res.measurement("canary_cost_per_request_usd") == pytest.approx(0.015)
    assert res.measurement("cost_per_hour_usd") == pytest.approx(15.0)  # 0.015 × 1000 requests/h
    assert res.status is Status.FAIL and any("/h at 1000" in f.message for f in res.findings)


def test_the_repro_lines_carry_the_request_rate_asked_for(tmp_path: Path) -> None:
    ev = evidence([], "[service]\nname = 'x'\n", tmp_path)
    asked = cost.evaluate(ev, requests_per_hour=250).repro
    assert asked.local.startswith("flightcheck cost --requests-per-hour 250")
    assert "--requests-per-hour=250" in asked.dagger
    assert "--requests-per-hour" not in cost.evaluate(ev).repro.dagger
