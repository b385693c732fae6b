"""Reports rendered from stage results: canonical JSON, JUnit XML, Markdown.

The JSON report is the source of truth (schema: ``schemas/report.schema.json``, versioned by
``schema_version``); JUnit and Markdown are views of it, so ``flightcheck report`` can
re-render them from a JSON file alone. SARIF is the lint stage's (``lint.sarif``).
"""

from __future__ import annotations

import html
import json
import platform
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from flightcheck import __version__
from flightcheck.errors import UsageError
from flightcheck.results import LessonResult, Severity, StageResult, Status, worst

SCHEMA_VERSION = "1.0"
JSON_NAME = "flightcheck-report.json"
JUNIT_NAME = "junit.xml"
MARKDOWN_NAME = "summary.md"
HTML_NAME = "report.html"
SARIF_NAME = "lint.sarif"
# What a run writes into --report-dir; cleared when a run starts, so that an interrupted run
# never leaves the previous run's reports looking current. Add new report files here.
KNOWN_FILES = (JSON_NAME, JUNIT_NAME, MARKDOWN_NAME, HTML_NAME, SARIF_NAME)

_ICON = {Status.PASS: "✅", Status.WARN: "⚠️", Status.FAIL: "❌", Status.SKIPPED: "⏭️"}


class Report(BaseModel):
    """The canonical report (``flightcheck-report.json``)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal["1.0"] = SCHEMA_VERSION
    tool: dict[str, str] = Field(
        default_factory=lambda: {
            "name": "flightcheck",
            "version": __version__,
            "python": platform.python_version(),
        }
    )
    started_at: str
    finished_at: str
    duration_s: float
    ok: bool = Field(description="true when every gate passed (exit code 0)")
    status: Status
    runtime: str | None = None
    config_path: str | None = None
    stages: list[StageResult]
    lessons: list[LessonResult] = Field(
        default_factory=list, description="the lessons' verdicts over the stages' evidence"
    )
    environment: str | None = Field(
        default=None, description="the [environments.X] whose AI parameters the service got"
    )

    @classmethod
    def build(
        cls,
        stages: list[StageResult],
        *,
        started: datetime,
        ok: bool,
        runtime: str | None = None,
        config_path: str | None = None,
        lessons: list[LessonResult] | None = None,
        environment: str | None = None,
    ) -> Report:
        finished = datetime.now(UTC)
        return cls(
            started_at=started.isoformat(timespec="seconds"),
            finished_at=finished.isoformat(timespec="seconds"),
            duration_s=round((finished - started).total_seconds(), 3),
            ok=ok,
            status=worst([s.status for s in stages]
                         + [x.status for x in lessons or [] if x.gate]),
            runtime=runtime,
            config_path=config_path,
            stages=stages,
            lessons=lessons or [],
            environment=environment,
        )


def json_schema() -> dict[str, Any]:
    """The committed JSON schema of the report."""
    text = resources.files("flightcheck").joinpath("schemas/report.schema.json").read_text()
    return json.loads(text)


def generated_schema() -> dict[str, Any]:
    schema = Report.model_json_schema()
    _stage_details(schema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://flightcheck.dev/schemas/report-{SCHEMA_VERSION}.json"
    return schema


def _stage_details(schema: dict[str, Any]) -> None:
    """Typed ``details`` for the stages that have them, selected by the stage's name."""
    from flightcheck.results import DeployDetails

    typed = DeployDetails.model_json_schema(ref_template="#/$defs/{model}")
    defs = schema.setdefault("$defs", {})
    defs.update(typed.pop("$defs", {}))
    defs["DeployDetails"] = typed
    defs["StageResult"]["allOf"] = [{
        "if": {"properties": {"name": {"const": "deploy"}}},
        "then": {"properties": {"details": {"$ref": "#/$defs/DeployDetails"}}},
    }]


# --- writers -----------------------------------------------------------------------------


def clear(report_dir: Path) -> None:
    """Remove the report files of an earlier run (only the files flightcheck writes)."""
    for name in KNOWN_FILES:
        (report_dir / name).unlink(missing_ok=True)


def redact_results(results: list[StageResult], redact: Callable[[str], str]) -> list[StageResult]:
    """Every string in the results through ``redact``: the last pass before text leaves."""

    def walk(value: object) -> object:
        if isinstance(value, str):
            return redact(value)
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        return value

    return [StageResult.model_validate(walk(r.model_dump(mode="json"))) for r in results]


def write_all(report: Report, report_dir: Path) -> dict[str, Path]:
    """Write JSON, JUnit and Markdown into ``report_dir``; returns their paths."""
    report_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": report_dir / JSON_NAME,
        "junit": report_dir / JUNIT_NAME,
        "markdown": report_dir / MARKDOWN_NAME,
        "html": report_dir / HTML_NAME,
    }
    paths["json"].write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    paths["junit"].write_bytes(to_junit(report))
    paths["markdown"].write_text(to_markdown(report), encoding="utf-8")
    paths["html"].write_text(to_html(report), encoding="utf-8")
    return paths


def load(path: Path) -> Report:
    """Read a JSON report (a file or a report directory)."""
    file = path / JSON_NAME if path.is_dir() else path
    try:
        return Report.model_validate_json(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(
            f"no report at {file}",
            fix="run `flightcheck ci` first, or pass --report-dir where it wrote its report",
            repro="flightcheck ci",
        ) from None
    except ValueError as exc:
        raise UsageError(
            f"{file} is not a flightcheck {SCHEMA_VERSION} report: {str(exc).splitlines()[0]}",
            fix="re-run `flightcheck ci` to write a fresh report",
        ) from None


def _location(f_file: str | None, line: int | None) -> str:
    if not f_file:
        return ""
    return f"{f_file}:{line}" if line else f_file


_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
# Characters XML 1.0 cannot hold at all (not even escaped).
_XML_INVALID = re.compile(r"[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(text: str) -> str:
    """``text`` as XML 1.0 can hold it: terminal colour codes dropped, other characters XML
    forbids (NUL, \\x01, lone surrogates, ...) shown as ``\\xNN``."""
    text = _ANSI.sub("", text)
    return _XML_INVALID.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text)


def _xml_clean(node: ET.Element) -> None:
    for el in node.iter():
        if el.text:
            el.text = xml_text(el.text)
        for key, value in el.attrib.items():
            el.set(key, xml_text(value))


def to_junit(report: Report) -> bytes:
    """JUnit XML: one testcase per stage, one more per error/warning finding. Always
    well-formed, whatever the service printed."""
    suites = ET.Element("testsuites", name="flightcheck", time=f"{report.duration_s:.3f}")
    suite = ET.SubElement(suites, "testsuite", name="flightcheck", timestamp=report.started_at)
    counts = {"tests": 0, "failures": 0, "skipped": 0, "errors": 0}
    for stage in report.stages:
        case = ET.SubElement(
            suite, "testcase", classname=f"flightcheck.{stage.name}", name=stage.name,
            time=f"{stage.duration_s:.3f}",
        )
        counts["tests"] += 1
        if stage.status is Status.FAIL:
            counts["failures"] += 1
            fail = ET.SubElement(case, "failure", message=stage.summary or "failed", type="gate")
            fail.text = "\n".join(
                [stage.summary, f"reproduce: {stage.repro.local}", f"dagger: {stage.repro.dagger}"]
            )
        elif stage.status is Status.SKIPPED:
            counts["skipped"] += 1
            ET.SubElement(case, "skipped", message=stage.summary or "skipped")
        out = ET.SubElement(case, "system-out")
        out.text = "\n".join(
            f"{m.name}={m.value}{(' ' + m.unit) if m.unit else ''}" for m in stage.measurements
        )
        for i, f in enumerate(stage.findings):
            if f.severity is Severity.INFO:
                continue
            where = _location(f.file, f.line)
            fcase = ET.SubElement(
                suite, "testcase", classname=f"flightcheck.{stage.name}.{f.category}",
                name=f"{f.code} {where}".strip() + f" #{i + 1}", time="0",
            )
            if f.file:
                fcase.set("file", f.file)
            if f.line:
                fcase.set("line", str(f.line))
            counts["tests"] += 1
            if f.severity is Severity.ERROR:
                counts["failures"] += 1
                node = ET.SubElement(fcase, "failure", message=f.message, type=f.category)
            else:
                node = ET.SubElement(fcase, "system-out")
            node.text = f.message + (f"\nfix: {f.fix}" if f.fix else "")
    for key, value in counts.items():
        suite.set(key, str(value))
        suites.set(key, str(value))
    suite.set("time", f"{report.duration_s:.3f}")
    _xml_clean(suites)
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n"


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~])")


def _md(text: str) -> str:
    """Text for a Markdown line that GitHub renders as text: HTML escaped (no <script>, no
    <img onerror>), Markdown punctuation escaped (no links, images or code spans smuggled in),
    one line, no control characters."""
    text = xml_text(text).replace("\r", " ").replace("\n", " ")
    return _MD_SPECIAL.sub(r"\\\1", html.escape(text, quote=False))


def _code(text: str) -> str:
    """Inline code that no backtick or tag inside can break out of."""
    return f"<code>{html.escape(xml_text(text).replace(chr(10), ' '))}</code>"


def to_markdown(report: Report, *, max_findings: int = 20) -> str:
    """A summary for people and for ``$GITHUB_STEP_SUMMARY``. Everything from the report is
    escaped: a service's output must not become HTML or links on a CI page."""
    verdict = "passed" if report.ok else "failed"
    lines = [
        f"## flightcheck {verdict} {_ICON[Status.PASS] if report.ok else _ICON[Status.FAIL]}",
        "",
        f"runtime {_code(report.runtime or '-')} · {report.duration_s:.1f}s · "
        f"flightcheck {_md(report.tool.get('version', '?'))}",
        "",
        "| stage | status | time | summary |",
        "|---|---|---:|---|",
    ]
    for s in report.stages:
        lines.append(
            f"| {_md(s.name)} | {_ICON[s.status]} {s.status.value} | {s.duration_s:.2f}s | "
            f"{_md(s.summary)} |"
        )
    for s in report.stages:
        if not (s.findings or s.measurements) or s.status is Status.SKIPPED:
            continue
        lines += ["", f"### {_md(s.name)}", ""]
        if s.measurements:
            lines.append(
                " · ".join(f"{_md(m.name)} **{_md(str(m.value))}**"
                           f"{(' ' + _md(m.unit)) if m.unit else ''}"
                           for m in s.measurements)
            )
            lines.append("")
        shown = [f for f in s.findings if f.severity is not Severity.INFO][:max_findings]
        for f in shown:
            where = _location(f.file, f.line)
            lines.append(
                f"- **{f.severity.value}** {_code(f.code)} {(_md(where) + ' ') if where else ''}"
                f"{_md(f.message)}" + (f" — _fix:_ {_md(f.fix)}" if f.fix else "")
            )
        extra = len([f for f in s.findings if f.severity is not Severity.INFO]) - len(shown)
        if extra > 0:
            lines.append(f"- … and {extra} more in flightcheck-report.json")
        if s.status is Status.FAIL:
            lines += ["", f"Reproduce: {_code(s.repro.local)} · in Dagger: {_code(s.repro.dagger)}"]
    lines += _lessons_markdown(report, max_findings)
    return "\n".join(lines) + "\n"


_CSS = (
    "body{font:14px/1.45 system-ui,sans-serif;margin:2rem;max-width:70rem}"
    "table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;"
    "padding:.35rem .5rem;text-align:left;vertical-align:top}"
    ".pass{color:#1a7f37}.warn{color:#9a6700}.fail{color:#cf222e}.skipped{color:#6e7781}"
    "code{background:#f6f8fa;padding:0 .2rem}"
)


def to_html(report: Report, *, max_findings: int = 50) -> str:
    """A self-contained HTML page (no scripts, no external assets) for CI artifacts."""
    def e(text: str) -> str:  # escaped, and no terminal escapes or XML-invalid characters
        return html.escape(xml_text(text))

    verdict = "passed" if report.ok else "failed"
    rows = "".join(
        f'<tr id="stage-{e(s.name)}"><td>{e(s.name)}</td><td class="{s.status.value}">{s.status.value}</td>'
        f"<td>{s.duration_s:.2f}s</td><td>{e(s.summary)}</td></tr>"
        for s in report.stages
    )
    sections = []
    for s in report.stages:
        if s.status is Status.SKIPPED or not (s.findings or s.measurements):
            continue
        meas = ", ".join(
            f"{e(m.name)} <b>{e(str(m.value))}</b>{(' ' + e(m.unit)) if m.unit else ''}"
            for m in s.measurements
        )
        items = "".join(
            f'<li class="{f.severity.value}"><b>{e(f.severity.value)}</b> <code>{e(f.code)}</code> '
            f"{e(_location(f.file, f.line))} {e(f.message)}"
            + (f" — <i>fix:</i> {e(f.fix)}" if f.fix else "")
            + "</li>"
            for f in s.findings[:max_findings]
            if f.severity is not Severity.INFO
        )
        repro = (
            f"<p>Reproduce: <code>{e(s.repro.local)}</code> · in Dagger: "
            f"<code>{e(s.repro.dagger)}</code></p>"
            if s.status is Status.FAIL
            else ""
        )
        sections.append(f"<h2>{e(s.name)}</h2><p>{meas}</p><ul>{items}</ul>{repro}")
    return (
        '<!doctype html><html lang="en"><meta charset="utf-8">'
        f"<title>flightcheck {verdict}</title><style>{_CSS}</style>"
        f'<h1 class="{"pass" if report.ok else "fail"}">flightcheck {verdict}</h1>'
        f"<p>runtime <code>{e(report.runtime or '-')}</code> · {report.duration_s:.1f}s · "
        f"{e(report.started_at)}</p>"
        "<table><tr><th>stage</th><th>status</th><th>time</th><th>summary</th></tr>"
        f"{rows}</table>{''.join(sections)}{_lessons_html(report, max_findings)}</html>\n"
    )


# --- lessons (parity, resources, cost, quality, readiness, monitoring) ----------------------


def _lessons_markdown(report: Report, max_findings: int) -> list[str]:
    from flightcheck.lessons.readiness import markdown_section

    if not report.lessons:
        return markdown_section(report)
    lines = ["", "## Lessons", "", "| lesson | status | summary |", "|---|---|---|"]
    for x in report.lessons:
        gate = "" if x.gate else " (report)"
        lines.append(f"| {x.name}{gate} | {_ICON[x.status]} {x.status.value} | "
                     f"{_md(x.summary)} |")
    for x in report.lessons:
        shown = [f for f in x.findings if f.severity is not Severity.INFO][:max_findings]
        if not shown:
            continue
        lines += ["", f"### {x.name}", ""]
        lines += [f"- **{f.severity.value}** {_code(f.code)} {_md(f.message)}"
                  + (f" — _fix:_ {_md(f.fix)}" if f.fix else "") for f in shown]
        if x.status is Status.FAIL:
            lines += ["", f"Reproduce: {_code(x.repro.local)} · in Dagger: {_code(x.repro.dagger)}"]
    return lines + markdown_section(report)


def _lessons_html(report: Report, max_findings: int) -> str:
    from html import escape as e

    from flightcheck.lessons.readiness import html_sections

    if not report.lessons:
        return html_sections(report)
    rows = "".join(
        f'<tr id="lesson-{e(x.name)}"><td>{e(x.name)}</td><td class="{x.status.value}">'
        f"{x.status.value}</td><td>{e(x.summary)}</td></tr>"
        for x in report.lessons
    )
    items = []
    for x in report.lessons:
        shown = [f for f in x.findings if f.severity is not Severity.INFO][:max_findings]
        if not shown:
            continue
        lis = "".join(
            f'<li class="{f.severity.value}"><b>{e(f.severity.value)}</b> <code>{e(f.code)}</code> '
            f"{e(f.message)}" + (f" — <i>fix:</i> {e(f.fix)}" if f.fix else "") + "</li>"
            for f in shown
        )
        items.append(f"<h3>{e(x.name)}</h3><ul>{lis}</ul>")
    return (
        "<h2>Lessons</h2><table><tr><th>lesson</th><th>status</th><th>summary</th></tr>"
        f"{rows}</table>{''.join(items)}{html_sections(report)}"
    )
