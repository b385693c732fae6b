"""flightcheck.toml as pydantic models: the one source of truth for every knob.

Values come from four layers, later wins: generic defaults, the TOML file,
``FLIGHTCHECK__SECTION__KEY`` environment variables, and CLI flags. :func:`load` records where
each value came from for ``flightcheck config --explain``. Paths in the file are relative to the
file's directory. A command that checks a service needs the file: without one :func:`load`
raises :class:`MissingConfig` (``flightcheck init`` writes it); ``lint`` and
``config --explain`` ask for the generic defaults instead.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from flightcheck.errors import ConfigError
from flightcheck.lessons import defaults as _d
from flightcheck.secrets import MASK, Redactor, is_secret, is_secret_name, looks_like_secret

DEFAULT_FILE = "flightcheck.toml"
ENV_PREFIX = "FLIGHTCHECK__"

# --- quantities ---------------------------------------------------------------------------

_UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "K": 1000, "M": 1000**2, "G": 1000**3}
_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|K|M|G)$")


def parse_memory(text: str) -> int:
    """``"512Mi"`` → bytes. Kubernetes/Cloud Run quantities: Ki, Mi, Gi (binary), K, M, G."""
    m = _QUANTITY.match(text.strip())
    if not m:
        hint = ""
        bad = re.match(r"^(\d+(?:\.\d+)?)\s*([KMGkmg])i?[Bb]?$", text.strip())
        if bad:
            hint = f" — did you mean {bad.group(1)}{bad.group(2).upper()}i?"
        raise ValueError(
            f"{text!r} is not a memory quantity{hint}; write it like Cloud Run does: "
            "512Mi, 1Gi, 4Gi (binary) or 1G (decimal)"
        )
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def format_memory(n: int) -> str:
    """bytes → an exact binary quantity (``1Gi``, ``768Mi``), else MiB with one decimal."""
    for unit in ("Gi", "Mi"):
        size = _UNITS[unit]
        if n % size == 0:
            return f"{n // size}{unit}"
    return f"{n / _UNITS['Mi']:.1f}Mi"


def _memory(value: str) -> str:
    parse_memory(value)
    return value


# Docker refuses a smaller --memory; 0 would mean "no limit", a check that checks nothing.
MIN_MEMORY = 6 * 1024**2
MAX_MEMORY = 1024**4


def _run_memory(value: str) -> str:
    n = parse_memory(value)
    if n < MIN_MEMORY:
        raise ValueError(
            f"{value} is below 6Mi, the smallest memory limit Docker accepts (0 would mean no "
            "limit at all, and nothing would be checked); use the deploy target's size, e.g. 512Mi"
        )
    if n > MAX_MEMORY:
        raise ValueError(f"{value} is more than 1Ti; use the deploy target's size, e.g. 2Gi")
    return value


Memory = Annotated[str, AfterValidator(_memory)]
RunMemory = Annotated[str, AfterValidator(_memory), AfterValidator(_run_memory)]
# Bounded: an infinite or astronomically long timeout is a check that never ends.
PositiveSeconds = Annotated[float, Field(gt=0, le=86400)]
NonNegativeSeconds = Annotated[float, Field(ge=0, le=86400)]
RequestSeconds = Annotated[float, Field(gt=0, le=3600)]  # Cloud Run's longest request timeout


def _admits(annotation: object, kind: type) -> bool:
    if annotation is kind:
        return True
    return any(_admits(arg, kind) for arg in get_args(annotation))


class _Section(BaseModel):
    # allow_inf_nan: inf/nan are never meaningful here (an infinite timeout disables a bound).
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: object, info: ValidationInfo) -> object:
        # pydantic reads `port = true` as 1; a boolean where a number belongs is a mistake.
        field = cls.model_fields.get(info.field_name or "")
        if (
            isinstance(value, bool)
            and field is not None
            and not _admits(field.annotation, bool)
            and (_admits(field.annotation, int) or _admits(field.annotation, float))
        ):
            raise ValueError("expected a number, got a boolean")
        return value


# --- sections -----------------------------------------------------------------------------


class ServiceConfig(_Section):
    """The service under test."""

    name: str = Field(default="service", description="service name (also the Cloud Run service)")
    source: Path = Field(default=Path("."), description="build context / source root")
    dockerfile: str = Field(default="Dockerfile", description="Dockerfile, relative to source")
    port: int = Field(default=8080, ge=1, le=65535, description="port the service listens on ($PORT)")
    command: list[str] = Field(
        default_factory=list,
        description="how the process runtime starts the service (host subprocess); "
        "required for --runtime process",
    )
    pythonpath: list[Path] = Field(
        default_factory=list,
        description="added to PYTHONPATH for the process runtime, relative to source",
    )
    import_check: list[str] = Field(
        default_factory=list,
        description="modules imported inside the built image to prove its dependencies",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="environment for the service under test"
    )

    @field_validator("name")
    @classmethod
    def _cloud_run_name(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", v):
            raise ValueError(
                f"{v!r} is not a valid Cloud Run service name: lowercase letters, digits and "
                "hyphens, starting with a letter, at most 63 characters"
            )
        return v


class LintConfig(_Section):
    """The lint stage."""

    enabled: bool = True
    paths: list[Path] = Field(
        default_factory=lambda: [Path(".")], description="paths to scan, relative to source"
    )
    exclude: list[str] = Field(
        default_factory=lambda: ["tests/fixtures", ".venv", "node_modules", "build", "dist"],
        description="glob patterns (relative paths) never scanned",
    )
    disable: list[str] = Field(
        default_factory=list,
        description="rules to turn off: codes (FC701), upstream codes (ASYNC210), categories "
        "(ai-model-pin) or code prefixes (FC8)",
    )
    max_file_kb: int = Field(default=1024, gt=0, description="larger files are skipped with a note")
    extra_floating_models: list[str] = Field(
        default_factory=list, description="more model names to treat as floating aliases"
    )
    severity: dict[str, Literal["error", "warning", "info"]] = Field(
        default_factory=dict,
        description="severity overrides by rule code or category, e.g. {FC802 = \"error\"}",
    )
    cache: bool = Field(
        default=True,
        description="reuse results for unchanged files (content hash) from the cache directory "
        "($FLIGHTCHECK_CACHE_DIR, else $XDG_CACHE_HOME/flightcheck)",
    )


class RunConfig(_Section):
    """The run-with-memory-limit stage."""

    runtime: Literal["auto", "docker", "process"] = Field(
        default="auto", description="auto: docker when a daemon answers, else process"
    )
    memory_limit: RunMemory = Field(
        default="1Gi", description="hard memory ceiling, like Cloud Run's (at least 6Mi)"
    )
    startup_timeout_s: RequestSeconds = Field(
        default=300, description="upper bound on waiting for the container/process to start at all"
    )


class ProbeConfig(_Section):
    """A probe with Cloud Run semantics."""

    path: str
    initial_delay_s: float = Field(default=0, ge=0, le=240)
    period_s: float = Field(default=1, ge=1, le=240)
    timeout_s: float = Field(default=1, ge=1, le=240)
    failure_threshold: int = Field(default=3, ge=1)

    @field_validator("path")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"probe path {v!r} must start with '/', e.g. /health")
        return v

    @model_validator(mode="after")
    def _timeout_within_period(self) -> ProbeConfig:
        if self.timeout_s > self.period_s:
            raise ValueError(
                f"timeout_s ({self.timeout_s:g}) must not exceed period_s ({self.period_s:g}), "
                f"as Cloud Run requires: use timeout_s = {self.period_s:g} (or period_s = "
                f"{self.timeout_s:g}); a slow start needs a longer window (failure_threshold), "
                "not a longer probe timeout"
            )
        return self

    @property
    def window_s(self) -> float:
        """How long the probe may fail before the instance is given up on."""
        return self.initial_delay_s + self.period_s * self.failure_threshold


class StartupProbeConfig(ProbeConfig):
    """Cloud Run's startupProbe. A generous window: AI services load models at startup."""

    path: str = "/health/startup"
    failure_threshold: int = Field(default=60, ge=1)


class LivenessProbeConfig(ProbeConfig):
    """Cloud Run's livenessProbe."""

    path: str = "/health"
    period_s: float = Field(default=10, ge=1, le=3600)
    failure_threshold: int = Field(default=3, ge=1, le=100)


class HealthConfig(_Section):
    """The health-poll stage (Cloud Run probe semantics)."""

    startup: StartupProbeConfig = Field(default_factory=StartupProbeConfig)
    liveness: LivenessProbeConfig = Field(default_factory=LivenessProbeConfig)
    ai_path: str | None = Field(
        default=None, description='AI round-trip check (e.g. "/health/ai"); "" or absent: none'
    )
    strict_cloud_run: bool = Field(
        default=False,
        description="true: judge probe answers only as Cloud Run does (a startup path that "
        "answers 404 is retried until the window ends); false: a 404 while the server is up "
        "fails at once with a hint",
    )

    @field_validator("ai_path", mode="before")
    @classmethod
    def _off(cls, v: object) -> object:
        return None if v in ("", False) else v

    @model_validator(mode="after")
    def _startup_window(self) -> HealthConfig:
        if self.startup.window_s > 240 + 240 * 10:
            raise ValueError("startup probe window is longer than Cloud Run allows")
        return self


class SmokeConfig(_Section):
    """The ai-smoke stage."""

    suite: Path = Field(default=Path("smoke.yaml"), description="YAML suite of cases, relative to source")
    model: Literal["fake", "real"] = Field(
        default="fake",
        description="fake: flightcheck's fake model server, whatever keys the service was given; "
        "real: the provider the service's own settings name (also --real-model)",
    )
    external_failure: Literal["warn", "fail"] = Field(
        default="warn", description="an unreachable external provider is a warning (or a failure)"
    )
    request_timeout_s: RequestSeconds = Field(
        default=30, description="bound on every HTTP request to the service (a case may set less)"
    )
    stage_timeout_s: RequestSeconds = Field(
        default=600, description="bound on the whole suite; cases not started by then fail"
    )
    allow_empty: bool = Field(
        default=False,
        description="true: a run in which no case executed (all skipped) is a warning; "
        "false: it fails, since nothing was checked",
    )
    fake_model_port: int = Field(
        default=0, ge=0, le=65535,
        description="port of the fake model server beside the service; 0: a free port",
    )
    prices: dict[str, tuple[Annotated[float, Field(ge=0)], Annotated[float, Field(ge=0)]]] = (
        Field(
            default_factory=dict,
            description="USD per 1M [input, output] tokens by model ('*': any other model); "
            "the suite's prices win",
        )
    )

    @model_validator(mode="before")
    @classmethod
    def _replaced_keys(cls, data: object) -> object:
        if isinstance(data, dict) and "fake_model" in data:
            was = data["fake_model"]
            raise ValueError(
                "smoke.fake_model was replaced by smoke.model: write "
                + ('model = "fake"' if was is True else 'model = "real"')
                + " (the fake model server, or the provider the service's own settings name)"
            )
        return data


class CanaryConfig(_Section):
    """Canary rollout steps and the thresholds that decide promote vs roll back."""

    steps: list[int] = Field(default_factory=lambda: [10, 50, 100])
    # 0: judge each step as soon as the candidate has served min_requests (tests, benchmarks).
    step_duration_s: NonNegativeSeconds = 60
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    max_p95_latency_ms: float = Field(default=2000, gt=0)
    min_quality: float = Field(default=0.9, ge=0, le=1)
    max_cost_per_hour_usd: float | None = Field(default=None, ge=0)
    max_cost_ratio: float = Field(
        default=2.0, gt=1,
        description="candidate cost per request over the rollback point's (or the last "
        "validated) cost per request that rolls it back",
    )
    min_requests: int = Field(
        default=20, ge=1,
        description="responses the candidate must serve in a step before it is judged",
    )
    request_rate: float = Field(
        default=20, gt=0, le=1000,
        description="requests/s the rollout sends through the service URL during each step",
    )
    max_step_s: PositiveSeconds = Field(
        default=300, description="a step that cannot gather min_requests by then fails"
    )

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[int]) -> list[int]:
        if not v or v != sorted(set(v)) or v[0] <= 0 or v[-1] != 100:
            raise ValueError(
                f"canary steps {v} must be increasing percentages ending at 100, e.g. [10, 50, 100]"
            )
        return v


_CLOUD_RUN_CPUS = {"0.08", "0.25", "0.5", "1", "2", "4", "6", "8"}


class DeployConfig(_Section):
    """Deploy target and Cloud Run service settings."""

    target: Literal["local", "cloudrun"] = "local"
    project: str | None = None
    region: str = "europe-west1"
    service: str | None = Field(default=None, description="Cloud Run service name (default: service.name)")
    memory: Memory = "1Gi"
    cpu: str = "1"
    timeout_s: int = Field(default=300, ge=1, le=3600)
    min_instances: int = Field(default=0, ge=0)
    max_instances: int = Field(default=10, ge=1)
    startup_cpu_boost: bool = True
    execution_environment: Literal["gen1", "gen2"] = "gen2"
    env: dict[str, str] = Field(default_factory=dict)
    allow_unauthenticated: bool = False
    canary: CanaryConfig = Field(default_factory=CanaryConfig)
    enabled: bool = Field(
        default=False, description="deploy is the last stage of `flightcheck ci`"
    )
    service_account: str | None = Field(
        default=None, description="the revision's identity (NAME@PROJECT.iam.gserviceaccount.com)"
    )
    labels: dict[str, str] = Field(default_factory=dict, description="extra Cloud Run labels")
    cpu_idle: bool = Field(
        default=True, description="CPU only while serving requests (Cloud Run's default); "
        "false: always allocated"
    )
    concurrency: int = Field(default=80, ge=1, le=1000, description="max requests per instance")
    secrets: dict[str, str] = Field(
        default_factory=dict,
        description="env var → Secret Manager secret ('name:version' or 'name', latest) "
        "(cloudrun target)",
    )
    registry: str | None = Field(
        default=None,
        description="image repository; default: 127.0.0.1:5000 (local) or "
        "REGION-docker.pkg.dev/PROJECT/flightcheck (cloudrun)",
    )
    api_endpoint: str | None = Field(
        default=None, description="run_v2 endpoint; default: the local Cloud Run or Google's"
    )
    ready_timeout_s: PositiveSeconds = Field(
        default=600, description="deadline for the new revision to become ready"
    )

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, v: str) -> str:
        if v not in _CLOUD_RUN_CPUS:
            raise ValueError(f"cpu {v!r} is not a Cloud Run size; use one of {sorted(_CLOUD_RUN_CPUS, key=float)}")
        return v

    @model_validator(mode="after")
    def _sizes(self) -> DeployConfig:
        mem = parse_memory(self.memory)
        if mem < 128 * 1024**2 or mem > 32 * 1024**3:
            raise ValueError(f"memory {self.memory} is outside Cloud Run's 128Mi..32Gi")
        if self.execution_environment == "gen2" and mem < 512 * 1024**2:
            raise ValueError(f"memory {self.memory} is below gen2's minimum of 512Mi")
        cpu = float(self.cpu)
        for need_cpu, max_mem in ((1, 4), (2, 8), (4, 16), (6, 24), (8, 32)):
            if cpu <= need_cpu or need_cpu == 8:
                if mem > max_mem * 1024**3:
                    raise ValueError(
                        f"memory {self.memory} needs more than cpu {self.cpu} on Cloud Run "
                        f"(at most {max_mem}Gi with {need_cpu} CPU)"
                    )
                break
        if self.min_instances > self.max_instances:
            raise ValueError(
                f"min_instances ({self.min_instances}) exceeds max_instances ({self.max_instances})"
            )
        if self.target == "cloudrun" and not self.project:
            raise ValueError("target 'cloudrun' needs deploy.project (your GCP project id)")
        return self


class AIParams(_Section):
    """AI parameters of one environment: the parity surface."""

    model: str = "fake-math-1"
    temperature: float = Field(default=0.2, ge=0, le=2)
    top_k: int | None = Field(default=40, ge=1)
    top_p: float | None = Field(default=0.95, gt=0, le=1)
    max_output_tokens: int = Field(default=512, ge=1)

    def as_env(self) -> dict[str, str]:
        """The service's settings env (AI_MODEL, AI_TEMPERATURE, ...)."""
        env = {
            "AI_MODEL": self.model,
            "AI_TEMPERATURE": str(self.temperature),
            "MAX_OUTPUT_TOKENS": str(self.max_output_tokens),
        }
        if self.top_k is not None:
            env["AI_TOP_K"] = str(self.top_k)
        if self.top_p is not None:
            env["AI_TOP_P"] = str(self.top_p)
        return env


# --- the lessons' sections (named defaults in lessons/defaults.py) ------------------------

PricePair = tuple[Annotated[float, Field(ge=0)], Annotated[float, Field(ge=0)]]


class CostConfig(_Section):
    """`flightcheck cost`: tokens × prices against budgets."""

    requests_per_hour: float = Field(
        default=_d.COST_REQUESTS_PER_HOUR, gt=0,
        description="request rate the hourly/daily projections assume",
    )
    max_per_request_usd: float = Field(default=_d.COST_MAX_PER_REQUEST_USD, gt=0)
    max_per_hour_usd: float = Field(default=_d.COST_MAX_PER_HOUR_USD, gt=0)
    max_per_day_usd: float = Field(default=_d.COST_MAX_PER_DAY_USD, gt=0)
    prices: dict[str, PricePair] = Field(
        default_factory=dict,
        description="USD per 1M [input, output] tokens by model; wins over the suite's, "
        "[smoke].prices and the shipped price table",
    )


class QualityConfig(_Section):
    """`flightcheck quality`: current smoke metrics against a saved baseline."""

    baseline: Path = Field(
        default=Path(_d.QUALITY_BASELINE), description="baseline file, relative to source"
    )
    warn_worse: float = Field(default=_d.QUALITY_WARN_WORSE, gt=0, lt=1)
    fail_worse: float = Field(default=_d.QUALITY_FAIL_WORSE, gt=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> QualityConfig:
        if self.warn_worse >= self.fail_worse:
            raise ValueError(
                f"warn_worse ({self.warn_worse}) must be below fail_worse ({self.fail_worse})"
            )
        return self


class ResourcesConfig(_Section):
    """`flightcheck resources`: Cloud Run sizing from measured memory and startup."""

    runs: int = Field(default=_d.RESOURCES_RUNS, ge=1, le=20)
    concurrency: int = Field(default=_d.RESOURCES_CONCURRENCY, ge=1, le=1000)
    headroom: float = Field(default=_d.RESOURCES_HEADROOM, gt=0, le=4)
    far_above: float = Field(default=_d.RESOURCES_FAR_ABOVE, gt=1)
    cold_start_s: float = Field(default=_d.RESOURCES_COLD_START_S, gt=0)
    models: int = Field(default=1, ge=0, description="models the service loads (for the formula)")


class ParityConfig(_Section):
    """`flightcheck parity`: AI parameters across environments and as running."""

    parameters: list[str] = Field(
        default_factory=lambda: ["model", "temperature", "top_k", "top_p", "max_output_tokens"],
        min_length=1,
        description="AI-critical parameters compared (names the service reports too)",
    )
    info_path: str | None = Field(
        default=None, description="where the service reports its AI parameters "
        "(default: [health].ai_path)",
    )
    info_key: str = Field(default="ai", description="JSON key of the parameters in that answer")


class MonitoringConfig(_Section):
    """`flightcheck monitoring`: log-based metrics and alert policies as code."""

    error_rate: float = Field(default=_d.MONITORING_ERROR_RATE, gt=0, le=1)
    p95_latency_ms: float = Field(default=_d.MONITORING_P95_LATENCY_MS, gt=0)
    cost_per_hour_usd: float | None = Field(
        default=None, gt=0, description="default: [cost].max_per_hour_usd"
    )
    window_s: int = Field(default=_d.MONITORING_WINDOW_S, ge=60, le=86400)
    notification_channels: list[str] = Field(
        default_factory=list, description="projects/P/notificationChannels/ID alerts go to"
    )
    token_filter: str = Field(
        default="jsonPayload.usage.total_tokens>0",
        description="Cloud Logging filter of the log lines that carry token usage",
    )
    token_field: str = Field(
        default="jsonPayload.usage.total_tokens", description="the token count in those lines"
    )


class Config(_Section):
    """The whole of flightcheck.toml."""

    service: ServiceConfig = Field(default_factory=ServiceConfig)
    lint: LintConfig = Field(default_factory=LintConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    smoke: SmokeConfig = Field(default_factory=SmokeConfig)
    deploy: DeployConfig = Field(default_factory=DeployConfig)
    environments: dict[str, AIParams] = Field(
        default_factory=dict,
        description="per-environment AI parameters (parity is checked across them); the "
        "chosen one (--env, default dev) reaches the service as AI_MODEL, AI_TEMPERATURE, ...",
    )
    cost: CostConfig = Field(default_factory=CostConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    parity: ParityConfig = Field(default_factory=ParityConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    # Where the file lives; not a TOML key.
    root: Path = Field(default=Path("."), exclude=True)

    @property
    def source_dir(self) -> Path:
        return (self.root / self.service.source).resolve()

    def resolve(self, path: Path) -> Path:
        """A path from the file (relative to service.source) as an absolute path."""
        return path if path.is_absolute() else (self.source_dir / path).resolve()


# --- loading with provenance ---------------------------------------------------------------


@dataclass
class Loaded:
    """A validated config and where each dotted key's value came from."""

    config: Config
    path: Path | None
    sources: dict[str, str] = field(default_factory=dict)

    def source_of(self, dotted: str) -> str:
        if dotted in self.sources:
            return self.sources[dotted]
        children = [v for k, v in self.sources.items() if k.startswith(dotted + ".")]
        if children:  # a table set key by key ([service.env] A = "x")
            return children[-1]
        while "." in dotted:  # a leaf inside a table set whole (FLIGHTCHECK__SERVICE__ENV='{...}')
            dotted = dotted.rpartition(".")[0]
            if dotted in self.sources:
                return self.sources[dotted]
        return "default"

    def explain(self) -> list[tuple[str, object, str]]:
        """(dotted key, value, source) for every leaf of the effective config."""
        data = self.config.model_dump(mode="json")
        return [(k, v, self.source_of(k)) for k, v in _leaves(data)]


def _leaves(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, object]]:
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and not dotted.endswith(".env"):
            yield from _leaves(value, dotted + ".")
        else:
            yield dotted, value


def _set(tree: dict[str, Any], dotted: str, value: object) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {dotted}: {part} is not a table")
        node = child
    node[parts[-1]] = value


def _flatten_sources(data: Mapping[str, Any], origin: str, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten_sources(value, origin, dotted + "."))
        else:
            out[dotted] = origin
    return out


def _parse_scalar(text: str) -> object:
    """An env/CLI override value: JSON when it parses (numbers, bools, lists), else a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


class MissingConfig(ConfigError):
    """No flightcheck.toml where a command that checks a service needs one."""


def missing_config(directory: Path) -> MissingConfig:
    """What failed, why flightcheck needs the file, and what ``flightcheck init`` would find."""
    import shlex

    from flightcheck.onboard.glance import glance

    found = glance(directory)
    writes = f"writes {DEFAULT_FILE} and smoke.yaml"
    if (directory / "smoke.yaml").exists():  # init never overwrites it without --force
        fix = ("`flightcheck init` here would stop at your smoke.yaml (it never overwrites without "
               "--force): move smoke.yaml aside and run `flightcheck init` (it reads your project "
               f"and {writes}), or write {DEFAULT_FILE} yourself (docs/another-service.md); or "
               "pass --config FILE")
    elif found is not None and found.empty:
        fix = (f"this directory holds {found}: cd to your service's directory and run "
               f"`flightcheck init` there (it reads your project and {writes}), or pass "
               "--config FILE")
    else:
        fix = ("run `flightcheck init` here: it reads your project"
               + (f" (here: {found})" if found else "") + f" and {writes}; or pass --config FILE")
    return MissingConfig(
        f"no {DEFAULT_FILE} in {directory}",
        why=f"flightcheck needs to know how to build, start and probe your service (Dockerfile, "
        f"port, start command, health paths, AI smoke suite), and {DEFAULT_FILE} says how; there "
        "is none here and no --config was given",
        fix=fix,
        repro=f"cd {shlex.quote(str(directory))} && flightcheck config",
    )


def load(
    path: Path | str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, tuple[object, str]] | None = None,
    missing: Literal["error", "defaults"] = "error",
) -> Loaded:
    """Load and validate the config.

    ``path`` None looks for ./flightcheck.toml; without it ``missing`` decides: ``"error"``
    raises :class:`MissingConfig` (every command that checks a service), ``"defaults"`` uses
    the generic defaults rooted at the working directory (``lint``, ``config --explain``).
    ``overrides`` maps dotted keys to (value, flag-name) from the CLI.
    """
    environ = os.environ if environ is None else environ
    file: Path | None
    if path is None:
        file = Path(DEFAULT_FILE) if Path(DEFAULT_FILE).is_file() else None
        if file is None and missing == "error":
            raise missing_config(Path.cwd())
    else:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(
                f"config file {file} not found",
                why="--config names a file that does not exist",
                fix="check the path, or write one with `flightcheck init DIR` (DIR: the "
                "service's directory)",
                repro=f"flightcheck config --explain --config {file}",
            )
    raw: dict[str, Any] = {}
    sources: dict[str, str] = {}
    label = str(file) if file else "<defaults>"
    if file is not None:
        try:
            raw = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(
                f"{file} is not valid TOML: {exc}",
                fix="fix the syntax at the position given",
                repro=f"flightcheck config --explain --config {file}",
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {file}: {exc}") from None
        if "root" in raw:
            raise ConfigError(f"{file}: unknown key 'root'", fix="remove it")
        sources.update(_flatten_sources(raw, f"file:{file}"))

    for name, value in sorted(environ.items()):
        if name.startswith(ENV_PREFIX):
            dotted = _env_key(name[len(ENV_PREFIX) :])
            _set(raw, dotted, _parse_scalar(value))
            sources[dotted] = f"env:{name}"

    for dotted, (value, flag) in (overrides or {}).items():
        _set(raw, dotted, value)
        sources[dotted] = f"cli:{flag}"

    root = (file.parent if file else Path.cwd()).resolve()
    try:
        config = Config.model_validate({**raw, "root": root})
    except ValidationError as exc:
        flags = " ".join(f"{flag} {value}" for value, flag in (overrides or {}).values())
        raise _config_error(exc, label, sources, flags) from None
    _check_paths(config, label, sources)
    return Loaded(config=config, path=file.resolve() if file else None, sources=sources)


def _env_key(name: str) -> str:
    """``SERVICE__ENV__OPENAI_API_KEY`` → ``service.env.OPENAI_API_KEY``: section and key
    names are lower case, but the keys of a table (variable names, rule codes, model names)
    keep their case."""
    out: list[str] = []
    model: type[BaseModel] | None = Config
    table_value: object = None  # the value type of the table whose key comes next
    keyed = False
    for part in name.split("__"):
        if keyed:
            out.append(part)
            keyed = False
            model = table_value if isinstance(table_value, type) and issubclass(table_value, BaseModel) else None
            continue
        if model is None:
            out.append(part.lower())
            continue
        part = part.lower()
        out.append(part)
        info = model.model_fields.get(part)
        ann = info.annotation if info else None
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        elif get_origin(ann) is dict:
            keyed, table_value = True, get_args(ann)[1]
        else:
            model = None
    return ".".join(out)


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def _check_paths(config: Config, label: str, sources: Mapping[str, str]) -> None:
    """service.source stays inside the config's directory, the Dockerfile inside the build
    context, the smoke suite inside the config's directory (symlinks resolved): a path that
    escapes would put another file's content into the build and the reports."""
    root, src, svc = config.root.resolve(), config.source_dir, config.service
    problems: list[str] = []

    def bad(key: str, value: object, resolved: Path, where: str, base: Path) -> None:
        origin = sources.get(key, label)
        problems.append(f"{key} = {str(value)!r} ({origin}): resolves to {resolved}, outside "
                        f"{where} {base}")

    if not _inside(src, root):
        bad("service.source", svc.source, src, "the config's directory", root)
    dockerfile = (src / svc.dockerfile).resolve()
    if not _inside(dockerfile, src):
        bad("service.dockerfile", svc.dockerfile, dockerfile, "the build context", src)
    suite = config.resolve(config.smoke.suite)
    if not _inside(suite, root):
        bad("smoke.suite", config.smoke.suite, suite, "the config's directory", root)
    if problems:
        where = label if label != "<defaults>" else "the configuration"
        raise ConfigError(
            _mask_secrets(f"{where}: {len(problems)} path(s) outside the project\n    "
                          + "\n    ".join(problems)),
            why="flightcheck reads only files of the project it checks",
            fix="use paths relative to the config's directory that stay inside it (move the "
            "file into the project, or put flightcheck.toml higher up)",
            repro="flightcheck config --explain" + (f" --config {label}" if label != "<defaults>" else ""),
        )


def _mask_secrets(text: str) -> str:
    """Mask anything shaped like a key (a key pasted into the wrong setting)."""
    return Redactor()(text)


def _known_keys(loc: tuple[int | str, ...]) -> list[str]:
    model: type[BaseModel] | None = Config
    for part in loc[:-1]:
        if model is None:
            return []
        info = model.model_fields.get(str(part))
        ann = info.annotation if info else None
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return list(model.model_fields) if model else []


def _config_error(
    exc: ValidationError, label: str, sources: Mapping[str, str], flags: str = ""
) -> ConfigError:
    problems: list[str] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        origin = sources.get(dotted, label)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            known = [k for k in _known_keys(loc) if k != "root"]
            near = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f"did you mean '{near[0]}'?" if near else f"known keys: {', '.join(known)}"
            msg = f"unknown key — {hint}"
        elif err["type"] == "missing":
            msg = "required key is missing"
        value = err.get("input")
        if isinstance(value, str) and len(value) >= 6 and is_secret(dotted, value):
            # The message may quote the value too (e.g. "'sk-...' is not a valid name").
            msg = msg.replace(repr(value), MASK).replace(value, MASK)
        if isinstance(value, dict | list | tuple):
            # A table or list error: its content may hold secrets ([deploy.env]); the
            # message names what is wrong.
            problems.append(f"{dotted} ({origin}): {msg}")
            continue
        shown = MASK if is_secret_name(dotted) or (
            isinstance(value, str) and looks_like_secret(value)) else repr(value)
        problems.append(f"{dotted} = {shown} ({origin}): {msg}")
    where = label if label != "<defaults>" else "the configuration"
    return ConfigError(
        _mask_secrets(f"{where}: {len(problems)} invalid value(s)\n    " + "\n    ".join(problems)),
        why="flightcheck validates every key before it runs anything",
        fix="correct the keys listed above (README 'Configuration' lists every key)",
        repro=_mask_secrets(
            "flightcheck config --explain"
            + (f" --config {label}" if label != "<defaults>" else "")
            + (f" {flags}" if flags else "")
        ),
    )
