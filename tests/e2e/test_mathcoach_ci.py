"""`flightcheck ci` on the reference service, as a user runs it (a subprocess, real runtimes)."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from flightcheck.report import json_schema

REPO = Path(__file__).resolve().parents[2]
STAGES = ["lint", "build", "run-with-memory-limit", "health-poll", "ai-smoke"]


def _ci(tmp_path: Path, *args: str) -> tuple[int, str, dict[str, Any]]:
    report_dir = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "flightcheck.cli", "ci", "--report-dir", str(report_dir), *args],
        cwd=REPO, capture_output=True, text=True, timeout=280, check=False,
    )
    report = json.loads((report_dir / "flightcheck-report.json").read_text())
    return proc.returncode, proc.stderr, report


@pytest.mark.slow
def test_whole_graph_passes_on_the_process_runtime_and_writes_every_report(tmp_path: Path) -> None:
    # The checks only: the reference config also deploys (tests/e2e/test_deploy*.py do that).
    rc, err, report = _ci(tmp_path, "--runtime", "process", "--until", "ai-smoke")
    assert rc == 0, err
    assert [s["name"] for s in report["stages"]] == STAGES
    assert all(s["status"] == "pass" for s in report["stages"]), err
    jsonschema.validate(report, json_schema())
    run = next(s for s in report["stages"] if s["name"] == "run-with-memory-limit")
    peak = next(m["value"] for m in run["measurements"] if m["name"] == "peak_memory_bytes")
    assert 20 * 2**20 < peak < 2**30
    suite = ET.parse(tmp_path / "report" / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "0"
    assert (tmp_path / "report" / "lint.sarif").is_file()
    assert "## flightcheck passed" in (tmp_path / "report" / "summary.md").read_text()
    assert "flightcheck passed" in (tmp_path / "report" / "report.html").read_text()


@pytest.mark.slow
def test_run_stage_alone_waits_for_model_load_and_catches_the_oom(tmp_path: Path) -> None:
    """The port opens before the model loads: run-with-memory-limit on its own must still
    watch until startup completes, or an OOM at model load would pass."""
    rc, err, report = _ci(
        tmp_path, "--runtime", "process", "--only", "run-with-memory-limit",
        "--memory", "160Mi", "--service-env", "FAULT_STARTUP_ALLOC_MB=400",
    )
    assert rc == 1, err
    run = next(s for s in report["stages"] if s["name"] == "run-with-memory-limit")
    assert run["status"] == "fail"
    assert [f["code"] for f in run["findings"]] == ["run.oom"]
    assert "OOM-killed" in run["summary"] and "limit 160Mi" in run["summary"]
    assert "reproduce: flightcheck ci --only run-with-memory-limit" in err
