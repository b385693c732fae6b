"""The production-readiness report: evidence-linked items, manual items never ticked, and the
HTML page (timeline + memory chart) rendered in a real headless Chromium."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from browser import chromium, load
from lessons_support import REPO, Run, evidence, flightcheck, stage

from flightcheck.lessons import readiness
from flightcheck.report import Report, to_html, to_markdown
from flightcheck.report import load as load_report
from flightcheck.results import Finding, Severity, Status

ARTIFACTS = Path(os.environ.get("FLIGHTCHECK_TEST_ARTIFACTS", REPO / "test-artifacts"))
needs_browser = pytest.mark.skipif(chromium() is None,
                                   reason="Debian's chromium is not installed (scripts/provision.sh installs it)")


def _items(res: Any) -> dict[str, dict[str, Any]]:
    return {i["id"]: i for i in res.details["items"]}


def test_manual_items_are_never_ticked_and_missing_evidence_is_not_run(tmp_path: Path) -> None:
    res = readiness.evaluate(evidence([], "[service]\nname='x'\n", tmp_path), [])
    items = _items(res)
    manual = [i for i in items.values() if i["status"] == "manual"]
    assert len(manual) >= 4 and all(i["note"] and not i["evidence"] for i in manual)
    assert items["code.syntax"]["status"] == "not-run"  # no lint ran: nothing to tick
    assert items["ai.cost"]["status"] == "not-run"
    assert res.gate is False and res.status is Status.WARN
    assert {i["category"] for i in items.values()} == set(readiness.CATEGORIES)


def test_items_follow_their_evidence(tmp_path: Path) -> None:
    lint = stage("lint", Status.FAIL, measurements={"findings.secret": 1, "findings.syntax": 0})
    lint.findings.append(Finding(code="FC301", category="secret", message="key", file="a.py", line=3,
                                 severity=Severity.ERROR))
    run = stage("run-with-memory-limit", measurements={"peak_to_limit": 0.5})
    res = readiness.evaluate(evidence([lint, run], "[service]\nname='x'\n[deploy]\n"
                                      "allow_unauthenticated=true\n", tmp_path), [])
    items = _items(res)
    assert items["security.secrets"]["status"] == "fail"
    assert items["security.secrets"]["evidence"][0] == {
        "text": "lint findings.secret = 1", "pointer": "/stages/0/measurements/0", "anchor": "stage-lint"}
    assert items["code.syntax"]["status"] == "pass"
    assert items["container.memory"]["status"] == "pass"
    assert items["container.memory"]["evidence"][1]["pointer"] == "/stages/1/measurements/0"
    assert items["security.auth"]["status"] == "warn"
    assert "deploy.allow_unauthenticated = True" in items["security.auth"]["evidence"][0]["text"]
    assert res.status is Status.FAIL


@pytest.mark.slow
def test_every_ci_run_carries_the_checklist_timeline_and_memory(healthy: Run) -> None:
    lesson = healthy.lesson("readiness")
    items = {i["id"]: i for i in lesson["details"]["items"]}
    assert items["ai.answers"]["status"] == "pass"
    assert items["container.startup"]["evidence"][0]["anchor"] == "stage-health-poll"
    assert items["monitoring.applied"]["status"] == "manual"
    run = healthy.stage("run-with-memory-limit")
    assert len(run["details"]["memory_samples"]) >= 3
    assert all(s["started_at"] for s in healthy.report["stages"])
    md = (healthy.report_dir / "summary.md").read_text()
    assert "## Production readiness" in md and "## Timeline" in md and "Memory over time" in md
    again = flightcheck("report", "--report-dir", str(healthy.report_dir))
    assert "## Production readiness" in again.stdout  # `flightcheck report` re-renders it


def test_the_html_escapes_what_a_report_carries(tmp_path: Path) -> None:
    rep = load_report(_fixture_report(tmp_path))
    rep.lessons[-1].details["items"][0]["title"] = "<script>alert(1)</script>"  # type: ignore[index]
    html = to_html(rep)
    assert "<script>" not in html and "&lt;script&gt;" in html


def _fixture_report(tmp_path: Path) -> Path:
    from datetime import UTC, datetime

    from flightcheck.lessons.evidence import Evidence

    stages = [stage("lint", started_at=1000.0, duration_s=0.5,
                    measurements={"findings.syntax": 0}),
              stage("run-with-memory-limit", started_at=1000.5, duration_s=1.0,
                    measurements={"memory_limit_bytes": 512 * 2**20},
                    details={"memory_samples": [[1000.6, 10 * 2**20], [1001.0, 60 * 2**20],
                                                [1002.0, 80 * 2**20]]}),
              stage("health-poll", started_at=1001.5, duration_s=0.7)]
    ev: Evidence = evidence(stages, "[service]\nname='x'\n", tmp_path)
    rep = Report.build(stages, started=datetime.now(UTC), ok=True,
                       lessons=[readiness.evaluate(ev, [])])
    path = tmp_path / "r.json"
    path.write_text(rep.model_dump_json())
    return path


def test_svg_chart_and_timeline_from_samples(tmp_path: Path) -> None:
    rep = load_report(_fixture_report(tmp_path))
    chart = readiness.memory_svg(rep)
    assert chart.count("<polyline") == 1 and "peak 80.0 MiB" in chart and "limit 512 MiB" in chart
    assert readiness.timeline_svg(rep).count("<rect") == 3
    assert "▁" in to_markdown(rep) or "█" in to_markdown(rep)


@pytest.mark.slow
@needs_browser
def test_the_html_report_renders_in_headless_chromium(healthy: Run) -> None:
    out = ARTIFACTS / "readiness"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(healthy.report_dir, out)
    page = load((out / "report.html").resolve().as_uri(), {
        "chart": "!!document.querySelector('#memory-chart polyline') && "
                 "document.querySelector('#memory-chart polyline').getAttribute('points').split(' ').length",
        "chart_box": "(() => { const r = document.querySelector('#memory-chart').getBoundingClientRect();"
                     " return [r.width, r.height]; })()",
        "bars": "document.querySelectorAll('#timeline rect').length",
        "items": "document.querySelectorAll('#readiness-checklist tr').length - 1",
        "links_resolve": "[...document.querySelectorAll('#readiness-checklist a[href^=\"#\"]')]"
                         ".every(a => document.getElementById(a.getAttribute('href').slice(1)))",
        "scripts": "document.scripts.length",
    }, screenshot=out / "report.png")
    assert page.errors == [], page.errors
    assert page.values["chart"] and page.values["chart"] >= 3
    assert page.values["chart_box"][0] > 300 and page.values["chart_box"][1] > 50
    assert page.values["bars"] == 5
    assert page.values["items"] >= 25
    assert page.values["links_resolve"] is True
    assert page.values["scripts"] == 0
    png = (out / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


@needs_browser
def test_the_browser_check_catches_console_errors(tmp_path: Path) -> None:
    """The detector can fail: a page that logs an error and throws is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!doctype html><title>x</title><script>console.error('boom');"
                   "no_such_function();</script><img src='missing.png'>")
    page = load(bad.as_uri(), {"title": "document.title"})
    assert page.values["title"] == "x"
    assert any("boom" in e for e in page.errors)
    assert any("no_such_function" in e for e in page.errors)
