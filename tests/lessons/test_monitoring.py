"""Monitoring as code: rendered resources are valid API messages and Terraform; apply sends
create-then-update requests (idempotent) over gRPC to a local server speaking the APIs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cloud_api import serve
from lessons_support import REPO, Run, evidence, flightcheck

from flightcheck.errors import UsageError
from flightcheck.lessons import monitoring
from flightcheck.results import Status

CFG = """
[service]
name = "mathcoach"
[deploy]
project = "demo-project"
[monitoring]
error_rate = 0.02
p95_latency_ms = 1500
cost_per_hour_usd = 3
notification_channels = ["projects/demo-project/notificationChannels/42"]
[environments.prod]
model = "gpt-4o-mini-2024-07-18"
"""


def test_render_thresholds_come_from_the_config(tmp_path: Path) -> None:
    plan = monitoring.render(evidence([], CFG, tmp_path))
    assert sorted(plan.log_metrics) == ["mathcoach_errors", "mathcoach_tokens"]
    assert sorted(plan.policies) == ["cost-per-hour", "error-rate", "p95-latency"]
    err = plan.policies["error-rate"]["conditions"][0]["conditionThreshold"]
    assert err["thresholdValue"] == 0.02 and "5xx" in err["filter"] and err["denominatorFilter"]
    lat = plan.policies["p95-latency"]["conditions"][0]["conditionThreshold"]
    assert lat["thresholdValue"] == 1500 and "request_latencies" in lat["filter"]
    query = plan.policies["cost-per-hour"]["conditions"][0]["conditionPrometheusQueryLanguage"]["query"]
    # no measured split: priced at gpt-4o-mini's output price, 0.60 USD per 1M tokens
    assert "user_mathcoach_tokens_sum" in query and "* 6.000000e-07 > 3" in query
    assert all(p["notificationChannels"] == ["projects/demo-project/notificationChannels/42"]
               for p in plan.policies.values())
    assert plan.log_metrics["mathcoach_tokens"]["valueExtractor"] == "EXTRACT(jsonPayload.usage.total_tokens)"


def test_written_files_are_api_json_and_terraform(tmp_path: Path) -> None:
    plan = monitoring.render(evidence([], CFG, tmp_path))
    names = sorted(p.name for p in monitoring.write(plan, tmp_path / "out"))
    assert names == ["alert-cost-per-hour.json", "alert-error-rate.json", "alert-p95-latency.json",
                     "log-metric-mathcoach_errors.json", "log-metric-mathcoach_tokens.json",
                     "monitoring.tf.json"]
    tf = json.loads((tmp_path / "out" / "monitoring.tf.json").read_text())
    policy = tf["resource"]["google_monitoring_alert_policy"]["error_rate"]
    assert policy["conditions"][0]["condition_threshold"]["threshold_value"] == 0.02
    assert policy["user_labels"]["flightcheck-policy"] == "error-rate"
    assert "google_logging_metric.mathcoach_tokens" in policy["depends_on"]
    metric = tf["resource"]["google_logging_metric"]["mathcoach_tokens"]
    assert metric["bucket_options"]["exponential_buckets"]["num_finite_buckets"] == 64


def test_an_invalid_value_is_refused_by_the_api_types(tmp_path: Path) -> None:
    plan = monitoring.Plan(service="x", policies={"bad": {"displayName": "x", "combiner": "SOMETIMES"}})
    with pytest.raises(ValueError, match="alert policy bad"):
        monitoring.validate(plan)


def test_an_unpriced_model_leaves_the_cost_alert_out_and_says_so(tmp_path: Path) -> None:
    res = monitoring.evaluate(evidence([], CFG.replace("gpt-4o-mini-2024-07-18", "own-model"), tmp_path))
    assert res.status is Status.WARN and res.gate is False
    assert "cost alert not rendered" in res.findings[0].message


def test_apply_creates_then_updates_over_grpc(tmp_path: Path) -> None:
    plan = monitoring.render(evidence([], CFG, tmp_path))
    with serve() as (cloud, endpoint):
        first = monitoring.apply(plan, "demo-project", endpoint=endpoint)
        assert sorted(first.created) == ["alert policy cost-per-hour", "alert policy error-rate",
                                         "alert policy p95-latency", "log metric mathcoach_errors",
                                         "log metric mathcoach_tokens"]
        assert cloud.methods() == ["GetLogMetric", "CreateLogMetric", "GetLogMetric",
                                   "CreateLogMetric", "ListAlertPolicies", "CreateAlertPolicy",
                                   "CreateAlertPolicy", "CreateAlertPolicy"]
        create = cloud.calls[1][1]
        assert create.parent == "projects/demo-project"
        assert create.metric.filter.endswith("AND severity>=ERROR")
        policy = next(r for m, r in cloud.calls if m == "CreateAlertPolicy").alert_policy
        assert policy.user_labels["managed-by"] == "flightcheck"
        assert any("x-goog-request-params" in md or "x-goog-api-client" in md for md in cloud.metadata)

        cloud.calls.clear()
        second = monitoring.apply(plan, "demo-project", endpoint=endpoint)
        assert second.created == [] and len(second.updated) == 5
        assert len(cloud.policies) == 3 and len(cloud.metrics) == 2  # no duplicates
        assert "CreateAlertPolicy" not in cloud.methods()
        updated = next(r for m, r in cloud.calls if m == "UpdateAlertPolicy").alert_policy
        assert updated.name.startswith("projects/demo-project/alertPolicies/")


def test_the_command_renders_applies_and_reports(tmp_path: Path) -> None:
    cfg = tmp_path / "flightcheck.toml"
    cfg.write_text(CFG)
    with serve() as (cloud, endpoint):
        proc = flightcheck("monitoring", "apply", "--config", str(cfg), "--endpoint", endpoint,
                           "--output", str(tmp_path / "out"), "--report-dir", str(tmp_path / "none"))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.count("created ") == 5 and proc.stdout.count("wrote ") == 6
        assert len(cloud.policies) == 3


def test_apply_without_credentials_is_a_clear_error(tmp_path: Path) -> None:
    cfg = tmp_path / "flightcheck.toml"
    cfg.write_text(CFG)
    proc = flightcheck("monitoring", "apply", "--config", str(cfg), "--output", str(tmp_path / "o"),
                       env={"GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "missing.json"),
                            "HOME": str(tmp_path)})
    assert proc.returncode == 2, proc.stderr
    assert "Google Cloud credentials" in proc.stderr and "Traceback" not in proc.stderr
    none = flightcheck("monitoring", "apply", "--config", str(REPO / "flightcheck.toml"), "--output", str(tmp_path / "o"))
    assert none.returncode == 2 and "--project" in none.stderr


def test_apply_against_googles_api_when_credentials_exist(tmp_path: Path) -> None:
    project = os.environ.get("FLIGHTCHECK_TEST_GCP_PROJECT")
    if not project or not os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        pytest.skip("no Google Cloud credentials (GOOGLE_APPLICATION_CREDENTIALS and "
                    "FLIGHTCHECK_TEST_GCP_PROJECT): the real Cloud Logging/Monitoring API is not "
                    "called; the request sequence is tested against the local gRPC server above")
    plan = monitoring.render(evidence([], CFG.replace("demo-project", project), tmp_path))
    try:
        done = monitoring.apply(plan, project)
    except UsageError as exc:
        pytest.fail(str(exc))
    assert len(done.created) + len(done.updated) == 5


@pytest.mark.slow
def test_every_ci_run_reports_what_would_be_rendered(healthy: Run) -> None:
    lesson = healthy.lesson("monitoring")
    assert lesson["status"] == "pass", lesson
    assert set(lesson["details"]["policies"]) == {"error-rate", "p95-latency", "cost-per-hour"}
    items = {i["id"]: i for i in healthy.lesson("readiness")["details"]["items"]}
    assert items["monitoring.policies"]["status"] == "pass"
    assert items["monitoring.channels"]["status"] == "warn"  # the reference config has none
