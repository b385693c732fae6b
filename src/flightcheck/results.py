"""Typed results every stage returns; the reports are rendered from these alone."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

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


def worst(statuses: list[Status]) -> Status:
    """The overall status of several: fail > warn > pass; all skipped is skipped."""
    if Status.FAIL in statuses:
        return Status.FAIL
    if Status.WARN in statuses:
        return Status.WARN
    if statuses and all(s is Status.SKIPPED for s in statuses):
        return Status.SKIPPED
    return Status.PASS
