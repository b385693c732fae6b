"""The cases the Dagger module is run on end to end, and their verdicts on each runtime.

A case is the reference service (mathcoach) with a fault switched on in its own
``flightcheck.toml`` (``[service.env]``): the same directory is ``--source`` for the Dagger
module and ``--config`` for ``flightcheck ci --runtime docker|process``, so every runtime checks
the very same thing. A verdict is what a user acts on: the exit code, and per stage its status
and the codes of its error and warning findings.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flightcheck.results import STAGE_ORDER

REPO = Path(__file__).resolve().parents[2]
# Variables the service or flightcheck read: never inherited from the developer's shell.
_PRIVATE = ("AI_", "FAULT_", "OPENAI_", "GEMINI_", "GOOGLE_", "EVAL_", "MAX_OUTPUT", "FLIGHTCHECK")
STAGE_OF = {"lint": "lint", "run-with-memory-limit": "run-with-memory-limit",
            "health-poll": "health-poll", "ai-smoke": "ai-smoke"}


@dataclass(frozen=True)
class Case:
    """One service fault and the Dagger function that should catch it."""

    name: str
    function: str  # the Dagger function (its stage for --only, unless ci)
    env: dict[str, str] = field(default_factory=dict)  # [service.env] of the case's config
    memory: str | None = None
    toml: tuple[tuple[str, str], ...] = ()  # (old, new) edits of flightcheck.toml
    key: bool = False  # a real-provider key, passed as a Dagger secret / --service-env
    repo: bool = False  # the repository itself (default --source), not a copy

    @property
    def only(self) -> str | None:
        return None if self.function in ("ci", "service") else self.function


CASES = [
    Case("healthy reference service", "ci", memory="512Mi", repo=True),
    Case("OOM at startup", "run-with-memory-limit", {"FAULT_STARTUP_ALLOC_MB": "400"},
         memory="160Mi"),
    Case("crash at start", "run-with-memory-limit", {"FAULT_CRASH_ON_START": "1"}),
    Case("slow startup past the probe window", "health-poll", {"FAULT_STARTUP_DELAY_S": "25"},
         toml=(("failure_threshold = 60", "failure_threshold = 6"),)),
    Case("degraded answers", "ai-smoke", {"FAULT_DEGRADE_ANSWERS": "1"}),
    Case("real-provider key as a secret", "ci",
         {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}, key=True),
]


def slug(text: str) -> str:
    return re.sub(r"\W+", "-", text).strip("-")


def make_source(case: Case, root: Path) -> Path:
    """The case's --source: the reference service's files and its own flightcheck.toml."""
    if case.repo:
        return REPO
    src = root / slug(case.name)
    if src.exists():
        return src
    (src / "src").mkdir(parents=True)
    shutil.copytree(REPO / "src" / "mathcoach", src / "src" / "mathcoach",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("Dockerfile", ".dockerignore", "smoke.yaml"):
        shutil.copy2(REPO / name, src / name)
    toml = (REPO / "flightcheck.toml").read_text(encoding="utf-8")
    for old, new in case.toml:
        assert old in toml, old
        toml = toml.replace(old, new)
    if case.env:
        toml += "\n[service.env]\n" + "".join(f'{k} = "{v}"\n' for k, v in case.env.items())
    (src / "flightcheck.toml").write_text(toml, encoding="utf-8")
    return src


@dataclass(frozen=True)
class Verdict:
    exit_code: int
    stages: dict[str, tuple[str, tuple[str, ...]]]  # stage → (status, error+warning codes)

    def row(self, stage: str) -> str:
        status, codes = self.stages.get(stage, ("—", ()))
        return f"{status}" + (f" ({', '.join(codes)})" if codes else "")


def verdict_of_report(report: dict[str, Any], exit_code: int) -> Verdict:
    stages = {}
    for s in report["stages"]:
        codes = sorted({f["code"] for f in s["findings"] if f["severity"] in ("error", "warning")})
        stages[s["name"]] = (s["status"], tuple(codes))
    return Verdict(exit_code, stages)


_ROW = re.compile(r"^\| (?P<stage>[a-z-]+) \| \S+ (?P<status>pass|fail|warn|skipped) \|", re.M)
# a finding's code as Markdown code or, once summary.md escapes everything, as <code>
_FINDING = re.compile(r"^- \*\*(?:error|warning)\*\* (?:`(?P<md>[^`]+)`|<code>(?P<html>[^<]+)</code>)",
                      re.M)


def verdict_of_summary(summary: str, exit_code: int) -> Verdict:
    """The verdict in a stage function's answer (summary.md, or the error carrying it)."""
    stages: dict[str, tuple[str, tuple[str, ...]]] = {}
    for m in _ROW.finditer(summary):
        if m["stage"] not in STAGE_ORDER:  # the lessons' table has rows of the same shape
            continue
        section = summary.split(f"\n### {m['stage']}\n", 1)
        body = section[1].split("\n### ", 1)[0] if len(section) == 2 else ""
        codes = sorted({f["md"] or f["html"] for f in _FINDING.finditer(body)})
        stages[m["stage"]] = (m["status"], tuple(codes))
    return Verdict(exit_code, stages)


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(_PRIVATE)}
    env.update(extra or {})
    return env


@functools.cache
def _real_model_flag() -> tuple[str, ...]:
    """What selects the real provider with a key: the key itself, or (once fake/real is an
    explicit choice) ``--real-model`` — the Dagger module passes it whenever a key is given."""
    done = subprocess.run([sys.executable, "-m", "flightcheck.cli", "ci", "--help"],
                          capture_output=True, text=True, timeout=60,
                          env=clean_env({"COLUMNS": "200"}))
    return ("--real-model",) if "--real-model" in done.stdout else ()


@dataclass
class LocalRun:
    verdict: Verdict
    stderr: str
    report: dict[str, Any]
    report_dir: Path


def run_local(case: Case, runtime: str, root: Path, secret: str) -> LocalRun:
    """``flightcheck ci --runtime RUNTIME`` on the case, as a user runs it."""
    src = make_source(case, root)
    report_dir = root / f"report-{runtime}-{slug(case.name)}"
    args = [sys.executable, "-m", "flightcheck.cli", "ci", "--runtime", runtime,
            "--report-dir", str(report_dir), "--config", str(src / "flightcheck.toml")]
    if case.only:
        args += ["--only", case.only]
    else:  # the module's `ci` runs the checks; `dagger call deploy` is what deploys
        args += ["--until", "ai-smoke"]
    if case.memory:
        args += ["--memory", case.memory]
    if case.key:
        args += ["--service-env", f"OPENAI_API_KEY={secret}", *_real_model_flag()]
    done = subprocess.run(args, cwd=src, env=clean_env(), capture_output=True, text=True,
                          timeout=600)
    report_file = report_dir / "flightcheck-report.json"
    assert report_file.is_file(), f"{runtime} wrote no report:\n{done.stderr[-3000:]}"
    report = json.loads(report_file.read_text())
    return LocalRun(verdict_of_report(report, done.returncode), done.stderr, report, report_dir)


@dataclass
class DaggerRun:
    verdict: Verdict
    output: str  # what `dagger call` prints: the function's result or its error
    report: dict[str, Any] | None
    report_dir: Path | None


def run_dagger(harness: Any, case: Case, root: Path) -> DaggerRun:
    """``dagger call FUNCTION --source=CASE ...`` through the harness (``ci`` exports its
    report directory, as the CI files do)."""
    from dagger_harness import FunctionFailed

    src = make_source(case, root)
    args: dict[str, Any] = {}
    if not case.repo:
        args["source"] = src
    if case.memory:
        args["memory"] = case.memory
    if case.key:
        args["openai_api_key"] = harness.secret_from_env("OPENAI_API_KEY")
    fn = case.function.replace("-", "_")
    if fn == "ci":
        out = root / f"dagger-{slug(case.name)}"
        result = harness.call("ci", f'{{ export(path: "{out}") }}', allow_failure=True, **args)
        code = int((out / "exit-code").read_text())
        report = json.loads((out / "flightcheck-report.json").read_text())
        return DaggerRun(verdict_of_report(report, code), json.dumps(result), report, out)
    try:
        summary = harness.call(fn, **args)
    except FunctionFailed as failed:
        return DaggerRun(verdict_of_summary(failed.message, 1), failed.message, None, None)
    return DaggerRun(verdict_of_summary(summary, 0), summary, None, None)


# --- the table (test_module_e2e asserts it; docs/dagger.md shows it) -----------------------

# case → (the dagger call, the verdict every runtime must give: exit code; decisive stage)
TABLE: dict[str, tuple[str, str]] = {
    "healthy reference service": (
        "ci --memory=512Mi", "exit 0; every stage pass"),
    "OOM at startup": (
        "run-with-memory-limit --memory=160Mi", "exit 1; run-with-memory-limit fail (run.oom)"),
    "crash at start": (
        "run-with-memory-limit", "exit 1; run-with-memory-limit fail (run.exited)"),
    "slow startup past the probe window": (
        "health-poll", "exit 1; health-poll fail (health.startup-timeout)"),
    "degraded answers": (
        "ai-smoke", "exit 1; ai-smoke fail (smoke.approx, smoke.equals)"),
    "real-provider key as a secret": (
        "ci --openai-api-key=env:OPENAI_API_KEY --allow-failure",
        "exit 1; ai-smoke fail (smoke.cost_usd, smoke.external, smoke.status, smoke.tokens)"),
}
DECISIVE = {"healthy reference service": None, "OOM at startup": "run-with-memory-limit",
            "crash at start": "run-with-memory-limit",
            "slow startup past the probe window": "health-poll",
            "degraded answers": "ai-smoke", "real-provider key as a secret": "ai-smoke"}


def cell(case: Case, v: Verdict) -> str:
    stage = DECISIVE[case.name]
    if stage is None:
        every = {s for s, _ in v.stages.values()}
        return f"exit {v.exit_code}; every stage " + "/".join(sorted(every))
    return f"exit {v.exit_code}; {stage} {v.row(stage)}"


def render_table(cells: dict[str, dict[str, str]]) -> str:
    lines = ["| case (`[service.env]` fault) | `dagger call …` | dagger (harness) | docker | process |",
             "|---|---|---|---|---|"]
    for name, (call, _) in TABLE.items():
        row = cells[name]
        lines.append(f"| {name} | `{call}` | {row['dagger']} | {row['docker']} | {row['process']} |")
    return "\n".join(lines)


EXPECTED_TABLE = render_table({n: dict.fromkeys(("dagger", "docker", "process"), v)
                               for n, (_, v) in TABLE.items()})


# --- the lessons (test_module_lessons_e2e asserts it; docs/dagger.md shows it) -------------

# Each lesson function on the reference service, beside the same `flightcheck` command over a
# `flightcheck ci --runtime docker` report of the same source. A cell is the gate's outcome:
# "passes" (pass or warn: exit 0), or "fails: " and its first error up to the parenthesis.
LESSON_CASES: dict[str, Case] = {
    "healthy": Case("healthy reference service", "lessons", repo=True),
    "temperature": Case("temperature overridden", "parity", {"AI_TEMPERATURE": "0.9"}),
    "tokens": Case("token inflation", "cost", {"FAULT_TOKEN_MULTIPLIER": "1000"}),
    "degraded": Case("degraded answers", "quality", {"FAULT_DEGRADE_ANSWERS": "1"}),
}
# row → (lesson, case in the source, `dagger call …`, `flightcheck …`, the verdict of both)
LESSON_TABLE: dict[str, tuple[str, str, str, str, str]] = {
    "parity healthy": (
        "parity", "healthy reference service", "parity", "parity", "passes"),
    "parity temperature": (
        "parity", '`AI_TEMPERATURE = "0.9"`', "parity --source=CASE", "parity",
        "fails: dev declared vs running: temperature differs"),
    "cost healthy": ("cost", "healthy reference service", "cost", "cost", "passes"),
    "cost tokens": (
        "cost", '`FAULT_TOKEN_MULTIPLIER = "1000"`', "cost --source=CASE", "cost",
        "fails: over budget: request 'a wrong model answer is caught and asked again' costs "
        "$0.0579 > $0.05 per request"),
    "quality healthy": (
        "quality", "healthy reference service", "quality --baseline=BASELINE",
        "quality --baseline BASELINE", "passes"),
    "quality degraded": (
        "quality", '`FAULT_DEGRADE_ANSWERS = "1"`, BASELINE at `.flightcheck/baseline.json`',
        "quality --source=CASE", "quality --baseline BASELINE",
        "fails: worse than the baseline: assertion_pass_rate 0.5 vs 1"),
    "resources healthy": (
        "resources", "healthy reference service", "resources", "resources --from-report",
        "passes"),
}


@dataclass(frozen=True)
class LessonRun:
    """A lesson's answer in text: the function's result or error, or the command's stdout."""

    exit_code: int
    output: str

    @property
    def mark(self) -> str:  # PASS / WARN / FAIL / SKIP
        return self.output.split(maxsplit=1)[0] if self.output.strip() else ""

    @property
    def errors(self) -> list[str]:
        return [line.removeprefix("  error: ") for line in self.output.splitlines()
                if line.startswith("  error: ")]

    def cell(self) -> str:
        if self.exit_code == 0:
            return "passes"
        first = self.errors[0].split(" (", 1)[0] if self.errors else "(no error printed)"
        return f"fails: {first}"


def render_lesson_table(cells: dict[str, tuple[str, str]]) -> str:
    lines = ["| lesson | case (`[service.env]` fault) | `dagger call …` | dagger (harness) | "
             "`flightcheck …` (docker run's report) | local |",
             "|---|---|---|---|---|---|"]
    for row, (lesson, case, call, command, _) in LESSON_TABLE.items():
        dagger, local = cells[row]
        lines.append(f"| {lesson} | {case} | `{call}` | {dagger} | `{command}` | {local} |")
    return "\n".join(lines)


EXPECTED_LESSON_TABLE = render_lesson_table({r: (v[4], v[4]) for r, v in LESSON_TABLE.items()})
