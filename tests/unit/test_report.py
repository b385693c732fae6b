"""Report writers: JSON validates against the committed schema, JUnit parses, Markdown renders."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import jsonschema

from flightcheck.report import (
    Report,
    generated_schema,
    json_schema,
    load,
    to_html,
    to_markdown,
    write_all,
)
from flightcheck.results import Finding, Repro, Severity, StageResult, Status


def _report() -> Report:
    repro = Repro(local="flightcheck ci --only lint", dagger="dagger call lint --source=.")
    lint = StageResult(
        name="lint", status=Status.FAIL, duration_s=0.5, summary="2 findings", repro=repro,
        findings=[
            Finding(code="FC101", category="syntax", message="invalid syntax | here", file="a.py", line=3, col=1),
            Finding(code="FC501", category="ai-model-pin", severity=Severity.WARNING, message="floating", file="b.py", line=9),
        ],
    )
    lint.measure("files", 12)
    build = StageResult(name="build", status=Status.SKIPPED, summary="skipped: lint did not pass", repro=repro)
    return Report.build([lint, build], started=datetime.now(UTC), ok=False, runtime="docker")


def test_committed_schema_matches_the_model() -> None:
    assert json_schema() == generated_schema(), "run: python -c 'from flightcheck.report import ...' to regenerate"


def test_json_validates_and_round_trips(tmp_path: Path) -> None:
    paths = write_all(_report(), tmp_path)
    data = json.loads(paths["json"].read_text())
    jsonschema.validate(data, json_schema())
    assert data["schema_version"] == "1.0"
    assert [s["name"] for s in data["stages"]] == ["lint", "build"]
    assert {"name", "status", "duration_s", "findings", "measurements", "repro"} <= set(data["stages"][0])
    assert load(tmp_path).stages[0].findings[0].line == 3


def test_schema_rejects_a_bad_status(tmp_path: Path) -> None:
    data = json.loads(_report().model_dump_json())
    data["stages"][0]["status"] = "great"
    try:
        jsonschema.validate(data, json_schema())
    except jsonschema.ValidationError:
        return
    raise AssertionError("schema accepted an unknown status")


def test_junit_parses_and_counts(tmp_path: Path) -> None:
    paths = write_all(_report(), tmp_path)
    root = ET.parse(paths["junit"]).getroot()
    suite = root.find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    # 2 stages + 2 findings (error and warning)
    assert len(cases) == 4
    assert suite.get("tests") == "4"
    assert suite.get("failures") == "2"  # lint stage + the error finding
    assert suite.get("skipped") == "1"
    failing = [c for c in cases if c.find("failure") is not None]
    assert {c.get("name") for c in failing} == {"lint", "FC101 a.py:3 #1"}
    lint_failure = cases[0].find("failure")
    assert lint_failure is not None and "flightcheck ci --only lint" in (lint_failure.text or "")


def test_markdown_summary() -> None:
    md = to_markdown(_report())
    assert md.startswith("## flightcheck failed")
    assert "| lint | ❌ fail |" in md
    assert "| build | ⏭️ skipped |" in md
    assert "invalid syntax \\| here" in md
    assert "Reproduce: <code>flightcheck ci --only lint</code>" in md


def test_report_command_rerenders(tmp_path: Path) -> None:
    write_all(_report(), tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "flightcheck.cli", "report", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, check=False,
    )
    assert out.returncode == 1  # the report says a gate failed
    assert "## flightcheck failed" in out.stdout


def test_report_command_without_report(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "flightcheck.cli", "report", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, check=False,
    )
    assert out.returncode == 2
    assert "no report at" in out.stderr and "Traceback" not in out.stderr


def test_html_report_is_escaped_and_complete(tmp_path: Path) -> None:
    from html.parser import HTMLParser

    paths = write_all(_report(), tmp_path)
    page = paths["html"].read_text()
    assert page.startswith("<!doctype html>") and "<script" not in page

    class Cells(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.text: list[str] = []

        def handle_data(self, data: str) -> None:
            self.text.append(data)

    cells = Cells()
    cells.feed(page)
    text = "".join(cells.text)
    assert "flightcheck failed" in text
    assert "invalid syntax | here" in text  # the message survives, escaped
    assert "flightcheck ci --only lint" in text
    assert '<td class="skipped">skipped</td>' in page
    hostile = _report()
    hostile.stages[0].findings[0].message = "<script>alert(1)</script>"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in to_html(hostile)
    assert "<script>" not in to_html(hostile)
