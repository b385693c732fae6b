"""lint: the first gate — syntax, imports, secrets, AI-service patterns, Dockerfiles.

Scans ``[lint].paths`` (relative to ``[service].source``) minus ``[lint].exclude``. Fails on
any error-severity finding, warns when only warnings remain. The CPU-bound scan runs in a
worker thread (which fans out to worker processes) so the event loop stays free. Writes
``lint.sarif`` into the report directory for GitHub code scanning.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial

import anyio.to_thread

from flightcheck.context import Context
from flightcheck.lint import CATEGORIES, lint_paths, summary, to_sarif
from flightcheck.lint.target import service_from_config
from flightcheck.results import Severity, StageResult, Status

STAGE = "lint"
MAX_FINDINGS = 1000  # the full list is in lint.sarif; the run report stays readable


async def run(ctx: Context) -> StageResult:
    res = ctx.result(STAGE)
    cfg = ctx.config
    if not cfg.lint.enabled:
        res.status = Status.SKIPPED
        res.summary = "disabled by [lint].enabled = false"
        return res
    paths = [cfg.resolve(p) for p in cfg.lint.paths]
    ctx.log(STAGE, f"scanning {', '.join(str(p) for p in paths)}")
    service = service_from_config(cfg, from_file=ctx.loaded.path is not None)
    report = await anyio.to_thread.run_sync(
        partial(lint_paths, cfg.source_dir, paths, cfg.lint, service=service)
    )

    errors, warnings = report.count(Severity.ERROR), report.count(Severity.WARNING)
    # Files left unchecked (over max_file_kb, unreadable) mean the gate did not see everything:
    # never a plain pass (and a failure under --strict).
    unchecked = report.unchecked
    res.status = Status.FAIL if errors else Status.WARN if warnings or unchecked else Status.PASS
    res.summary = ctx.redactor(summary(report))
    if unchecked:
        res.summary += f"; {len(unchecked)} not checked"
    for skip in unchecked[:MAX_FINDINGS]:
        ctx.log(STAGE, f"not checked: {skip.file}: {skip.reason}")
    for finding in report.findings[:MAX_FINDINGS]:
        finding.message = ctx.redactor(finding.message)
        res.findings.append(finding)
    res.measure("files", report.files)
    res.measure("lines", report.lines)
    res.measure("seconds", report.seconds, "s")
    res.measure("errors", errors)
    res.measure("warnings", warnings)
    counts = report.by_category()
    for category in CATEGORIES:
        res.measure(f"findings.{category}", counts.get(category, 0))

    sarif = ctx.report_dir / "lint.sarif"
    sarif.parent.mkdir(parents=True, exist_ok=True)
    # Redact the strings, then serialise: a redaction must never cut through JSON syntax (a
    # private-key pattern in a rule's example would swallow the closing quote).
    sarif.write_text(json.dumps(_redacted(to_sarif(report), ctx.redactor), indent=2),
                     encoding="utf-8")
    res.details["sarif"] = str(sarif)
    res.details["skipped"] = [{"file": s.file, "reason": s.reason} for s in report.skipped]
    res.details["notes"] = list(report.notes)
    res.details["tools"] = dict(report.tools)
    if len(report.findings) > MAX_FINDINGS:
        res.details["truncated"] = f"{len(report.findings) - MAX_FINDINGS} more findings in {sarif}"
    for note in report.notes:
        ctx.log(STAGE, f"note: {note}")
    return res


def _redacted(value: object, redact: Callable[[str], str]) -> object:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redacted(v, redact) for k, v in value.items()}  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, list):
        return [_redacted(v, redact) for v in value]  # pyright: ignore[reportUnknownVariableType]
    return value
