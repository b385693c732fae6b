"""flightcheck.toml → a Cloud Run ``run_v2.Service``, checked against Cloud Run's limits first.

Loading the config already rejects what no target allows (an unknown CPU size, a probe timeout
longer than its period, 4GB for 4Gi). :func:`problems` adds what only Cloud Run imposes: the
health-poll stage accepts a startup window of many minutes for local polling, while a Cloud Run
startup probe may take at most 240 s (initial delay ≤ 240 s, period × failure threshold ≤ 240 s,
whole seconds). Each problem names its key, says why and what to use instead; they are checked
before any API call (:func:`validate`).

:func:`build_service` maps every ``[deploy]`` key plus the probes from ``[health]`` onto the
Service; :func:`document` is its proto3 JSON mapping without output-only fields (what
``flightcheck deploy --dry-run`` prints as YAML or JSON), :func:`diff` compares two of them.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from google.cloud import run_v2
from google.protobuf import duration_pb2

from flightcheck.config import Config, ProbeConfig
from flightcheck.errors import ConfigError
from flightcheck.secrets import MASK, is_secret_name

STARTUP_PROBE_MAX_S = 240  # Cloud Run: initial delay and period × threshold of a startup probe
LIVENESS_MAX_S = 3600
REQUEST_TIMEOUT_MAX_S = 3600
RESERVED_ENV = ("PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION")
ANNOTATION = "run.flightcheck.dev/"
FAKE_MODEL_ANNOTATION = ANNOTATION + "fake-model-port"  # local target: a fake model sidecar
LOCK_ANNOTATION = ANNOTATION + "rollout"
PREVIOUS_ANNOTATION = ANNOTATION + "previous-traffic"
MANAGED_BY = ("managed-by", "flightcheck")
REVISION_SUFFIX_LEN = 14  # "-" + 7 hex + "-" + 5 base36
_LABEL = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
_REVISION = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
_GEN = {
    "gen1": run_v2.ExecutionEnvironment.EXECUTION_ENVIRONMENT_GEN1,
    "gen2": run_v2.ExecutionEnvironment.EXECUTION_ENVIRONMENT_GEN2,
}
# Fields the server fills in: never part of what we ask for, never part of a diff.
_OUTPUT_ONLY = {
    "uid", "generation", "createTime", "updateTime", "deleteTime", "expireTime", "creator",
    "lastModifier", "observedGeneration", "terminalCondition", "conditions",
    "latestReadyRevision", "latestCreatedRevision", "trafficStatuses", "uri", "urls",
    "reconciling", "etag", "satisfiesPzs", "launchStage", "ingress", "client", "clientVersion",
}
# Kept in the document even at their zero value: they are set on purpose.
_EXPLICIT = {"cpuIdle", "startupCpuBoost", "percent", "minInstanceCount", "initialDelaySeconds"}


@dataclass(frozen=True)
class Problem:
    """One value Cloud Run would refuse: the key, the value, why, and what to use instead."""

    key: str
    value: object
    why: str
    fix: str

    def render(self) -> str:
        shown = MASK if is_secret_name(self.key) else repr(self.value)
        return f"{self.key} = {shown}: {self.why} — {self.fix}"


@dataclass(frozen=True)
class Target:
    """Where the service lives in the run_v2 API."""

    project: str
    region: str
    service: str

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"

    @property
    def name(self) -> str:
        return f"{self.parent}/services/{self.service}"

    def revision(self, short: str) -> str:
        return f"{self.name}/revisions/{short}"


LOCAL_PROJECT = "local"


def target_of(config: Config) -> Target:
    deploy = config.deploy
    project = deploy.project or LOCAL_PROJECT
    return Target(project=project, region=deploy.region, service=service_name(config))


def service_name(config: Config) -> str:
    return config.deploy.service or config.service.name


# --- validation ------------------------------------------------------------------------------


def _whole_seconds(key: str, value: float, out: list[Problem]) -> None:
    if value != int(value):
        out.append(Problem(key, value, "Cloud Run probes take whole seconds",
                           f"use {math.floor(value) or 1} or {math.ceil(value)}"))


def _probe_problems(prefix: str, probe: ProbeConfig, *, startup: bool, out: list[Problem]) -> None:
    for field in ("initial_delay_s", "period_s", "timeout_s"):
        _whole_seconds(f"{prefix}.{field}", getattr(probe, field), out)
    if probe.timeout_s > probe.period_s:  # loading checks it too; a constructed config may not
        out.append(Problem(f"{prefix}.timeout_s", probe.timeout_s,
                           f"a probe's timeout must not exceed its period ({probe.period_s:g} s)",
                           f"use timeout_s = {probe.period_s:g}; a slow start needs a longer "
                           "window (failure_threshold), not a longer probe timeout"))
    if not startup:
        if probe.period_s > LIVENESS_MAX_S:
            out.append(Problem(f"{prefix}.period_s", probe.period_s,
                               f"Cloud Run allows at most {LIVENESS_MAX_S} s",
                               f"use period_s ≤ {LIVENESS_MAX_S}"))
        return
    if probe.initial_delay_s > STARTUP_PROBE_MAX_S:
        out.append(Problem(f"{prefix}.initial_delay_s", probe.initial_delay_s,
                           f"a Cloud Run startup probe may wait at most {STARTUP_PROBE_MAX_S} s "
                           "before its first probe",
                           f"use initial_delay_s ≤ {STARTUP_PROBE_MAX_S} and cover the rest "
                           "with period_s × failure_threshold"))
    span = probe.period_s * probe.failure_threshold
    if span > STARTUP_PROBE_MAX_S:
        threshold = max(1, int(STARTUP_PROBE_MAX_S // probe.period_s))
        out.append(Problem(
            f"{prefix}.failure_threshold", probe.failure_threshold,
            f"period_s × failure_threshold = {probe.period_s:g} × {probe.failure_threshold} = "
            f"{span:g} s, but a Cloud Run startup probe allows at most {STARTUP_PROBE_MAX_S} s "
            "(health-poll accepts longer windows locally; the deploy target does not)",
            f"use failure_threshold = {threshold} (period_s = {probe.period_s:g}: a "
            f"{threshold * probe.period_s:g} s window), or make startup faster",
        ))


def problems(config: Config, *, secret_env: Mapping[str, str] | None = None) -> list[Problem]:
    """What Cloud Run would refuse in this config (empty: deployable)."""
    out: list[Problem] = []
    d = config.deploy
    health = config.health
    _probe_problems("health.startup", health.startup, startup=True, out=out)
    _probe_problems("health.liveness", health.liveness, startup=False, out=out)
    if d.timeout_s > REQUEST_TIMEOUT_MAX_S:
        out.append(Problem("deploy.timeout_s", d.timeout_s,
                           f"Cloud Run's request timeout is at most {REQUEST_TIMEOUT_MAX_S} s",
                           f"use timeout_s ≤ {REQUEST_TIMEOUT_MAX_S}; stream or use a job for "
                           "longer work"))
    if float(d.cpu) < 1:
        if d.concurrency != 1:
            out.append(Problem("deploy.concurrency", d.concurrency,
                               f"Cloud Run serves one request at a time with less than 1 CPU "
                               f"(cpu = {d.cpu})", 'use concurrency = 1, or cpu = "1"'))
        if not d.cpu_idle:
            out.append(Problem("deploy.cpu_idle", d.cpu_idle,
                               f"always-allocated CPU needs at least 1 CPU (cpu = {d.cpu})",
                               'use cpu_idle = true, or cpu = "1"'))
    name = service_name(config)
    if len(name) > 63 - REVISION_SUFFIX_LEN:
        out.append(Problem("deploy.service" if d.service else "service.name", name,
                           f"revision names are <service>-<suffix>, at most 63 characters, "
                           f"and flightcheck's unique suffix takes {REVISION_SUFFIX_LEN}",
                           f"use a name of at most {63 - REVISION_SUFFIX_LEN} characters"))
    env = {**d.env, **(secret_env or {})}
    for key in sorted({*env, *d.secrets}):
        if key in RESERVED_ENV:
            out.append(Problem(f"deploy.env.{key}", env.get(key, d.secrets.get(key)),
                               "Cloud Run sets it for every instance",
                               f"remove it (PORT comes from service.port = {config.service.port})"))
    if d.target == "cloudrun":
        for key in sorted(env):
            if is_secret_name(key) and key not in d.secrets:
                out.append(Problem(
                    f"deploy.env.{key}", env[key],
                    "a credential would be a plain environment variable of the Cloud Run "
                    "service, readable by everyone who can view it",
                    f'keep it in Secret Manager: [deploy.secrets] {key} = "SECRET_NAME:latest"',
                ))
    for key, value in sorted({**dict([MANAGED_BY]), **d.labels}.items()):
        if not _LABEL.fullmatch(key) or key.startswith(("run.googleapis.com", "goog")):
            out.append(Problem(f"deploy.labels.{key}", value,
                               "a label key is lowercase letters, digits, '_' and '-', starts "
                               "with a letter, at most 63 characters",
                               f"rename it, e.g. {_label_safe(key) or 'team'!r}"))
        elif not _LABEL_VALUE.fullmatch(value):
            out.append(Problem(f"deploy.labels.{key}", value,
                               "a label value is lowercase letters, digits, '_' and '-', at most "
                               "63 characters", f"use {_label_safe(value)!r}"))
    if d.labels.get(MANAGED_BY[0], MANAGED_BY[1]) != MANAGED_BY[1]:
        out.append(Problem(f"deploy.labels.{MANAGED_BY[0]}", d.labels[MANAGED_BY[0]],
                           "flightcheck marks what it deploys with managed-by=flightcheck",
                           "remove the label"))
    if d.service_account is not None and "@" not in d.service_account:
        out.append(Problem("deploy.service_account", d.service_account,
                           "a service account is an e-mail address",
                           "use NAME@PROJECT.iam.gserviceaccount.com"))
    for key, ref in sorted(d.secrets.items()):
        secret, _, version = ref.partition(":")
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,255}|projects/[^/]+/secrets/[A-Za-z0-9_-]+", secret) \
                or (version and not re.fullmatch(r"latest|\d+", version)):
            out.append(Problem(f"deploy.secrets.{key}", ref,
                               "not a Secret Manager reference",
                               'use "SECRET_NAME" or "SECRET_NAME:VERSION" (VERSION: a number '
                               'or latest)'))
    if d.target == "cloudrun" and not re.fullmatch(r"[a-z]+-[a-z]+\d+", d.region):
        out.append(Problem("deploy.region", d.region, "not a Cloud Run region",
                           "use e.g. europe-west1 or us-central1 (gcloud run regions list)"))
    return out


def _label_safe(text: str) -> str:
    safe = re.sub(r"[^a-z0-9_-]", "-", text.lower())[:63]
    return safe if safe[:1].isalpha() or not safe else f"x{safe}"[:63]


def validate(config: Config, *, where: str = "the configuration",
             secret_env: Mapping[str, str] | None = None, repro: str = "") -> None:
    """Raise a ConfigError listing every value Cloud Run would refuse."""
    found = problems(config, secret_env=secret_env)
    if not found:
        return
    raise ConfigError(
        f"{where}: {len(found)} value(s) Cloud Run would refuse\n    "
        + "\n    ".join(p.render() for p in found),
        why="flightcheck checks the deploy spec against Cloud Run's limits before any API call",
        fix="change the keys listed above (docs/deploy.md lists every key)",
        repro=repro or "flightcheck deploy --dry-run",
    )


# --- the Service -----------------------------------------------------------------------------


def git_sha(directory: Path) -> str | None:
    """The commit the source is at (12 hex digits), None outside git."""
    try:
        done = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=directory,
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    sha = done.stdout.strip()
    return sha if done.returncode == 0 and re.fullmatch(r"[0-9a-f]{12}", sha) else None


def revision_name(service: str, image: str, now: float | None = None) -> str:
    """``<service>-<7 hex of the image digest>-<5 base36 of the time>``: unique per deploy,
    and says which image it runs."""
    digest = image.rpartition("@sha256:")[2] or image
    hexpart = re.sub(r"[^0-9a-f]", "", digest)[:7].ljust(7, "0")
    t = int((now if now is not None else time.time()) * 10) % 36**5
    chars = "0123456789abcdefghijklmnopqrstuvwxyz"
    stamp = ""
    for _ in range(5):
        t, r = divmod(t, 36)
        stamp = chars[r] + stamp
    return f"{service}-{hexpart}-{stamp}"


def cpu_quantity(cpu: str) -> str:
    """Cloud Run takes whole CPUs as "1", fractions in millicpu ("0.5" → "500m")."""
    value = float(cpu)
    return str(int(value)) if value >= 1 and value == int(value) else f"{round(value * 1000)}m"


def _probe(probe: ProbeConfig, port: int) -> run_v2.Probe:
    return run_v2.Probe(
        initial_delay_seconds=int(probe.initial_delay_s),
        period_seconds=int(probe.period_s),
        timeout_seconds=int(probe.timeout_s),
        failure_threshold=probe.failure_threshold,
        http_get=run_v2.HTTPGetAction(path=probe.path, port=port),
    )


def _env_var(name: str, value: str, secrets: Mapping[str, str]) -> run_v2.EnvVar:
    ref = secrets.get(name)
    if ref is None:
        return run_v2.EnvVar(name=name, value=value)
    secret, _, version = ref.partition(":")
    return run_v2.EnvVar(name=name, value_source=run_v2.EnvVarSource(
        secret_key_ref=run_v2.SecretKeySelector(secret=secret, version=version or "latest")))


def labels(config: Config, sha: str | None) -> dict[str, str]:
    out = {**config.deploy.labels, MANAGED_BY[0]: MANAGED_BY[1]}
    if sha:
        out["git-sha"] = sha
    return out


def plain_env(config: Config, env: Mapping[str, str]) -> dict[str, str]:
    """The revision's plain env values: ``env`` with ``[deploy].env`` winning (``[deploy.secrets]``
    come from Secret Manager instead)."""
    return {k: v for k, v in {**env, **config.deploy.env}.items() if k not in config.deploy.secrets}


def build_service(
    config: Config,
    *,
    image: str,
    revision: str,
    env: Mapping[str, str],
    sha: str | None = None,
    fake_model_port: int | None = None,
) -> run_v2.Service:
    """The Service flightcheck asks Cloud Run for (traffic: all on ``revision``; the rollout
    sets its own split). ``image`` is ``REGISTRY/NAME@sha256:…``; ``env`` the revision's
    environment (``[deploy].env`` wins over it)."""
    d = config.deploy
    port = config.service.port
    all_env = plain_env(config, env)
    names = sorted({*all_env, *d.secrets})
    template_annotations: dict[str, str] = {}
    if fake_model_port is not None:
        template_annotations[FAKE_MODEL_ANNOTATION] = str(fake_model_port)
    tags = labels(config, sha)
    template = run_v2.RevisionTemplate(
        revision=revision,
        labels=tags,
        annotations=template_annotations,
        scaling=run_v2.RevisionScaling(min_instance_count=d.min_instances,
                                       max_instance_count=d.max_instances),
        timeout=duration_pb2.Duration(seconds=d.timeout_s),
        execution_environment=_GEN[d.execution_environment],
        max_instance_request_concurrency=d.concurrency,
        containers=[run_v2.Container(
            name=config.service.name,
            image=image,
            env=[_env_var(n, all_env.get(n, ""), d.secrets) for n in names],
            ports=[run_v2.ContainerPort(name="http1", container_port=port)],
            resources=run_v2.ResourceRequirements(
                limits={"cpu": cpu_quantity(d.cpu), "memory": d.memory},
                cpu_idle=d.cpu_idle,
                startup_cpu_boost=d.startup_cpu_boost,
            ),
            startup_probe=_probe(config.health.startup, port),
            liveness_probe=_probe(config.health.liveness, port),
        )],
    )
    if d.service_account:
        template.service_account = d.service_account
    return run_v2.Service(
        labels=tags,
        template=template,
        traffic=[run_v2.TrafficTarget(type_=_REVISION, revision=revision, percent=100)],
    )


# --- documents and diffs ---------------------------------------------------------------------


def _prune(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in _OUTPUT_ONLY:
                continue
            pruned = _prune(v, k)
            if pruned is not None:
                out[k] = pruned
        return out or None
    if isinstance(value, list):
        items = [p for p in (_prune(v) for v in value) if p is not None]
        return items or None
    if key in _EXPLICIT:
        return value
    if value in ("", False, 0, "0", "0s") or (isinstance(value, str) and value.endswith(
            "_UNSPECIFIED")):
        return None
    return value


def document(service: run_v2.Service, *, mask: bool = True) -> dict[str, Any]:
    """The Service as its proto3 JSON mapping (camelCase, enums by name), without output-only
    fields, zero values or flightcheck's bookkeeping annotations; credential-named env values masked."""
    data = run_v2.Service.to_dict(service, use_integers_for_enums=False,
                                  preserving_proto_field_name=False)
    doc = _prune(data) or {}
    annotations = doc.get("annotations")
    if isinstance(annotations, dict):  # the rollout's own bookkeeping is not configuration
        for key in [k for k in annotations if k.startswith(ANNOTATION)]:
            annotations.pop(key)
        if not annotations:
            doc.pop("annotations")
    if mask:
        for container in doc.get("template", {}).get("containers", []):
            for var in container.get("env", []):
                if "value" in var and is_secret_name(str(var.get("name", ""))):
                    var["value"] = MASK
    return doc


def to_yaml(doc: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(doc), sort_keys=False, default_flow_style=False, width=100)


def to_json(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, indent=2) + "\n"


def diff(current: Mapping[str, Any] | None, desired: Mapping[str, Any], *,
         name: str = "service") -> str:
    """A unified diff of two documents' YAML ("" when equal)."""
    before = to_yaml(current).splitlines(keepends=True) if current else []
    after = to_yaml(desired).splitlines(keepends=True)
    return "".join(difflib.unified_diff(
        before, after, fromfile=f"{name} (deployed)" if current else "/dev/null (not deployed)",
        tofile=f"{name} (this deploy)"))
