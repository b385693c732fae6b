"""Helpers for the trust tests: realistic keys made at run time (a key written into a test
file would be a hard-coded key for the repository's own lint run), and projects around the
hostile fixture service run through the real CLI."""

from __future__ import annotations

import os
import secrets
import shutil
import string
import subprocess
import sys
from pathlib import Path

_ALNUM = string.ascii_letters + string.digits


def provider_key(prefix: str = "sk-" + "proj-", length: int = 40) -> str:
    """A key shaped like a real provider key, with a random body (digits and both cases)."""
    body = "".join(secrets.choice(_ALNUM) for _ in range(length - len(prefix) - 3))
    return prefix + body + "aZ9"


def random_token(length: int = 32) -> str:
    """A high-entropy credential with no provider prefix."""
    return "".join(secrets.choice(_ALNUM) for _ in range(length - 2)) + "q7"


# --- a project around the hostile fixture service ---------------------------------------------

REPO = Path(__file__).resolve().parents[2]
HOSTILE = REPO / "tests" / "fixtures" / "services" / "hostile"

BASE_TOML = """\
[service]
name = "hostile"
command = ["python", "app.py"]
import_check = []

[health.startup]
path = "/health/startup"
failure_threshold = 10

[health.liveness]
path = "/health"
"""

BASE_SUITE = """\
version: 1
cases:
  - name: health answers
    request: {path: /health}
"""

REPORT_FILES = ("flightcheck-report.json", "junit.xml", "summary.md", "report.html")


def project(tmp_path: Path, toml: str = "", suite: str | None = BASE_SUITE) -> Path:
    """A copy of the hostile service with a flightcheck.toml (BASE_TOML + ``toml``) and a
    smoke suite (None: none). Reports go beside it, not into the build context."""
    proj = tmp_path / "proj"
    shutil.copytree(HOSTILE, proj, ignore=shutil.ignore_patterns("__pycache__"))
    (proj / "flightcheck.toml").write_text(BASE_TOML + toml)
    if suite is not None:
        (proj / "smoke.yaml").write_text(suite)
    return proj


def flightcheck(
    proj: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``flightcheck ARGS`` in ``proj`` (reports in ../report), as a user would run it."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FLIGHTCHECK_", "OPENAI_"))}
    return subprocess.run(
        [sys.executable, "-m", "flightcheck.cli", *args],
        cwd=proj, capture_output=True, text=True, check=False, timeout=timeout,
        env={**base, "PYTHONUNBUFFERED": "1", **(env or {})},
    )


def ci(proj: Path, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return flightcheck(proj, "ci", "--report-dir", str(proj.parent / "report"), *args, **kw)  # type: ignore[arg-type]


def reports(proj: Path) -> dict[str, str]:
    """Every report file of the last run, by name."""
    d = proj.parent / "report"
    return {name: (d / name).read_text(encoding="utf-8") for name in REPORT_FILES
            if (d / name).is_file()}


def fragments(secret: str, size: int = 8) -> list[str]:
    """Every ``size``-character piece of ``secret``: none may appear anywhere."""
    return [secret[i:i + size] for i in range(len(secret) - size + 1)]


def leaked(secret: str, *texts: str) -> list[str]:
    return [f for f in fragments(secret) for t in texts if f in t]
