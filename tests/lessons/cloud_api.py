"""A local gRPC server speaking the Cloud Logging metrics and Cloud Monitoring alert-policy
APIs (the real wire protocol: the client libraries' own protobuf messages over HTTP/2), with
in-memory state, recording every call. It stands in for Google's API, which is unreachable here.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.cloud import logging_v2, monitoring_v3

LOGGING = "google.logging.v2.MetricsServiceV2"
MONITORING = "google.monitoring.v3.AlertPolicyService"


@dataclass
class FakeCloud:
    metrics: dict[str, logging_v2.types.LogMetric] = field(default_factory=dict)
    policies: dict[str, monitoring_v3.AlertPolicy] = field(default_factory=dict)
    calls: list[tuple[str, Any]] = field(default_factory=list)  # (method, request)
    metadata: list[dict[str, str]] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _record(self, method: str, request: Any, context: grpc.ServicerContext) -> None:
        with self._lock:
            self.calls.append((method, request))
            self.metadata.append({k: v for k, v in context.invocation_metadata()})  # type: ignore[misc]

    # --- logging ------------------------------------------------------------------------------

    def get_log_metric(self, req: logging_v2.types.GetLogMetricRequest, ctx: grpc.ServicerContext) -> logging_v2.types.LogMetric:
        self._record("GetLogMetric", req, ctx)
        if req.metric_name not in self.metrics:
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"Metric {req.metric_name} does not exist.")
        return self.metrics[req.metric_name]

    def create_log_metric(self, req: logging_v2.types.CreateLogMetricRequest, ctx: grpc.ServicerContext) -> logging_v2.types.LogMetric:
        self._record("CreateLogMetric", req, ctx)
        name = f"{req.parent}/metrics/{req.metric.name}"
        if name in self.metrics:
            ctx.abort(grpc.StatusCode.ALREADY_EXISTS, f"Metric {name} already exists.")
        self.metrics[name] = req.metric
        return req.metric

    def update_log_metric(self, req: logging_v2.types.UpdateLogMetricRequest, ctx: grpc.ServicerContext) -> logging_v2.types.LogMetric:
        self._record("UpdateLogMetric", req, ctx)
        self.metrics[req.metric_name] = req.metric
        return req.metric

    # --- monitoring ---------------------------------------------------------------------------

    def list_alert_policies(self, req: monitoring_v3.ListAlertPoliciesRequest, ctx: grpc.ServicerContext) -> monitoring_v3.ListAlertPoliciesResponse:
        self._record("ListAlertPolicies", req, ctx)
        mine = [p for n, p in self.policies.items() if n.startswith(req.name + "/")]
        return monitoring_v3.ListAlertPoliciesResponse(alert_policies=mine, total_size=len(mine))

    def create_alert_policy(self, req: monitoring_v3.CreateAlertPolicyRequest, ctx: grpc.ServicerContext) -> monitoring_v3.AlertPolicy:
        self._record("CreateAlertPolicy", req, ctx)
        if req.alert_policy.name:
            ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "name must be empty on create")
        policy = monitoring_v3.AlertPolicy(req.alert_policy)
        policy.name = f"{req.name}/alertPolicies/{next(self._ids)}"
        self.policies[policy.name] = policy
        return policy

    def update_alert_policy(self, req: monitoring_v3.UpdateAlertPolicyRequest, ctx: grpc.ServicerContext) -> monitoring_v3.AlertPolicy:
        self._record("UpdateAlertPolicy", req, ctx)
        if req.alert_policy.name not in self.policies:
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"{req.alert_policy.name} does not exist")
        self.policies[req.alert_policy.name] = req.alert_policy
        return req.alert_policy

    def methods(self) -> list[str]:
        return [m for m, _ in self.calls]


def _unary(fn: Callable[[Any, grpc.ServicerContext], Any], req: Any, resp: Any) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(fn, request_deserializer=req.deserialize,
                                               response_serializer=resp.serialize)


@contextmanager
def serve() -> Iterator[tuple[FakeCloud, str]]:
    """(state, "127.0.0.1:PORT") of a running server; stopped on exit."""
    cloud = FakeCloud()
    lt, mt = logging_v2.types, monitoring_v3
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers([
        grpc.method_handlers_generic_handler(LOGGING, {
            "GetLogMetric": _unary(cloud.get_log_metric, lt.GetLogMetricRequest, lt.LogMetric),
            "CreateLogMetric": _unary(cloud.create_log_metric, lt.CreateLogMetricRequest, lt.LogMetric),
            "UpdateLogMetric": _unary(cloud.update_log_metric, lt.UpdateLogMetricRequest, lt.LogMetric),
        }),
        grpc.method_handlers_generic_handler(MONITORING, {
            "ListAlertPolicies": _unary(cloud.list_alert_policies, mt.ListAlertPoliciesRequest,
                                        mt.ListAlertPoliciesResponse),
            "CreateAlertPolicy": _unary(cloud.create_alert_policy, mt.CreateAlertPolicyRequest, mt.AlertPolicy),
            "UpdateAlertPolicy": _unary(cloud.update_alert_policy, mt.UpdateAlertPolicyRequest, mt.AlertPolicy),
        }),
    ])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield cloud, f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)
