"""Helpers of the lessons' tests: `flightcheck` as a user runs it (a subprocess from the repo),
and evidence built from stage results for the pure lesson functions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flightcheck import config as config_mod
from flightcheck.lessons.evidence import Evidence
from flightcheck.results import Repro, StageResult, Status

REPO = Path(__file__).resolve().parents[2]
# Variables the service reads: never inherited from the developer's shell.
_SERVICE_PREFIXES = ("AI_", "FAULT_", "OPENAI_", "GEMINI_", "GOOGLE_", "FLIGHTCHECK__")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SERVICE_PREFIXES)}
    return {**env, **(extra or {})}


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    report_dir: Path

    @property
    def report(self) -> dict[str, Any]:
        return json.loads((self.report_dir / "flightcheck-report.json").read_text())

    def lesson(self, name: str) -> dict[str, Any]:
        return next(x for x in self.report["lessons"] if x["name"] == name)

    def stage(self, name: str) -> dict[str, Any]:
        return next(s for s in self.report["stages"] if s["name"] == name)

    def why(self) -> str:
        return f"exit {self.rc}\n--- stdout ---\n{self.stdout[-3000:]}\n--- stderr ---\n{self.stderr[-4000:]}"


def flightcheck(*args: str, cwd: Path = REPO, env: Mapping[str, str] | None = None,
                timeout: float = 280) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flightcheck.cli", *args], cwd=cwd, capture_output=True,
        text=True, timeout=timeout, check=False, env=clean_env(env),
    )


def ci(report_dir: Path, *args: str, runtime: str = "process", cwd: Path = REPO,
       env: Mapping[str, str] | None = None) -> Run:
    """`flightcheck ci`; the quality baseline is looked for beside the report unless ``env``
    says otherwise (a developer's own baseline in the checkout must not change a verdict)."""
    env = {"FLIGHTCHECK__QUALITY__BASELINE": str(report_dir.parent / "baseline.json"),
           # The reference config deploys; a host-process run has no image to deploy (the deploy
           # stage's own tests cover it).
           **({"FLIGHTCHECK__DEPLOY__ENABLED": "false"} if runtime == "process" else {}),
           **(env or {})}
    proc = flightcheck("ci", "--runtime", runtime, "--report-dir", str(report_dir), *args, cwd=cwd,
                       env=env)
    return Run(proc.returncode, proc.stdout, proc.stderr, report_dir)


def measurement(item: Mapping[str, Any], name: str) -> Any:
    return next(m["value"] for m in item["measurements"] if m["name"] == name)


def stage(name: str, status: Status = Status.PASS, *, measurements: Mapping[str, float] | None = None,
          details: Mapping[str, object] | None = None, started_at: float | None = None,
          duration_s: float = 1.0) -> StageResult:
    res = StageResult(name=name, status=status,  # type: ignore[arg-type]
                      repro=Repro(local="flightcheck ci", dagger="dagger call ci"),
                      details=dict(details or {}), started_at=started_at, duration_s=duration_s)
    for key, value in (measurements or {}).items():
        res.measure(key, value)
    return res


def evidence(stages: Sequence[StageResult], toml: str | None = None, tmp: Path | None = None,
             environment: str = "dev") -> Evidence:
    """Evidence over ``stages`` with a config from ``toml`` (written to ``tmp``) or the
    reference service's defaults."""
    if toml is None:
        loaded = config_mod.load(REPO / "flightcheck.toml", environ={})
    else:
        assert tmp is not None
        path = tmp / "flightcheck.toml"
        path.write_text(toml)
        loaded = config_mod.load(path, environ={})
    return Evidence(loaded=loaded, stages=list(stages), report_dir=(tmp or REPO) / "report",
                    environment=environment)
