"""Helpers for the init tests: small source trees written into a temp directory, and the
fixture services under tests/fixtures/onboard/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from flightcheck.onboard import project as project_mod
from flightcheck.onboard.project import Project

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "onboard"
SERVICES = ("askdesk", "haiku", "translator", "chatproxy")
# What the developer's shell may hold that would change a run (a real key → real provider).
_SCRUB = ("OPENAI_", "GEMINI_", "GOOGLE_", "AI_", "FLIGHTCHECK__", "LLM_", "ANTHROPIC_")


def tree(root: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (relative path → source, dedented) under ``root``."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return root


def project(root: Path, files: dict[str, str]) -> Project:
    return project_mod.load(tree(root, files))


def copy_service(name: str, dest: Path) -> Path:
    """A fixture service (or ``mathcoach``, ``quotebot``) copied without any flightcheck files."""
    target = dest / name
    if name == "mathcoach":
        target.mkdir(parents=True)
        for f in ("Dockerfile", ".dockerignore"):
            shutil.copy2(REPO / f, target / f)
        shutil.copytree(REPO / "src" / "mathcoach", target / "src" / "mathcoach",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        return target
    source = REPO / "examples" / "quotebot" if name == "quotebot" else FIXTURES / name
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(
        "__pycache__", "*.pyc", "flightcheck.toml", "smoke.yaml", "flightcheck-report"))
    return target


def flightcheck_argv() -> list[str]:
    script = Path(sys.executable).with_name("flightcheck")
    return [str(script)] if script.exists() else [sys.executable, "-m", "flightcheck.cli"]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}


def run_cli(args: list[str], cwd: Path, timeout: float = 60, stdin: str | None = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*flightcheck_argv(), *args], cwd=cwd, env=clean_env(), capture_output=True,
                          text=True, timeout=timeout, input=stdin)
