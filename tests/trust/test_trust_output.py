"""Reports and the terminal survive hostile text, and failures are obvious: real runs of the
CLI against a service that prints terminal escapes, control characters and HTML."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
from trust_support import ci, project, reports

pytestmark = pytest.mark.slow


class _Tags(HTMLParser):
    """Every element and every link target in a piece of HTML."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.links += [v or "" for k, v in attrs if k in ("href", "src")]


def _html_of_markdown(text: str) -> _Tags:
    """Render like GitHub does a step summary: CommonMark + tables, raw HTML allowed."""
    from markdown_it import MarkdownIt

    parser = _Tags()
    parser.feed(MarkdownIt("commonmark", {"html": True}).enable("table").render(text))
    return parser


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One run of a service that prints hostile text and crashes at start."""
    proj = project(tmp_path_factory.mktemp("crash"), '\n[service.env]\nHOSTILE_CRASH = "1"\n')
    out = ci(proj, "--runtime", "process", "--until", "run-with-memory-limit")
    assert out.returncode == 1, out.stderr
    return proj, out.stderr


def test_junit_is_well_formed_whatever_the_service_printed(crashed: tuple[Path, str]) -> None:
    proj, _ = crashed
    root = ET.fromstring(reports(proj)["junit.xml"].encode())  # raises on invalid XML
    text = ET.tostring(root, encoding="unicode")
    assert "boom-at-start" in text and "\x1b" not in text and "\x01" not in text


def test_the_markdown_summary_renders_no_html_from_the_service(crashed: tuple[Path, str]) -> None:
    proj, _ = crashed
    md = reports(proj)["summary.md"]
    assert "boom-at-start" in md
    rendered = _html_of_markdown(md)
    assert not {"script", "img", "iframe", "a"} & set(rendered.tags), rendered.tags
    assert not any(link.startswith("javascript:") for link in rendered.links)
    page = _Tags()
    page.feed(reports(proj)["report.html"])
    assert "script" not in page.tags and "img" not in page.tags


def test_the_terminal_gets_no_control_characters_from_the_service(
    crashed: tuple[Path, str],
) -> None:
    _, stderr = crashed
    assert "\x1b" not in stderr and "\x07" not in stderr and "\x01" not in stderr
    assert "\u202e" not in stderr
    assert "\\x1b]0;pwned-title" in stderr  # shown, not obeyed


def test_a_crash_at_start_shows_its_traceback_on_the_console(crashed: tuple[Path, str]) -> None:
    _, stderr = crashed
    summary = stderr[stderr.index("FAIL  run-with-memory-limit"):]
    assert "last log lines of the service:" in summary
    assert "RuntimeError: boom-at-start" in summary


def test_a_coloured_terminal_survives_markup_in_service_text(tmp_path: Path) -> None:
    """On a terminal, progress lines go through rich: text like "[/]" must stay text."""
    suite = """\
version: 1
cases:
  - name: "[/] [bold red]not a style[/bold red] [link=javascript:x]y"
    request: {path: /echo}
"""
    proj = project(tmp_path, suite=suite)
    out = ci(proj, "--runtime", "process", "--only", "ai-smoke",
             env={"FORCE_COLOR": "1", "TTY_COMPATIBLE": "1", "COLUMNS": "200"})
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr and "MarkupError" not in out.stderr
    progress = [ln for ln in out.stderr.splitlines() if "ai-smoke" in ln and "smoke.yaml" not in ln
                and "not a style" in ln]
    assert progress, out.stderr
    progress = progress[0]
    assert "case [/] [bold red]not a style[/bold red] [link=javascript:x]y" in progress
    assert "\x1b]8;" not in out.stderr  # no hyperlink smuggled into the terminal


def test_old_reports_do_not_survive_a_run_that_wrote_none(tmp_path: Path) -> None:
    proj = project(tmp_path, suite=None)  # refused before anything runs (no suite)
    report = proj.parent / "report"
    report.mkdir()
    for name in ("flightcheck-report.json", "junit.xml", "summary.md", "report.html",
                 "lint.sarif"):
        (report / name).write_text("stale: the previous run\n")
    (report / "notes.txt").write_text("not ours\n")
    out = ci(proj, "--runtime", "process")
    assert out.returncode == 2
    assert sorted(p.name for p in report.iterdir()) == ["notes.txt"]


# --- failures are obvious -------------------------------------------------------------------


def test_a_startup_path_that_answers_404_fails_fast_with_the_hint(tmp_path: Path) -> None:
    proj = project(tmp_path, '\n[service.env]\nHOSTILE_STARTUP = "404"\n')
    toml = (proj / "flightcheck.toml").read_text().replace("failure_threshold = 10",
                                                            "failure_threshold = 120")
    (proj / "flightcheck.toml").write_text(toml)
    began = time.monotonic()
    out = ci(proj, "--runtime", "process", "--until", "health-poll")
    took = time.monotonic() - began
    assert out.returncode == 1, out.stderr
    assert took < 60, f"waited {took:.0f} s of a 120 s window for a path that does not exist"
    health = next(s for s in json.loads(reports(proj)["flightcheck-report.json"])["stages"]
                  if s["name"] == "health-poll")
    finding = health["findings"][0]
    assert finding["code"] == "health.startup-not-found"
    assert "[health.startup].path" in finding["fix"] and "/healthz" in finding["message"]


def test_strict_cloud_run_semantics_wait_out_the_window(tmp_path: Path) -> None:
    proj = project(tmp_path, '\n[health]\nstrict_cloud_run = true\n\n[service.env]\n'
                   'HOSTILE_STARTUP = "404"\n')
    toml = (proj / "flightcheck.toml").read_text().replace("failure_threshold = 10",
                                                            "failure_threshold = 4")
    (proj / "flightcheck.toml").write_text(toml)
    out = ci(proj, "--runtime", "process", "--until", "health-poll")
    assert out.returncode == 1, out.stderr
    health = next(s for s in json.loads(reports(proj)["flightcheck-report.json"])["stages"]
                  if s["name"] == "health-poll")
    assert health["findings"][0]["code"] == "health.startup-timeout"


def test_a_wrong_answer_without_a_model_call_says_so(tmp_path: Path) -> None:
    suite = """\
version: 1
cases:
  - name: answer
    request: {path: /answer}
    expect:
      json: [{path: answer, equals: 4}]
"""
    proj = project(tmp_path, suite=suite)
    out = ci(proj, "--runtime", "process", "--only", "ai-smoke")
    assert out.returncode == 1, out.stderr
    smoke = next(s for s in json.loads(reports(proj)["flightcheck-report.json"])["stages"]
                 if s["name"] == "ai-smoke")
    finding = next(f for f in smoke["findings"] if f["code"] == "smoke.equals")
    assert "never called the model" in finding["fix"]
