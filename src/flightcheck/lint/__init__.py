"""The lint stage's engine: syntax, imports, secrets, AI-service patterns, Dockerfiles.

``lint_paths`` runs every enabled rule over files and directories and returns a
:class:`LintReport`; ``render_text``/``to_json``/``to_sarif`` turn it into output;
``explain`` and ``RULES`` describe the rules (docs/lint.md is the long form).
"""

from flightcheck.lint.engine import LintReport, SkippedFile, enabled_codes, lint_paths
from flightcheck.lint.output import render_text, summary, to_json, to_sarif
from flightcheck.lint.rules import CATEGORIES, RULES, Rule, explain

__all__ = [
    "CATEGORIES",
    "RULES",
    "LintReport",
    "Rule",
    "SkippedFile",
    "enabled_codes",
    "explain",
    "lint_paths",
    "render_text",
    "summary",
    "to_json",
    "to_sarif",
]
