"""The control plane of the local Cloud Run: services, revisions, operations, traffic, IAM.

It keeps Cloud Run's model (documented run_v2 behaviour only): a service's ``template`` change
creates a revision (named by ``template.revision``, or ``<service>-<generation>-<xyz>``); every
create/update/delete is a long-running operation that completes when the revision is ready or
has failed; ``traffic`` (empty means 100% to the latest ready revision) routes the service URL,
every tagged target gets a URL of its own; a revision that failed gets no traffic and leaves the
serving split as it was. Instances of revisions that no route needs are stopped ("scaled to
zero") and started again when traffic is sent back to them.

State (services, revisions, effective routes, IAM policies, URL ports) is saved to
``state.json`` after every change, so a restarted emulator serves the same services on the
same URLs, like Cloud Run keeps them between deploys.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.cloud import run_v2
from google.iam.v1 import policy_pb2
from google.longrunning import operations_pb2
from google.protobuf import field_mask_pb2, json_format, timestamp_pb2

from flightcheck.cloudrun.local.errors import ApiError, invalid, not_found
from flightcheck.cloudrun.local.identity import DEPLOYER, Identity, Rejected
from flightcheck.cloudrun.local.metrics import VIA_SERVICE, VIA_TAG, Metrics
from flightcheck.cloudrun.local.proxy import Listener, Proxy, Route, Upstream
from flightcheck.cloudrun.local.runner import (
    FAKE_MODEL_ANNOTATION,
    SOURCE_ANNOTATION,
    Instance,
    ProbeSpec,
    RevisionRunner,
    RevisionSpec,
)
from flightcheck.config import ProbeConfig, parse_memory
from flightcheck.stages.health import check_liveness, describe_exit

LATEST = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
BY_REVISION = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
State = run_v2.Condition.State
_NAME = re.compile(r"^[a-z]([a-z0-9-]{0,47}[a-z0-9])?$")
_REVISION = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
_TAG = re.compile(r"^[a-z]([a-z0-9-]{0,44}[a-z0-9])?$")
_PARENT = re.compile(r"^projects/[^/]+/locations/[^/]+$")
_DEFAULT_MEMORY = "512Mi"  # Cloud Run's default limit
_DEFAULT_TIMEOUT_S = 300.0
_KEEP_IDLE_READY = 1  # ready revisions without traffic kept running, newest first
# Fields a PATCH without update mask does not replace: the server owns them.
_OUTPUT_ONLY = (
    "name", "uid", "generation", "create_time", "update_time", "delete_time", "expire_time",
    "creator", "last_modifier", "observed_generation", "terminal_condition", "conditions",
    "latest_ready_revision", "latest_created_revision", "traffic_statuses", "uri", "urls",
    "reconciling", "etag", "satisfies_pzs",
)


def to_dict(msg: Any, *, ints: bool = False) -> dict[str, Any]:
    """proto3 JSON (camelCase) of a proto-plus message or a protobuf message."""
    pb = type(msg).pb(msg) if hasattr(type(msg), "pb") else msg
    return json_format.MessageToDict(pb, use_integers_for_enums=ints)


def parse_service(data: Any, where: str = "service") -> run_v2.Service:
    if not isinstance(data, dict):
        raise invalid(f"Invalid JSON payload received: '{where}' must be an object")
    pb = run_v2.Service.pb()()
    try:
        json_format.ParseDict(data, pb, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise invalid(f"Invalid JSON payload received. {exc}") from None
    return run_v2.Service.wrap(pb)


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


def _etag() -> str:
    return secrets.token_urlsafe(12)


def _condition(type_: str, state: State, message: str = "", *, reason: str = "",
               reason_field: str = "revision_reason") -> run_v2.Condition:
    cond = run_v2.Condition(type_=type_, state=state, message=message,
                            last_transition_time=_now())
    if reason:
        if reason_field == "reason":
            cond.reason = run_v2.Condition.CommonReason[reason]
        else:
            cond.revision_reason = run_v2.Condition.RevisionReason[reason]
    return cond


def _duration_s(value: Any, default: float) -> float:
    if value is None:
        return default
    seconds = value.total_seconds() if hasattr(value, "total_seconds") else float(value)
    return seconds or default


_INVOKER = "roles/run.invoker"


@dataclass
class Operation:
    op: operations_pb2.Operation
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Rev:
    rev: run_v2.Revision
    template_key: str
    state: str = "pending"  # pending | ready | failed
    message: str = ""
    logs: str = ""
    instance: Instance | None = None
    starting: asyncio.Task[bool] | None = None
    created: float = field(default_factory=time.time)

    @property
    def short(self) -> str:
        return self.rev.name.rsplit("/", 1)[-1]


@dataclass
class Svc:
    svc: run_v2.Service
    metrics: Metrics = field(default_factory=Metrics)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    split: list[tuple[str, int]] = field(default_factory=list)  # effective: (short, percent)
    tags: dict[str, str] = field(default_factory=dict)  # effective: tag → short
    listener: Listener | None = None
    tag_listeners: dict[str, Listener] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.svc.name

    @property
    def short(self) -> str:
        return self.svc.name.rsplit("/", 1)[-1]


class Emulator:
    """All services, revisions and operations of one emulator state directory."""

    def __init__(self, state_dir: Path, runner: RevisionRunner,
                 log: Callable[[str], None] = lambda _m: None) -> None:
        self.state_dir = state_dir
        self.runner = runner
        self.log = log
        self.proxy = Proxy()
        self.identity = Identity(state_dir)
        self.proxy.gate = self.invoker_gate
        self.services: dict[str, Svc] = {}
        self.revisions: dict[str, Rev] = {}
        self.operations: dict[str, Operation] = {}
        self.iam: dict[str, policy_pb2.Policy] = {}
        self.ports: dict[str, int] = {}
        self.denied: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    # --- persistence -------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    def save(self) -> None:
        data = {
            "version": 1,
            "ports": self.ports,
            "services": {
                name: {"service": to_dict(s.svc), "split": s.split, "tags": s.tags}
                for name, s in self.services.items()
            },
            "revisions": {
                name: {"revision": to_dict(r.rev), "template_key": r.template_key,
                       "state": r.state, "message": r.message, "logs": r.logs,
                       "created": r.created}
                for name, r in self.revisions.items()
            },
            "iam": {name: json_format.MessageToDict(p) for name, p in self.iam.items()},
        }
        # Revision env may hold provider keys (as Cloud Run's API returns them): owner-only.
        tmp = self.state_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(data, indent=1))
        os.replace(tmp, self.state_file)

    async def watch(self, interval_s: float = 2.0) -> None:
        """Restart instances that died after they were ready (a crash, an OOM under load), as
        Cloud Run replaces a failed instance; meanwhile the proxy answers 502/503 for them."""
        while not self._closing:
            await asyncio.sleep(interval_s)
            for rev in list(self.revisions.values()):
                instance = rev.instance
                if instance is None or rev.starting is not None:
                    continue
                try:
                    exit_ = await instance.running.status()
                except Exception:  # a runtime that cannot tell now: ask again next round
                    continue
                if exit_ is None or rev.instance is not instance or self._closing:
                    continue
                self.log(f"{rev.short}: instance {describe_exit(exit_)}; starting a new one")
                await self._stop_instance(rev)
                self._spawn(self._ensure_instance(rev))

    async def load(self) -> None:
        """Restore a saved state: the same URLs, the same routes; instances start again."""
        self.identity.load()
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return
        self.ports = {k: int(v) for k, v in data.get("ports", {}).items()}
        for name, raw in data.get("revisions", {}).items():
            pb = run_v2.Revision.pb()()
            json_format.ParseDict(raw["revision"], pb, ignore_unknown_fields=True)
            self.revisions[name] = Rev(run_v2.Revision.wrap(pb), raw.get("template_key", ""),
                                       state=str(raw.get("state", "pending")),
                                       message=raw.get("message", ""), logs=raw.get("logs", ""),
                                       created=float(raw.get("created", time.time())))
        for name, policy in data.get("iam", {}).items():
            self.iam[name] = json_format.ParseDict(policy, policy_pb2.Policy())
        for name, raw in data.get("services", {}).items():
            s = Svc(parse_service(raw["service"]))
            s.split = [(str(a), int(b)) for a, b in raw.get("split", [])]
            s.tags = {str(k): str(v) for k, v in raw.get("tags", {}).items()}
            s.svc.reconciling = False
            self.services[name] = s
            await self._listen(s)
            self._spawn(self._restore(s))

    async def _restore(self, s: Svc) -> None:
        async with s.lock:
            for short in {short for short, pct in s.split if pct > 0} | set(s.tags.values()):
                rev = self.revisions.get(f"{s.name}/revisions/{short}")
                if rev is not None and rev.state == "ready":
                    await self._ensure_instance(rev)

    # --- lifecycle -------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def shutdown(self) -> None:
        """Stop every listener and every instance (each container this emulator started)."""
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        for s in self.services.values():
            for listener in [s.listener, *s.tag_listeners.values()]:
                if listener is not None:
                    await listener.stop()
        await asyncio.gather(*(self._stop_instance(r) for r in self.revisions.values()),
                             return_exceptions=True)
        with contextlib.suppress(OSError):
            self.save()

    def instances(self) -> list[dict[str, Any]]:
        return [{"revision": r.rev.name, "endpoint": r.instance.endpoint,
                 "container": r.instance.container_id}
                for r in self.revisions.values() if r.instance is not None]

    # --- lookups -----------------------------------------------------------------------------

    def service(self, name: str) -> Svc:
        s = self.services.get(name)
        if s is None:
            raise not_found(name)
        return s

    def find_service(self, short_or_full: str) -> Svc:
        if short_or_full in self.services:
            return self.services[short_or_full]
        hits = [s for s in self.services.values() if s.short == short_or_full]
        if len(hits) != 1:
            raise not_found(short_or_full) if not hits else invalid(
                f"service name {short_or_full!r} is ambiguous; use its full name")
        return hits[0]

    def find_revision(self, short_or_full: str) -> Rev:
        if short_or_full in self.revisions:
            return self.revisions[short_or_full]
        hits = [r for r in self.revisions.values() if r.short == short_or_full]
        if len(hits) != 1:
            raise not_found(short_or_full)
        return hits[0]

    def revision(self, name: str) -> Rev:
        r = self.revisions.get(name)
        if r is None:
            raise not_found(name)
        return r

    def operation(self, name: str) -> Operation:
        op = self.operations.get(name)
        if op is None:
            raise not_found(name)
        return op

    # --- services ----------------------------------------------------------------------------

    def create_service(self, parent: str, service_id: str, body: Any, validate_only: bool
                       ) -> Operation:
        if not _PARENT.match(parent):
            raise invalid(f"parent {parent!r} must be projects/PROJECT/locations/LOCATION")
        if not service_id:
            raise invalid("serviceId is required")
        if not _NAME.match(service_id):
            raise invalid(f"Invalid service id '{service_id}': it must start with a letter, hold "
                          "only lowercase letters, digits and hyphens, not end with a hyphen, "
                          "and be at most 49 characters")
        name = f"{parent}/services/{service_id}"
        if name in self.services:
            raise ApiError("ALREADY_EXISTS", f"Resource '{name}' already exists.")
        svc = parse_service(body)
        for output in _OUTPUT_ONLY:
            if output in svc:
                delattr(svc, output)
        svc.name = name
        return self._accept(None, svc, validate_only)

    def update_service(self, name: str, body: Any, update_mask: str, allow_missing: bool,
                       validate_only: bool) -> Operation:
        incoming = parse_service(body)
        current = self.services.get(name)
        if current is None:
            if not allow_missing:
                raise not_found(name)
            parent, _, service_id = name.rpartition("/services/")
            return self.create_service(parent, service_id,
                                       to_dict(incoming) | {"name": ""}, validate_only)
        if incoming.etag and incoming.etag != current.svc.etag:
            raise ApiError("ABORTED", f"The etag '{incoming.etag}' of the request does not match "
                           f"the current etag '{current.svc.etag}' of service '{name}': it was "
                           "changed since it was read. Read it again and retry.")
        merged = run_v2.Service.wrap(run_v2.Service.pb()())
        run_v2.Service.pb(merged).CopyFrom(run_v2.Service.pb(current.svc))
        if update_mask:
            mask = field_mask_pb2.FieldMask()
            try:
                mask.FromJsonString(update_mask)
            except ValueError as exc:
                raise invalid(f"invalid updateMask {update_mask!r}: {exc}") from None
            if not mask.IsValidForDescriptor(run_v2.Service.pb().DESCRIPTOR):
                raise invalid(f"updateMask {update_mask!r} names a field Service does not have")
            mask.MergeMessage(run_v2.Service.pb(incoming), run_v2.Service.pb(merged),
                              replace_message_field=True, replace_repeated_field=True)
        else:
            kept = {f: getattr(current.svc, f) for f in _OUTPUT_ONLY}
            run_v2.Service.pb(merged).CopyFrom(run_v2.Service.pb(incoming))
            for f, value in kept.items():
                setattr(merged, f, value)
        return self._accept(current, merged, validate_only)

    def _accept(self, current: Svc | None, svc: run_v2.Service, validate_only: bool
                ) -> Operation:
        """Validate a desired service, record it, and start reconciling it."""
        short = svc.name.rsplit("/", 1)[-1]
        template_key = self._validate(short, svc)
        new_rev: str | None = None
        latest = self.revisions.get(current.svc.latest_created_revision) if current else None
        if svc.template.revision:
            existing = self.revisions.get(f"{svc.name}/revisions/{svc.template.revision}")
            if existing is None:
                new_rev = svc.template.revision
            elif existing.template_key != template_key:
                raise ApiError("ALREADY_EXISTS", f"Revision named '{svc.template.revision}' with "
                               "different configuration already exists.")
        elif latest is None or latest.template_key != template_key:
            new_rev = ""  # generated below, from the generation
        generation = (current.svc.generation if current else 0) + 1
        if new_rev == "":
            new_rev = f"{short}-{generation:05d}-{secrets.token_hex(2)[:3]}"
        self._validate_traffic(svc, new_rev)
        if validate_only:
            op = self._new_operation(svc.name, svc)
            self._finish(op, svc, None)
            return op
        now = _now()
        svc.generation = generation
        svc.update_time = now
        svc.etag = _etag()
        svc.reconciling = True
        svc.terminal_condition = _condition("Ready", State.CONDITION_RECONCILING)
        if current is None:
            svc.uid = str(uuid.uuid4())
            svc.create_time = now
            svc.creator = svc.last_modifier = "flightcheck-local"
            s = Svc(svc)
            self.services[svc.name] = s
        else:
            s = current
            s.svc = svc
        if new_rev is not None:
            rev_name = f"{svc.name}/revisions/{new_rev}"
            self.revisions[rev_name] = Rev(self._revision(svc, rev_name, generation),
                                           template_key)
            svc.latest_created_revision = rev_name
        op = self._new_operation(svc.name, svc)
        self.save()
        self._spawn(self._reconcile(s, op, new_rev))
        return op

    def _revision(self, svc: run_v2.Service, name: str, generation: int) -> run_v2.Revision:
        t = svc.template
        rev = run_v2.Revision(
            name=name, uid=str(uuid.uuid4()), generation=1, service=svc.name,
            labels=dict(t.labels), annotations=dict(t.annotations), create_time=_now(),
            update_time=_now(), scaling=t.scaling, timeout=t.timeout,
            service_account=t.service_account, containers=list(t.containers),
            volumes=list(t.volumes), execution_environment=t.execution_environment,
            max_instance_request_concurrency=t.max_instance_request_concurrency or 80,
            session_affinity=t.session_affinity, reconciling=True, etag=_etag(),
            conditions=[_condition("Ready", State.CONDITION_RECONCILING)],
            log_uri=f"/flightcheck/v1/revisions/{name.rsplit('/', 1)[-1]}/logs",
        )
        rev.labels["serving.knative.dev/configurationGeneration"] = str(generation)
        return rev

    def _validate(self, short: str, svc: run_v2.Service) -> str:
        """Reject what Cloud Run (or this local target) would; the template's identity key."""
        t = svc.template
        if len(t.containers) != 1:
            raise invalid(f"the local target runs revisions of exactly one container; the "
                          f"template has {len(t.containers)}")
        c = t.containers[0]
        if not c.image:
            raise invalid("template.containers[0].image is required")
        if self.runner.kind != "process" and "@sha256:" not in c.image:
            raise invalid(f"image {c.image!r} is not referenced by digest: the local target "
                          "deploys REGISTRY/NAME@sha256:DIGEST (push the image, deploy its digest)")
        fake = t.annotations.get(FAKE_MODEL_ANNOTATION)
        if fake is not None and (not fake.isdigit() or not 0 < int(fake) < 65536):
            raise invalid(f"annotation {FAKE_MODEL_ANNOTATION} must be a port number, "
                          f"got {fake!r}")
        if self.runner.kind == "process" and not t.annotations.get(SOURCE_ANNOTATION):
            raise invalid(f"without Docker the local target runs revisions as host processes and "
                          f"needs the template annotation '{SOURCE_ANNOTATION}' (the source "
                          "directory) plus the container's command")
        if len(c.ports) > 1:
            raise invalid("at most one container port may be given")
        if c.ports and not 0 < c.ports[0].container_port < 65536:
            raise invalid(f"container port {c.ports[0].container_port} is out of range")
        memory = c.resources.limits.get("memory", _DEFAULT_MEMORY)
        try:
            parse_memory(memory)
        except ValueError as exc:
            raise invalid(f"resources.limits.memory: {exc}") from None
        for env in c.env:
            if "value_source" in env:
                raise invalid(f"env {env.name}: secret references are not supported by the local "
                              "target; pass the value")
        if t.revision and not t.revision.startswith(f"{short}-"):
            raise invalid(f"Revision name '{t.revision}' must be prefixed by the name of the "
                          f"enclosing Service or Configuration with a trailing -: '{short}-'")
        if t.revision and not _REVISION.match(t.revision):
            raise invalid(f"Revision name '{t.revision}' is not valid: lowercase letters, "
                          "digits and hyphens, at most 63 characters")
        if _duration_s(t.timeout, 0) > 3600:
            raise invalid("template.timeout must be at most 3600s")
        self._probe_spec(c.startup_probe if "startup_probe" in c else None)
        key = run_v2.RevisionTemplate.pb(t).__deepcopy__()
        key.revision = ""
        return key.SerializeToString(deterministic=True).hex()

    def _validate_traffic(self, svc: run_v2.Service, new_rev: str | None) -> None:
        if not svc.traffic:
            return
        total = 0
        tags: set[str] = set()
        known = {r.short for r in self.revisions.values() if r.rev.service == svc.name}
        if new_rev:
            known.add(new_rev)
        for t in svc.traffic:
            if not 0 <= t.percent <= 100:
                raise invalid(f"traffic percent {t.percent} is out of 0..100")
            total += t.percent
            if t.type_ == BY_REVISION:
                if not t.revision:
                    raise invalid("a traffic target of type REVISION needs a revision name")
                if t.revision not in known:
                    raise invalid(f"Revision '{t.revision}' does not exist or is deleted. Update "
                                  "all traffic to route to currently available revisions.")
            elif t.type_ != LATEST:
                raise invalid("traffic target type must be TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST "
                              "or TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION")
            if t.tag:
                if not _TAG.match(t.tag):
                    raise invalid(f"tag {t.tag!r} is not valid: lowercase letters, digits and "
                                  "hyphens, starting with a letter, at most 46 characters")
                if t.tag in tags:
                    raise invalid(f"tag {t.tag!r} is used by more than one traffic target")
                tags.add(t.tag)
        if total != 100:
            raise invalid(f"Traffic targets must sum to 100 percent; they sum to {total}.")

    def _probe_spec(self, probe: run_v2.Probe | None) -> ProbeSpec:
        if probe is None or "http_get" not in probe:
            if probe is not None and "grpc" in probe:
                raise invalid("gRPC startup probes are not supported by the local target")
            if probe is None:
                return ProbeSpec(None)
            return ProbeSpec(None, probe.initial_delay_seconds, probe.period_seconds or 240,
                             probe.timeout_seconds or 240, probe.failure_threshold or 1)
        spec = ProbeSpec(probe.http_get.path or "/", float(probe.initial_delay_seconds),
                         float(probe.period_seconds or 10), float(probe.timeout_seconds or 1),
                         probe.failure_threshold or 3)
        if not 1 <= spec.period_s <= 240 or spec.initial_delay_s > 240:
            raise invalid("startupProbe: periodSeconds must be 1..240 and initialDelaySeconds "
                          "at most 240")
        if spec.timeout_s > spec.period_s:
            raise invalid(f"startupProbe.timeoutSeconds ({spec.timeout_s:g}) must not exceed "
                          f"periodSeconds ({spec.period_s:g})")
        return spec

    def delete_service(self, name: str, validate_only: bool, etag: str) -> Operation:
        s = self.service(name)
        if etag and etag != s.svc.etag:
            raise ApiError("ABORTED", f"The etag '{etag}' does not match the current etag of "
                           f"service '{name}'.")
        op = self._new_operation(name, s.svc)
        if validate_only:
            self._finish(op, s.svc, None)
            return op
        self._spawn(self._delete(s, op))
        return op

    async def _delete(self, s: Svc, op: Operation) -> None:
        async with s.lock:
            for listener in [s.listener, *s.tag_listeners.values()]:
                if listener is not None:
                    await listener.stop()
            revs = [r for r in self.revisions.values() if r.rev.service == s.name]
            await asyncio.gather(*(self._stop_instance(r) for r in revs), return_exceptions=True)
            for r in revs:
                self.revisions.pop(r.rev.name, None)
            self.services.pop(s.name, None)
            self.iam.pop(s.name, None)
            s.svc.delete_time = _now()
            self.save()
            self._finish(op, s.svc, None)

    # --- reconciling -------------------------------------------------------------------------

    async def _reconcile(self, s: Svc, op: Operation, new_rev: str | None) -> None:
        async with s.lock:
            error: ApiError | None = None
            try:
                await self._listen(s)  # the service has its URL from the start, ready or not
                if new_rev is not None:
                    rev = self.revisions[f"{s.name}/revisions/{new_rev}"]
                    if await self._ensure_instance(rev):
                        s.svc.latest_ready_revision = rev.rev.name
                    else:
                        error = ApiError("FAILED_PRECONDITION", f"Revision '{new_rev}' is not "
                                         f"ready and cannot serve traffic. {rev.message}")
                traffic_error = await self._apply_traffic(s)
                error = error or traffic_error
            except Exception as exc:  # an operation must never hang
                error = ApiError("INTERNAL", f"reconciling {s.short} failed: {exc}")
            svc = s.svc
            svc.reconciling = False
            svc.observed_generation = svc.generation
            svc.etag = _etag()
            svc.update_time = _now()
            if error is None:
                svc.terminal_condition = _condition("Ready", State.CONDITION_SUCCEEDED)
                svc.conditions = [_condition("RoutesReady", State.CONDITION_SUCCEEDED),
                                  _condition("ConfigurationsReady", State.CONDITION_SUCCEEDED)]
            else:
                svc.terminal_condition = _condition("Ready", State.CONDITION_FAILED,
                                                    error.message, reason="REVISION_FAILED",
                                                    reason_field="reason")
                config_ok = new_rev is None or self.revisions[
                    f"{s.name}/revisions/{new_rev}"].state == "ready"
                svc.conditions = [
                    _condition("RoutesReady", State.CONDITION_SUCCEEDED if config_ok
                               else State.CONDITION_FAILED, "" if config_ok else error.message),
                    _condition("ConfigurationsReady", State.CONDITION_SUCCEEDED if config_ok
                               else State.CONDITION_FAILED, "" if config_ok else error.message),
                ]
            self.save()
            self._finish(op, svc, error)
            self.log(f"{s.short}: generation {svc.generation} "
                     + ("ready" if error is None else f"failed: {error.message}"))
        if not self._closing:
            self._spawn(self._scale_down(s))

    async def _apply_traffic(self, s: Svc) -> ApiError | None:
        """Route the service URL and tag URLs as ``traffic`` says, or change nothing."""
        svc = s.svc
        targets = list(svc.traffic) or [run_v2.TrafficTarget(type_=LATEST, percent=100)]
        latest_ready = svc.latest_ready_revision.rsplit("/", 1)[-1]
        resolved: list[tuple[run_v2.TrafficTarget, str]] = []
        for t in targets:
            short = latest_ready if t.type_ == LATEST else t.revision
            if not short:
                return ApiError("FAILED_PRECONDITION", f"Service '{s.short}' has no ready "
                                "revision for the LATEST traffic target.")
            rev = self.revisions.get(f"{svc.name}/revisions/{short}")
            if rev is None:
                return ApiError("FAILED_PRECONDITION", f"Revision '{short}' does not exist or is "
                                "deleted. Update all traffic to route to currently available "
                                "revisions.")
            if rev.state == "failed" and (t.percent > 0 or t.tag):
                return ApiError("FAILED_PRECONDITION", f"Revision '{short}' is not ready and "
                                f"cannot serve traffic. {rev.message}")
            resolved.append((t, short))
        needed = {short for t, short in resolved if t.percent > 0 or t.tag}
        for short in sorted(needed):
            rev = self.revisions[f"{svc.name}/revisions/{short}"]
            if not await self._ensure_instance(rev):
                return ApiError("FAILED_PRECONDITION", f"Revision '{short}' is not ready and "
                                f"cannot serve traffic. {rev.message}")
        split: dict[str, int] = {}
        for t, short in resolved:
            split[short] = split.get(short, 0) + t.percent
        s.split = [(short, pct) for short, pct in split.items()]
        s.tags = {t.tag: short for t, short in resolved if t.tag}
        await self._listen(s)
        statuses: list[run_v2.TrafficTargetStatus] = []
        for t, short in resolved:
            status = run_v2.TrafficTargetStatus(type_=t.type_, revision=short, percent=t.percent,
                                                tag=t.tag)
            if t.tag:
                status.uri = f"http://127.0.0.1:{s.tag_listeners[t.tag].port}"
            statuses.append(status)
        svc.traffic_statuses = statuses
        return None

    async def _listen(self, s: Svc) -> None:
        """Bring the listeners (service URL, one per tag) in line with the effective routes."""
        prefix = f"{s.name}/revisions/"
        if s.listener is None:
            s.listener = self.proxy.listener(s.name, s.metrics, VIA_SERVICE)
            port = await self._bind(s.listener, s.name)
            s.svc.uri = f"http://127.0.0.1:{port}"
            s.svc.urls = [s.svc.uri]
        s.listener.route = Route.of([(prefix + short, pct) for short, pct in s.split])
        for tag, short in s.tags.items():
            listener = s.tag_listeners.get(tag)
            if listener is None:
                listener = s.tag_listeners[tag] = self.proxy.listener(s.name, s.metrics, VIA_TAG,
                                                                      tag)
                await self._bind(listener, f"{s.name}#{tag}")
            listener.route = Route.of([(prefix + short, 100)])
        for tag in [t for t in s.tag_listeners if t not in s.tags]:
            await s.tag_listeners.pop(tag).stop()

    async def _bind(self, listener: Listener, key: str) -> int:
        wanted = self.ports.get(key, 0)
        try:
            port = await listener.start(wanted)
        except OSError:
            port = await listener.start(0)
            self.log(f"port {wanted} for {key} is taken; now {port}")
        self.ports[key] = port
        return port

    async def _ensure_instance(self, rev: Rev) -> bool:
        """A running, ready instance of ``rev`` (started when needed); False if it failed."""
        if rev.instance is not None:
            return True
        if rev.state == "failed":
            return False
        if rev.starting is None:
            rev.starting = self._spawn(self._start_instance(rev))
            rev.starting.add_done_callback(lambda _t: setattr(rev, "starting", None))
        return await asyncio.shield(rev.starting)

    async def _start_instance(self, rev: Rev) -> bool:
        spec = self._spec(rev)
        self.log(f"{rev.short}: starting {spec.image}")
        instance, outcome = await self.runner.start(spec)
        now = _now()
        r = rev.rev
        r.reconciling = False
        r.update_time = now
        r.etag = _etag()
        r.observed_generation = r.generation
        if instance is None:
            rev.state = "failed"
            rev.message = outcome.message
            rev.logs = outcome.logs
            failed = _condition("Ready", State.CONDITION_FAILED, outcome.message,
                                reason=outcome.reason, reason_field=outcome.reason_field)
            health = _condition("ContainerHealthy", State.CONDITION_FAILED, outcome.message,
                                reason=outcome.reason, reason_field=outcome.reason_field)
            r.conditions = [failed, health]
            self.log(f"{rev.short}: failed: {outcome.message}")
            self.save()
            return False
        if self._closing:
            await instance.stop()
            return False
        rev.instance = instance
        rev.state = "ready"
        r.conditions = [_condition("Ready", State.CONDITION_SUCCEEDED),
                        _condition("ContainerHealthy", State.CONDITION_SUCCEEDED),
                        _condition("ResourcesAvailable", State.CONDITION_SUCCEEDED)]
        host_port = instance.endpoint.rsplit(":", 1)
        self.proxy.add_upstream(Upstream(r.name, host_port[0].removeprefix("http://"),
                                         int(host_port[1]), spec_timeout(r)))
        self.log(f"{rev.short}: ready at {instance.endpoint} after {outcome.startup_s or 0:.1f} s")
        if spec.liveness is not None:
            self._spawn(self._liveness(rev, instance, spec.liveness))
        self.save()
        return True

    async def _liveness(self, rev: Rev, instance: Instance, probe: ProbeSpec) -> None:
        """Cloud Run's liveness probe: ``failure_threshold`` failures in a row, one per period,
        and the instance is replaced. Each probe is the health-poll stage's liveness check."""
        assert probe.path is not None
        one = ProbeConfig.model_construct(path=probe.path, initial_delay_s=0.0,
                                          period_s=probe.period_s, timeout_s=probe.timeout_s,
                                          failure_threshold=1)
        failures = 0
        await asyncio.sleep(probe.initial_delay_s)
        while rev.instance is instance and not self._closing:
            outcome = await check_liveness(instance.endpoint, one)
            failures = 0 if outcome.ready else failures + 1
            if failures >= probe.failure_threshold and rev.instance is instance:
                reason = outcome.reasons[0].text if outcome.reasons else "no answer"
                self.log(f"{rev.short}: liveness probe {probe.path} failed {failures} times "
                         f"({reason}); starting a new instance")
                await self._stop_instance(rev)
                self._spawn(self._ensure_instance(rev))
                return
            await asyncio.sleep(probe.period_s)

    def _spec(self, rev: Rev) -> RevisionSpec:
        r = rev.rev
        c = r.containers[0]
        env = {e.name: e.value for e in c.env}
        port = c.ports[0].container_port if c.ports else 8080
        return RevisionSpec(
            service=r.service.rsplit("/", 1)[-1], revision=rev.short, image=c.image, port=port,
            env=env, memory_limit=parse_memory(c.resources.limits.get("memory", _DEFAULT_MEMORY)),
            command=list(c.command), args=list(c.args),
            probe=self._probe_spec(c.startup_probe if "startup_probe" in c else None),
            liveness=_liveness_spec(c.liveness_probe if "liveness_probe" in c else None),
            source=r.annotations.get(SOURCE_ANNOTATION),
            fake_model_port=int(r.annotations.get(FAKE_MODEL_ANNOTATION) or 0) or None,
        )

    async def _stop_instance(self, rev: Rev) -> None:
        instance, rev.instance = rev.instance, None
        self.proxy.remove_upstream(rev.rev.name)
        if instance is not None:
            with contextlib.suppress(Exception):
                rev.logs = await instance.logs(200)
            await instance.stop()

    async def _scale_down(self, s: Svc) -> None:
        """Stop instances no route needs, keeping the latest ready and one more ready one."""
        async with s.lock:
            keep = {short for short, pct in s.split if pct > 0} | set(s.tags.values())
            keep.add(s.svc.latest_ready_revision.rsplit("/", 1)[-1])
            idle = sorted((r for r in self.revisions.values()
                           if r.rev.service == s.name and r.instance is not None
                           and r.short not in keep), key=lambda r: r.created, reverse=True)
            for r in idle[_KEEP_IDLE_READY:]:
                self.log(f"{r.short}: no traffic, scaled to zero")
                await self._stop_instance(r)

    # --- revisions ---------------------------------------------------------------------------

    def revisions_of(self, parent: str) -> list[Rev]:
        self.service(parent)
        return sorted((r for r in self.revisions.values() if r.rev.service == parent),
                      key=lambda r: r.created, reverse=True)

    def delete_revision(self, name: str, etag: str, validate_only: bool) -> Operation:
        rev = self.revision(name)
        s = self.service(rev.rev.service)
        if etag and etag != rev.rev.etag:
            raise ApiError("ABORTED", f"The etag '{etag}' does not match revision '{name}'.")
        serving = {short for short, pct in s.split if pct > 0} | set(s.tags.values())
        if rev.short in serving:
            raise ApiError("FAILED_PRECONDITION", f"Revision '{rev.short}' is receiving traffic "
                           "or has a tag and cannot be deleted; move its traffic first.")
        if name == s.svc.latest_created_revision:
            raise ApiError("FAILED_PRECONDITION", f"Revision '{rev.short}' is the latest revision "
                           f"of service '{s.short}' and cannot be deleted.")
        op = self._new_operation(name, None, rev.rev)
        if validate_only:
            self._finish(op, None, None, rev.rev)
            return op

        async def _go() -> None:
            await self._stop_instance(rev)
            self.revisions.pop(name, None)
            self.save()
            self._finish(op, None, None, rev.rev)

        self._spawn(_go())
        return op

    async def logs(self, name: str, tail: int) -> str:
        rev = self.find_revision(name)
        if rev.instance is not None:
            return await rev.instance.logs(tail)
        lines = rev.logs.splitlines()
        return "\n".join(lines[-tail:]) if tail > 0 else ""

    # --- operations ----------------------------------------------------------------------------

    def _new_operation(self, resource: str, svc: run_v2.Service | None,
                       rev: run_v2.Revision | None = None) -> Operation:
        parent = "/".join(resource.split("/")[:4])
        pb = operations_pb2.Operation(name=f"{parent}/operations/{uuid.uuid4()}", done=False)
        if svc is not None:
            pb.metadata.Pack(run_v2.Service.pb(svc))
        elif rev is not None:
            pb.metadata.Pack(run_v2.Revision.pb(rev))
        op = Operation(pb)
        self.operations[pb.name] = op
        return op

    def _finish(self, op: Operation, svc: run_v2.Service | None, error: ApiError | None,
                rev: run_v2.Revision | None = None) -> None:
        if error is not None:
            op.op.error.code = error.code
            op.op.error.message = error.message
        elif svc is not None:
            op.op.response.Pack(run_v2.Service.pb(svc))
        elif rev is not None:
            op.op.response.Pack(run_v2.Revision.pb(rev))
        if svc is not None:
            op.op.metadata.Pack(run_v2.Service.pb(svc))
        op.op.done = True
        op.done.set()

    # --- IAM ---------------------------------------------------------------------------------

    def get_iam(self, resource: str) -> policy_pb2.Policy:
        self.service(resource)
        policy = self.iam.get(resource)
        if policy is None:
            policy = self.iam[resource] = policy_pb2.Policy(version=1, etag=b"\x00\x01")
        return policy

    def set_iam(self, resource: str, body: Any) -> policy_pb2.Policy:
        self.service(resource)
        if "run.services.setIamPolicy" in self.denied:
            raise ApiError("PERMISSION_DENIED", f"Permission 'run.services.setIamPolicy' denied on "
                           f"resource '{resource}' (or it may not exist).")
        raw = body.get("policy") if isinstance(body, dict) else None
        if not isinstance(raw, dict):
            raise invalid("setIamPolicy needs a 'policy'")
        policy = policy_pb2.Policy()
        try:
            json_format.ParseDict(raw, policy, ignore_unknown_fields=False)
        except json_format.ParseError as exc:
            raise invalid(f"Invalid JSON payload received. {exc}") from None
        current = self.get_iam(resource)
        if policy.etag and policy.etag != current.etag:
            raise ApiError("ABORTED", "There were concurrent policy changes. Please retry the "
                           "whole read-modify-write with exponential backoff.")
        for binding in policy.bindings:
            if not binding.role.startswith("roles/"):
                raise invalid(f"Role {binding.role} is not a valid role name (roles/...)")
        policy.version = policy.version or 1
        policy.etag = secrets.token_bytes(8)
        self.iam[resource] = policy
        self.save()
        return policy

    def invoker_gate(self, listener: Listener, authorization: bytes | None
                     ) -> tuple[int, str] | None:
        """Cloud Run's invoker check in front of a service URL or tag URL: None lets the
        request through; else (401, why) without a valid ID token for this service, (403, why)
        when its identity holds no roles/run.invoker here."""
        policy = self.iam.get(listener.service)
        members = {m for b in (policy.bindings if policy is not None else ())
                   if b.role == _INVOKER for m in b.members}
        if "allUsers" in members:
            return None
        s = self.services.get(listener.service)
        ports = {listener.port}
        if s is not None and s.listener is not None:
            ports.add(s.listener.port)
        try:
            claims = self.identity.verify(authorization, ports)
        except Rejected as exc:
            return exc.status, exc.message
        email = str(claims.get("email", ""))
        if email == DEPLOYER or "allAuthenticatedUsers" in members or \
                f"serviceAccount:{email}" in members or f"user:{email}" in members:
            return None
        return 403, (f"{email or 'this identity'} may not invoke "
                     f"{listener.service.rsplit('/', 1)[-1]}: it has no {_INVOKER} binding "
                     "(run.routes.invoke)")

    def test_iam(self, resource: str, permissions: list[str]) -> list[str]:
        self.service(resource)
        return [p for p in permissions if p not in self.denied]


def _liveness_spec(probe: run_v2.Probe | None) -> ProbeSpec | None:
    """An HTTP liveness probe with Cloud Run's defaults (period 10 s, timeout 1 s, 3 failures);
    None without one (TCP and gRPC liveness probes are not checked locally)."""
    if probe is None or "http_get" not in probe:
        return None
    return ProbeSpec(probe.http_get.path or "/", float(probe.initial_delay_seconds),
                     float(probe.period_seconds or 10), float(probe.timeout_seconds or 1),
                     probe.failure_threshold or 3)


def spec_timeout(rev: run_v2.Revision) -> float:
    return _duration_s(rev.timeout if "timeout" in rev else None, _DEFAULT_TIMEOUT_S)
