"""Helpers for the lint tests: write a small tree, lint it, look at (file, line, code) hits.

Credential-shaped values are generated at run time from a seeded RNG, so no file in this
repository contains one (the repo must lint clean of secrets itself).
"""

from __future__ import annotations

import random
import string
import textwrap
from pathlib import Path

from flightcheck.config import LintConfig
from flightcheck.lint import LintReport, lint_paths

ALNUM = string.ascii_letters + string.digits


def token(n: int, alphabet: str = ALNUM, seed: int = 7) -> str:
    """A random-looking value with upper, lower and digits (as real keys have)."""
    rng = random.Random(seed * 1000 + n)
    body = [rng.choice(alphabet) for _ in range(n)]
    for i, pool in enumerate((string.ascii_uppercase, string.ascii_lowercase, string.digits)):
        if any(c in alphabet for c in pool):
            body[i * 3 % n] = rng.choice([c for c in pool if c in alphabet])
    return "".join(body)


def keys() -> dict[str, str]:
    """One realistic-looking (fake) credential per provider pattern."""
    upper_digits = string.ascii_uppercase + string.digits
    return {
        "openai": "sk-proj-" + token(64, ALNUM + "_-", 1),
        "openai_legacy": "sk-" + token(48, ALNUM, 2),
        "anthropic": "sk-ant-api03-" + token(93, ALNUM + "_-", 3) + "AA",
        "google": "AIza" + token(35, ALNUM + "_-", 4),
        "huggingface": "hf_" + token(34, string.ascii_letters, 5),
        "github": "ghp_" + token(36, ALNUM, 6),
        "slack": "xoxb-" + token(12, string.digits, 7) + "-" + token(24, ALNUM, 8),
        "stripe": "sk_" + "live_" + token(24, ALNUM, 9),
        "groq": "gsk_" + token(52, ALNUM, 10),
        "aws_id": "AKIA" + token(16, upper_digits, 11),
        "aws_secret": token(40, ALNUM + "/+", 12),
        "generic": token(24, ALNUM, 13),
    }


def private_key() -> str:
    body = "\n".join(token(64, ALNUM + "+/", 20 + i) for i in range(4))
    kind = "RSA PRIVATE KEY"
    return f"-----BEGIN {kind}-----\n{body}\n-----END {kind}-----\n"


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return root


def lint(root: Path, files: dict[str, str] | None = None, **config: object) -> LintReport:
    """Write ``files`` under ``root`` (a project with no dependencies unless given) and lint."""
    if files:
        write(root, files)
    if not (root / "pyproject.toml").exists():
        (root / "pyproject.toml").write_text('[project]\nname = "t"\ndependencies = []\n')
    return lint_paths(root, [root], LintConfig.model_validate({"exclude": [], **config}))


def hits(report: LintReport, code_prefix: str = "") -> set[tuple[str, int, str]]:
    return {
        (f.file or "", f.line or 0, f.code)
        for f in report.findings
        if f.code.startswith(code_prefix)
    }


def codes(report: LintReport) -> list[str]:
    return [f.code for f in report.findings]
