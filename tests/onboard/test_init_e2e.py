"""`flightcheck init` then `flightcheck ci`, as a user runs them: real Docker, real images,
the fake model server beside each service, no hand edits in between.

The healthy services pass every stage; a service with a planted AI-path bug (askdesk calling its
model helper with a missing argument, so every answer is its own fallback text) fails the
generated suite with a diff that names the field, the expected reply and what came back.
Images are tagged by a digest of their build context, so reruns reuse them; askdesk, translator
and the planted-bug copy share one pip layer (identical requirements and Dockerfile head).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from onboard_support import copy_service, run_cli

from flightcheck.onboard.smokegen import REPLY

pytestmark = pytest.mark.slow
HEALTHY = ("askdesk", "haiku", "translator", "chatproxy", "mathcoach", "quotebot")
GATES = ["build", "run-with-memory-limit", "health-poll", "ai-smoke"]


def _report(report_dir: Path) -> dict[str, Any]:
    return json.loads((report_dir / "flightcheck-report.json").read_text())


def _stages(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in report["stages"]}


def _measurements(stage: dict[str, Any]) -> dict[str, Any]:
    return {m["name"]: m["value"] for m in stage["measurements"]}


def _left_behind(report: dict[str, Any]) -> list[str]:
    """Containers still publishing the run's service or fake-model port (other helpers' runs
    of the same image may be going on: the ports, not the image, identify this run's)."""
    run = _stages(report)["run-with-memory-limit"]["details"]
    ports = [url.rsplit(":", 1)[1] for url in (run.get("endpoint"), run.get("sidecar_endpoint")) if url]
    assert ports
    docker = shutil.which("docker", path="/usr/bin") or "docker"
    out = subprocess.run(
        [docker, "ps", "-a", "--filter", "label=flightcheck=1", "--format", "{{.ID}} {{.Ports}}"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    return [line for line in out.splitlines() if any(f":{p}->" in line for p in ports)]


def _init_and_ci(name: str, tmp_path: Path, *ci_args: str) -> tuple[Path, subprocess.CompletedProcess[str], Path]:
    svc = copy_service(name, tmp_path)
    init = run_cli(["init", str(svc)], cwd=tmp_path)
    assert init.returncode == 0, init.stdout + init.stderr
    report_dir = tmp_path / "report"
    ci = run_cli(["ci", "--config", str(svc / "flightcheck.toml"), "--runtime", "docker",
                  "--report-dir", str(report_dir), *ci_args], cwd=tmp_path, timeout=280)
    return svc, ci, report_dir


@pytest.mark.docker
@pytest.mark.parametrize("name", HEALTHY)
def test_init_then_ci_passes(name: str, tmp_path: Path, docker_client: Any) -> None:
    del docker_client  # skips without a daemon or the base image
    svc, ci, report_dir = _init_and_ci(name, tmp_path, "--until", "ai-smoke")
    detail = f"exit {ci.returncode}\n{ci.stderr[-3000:]}"
    assert ci.returncode == 0, detail
    stages = _stages(_report(report_dir))
    assert stages["lint"]["status"] in ("pass", "warn"), detail  # lint may warn; it never blocks
    for gate in GATES:
        assert stages[gate]["status"] == "pass", f"{gate}: {stages[gate]['summary']}\n{detail}"
    smoke = _measurements(stages["ai-smoke"])
    cases = yaml.safe_load((svc / "smoke.yaml").read_text())["cases"]
    ai_health = 1 if stages["ai-smoke"]["details"]["cases"][0]["name"] == "ai-health" else 0
    assert (smoke["cases_total"], smoke["cases_passed"]) == (len(cases) + ai_health,) * 2, detail
    assert smoke["tokens_total"] > 0  # the model was reached, through the fake model server
    assert stages["ai-smoke"]["details"]["mode"] == "fake model server"
    assert _left_behind(_report(report_dir)) == []


@pytest.mark.docker
def test_a_planted_ai_path_bug_fails_the_generated_suite_with_a_diff(tmp_path: Path, docker_client: Any) -> None:
    del docker_client
    svc = copy_service("askdesk", tmp_path)
    main = svc / "service" / "main.py"
    good = "await ask_model(body.question, body.tone)"
    assert good in main.read_text()
    # The bug of a real service: a helper called with an argument missing. The broad except
    # turns the TypeError into the polite fallback, with HTTP 200: health checks stay green.
    main.write_text(main.read_text().replace(good, "await ask_model(body.question)"))
    init = run_cli(["init", str(svc)], cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    report_dir = tmp_path / "report"
    ci = run_cli(["ci", "--config", str(svc / "flightcheck.toml"), "--runtime", "docker",
                  "--only", "ai-smoke", "--report-dir", str(report_dir)], cwd=tmp_path, timeout=280)
    assert ci.returncode == 1, ci.stderr[-3000:]
    stages = _stages(_report(report_dir))
    assert stages["health-poll"]["status"] == "pass"
    smoke = stages["ai-smoke"]
    assert smoke["status"] == "fail"
    fallback = "Sorry, I cannot answer that right now. Please try again later."
    equals = next(f for f in smoke["findings"] if f["code"] == "smoke.equals")
    assert f'$.answer: expected "{REPLY}", got "{fallback}"' in equals["message"]
    assert equals["file"] == "smoke.yaml" and equals["line"]
    assert any(f["code"] == "smoke.regex" and fallback in f["message"] for f in smoke["findings"])
    assert f'expected "{REPLY}", got "Sorry' in ci.stderr  # on the console too
    assert _left_behind(_report(report_dir)) == []


@pytest.mark.docker
def test_init_yes_runs_the_first_check(tmp_path: Path, docker_client: Any) -> None:
    del docker_client
    copy_service("chatproxy", tmp_path)
    proc = run_cli(["init", "chatproxy", "--yes"], cwd=tmp_path, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "running: flightcheck ci --config chatproxy/flightcheck.toml" in proc.stdout
    report = _report(tmp_path / "flightcheck-report")
    assert report["ok"] is True
    assert _stages(report)["ai-smoke"]["status"] == "pass"



@pytest.mark.parametrize("name", ["askdesk", "translator"])
def test_init_then_ci_on_the_process_runtime(name: str, tmp_path: Path) -> None:
    """The written [service].command starts the service on the host (its dependencies are
    flightcheck's dev dependencies) on the port and address the process runtime gives it."""
    svc = copy_service(name, tmp_path)
    assert run_cli(["init", str(svc)], cwd=tmp_path).returncode == 0
    proc = run_cli(["ci", "--config", f"{name}/flightcheck.toml", "--runtime", "process",
                    "--until", "ai-smoke", "--report-dir", "report"], cwd=tmp_path, timeout=200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = _report(tmp_path / "report")
    assert report["runtime"] == "process"
    assert {s["name"]: s["status"] for s in report["stages"]}["ai-smoke"] == "pass"
