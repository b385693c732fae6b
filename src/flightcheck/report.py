"""Reports rendered from stage results: canonical JSON, JUnit XML, Markdown.

The JSON report is the source of truth (schema: ``schemas/report.schema.json``, versioned by
``schema_version``); JUnit and Markdown are views of it, so ``flightcheck report`` can
re-render them from a JSON file alone. SARIF is the lint stage's (``lint.sarif``).
"""

from __future__ import annotations

import json
import platform
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from flightcheck import __version__
from flightcheck.errors import UsageError
from flightcheck.results import Severity, StageResult, Status, worst

SCHEMA_VERSION = "1.0"
JSON_NAME = "flightcheck-report.json"
JUNIT_NAME = "junit.xml"
MARKDOWN_NAME = "summary.md"
HTML_NAME = "report.html"

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

    @classmethod
    def build(
        cls,
        stages: list[StageResult],
        *,
        started: datetime,
        ok: bool,
        runtime: str | None = None,
        config_path: str | None = None,
    ) -> Report:
        finished = datetime.now(UTC)
        return cls(
            started_at=started.isoformat(timespec="seconds"),
            finished_at=finished.isoformat(timespec="seconds"),
            duration_s=round((finished - started).total_seconds(), 3),
            ok=ok,
            status=worst([s.status for s in stages]),
            runtime=runtime,
            config_path=config_path,
            stages=stages,
        )


def json_schema() -> dict[str, Any]:
    """The committed JSON schema of the report."""
    text = resources.files("flightcheck").joinpath("schemas/report.schema.json").read_text()
    return json.loads(text)


def generated_schema() -> dict[str, Any]:
    schema = Report.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://flightcheck.dev/schemas/report-{SCHEMA_VERSION}.json"
    return schema


# --- writers -----------------------------------------------------------------------------


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


def to_junit(report: Report) -> bytes:
    """JUnit XML: one testcase per stage, one more per error/warning finding."""
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
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(report: Report, *, max_findings: int = 20) -> str:
    """A summary for people and for ``$GITHUB_STEP_SUMMARY``."""
    verdict = "passed" if report.ok else "failed"
    lines = [
        f"## flightcheck {verdict} {_ICON[Status.PASS] if report.ok else _ICON[Status.FAIL]}",
        "",
        f"runtime `{report.runtime or '-'}` · {report.duration_s:.1f}s · "
        f"flightcheck {report.tool.get('version', '?')}",
        "",
        "| stage | status | time | summary |",
        "|---|---|---:|---|",
    ]
    for s in report.stages:
        lines.append(
            f"| {s.name} | {_ICON[s.status]} {s.status.value} | {s.duration_s:.2f}s | "
            f"{_md_escape(s.summary)} |"
        )
    for s in report.stages:
        if not (s.findings or s.measurements) or s.status is Status.SKIPPED:
            continue
        lines += ["", f"### {s.name}", ""]
        if s.measurements:
            lines.append(
                " · ".join(f"{m.name} **{m.value}**{(' ' + m.unit) if m.unit else ''}"
                           for m in s.measurements)
            )
            lines.append("")
        shown = [f for f in s.findings if f.severity is not Severity.INFO][:max_findings]
        for f in shown:
            where = _location(f.file, f.line)
            lines.append(
                f"- **{f.severity.value}** `{f.code}` {(where + ' ') if where else ''}"
                f"{_md_escape(f.message)}" + (f" — _fix:_ {_md_escape(f.fix)}" if f.fix else "")
            )
        extra = len([f for f in s.findings if f.severity is not Severity.INFO]) - len(shown)
        if extra > 0:
            lines.append(f"- … and {extra} more in flightcheck-report.json")
        if s.status is Status.FAIL:
            lines += ["", f"Reproduce: `{s.repro.local}` · in Dagger: `{s.repro.dagger}`"]
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
    from html import escape as e

    verdict = "passed" if report.ok else "failed"
    rows = "".join(
        f'<tr><td>{e(s.name)}</td><td class="{s.status.value}">{s.status.value}</td>'
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
        f"{rows}</table>{''.join(sections)}</html>\n"
    )
