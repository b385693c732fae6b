"""flightcheck pointed at another service: examples/quotebot (FastAPI + the official openai SDK).

Each test runs ``flightcheck ci --config examples/quotebot/flightcheck.toml`` as a user would, in
a subprocess, and judges it by its exit code, its report and what it printed: the whole graph
passes on both runtimes; a provider key or a secret the service prints never reaches stdout,
stderr or any report file; a fault (prompt bloat over the token budget) ends in exit 1 with a
verdict that names the case and the budget, and leaves no container behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
QUOTEBOT = REPO / "examples" / "quotebot"
CONFIG = QUOTEBOT / "flightcheck.toml"
STAGES = ["lint", "build", "run-with-memory-limit", "health-poll", "ai-smoke"]
CASES = 5  # cases in examples/quotebot/smoke.yaml (the config has no AI health path)
# A recognisable fake key: if any of it shows up in output, redaction failed.
LEAK = "sk-proj-FLIGHTCHECKLEAKTEST0123456789abcdef"
# What the developer's shell may hold that would change the run (a real key → real provider).
_SCRUB = ("OPENAI_", "GEMINI_", "GOOGLE_", "AI_", "FLIGHTCHECK__", "QUOTEBOT_", "MAX_OUTPUT")

pytestmark = pytest.mark.slow


@dataclass
class CiRun:
    rc: int
    stdout: str
    stderr: str
    report_dir: Path
    pid: int = 0  # of the flightcheck process: its containers carry it in their owner label

    @property
    def report(self) -> dict[str, Any]:
        return json.loads((self.report_dir / "flightcheck-report.json").read_text())

    def stage(self, name: str) -> dict[str, Any]:
        return next(s for s in self.report["stages"] if s["name"] == name)

    def measurements(self, stage: str) -> dict[str, Any]:
        return {m["name"]: m["value"] for m in self.stage(stage)["measurements"]}

    def statuses(self) -> dict[str, str]:
        return {s["name"]: s["status"] for s in self.report["stages"]}

    def explain(self) -> str:
        return f"exit {self.rc}\n--- stderr (tail) ---\n{self.stderr[-4000:]}"


def _flightcheck() -> list[str]:
    script = Path(sys.executable).with_name("flightcheck")
    return [str(script)] if script.exists() else [sys.executable, "-m", "flightcheck.cli"]


def run_ci(report_dir: Path, runtime: str, *args: str) -> CiRun:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
    with subprocess.Popen(
        [*_flightcheck(), "ci", "--config", str(CONFIG.relative_to(REPO)), "--runtime", runtime,
         "--report-dir", str(report_dir), *args],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as proc:
        stdout, stderr = proc.communicate(timeout=280)
    return CiRun(proc.returncode, stdout, stderr, report_dir, proc.pid)


def _quotebot_containers(run: CiRun) -> list[str]:
    """Containers (any state) this run started: other runs on the machine are not ours."""
    docker = shutil.which("docker", path="/usr/bin") or "docker"
    out = subprocess.run(
        [docker, "ps", "-a", "--filter", "label=flightcheck=1", "--format",
         '{{.ID}} {{.Image}} {{.Label "flightcheck.owner"}}'],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    return [line for line in out.splitlines()
            if "flightcheck/quotebot" in line and line.split()[-1].startswith(f"{run.pid}.")]


def _assert_all_pass(run: CiRun) -> None:
    assert run.rc == 0, run.explain()
    assert [s["name"] for s in run.report["stages"]] == STAGES
    assert run.statuses() == dict.fromkeys(STAGES, "pass"), run.explain()
    assert run.report["ok"] is True
    smoke = run.stage("ai-smoke")
    m = run.measurements("ai-smoke")
    assert (m["cases_total"], m["cases_passed"]) == (CASES, CASES), json.dumps(smoke, indent=1)
    assert m["tokens_total"] > 0 and m["cost_usd"] > 0
    assert smoke["details"]["mode"] == "fake model server"


# --- the whole graph passes ------------------------------------------------------------------


def test_quotebot_passes_on_process_runtime(tmp_path: Path) -> None:
    run = run_ci(tmp_path / "report", "process")
    _assert_all_pass(run)
    assert run.report["runtime"] == "process"
    peak = run.measurements("run-with-memory-limit")["peak_memory_bytes"]
    assert 0 < peak < 256 * 1024**2  # measured, and under the configured 256Mi


@pytest.mark.docker
def test_quotebot_passes_on_docker_runtime(tmp_path: Path, docker_client: Any) -> None:
    del docker_client  # skips without a daemon or the base image
    run = run_ci(tmp_path / "report", "docker")
    _assert_all_pass(run)
    assert run.report["runtime"] == "docker"
    assert _quotebot_containers(run) == []


# --- secrets never leak ----------------------------------------------------------------------


def _assert_no_leak(run: CiRun) -> None:
    assert LEAK not in run.stdout
    assert LEAK not in run.stderr
    files = [p for p in run.report_dir.rglob("*") if p.is_file()]
    assert files, "the run wrote no report files"
    for path in files:
        assert LEAK not in path.read_text(errors="replace"), f"the key leaked into {path}"
    # Even a partial leak (a key cut at a line end) would identify the key.
    assert "FLIGHTCHECKLEAKTEST" not in run.stderr + run.stdout


@pytest.mark.parametrize("runtime", ["process", pytest.param("docker", marks=pytest.mark.docker)])
def test_secret_the_service_prints_is_redacted(
    tmp_path: Path, runtime: str, request: pytest.FixtureRequest
) -> None:
    """Fake model on; the service logs a secret env var and appends it to every summary."""
    if runtime == "docker":
        request.getfixturevalue("docker_client")
    run = run_ci(
        tmp_path / "report", runtime,
        "--service-env", f"QUOTEBOT_SIGNING_KEY={LEAK}",
        "--service-env", "QUOTEBOT_FAULT_ECHO_ENV=QUOTEBOT_SIGNING_KEY",
    )
    # The echoed secret breaks the exact-summary check: ai-smoke fails, so the report carries
    # the response excerpt, the check's actual value and the service's log tail.
    assert run.rc == 1, run.explain()
    smoke = run.stage("ai-smoke")
    assert smoke["status"] == "fail"
    assert "[debug ***]" in json.dumps(smoke["details"]["cases"]), "no redacted summary seen"
    assert '"echo": "***"' in smoke["details"]["logs_tail"], smoke["details"]["logs_tail"]
    # The repro references the variable instead of showing it.
    assert 'QUOTEBOT_SIGNING_KEY="$QUOTEBOT_SIGNING_KEY"' in smoke["repro"]["local"]
    _assert_no_leak(run)
    if runtime == "docker":
        assert _quotebot_containers(run) == []


def test_provider_key_is_redacted_in_real_mode(tmp_path: Path) -> None:
    """--real-model with a real-looking OPENAI_API_KEY: the real provider; the provider here
    is a closed port on 127.0.0.1, so the external case warns. The service logs the key."""
    run = run_ci(
        tmp_path / "report", "process", "--real-model",
        "--service-env", f"OPENAI_API_KEY={LEAK}",
        "--service-env", "OPENAI_BASE_URL=http://127.0.0.1:9/v1",
        "--service-env", "OPENAI_MAX_RETRIES=0",
        "--service-env", "QUOTEBOT_FAULT_ECHO_ENV=OPENAI_API_KEY",
    )
    assert run.rc == 0, run.explain()  # an unreachable external provider is a warning
    smoke = run.stage("ai-smoke")
    assert smoke["status"] == "warn", json.dumps(smoke, indent=1)
    assert smoke["details"]["mode"] == "real provider (openai)"
    cases = {c["name"]: c for c in smoke["details"]["cases"]}
    # Scripted cases need the fake model; the outage case reached the service and warned.
    assert cases["summary comes from the model"]["status"] == "skipped"
    assert cases["summary within token, latency and cost budgets"]["status"] == "warn"
    assert 'OPENAI_API_KEY="$OPENAI_API_KEY"' in smoke["repro"]["local"]
    assert "--real-model" in smoke["repro"]["local"]
    _assert_no_leak(run)


def test_secret_file_values_are_redacted_whatever_their_name(tmp_path: Path) -> None:
    """--service-env-file: every value in it is a secret, even under a harmless-looking name."""
    secrets = tmp_path / "secrets.env"
    secrets.write_text(f"QUOTEBOT_BUILD_LABEL={LEAK}\n")
    run = run_ci(
        tmp_path / "report", "process",
        "--service-env-file", str(secrets),
        "--service-env", "QUOTEBOT_FAULT_ECHO_ENV=QUOTEBOT_BUILD_LABEL",
    )
    assert run.rc == 1, run.explain()  # the echoed value breaks the exact-summary check
    smoke = run.stage("ai-smoke")
    assert '"echo": "***"' in smoke["details"]["logs_tail"], smoke["details"]["logs_tail"]
    assert f"--service-env-file {secrets}" in smoke["repro"]["local"]
    _assert_no_leak(run)


# --- a fault is caught, cleanly --------------------------------------------------------------


@pytest.mark.parametrize("runtime", ["process", pytest.param("docker", marks=pytest.mark.docker)])
def test_prompt_bloat_fails_the_token_budget(
    tmp_path: Path, runtime: str, request: pytest.FixtureRequest
) -> None:
    if runtime == "docker":
        request.getfixturevalue("docker_client")
    run = run_ci(tmp_path / "report", runtime,
                 "--service-env", "QUOTEBOT_FAULT_PROMPT_REPEAT=20")
    assert run.rc == 1, run.explain()
    assert run.statuses() == {**dict.fromkeys(STAGES, "pass"), "ai-smoke": "fail"}, run.explain()
    smoke = run.stage("ai-smoke")
    token_findings = [f for f in smoke["findings"] if f["code"].startswith("smoke.tokens")]
    assert token_findings, json.dumps(smoke["findings"], indent=1)
    assert any("summary comes from the model" in f["message"] for f in token_findings)
    # The provider's and the service's counts agree here: one finding per case, not two.
    per_check = [(f["message"].split(":")[0], f["code"]) for f in token_findings]
    assert len(per_check) == len(set(per_check)), json.dumps(token_findings, indent=1)
    assert all("provider and service" in f["message"] for f in token_findings)
    assert all(f["file"] == "smoke.yaml" and f["line"] for f in token_findings)
    # The verdict line and the command that reruns just this stage, with the knob.
    assert "FAIL  ai-smoke" in run.stderr
    assert "reproduce: flightcheck ci --only ai-smoke" in run.stderr
    assert "--service-env QUOTEBOT_FAULT_PROMPT_REPEAT=20" in run.stderr
    if runtime == "docker":
        assert _quotebot_containers(run) == []


@pytest.mark.parametrize("runtime", ["process", pytest.param("docker", marks=pytest.mark.docker)])
def test_memory_limit_below_the_service_is_an_oom_verdict(
    tmp_path: Path, runtime: str, request: pytest.FixtureRequest
) -> None:
    """quotebot peaks near 52Mi at startup; a 40Mi limit must end in an OOM verdict."""
    if runtime == "docker":
        request.getfixturevalue("docker_client")
    run = run_ci(tmp_path / "report", runtime, "--memory", "40Mi")
    assert run.rc == 1, run.explain()
    statuses = run.statuses()
    # On a loaded machine the OOM may come after run's first seconds of watching: then
    # health-poll sees the kill, and both say OOM.
    if statuses["health-poll"] == "fail":
        assert run.stage("health-poll")["findings"][0]["code"] == "health.oom", run.explain()
        statuses["health-poll"] = "skipped"
    assert statuses == {
        "lint": "pass", "build": "pass", "run-with-memory-limit": "fail",
        "health-poll": "skipped", "ai-smoke": "skipped",
    }, run.explain()
    stage = run.stage("run-with-memory-limit")
    assert [f["code"] for f in stage["findings"]] == ["run.oom"], json.dumps(stage, indent=1)
    assert "OOM-killed" in stage["summary"] and "40Mi" in stage["summary"]
    assert "reproduce: flightcheck ci --only run-with-memory-limit" in run.stderr
    assert "--memory 40Mi" in run.stderr
    if runtime == "docker":
        assert _quotebot_containers(run) == []
