"""What every lesson reads: the stages' results of one run, the config, and where the report is.

Lessons never run the service themselves (except ``flightcheck resources``, which measures on
purpose): they judge what the stages measured, so a lesson in ``flightcheck ci`` and the same
lesson run later over the saved report give the same verdict.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from flightcheck.config import Config, Loaded
from flightcheck.results import (
    LessonName,
    LessonResult,
    Repro,
    StageName,
    StageResult,
    Status,
)


@dataclass(frozen=True)
class Evidence:
    loaded: Loaded
    stages: Sequence[StageResult]
    report_dir: Path = Path("flightcheck-report")
    environment: str = "dev"

    @property
    def config(self) -> Config:
        return self.loaded.config

    def stage(self, name: StageName) -> StageResult | None:
        """The stage's result when it ran (skipped stages measured nothing)."""
        for s in self.stages:
            if s.name == name and s.status is not Status.SKIPPED:
                return s
        return None

    def number(self, stage: StageName, measurement: str) -> float | None:
        found = self.stage(stage)
        value = found.measurement(measurement) if found else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value)

    def repro(self, command: list[str], dagger_function: str, dagger_args: Sequence[str] = ()) -> Repro:
        """``flightcheck <command> --report-dir … [--config …]`` and its Dagger call."""
        local = ["flightcheck", *command]
        if self.report_dir != Path("flightcheck-report"):
            local += ["--report-dir", _short(self.report_dir)]
        if self.loaded.path is not None:
            local += ["--config", _short(self.loaded.path)]
        source = _short(self.loaded.path.parent) if self.loaded.path is not None else "."
        dagger = ["dagger", "call", dagger_function, f"--source={source}", *dagger_args]
        return Repro(local=shlex.join(local), dagger=shlex.join(dagger))

    def result(self, name: LessonName, command: list[str], dagger_function: str,
               status: Status = Status.PASS, summary: str = "",
               dagger_args: Sequence[str] = ()) -> LessonResult:
        return LessonResult(name=name, status=status, summary=summary,
                            repro=self.repro(command, dagger_function, dagger_args))


def _short(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd())) or "."
    except ValueError:
        return str(path)


def fmt_usd(value: float | None) -> str:
    if value is None:
        return "unknown"
    if value == 0:
        return "$0"
    if value >= 1:
        return f"${value:,.2f}"
    return f"${value:.6f}".rstrip("0")
