"""The three ways out of a lint run: text for people, JSON for scripts, SARIF 2.1.0 for
GitHub code scanning."""

from __future__ import annotations

from collections import Counter
from typing import Any

from flightcheck import __version__
from flightcheck.lint.engine import LintReport
from flightcheck.lint.rules import RULES
from flightcheck.results import Finding, Severity

_SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
_SARIF_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}
_COLOR = {
    Severity.ERROR: "\x1b[1;31m",
    Severity.WARNING: "\x1b[33m",
    Severity.INFO: "\x1b[36m",
    "dim": "\x1b[2m",
    "bold": "\x1b[1m",
    "reset": "\x1b[0m",
}


def to_json(report: LintReport) -> list[dict[str, Any]]:
    """One object per finding; ``file`` is relative to the scanned root."""
    return [
        {
            "file": f.file,
            "line": f.line,
            "col": f.col,
            "code": f.code,
            "category": f.category,
            "severity": f.severity.value,
            "message": f.message,
            "fix": f.fix,
        }
        for f in report.findings
    ]


def render_text(report: LintReport, color: bool = False) -> str:
    """Findings grouped by file as ``file:line:col: CODE message``, each with its fix hint,
    then a summary. ANSI colour when ``color``."""

    def paint(text: str, key: Severity | str) -> str:
        return f"{_COLOR[key]}{text}{_COLOR['reset']}" if color else text

    out: list[str] = []
    current: str | None = None
    explained: set[str] = set()  # each code's fix hint is printed once
    for f in report.findings:
        if f.file != current:
            if current is not None:
                out.append("")
            current = f.file
            out.append(paint(f.file or "<no file>", "bold"))
        where = f"{f.file}:{f.line or 1}:{f.col or 1}"
        sev = paint(f"{f.severity.value:<7}", f.severity)
        out.append(f"  {where}: {sev} {f.code} [{f.category}] {f.message}")
        if f.fix and f.code not in explained:
            explained.add(f.code)
            out.append(paint(f"      fix: {f.fix}", "dim"))
    if report.findings:
        out.append("")
    for s in report.skipped:
        out.append(paint(f"{'not checked' if s.unchecked else 'skipped'} {s.file}: {s.reason}",
                         "dim"))
    for note in report.notes:
        out.append(paint(f"note: {note}", "dim"))
    out.append(summary(report, color=color))
    return "\n".join(out) + "\n"


def summary(report: LintReport, *, color: bool = False) -> str:
    errors, warnings = report.count(Severity.ERROR), report.count(Severity.WARNING)
    head = f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}"
    if color and errors:
        head = f"{_COLOR[Severity.ERROR]}{head}{_COLOR['reset']}"
    text = (
        f"{head} in {report.files} file{'s' * (report.files != 1)} ({report.lines:,} lines) "
        f"in {report.seconds:.2f} s"
    )
    cats = Counter(f.category for f in report.findings)
    if cats:
        text += " — " + ", ".join(f"{c} {n}" for c, n in sorted(cats.items()))
    unchecked = len(report.unchecked)
    if unchecked:
        text += f"; {unchecked} not checked"
    if len(report.skipped) > unchecked:
        text += f"; {len(report.skipped) - unchecked} skipped"
    return text


def _sarif_rule(code: str) -> dict[str, Any]:
    rule = RULES[code]
    return {
        "id": rule.code,
        "name": rule.name,
        "shortDescription": {"text": rule.why.split(". ")[0].rstrip(".") + "."},
        "fullDescription": {"text": rule.why},
        "help": {
            "text": f"{rule.fix}\nFlagged:\n{rule.example_bad}\nInstead:\n{rule.example_good}",
            "markdown": f"{rule.fix}\n\nFlagged:\n```\n{rule.example_bad}\n```\n"
            f"Instead:\n```\n{rule.example_good}\n```",
        },
        "defaultConfiguration": {"level": _SARIF_LEVEL[Severity(rule.severity)]},
        "properties": {"tags": [rule.category], "category": rule.category},
    }


def _sarif_result(f: Finding, index: dict[str, int]) -> dict[str, Any]:
    region: dict[str, int] = {"startLine": max(f.line or 1, 1)}
    if f.col:
        region["startColumn"] = max(f.col, 1)
    return {
        "ruleId": f.code,
        "ruleIndex": index[f.code],
        "level": _SARIF_LEVEL[f.severity],
        "message": {"text": f.message + (f" Fix: {f.fix}" if f.fix else "")},
        "locations": [
            {
                "physicalLocation": {
                    "artifactLocation": {"uri": f.file or ".", "uriBaseId": "SRCROOT"},
                    "region": region,
                }
            }
        ],
        "properties": {"category": f.category},
    }


def to_sarif(report: LintReport) -> dict[str, Any]:
    """A SARIF 2.1.0 log with one run; rules carry every code, results the findings."""
    codes = list(RULES)
    index = {c: i for i, c in enumerate(codes)}
    notes = [
        {"level": "warning" if s.unchecked else "note",
         "message": {"text": f"{'not checked' if s.unchecked else 'skipped'} {s.file}: {s.reason}"}}
        for s in report.skipped
    ] + [{"level": "warning", "message": {"text": n}} for n in report.notes]
    return {
        "$schema": _SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "flightcheck",
                        "version": __version__,
                        "rules": [_sarif_rule(c) for c in codes],
                    }
                },
                "originalUriBaseIds": {"SRCROOT": {"uri": report.root.as_uri() + "/"}},
                "invocations": [
                    {
                        "executionSuccessful": True,
                        "toolExecutionNotifications": notes,
                    }
                ],
                "results": [_sarif_result(f, index) for f in report.findings],
            }
        ],
    }
