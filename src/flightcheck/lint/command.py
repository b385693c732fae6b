"""``flightcheck lint [PATH] [--format text|json|sarif] [--output FILE] [--explain CODE]``.

Exit 1 when any error-severity finding remains, else 0 (2: usage or configuration error)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from flightcheck import config as config_mod
from flightcheck.errors import UsageError
from flightcheck.lint.engine import LintReport, lint_paths
from flightcheck.lint.output import render_text, summary, to_json, to_sarif
from flightcheck.lint.rules import RULES
from flightcheck.lint.rules import explain as explain_rule
from flightcheck.lint.target import service_from_config
from flightcheck.results import Severity

_FORMATS = ("text", "json", "sarif")


def lint_command(
    path: Annotated[
        Optional[Path],  # noqa: UP045 - typer needs Optional on 3.11
        typer.Argument(help="file or directory to lint (default: [lint].paths from the config)"),
    ] = None,
    format: Annotated[  # noqa: A002 - the option is called --format
        str, typer.Option("--format", "-f", help="text | json | sarif")
    ] = "text",
    output: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--output", "-o", help="write the report to this file instead of stdout"),
    ] = None,
    explain: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--explain", help="print a rule's rationale and example fix (e.g. FC401; 'all' lists every rule)"),
    ] = None,
    config: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--config", "-c", help="flightcheck.toml (default: ./flightcheck.toml, else the "
                     "default [lint] settings)"),
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="warnings and files left unchecked fail too")
    ] = False,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="ignore and do not write the lint cache")
    ] = False,
) -> int:
    """Lint Python sources, config files and Dockerfiles for what breaks AI services in production."""
    if explain is not None:
        typer.echo(_explain_all() if explain.lower() == "all" else explain_rule(explain))
        return 0
    if format not in _FORMATS:
        raise UsageError(
            f"unknown format {format!r}",
            fix="use --format text, json or sarif",
            repro="flightcheck lint --format sarif --output lint.sarif",
        )
    # Linting needs no service: without a flightcheck.toml, the default [lint] settings (as
    # ruff without a pyproject.toml), said on stderr so JSON and SARIF stay clean.
    loaded = config_mod.load(config, missing="defaults")
    cfg = loaded.config
    if loaded.path is None:
        what = path if path is not None else Path.cwd()
        print(f"note: no {config_mod.DEFAULT_FILE} in {Path.cwd()}: linting {what} with the "
              f"default [lint] settings (every rule at its default severity; excluded: "
              f"{', '.join(cfg.lint.exclude)}); `flightcheck init` writes a "
              f"{config_mod.DEFAULT_FILE} for your service", file=sys.stderr)
    if no_cache:
        cfg.lint.cache = False
    # The deployed service's Dockerfile, port and probe paths: from the config file that
    # covers what is linted, else the defaults (and the Dockerfile found beside PATH).
    from_file = loaded.path is not None
    if path is not None:
        target = path.resolve()
        root = target if target.is_dir() else target.parent
        source = cfg.source_dir.resolve()
        # the config's service, unless PATH is another service inside it (its own Dockerfile)
        inside = from_file and target.is_relative_to(source) and not _own_dockerfile(root, source)
        service = service_from_config(cfg, from_file=True) if inside else None
        report = lint_paths(root, [target], cfg.lint, service=service)
    else:
        service = service_from_config(cfg, from_file=from_file)
        report = lint_paths(cfg.source_dir, [cfg.resolve(p) for p in cfg.lint.paths], cfg.lint,
                            service=service)
    _emit(report, format, output)
    if report.failed:
        return 1
    return 1 if strict and (report.count(Severity.WARNING) or report.unchecked) else 0


def _own_dockerfile(start: Path, source: Path) -> bool:
    """A Dockerfile at ``start`` or between it and the config's source directory."""
    folder = start
    while folder != source and folder.is_relative_to(source):
        if (folder / "Dockerfile").is_file():
            return True
        folder = folder.parent
    return False


def _emit(report: LintReport, fmt: str, output: Path | None) -> None:
    if fmt == "text":
        color = output is None and sys.stdout.isatty() and "NO_COLOR" not in os.environ
        text = render_text(report, color=color)
    else:
        data = to_json(report) if fmt == "json" else to_sarif(report)
        text = json.dumps(data, indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
    if output is not None or fmt != "text":
        # The document holds only findings; people still want the outcome and the skips.
        for s in report.skipped:
            print(f"{'not checked' if s.unchecked else 'skipped'} {s.file}: {s.reason}",
                  file=sys.stderr)
        for note in report.notes:
            print(f"note: {note}", file=sys.stderr)
        print(summary(report) + (f" → {output}" if output else ""), file=sys.stderr)


def _explain_all() -> str:
    rows = [f"{r.code}  {r.category:<17} {r.severity:<7} {r.name}" for r in RULES.values()]
    return "\n".join(rows) + "\n\nflightcheck lint --explain CODE for the rationale and a fix."
