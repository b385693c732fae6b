"""Monitoring as code: log-based metrics and alert policies rendered from the config.

``flightcheck monitoring render`` writes, for the service in ``[service]``/``[deploy]``:

- ``log-metric-<service>_errors.json`` — a log-based counter of the service's ERROR log lines;
- ``log-metric-<service>_tokens.json`` — a log-based distribution of the token counts the
  service logs (``[monitoring].token_filter`` / ``token_field``), what the cost alert sums;
- ``alert-error-rate.json`` — 5xx share of Cloud Run requests > ``[monitoring].error_rate``;
- ``alert-p95-latency.json`` — p95 of Cloud Run request latency > ``p95_latency_ms``;
- ``alert-cost-per-hour.json`` — tokens per hour × the model's price > ``cost_per_hour_usd``
  (default ``[cost].max_per_hour_usd``), a PromQL condition on the token metric;
- ``monitoring.tf.json`` — the same as Terraform (``google_logging_metric``,
  ``google_monitoring_alert_policy``).

The JSON files are the APIs' own JSON (``gcloud logging metrics create NAME
--config-from-file=…``, ``gcloud alpha monitoring policies create --policy-from-file=…``); each is
parsed into the client library's message type before it is written, so a field the API does not
know fails here, not in the console. ``apply`` creates or updates them through
google-cloud-logging / google-cloud-monitoring (idempotent: metrics by name, policies by their
``flightcheck-policy`` user label).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from flightcheck.config import Config
from flightcheck.errors import UsageError
from flightcheck.lessons.cost import price_of, price_table, resolve_prices
from flightcheck.lessons.evidence import Evidence, fmt_usd
from flightcheck.results import Finding, LessonResult, Severity, Status

COMMAND = ["monitoring", "render"]
LABEL = "flightcheck-policy"
_BUCKETS = {"exponentialBuckets": {"numFiniteBuckets": 64, "growthFactor": 2, "scale": 1}}


@dataclass
class Plan:
    """What render produces: API JSON by file name, and why something was left out."""

    service: str
    log_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # metric name → LogMetric
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)  # policy key → AlertPolicy
    notes: list[tuple[str, str]] = field(default_factory=list)  # (what was left out, fix)

    def files(self) -> dict[str, dict[str, Any]]:
        out = {f"log-metric-{name}.json": m for name, m in self.log_metrics.items()}
        out.update({f"alert-{key}.json": p for key, p in self.policies.items()})
        out["monitoring.tf.json"] = terraform(self)
        return out


def _service_filter(name: str) -> str:
    return f'resource.type="cloud_run_revision" AND resource.labels.service_name="{name}"'


def _price_per_token(ev: Evidence) -> tuple[float | None, str]:
    """USD per token for the model the service runs in production, blended by the measured
    prompt/completion split when a run measured one, else priced as output (the dearer side)."""
    cfg = ev.config
    env = cfg.environments.get("prod") or cfg.environments.get(ev.environment)
    model = env.model if env else None
    price = price_of(resolve_prices(ev), model)
    if price is None:
        return None, f"no price for model {model!r} (add it to [cost].prices)"
    prompt = ev.number("ai-smoke", "tokens_prompt")
    completion = ev.number("ai-smoke", "tokens_completion")
    if prompt is not None and completion is not None and prompt + completion > 0:
        share = prompt / (prompt + completion)
        blended = price.input * share + price.output * (1 - share)
        how = f"{model}: {price.input}/{price.output} USD per 1M, {share:.0%} prompt tokens as measured"
    else:
        blended = price.output
        how = f"{model}: priced at its output price {price.output} USD per 1M (no measured split)"
    return blended / 1_000_000, f"{how} ({price.source})"


def render(ev: Evidence) -> Plan:
    cfg: Config = ev.config
    mon = cfg.monitoring
    name = cfg.deploy.service or cfg.service.name
    base = _service_filter(name)
    plan = Plan(service=name)
    window = f"{mon.window_s}s"
    labels = {"managed-by": "flightcheck", "service": name}
    doc = ("Rendered by flightcheck from flightcheck.toml ([monitoring]); change it there and run "
           "`flightcheck monitoring apply`.")

    errors, tokens = f"{name}_errors", f"{name}_tokens"
    plan.log_metrics[errors] = {
        "name": errors,
        "description": f"ERROR-or-worse log lines of Cloud Run service {name}",
        "filter": f"{base} AND severity>=ERROR",
        "metricDescriptor": {"metricKind": "DELTA", "valueType": "INT64", "unit": "1"},
    }
    plan.log_metrics[tokens] = {
        "name": tokens,
        "description": f"LLM tokens per request logged by Cloud Run service {name}",
        "filter": f"{base} AND {mon.token_filter}",
        "metricDescriptor": {"metricKind": "DELTA", "valueType": "DISTRIBUTION", "unit": "1"},
        "valueExtractor": f"EXTRACT({mon.token_field})",
        "bucketOptions": _BUCKETS,
    }
    requests = f'{base} AND metric.type="run.googleapis.com/request_count"'
    per_minute = [{"alignmentPeriod": "60s", "perSeriesAligner": "ALIGN_RATE",
                   "crossSeriesReducer": "REDUCE_SUM",
                   "groupByFields": ["resource.label.service_name"]}]

    def policy(key: str, title: str, condition: dict[str, Any], what: str) -> dict[str, Any]:
        return {
            "displayName": f"{name}: {title}",
            "documentation": {"content": f"{what}\n\n{doc}", "mimeType": "text/markdown"},
            "userLabels": {**labels, LABEL: key},
            "combiner": "OR",
            "conditions": [condition],
            "notificationChannels": list(mon.notification_channels),
            "alertStrategy": {"autoClose": "1800s"},
        }

    plan.policies["error-rate"] = policy("error-rate", f"error rate > {mon.error_rate:.0%}", {
        "displayName": f"5xx share of requests > {mon.error_rate:g} for {window}",
        "conditionThreshold": {
            "filter": f'{requests} AND metric.label.response_code_class="5xx"',
            "denominatorFilter": requests,
            "aggregations": per_minute,
            "denominatorAggregations": per_minute,
            "comparison": "COMPARISON_GT",
            "thresholdValue": mon.error_rate,
            "duration": window,
            "trigger": {"count": 1},
        },
    }, f"More than {mon.error_rate:.0%} of requests to {name} fail with 5xx.")
    plan.policies["p95-latency"] = policy("p95-latency", f"p95 latency > {mon.p95_latency_ms:g} ms", {
        "displayName": f"p95 request latency > {mon.p95_latency_ms:g} ms for {window}",
        "conditionThreshold": {
            "filter": f'{base} AND metric.type="run.googleapis.com/request_latencies"',
            "aggregations": [{"alignmentPeriod": "60s", "perSeriesAligner": "ALIGN_DELTA",
                              "crossSeriesReducer": "REDUCE_PERCENTILE_95",
                              "groupByFields": ["resource.label.service_name"]}],
            "comparison": "COMPARISON_GT",
            "thresholdValue": mon.p95_latency_ms,
            "duration": window,
            "trigger": {"count": 1},
        },
    }, f"The 95th percentile of {name}'s request latency is above {mon.p95_latency_ms:g} ms.")

    budget = mon.cost_per_hour_usd or cfg.cost.max_per_hour_usd
    per_token, how = _price_per_token(ev)
    if per_token is None:
        plan.notes.append((f"cost alert not rendered: {how}",
                           "add the model's price to [cost].prices as [input, output] USD per 1M"))
    else:
        metric = f"logging_googleapis_com:user_{tokens}_sum"
        query = (f'sum(increase({metric}{{monitored_resource="cloud_run_revision",'
                 f'service_name="{name}"}}[1h])) * {per_token:.6e} > {budget:g}')
        plan.policies["cost-per-hour"] = policy("cost-per-hour", f"cost > {fmt_usd(budget)}/hour", {
            "displayName": f"LLM tokens per hour × price > {fmt_usd(budget)}",
            "conditionPrometheusQueryLanguage": {"query": query, "duration": window,
                                                 "evaluationInterval": "60s"},
        }, f"{name}'s LLM spend over the last hour is above {fmt_usd(budget)} ({how}; price "
           f"table {price_table().version}).")
    validate(plan)
    return plan


def validate(plan: Plan) -> None:
    """Parse every resource into the API's message type: unknown fields or bad values fail."""
    try:
        from google.cloud import logging_v2, monitoring_v3
    except ImportError:  # the libraries are an extra; the JSON is still written
        plan.notes.append(("the rendered JSON was not validated against the API types "
                           "(google-cloud-logging / google-cloud-monitoring are not installed)",
                           "pip install 'flightcheck[monitoring]'"))
        return
    from google.protobuf.json_format import ParseError

    for kind, items, parse in (("log metric", plan.log_metrics, logging_v2.types.LogMetric.from_json),
                               ("alert policy", plan.policies, monitoring_v3.AlertPolicy.from_json)):
        for name, data in items.items():
            try:
                parse(json.dumps(data))
            except ParseError as exc:
                raise ValueError(f"{kind} {name}: {exc}") from None


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def _tf(value: Any, *, keep_keys: bool = False) -> Any:
    """API JSON → Terraform JSON: snake_case attribute names (label maps keep their keys)."""
    if isinstance(value, Mapping):
        return {(k if keep_keys else _snake(k)): _tf(v, keep_keys=k in ("userLabels", "labelExtractors"))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_tf(v) for v in value]
    return value


def terraform(plan: Plan) -> dict[str, Any]:
    metrics = {name: _tf(m) for name, m in plan.log_metrics.items()}
    policies: dict[str, Any] = {}
    for key, p in plan.policies.items():
        res = _tf(p)
        res["depends_on"] = [f"google_logging_metric.{name}" for name in metrics]
        policies[key.replace("-", "_")] = res
    return {"resource": {"google_logging_metric": metrics,
                         "google_monitoring_alert_policy": policies}}


def write(plan: Plan, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in plan.files().items():
        path = out / name
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written


def evaluate(ev: Evidence) -> LessonResult:
    """In every ci run: what `monitoring render` would write (a report section, not a gate)."""
    res = ev.result("monitoring", COMMAND, "monitoring-render")
    res.gate = False
    try:
        plan = render(ev)
    except ValueError as exc:  # the API types refused a value from the config
        res.status = Status.FAIL
        res.summary = f"the rendered monitoring config is invalid: {exc}"
        res.findings.append(Finding(code="monitoring.invalid", category="monitoring",
                                    message=res.summary, fix="check [monitoring] in flightcheck.toml"))
        return res
    res.details["log_metrics"] = sorted(plan.log_metrics)
    res.details["policies"] = {k: p["displayName"] for k, p in plan.policies.items()}
    res.details["notification_channels"] = ev.config.monitoring.notification_channels
    res.measure("log_metrics", len(plan.log_metrics))
    res.measure("alert_policies", len(plan.policies))
    for note, fix in plan.notes:
        res.findings.append(Finding(code="monitoring.incomplete", category="monitoring",
                                    severity=Severity.WARNING, message=note, fix=fix))
    res.status = Status.WARN if res.findings else Status.PASS
    res.summary = (f"{len(plan.log_metrics)} log-based metrics and {len(plan.policies)} alert "
                   f"policies ({', '.join(plan.policies)}) rendered from [monitoring]")
    return res


# --- apply ----------------------------------------------------------------------------------------


@dataclass
class Applied:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)


def apply(plan: Plan, project: str, *, endpoint: str | None = None) -> Applied:
    """Create or update every metric and policy in ``project``.

    ``endpoint`` (host:port) talks plaintext gRPC to a local server (an emulator or a test),
    without credentials; otherwise Application Default Credentials are used.
    """
    from google.api_core import exceptions as gexc
    from google.cloud import logging_v2, monitoring_v3
    from google.cloud.logging_v2.services.metrics_service_v2 import MetricsServiceV2Client
    from google.cloud.logging_v2.services.metrics_service_v2.transports import (
        MetricsServiceV2GrpcTransport,
    )
    from google.cloud.monitoring_v3.services.alert_policy_service.transports import (
        AlertPolicyServiceGrpcTransport,
    )

    if endpoint is not None:
        import grpc

        metrics = MetricsServiceV2Client(
            transport=MetricsServiceV2GrpcTransport(channel=grpc.insecure_channel(endpoint)))
        alerts = monitoring_v3.AlertPolicyServiceClient(
            transport=AlertPolicyServiceGrpcTransport(channel=grpc.insecure_channel(endpoint)))
    else:
        credentials = _credentials()
        metrics = MetricsServiceV2Client(credentials=credentials)
        alerts = monitoring_v3.AlertPolicyServiceClient(credentials=credentials)

    done = Applied()
    parent = f"projects/{project}"
    try:
        for name, data in plan.log_metrics.items():
            metric = cast(logging_v2.types.LogMetric,
                          logging_v2.types.LogMetric.from_json(json.dumps(data)))
            path = f"{parent}/metrics/{name}"
            try:
                metrics.get_log_metric(metric_name=path)
            except gexc.NotFound:
                metrics.create_log_metric(parent=parent, metric=metric)
                done.created.append(f"log metric {name}")
            else:
                metrics.update_log_metric(metric_name=path, metric=metric)
                done.updated.append(f"log metric {name}")
        existing = {p.user_labels.get(LABEL): p.name
                    for p in alerts.list_alert_policies(name=parent)
                    if p.user_labels.get("service") == plan.service and p.user_labels.get(LABEL)}
        for key, data in plan.policies.items():
            policy = cast(monitoring_v3.AlertPolicy,
                          monitoring_v3.AlertPolicy.from_json(json.dumps(data)))
            if key in existing:
                policy.name = existing[key]
                alerts.update_alert_policy(alert_policy=policy)
                done.updated.append(f"alert policy {key}")
            else:
                alerts.create_alert_policy(name=parent, alert_policy=policy)
                done.created.append(f"alert policy {key}")
    except gexc.PermissionDenied as exc:
        raise UsageError(
            f"the Cloud API refused: {exc.message}",
            fix="the deployer needs roles/logging.configWriter and roles/monitoring.alertPolicyEditor "
            f"on {project}",
        ) from None
    except gexc.GoogleAPICallError as exc:
        raise UsageError(f"the Cloud API failed: {exc.message}",
                         fix="read the message; rerun `flightcheck monitoring apply` (it is idempotent)") from None
    return done


def _credentials() -> Any:
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    except DefaultCredentialsError:
        raise UsageError(
            "no Google Cloud credentials",
            why="monitoring apply creates log-based metrics and alert policies in your project",
            fix="gcloud auth application-default login, or GOOGLE_APPLICATION_CREDENTIALS=key.json "
            "(or Workload Identity Federation in CI); `flightcheck monitoring render` needs none",
        ) from None
    return credentials
