"""Typed results every stage returns; the reports are rendered from these alone."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

StageName = Literal[
    "lint", "build", "run-with-memory-limit", "health-poll", "ai-smoke", "deploy"
]
STAGE_ORDER: tuple[StageName, ...] = (
    "lint",
    "build",
    "run-with-memory-limit",
    "health-poll",
    "ai-smoke",
    "deploy",
)


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    SKIPPED = "skipped"


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class Finding(BaseModel):
    """One thing a stage found: a lint hit, a failed probe, a smoke assertion diff."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(description="rule or check code, e.g. FC101 or health.startup")
    category: str = Field(description="fixed category, e.g. syntax, secret, oom, probe")
    severity: Severity = Severity.ERROR
    message: str
    file: str | None = Field(default=None, description="path relative to the scanned root")
    line: int | None = None
    col: int | None = None
    fix: str | None = Field(default=None, description="what to do about it")


MeasurementValue = float | int | str | bool | None


class Measurement(BaseModel):
    """A named number with its unit, e.g. peak_memory_bytes=412000000 (bytes)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    value: MeasurementValue
    unit: str = ""


class Repro(BaseModel):
    """The exact commands that rerun just this stage."""

    model_config = ConfigDict(extra="forbid")

    local: str
    dagger: str


class StageResult(BaseModel):
    """What one stage returned. ``status`` fail means its gate failed."""

    model_config = ConfigDict(extra="forbid")

    name: StageName
    status: Status
    duration_s: float = 0.0
    summary: str = ""
    findings: list[Finding] = Field(default_factory=list)
    measurements: list[Measurement] = Field(default_factory=list)
    repro: Repro
    details: dict[str, object] = Field(
        default_factory=dict, description="stage-specific structured data (JSON-safe)"
    )
    started_at: float | None = Field(
        default=None, description="when the stage started (epoch seconds): the report's timeline"
    )

    def measure(self, name: str, value: MeasurementValue, unit: str = "") -> None:
        """Record (or replace) a measurement."""
        self.measurements = [m for m in self.measurements if m.name != name]
        self.measurements.append(Measurement(name=name, value=value, unit=unit))

    def measurement(self, name: str) -> MeasurementValue:
        for m in self.measurements:
            if m.name == name:
                return m.value
        return None

    @property
    def gate_passed(self) -> bool:
        return self.status in (Status.PASS, Status.WARN)


LessonName = Literal["parity", "resources", "cost", "quality", "readiness", "monitoring"]


class LessonResult(BaseModel):
    """A lesson's verdict (parity, resources, cost, quality, ...), computed from the evidence
    the stages measured. ``gate`` lessons count towards the exit code like stages do."""

    model_config = ConfigDict(extra="forbid")

    name: LessonName
    status: Status
    gate: bool = Field(default=True, description="a fail fails the run (readiness is a view)")
    summary: str = ""
    findings: list[Finding] = Field(default_factory=list)
    measurements: list[Measurement] = Field(default_factory=list)
    repro: Repro
    details: dict[str, object] = Field(
        default_factory=dict, description="lesson-specific structured data (JSON-safe)"
    )

    def measure(self, name: str, value: MeasurementValue, unit: str = "") -> None:
        """Record (or replace) a measurement."""
        self.measurements = [m for m in self.measurements if m.name != name]
        self.measurements.append(Measurement(name=name, value=value, unit=unit))

    def measurement(self, name: str) -> MeasurementValue:
        for m in self.measurements:
            if m.name == name:
                return m.value
        return None


def worst(statuses: list[Status]) -> Status:
    """The overall status of several: fail > warn > pass; all skipped is skipped."""
    if Status.FAIL in statuses:
        return Status.FAIL
    if Status.WARN in statuses:
        return Status.WARN
    if statuses and all(s is Status.SKIPPED for s in statuses):
        return Status.SKIPPED
    return Status.PASS


# --- stage-specific details with a schema (the report schema applies them by stage name) -----


class DeployStep(BaseModel):
    """One canary step: the share the candidate got, what each revision served, the verdict."""

    model_config = ConfigDict(extra="allow")

    percent: int = Field(ge=0, le=100)
    verdict: Literal["pass", "fail"]
    reason: str = ""
    duration_s: float = 0.0
    metrics: dict[str, dict[str, object]] = Field(
        default_factory=dict,
        description="per revision: requests, errors, error_rate, p50_ms, p95_ms, quality, "
        "tokens, cost_per_request_usd, statuses, failed_checks",
    )


class DeployDetails(BaseModel):
    """``details`` of the deploy stage (present as far as the rollout got)."""

    model_config = ConfigDict(extra="allow")

    target: Literal["local", "cloudrun"] | None = None
    service: str | None = None
    image: str | None = Field(default=None, pattern=r"@sha256:[0-9a-f]{64}$",
                              description="what the revision runs: REGISTRY/NAME@sha256:…")
    revision: str | None = Field(default=None, description="the new revision's name")
    url: str | None = Field(default=None, description="the service URL")
    tag_url: str | None = Field(default=None, description="the candidate's tag URL")
    status: Literal["promoted", "rolled_back", "failed", "halted", "interrupted"] | None = None
    rolled_back: bool | None = None
    reason: str | None = Field(default=None, description="why it ended as it did")
    steps: list[DeployStep] = Field(default_factory=list)
    parity: dict[str, Any] | None = Field(
        default=None, description="the parity gate run before anything was pushed: status, "
        "summary, tables")
    revision_env: dict[str, str] | None = Field(
        default=None, description="every variable the revision was given, by name; secret "
        "values (and Secret Manager references) are '***'")
    quality_baseline: dict[str, Any] | None = Field(
        default=None, description="the quality baseline canary steps were compared with "
        "(path, metrics); null: none")

