"""The service lint checks: its Dockerfile, the Python it runs on, its port and probe paths.

Syntax is judged with the service's Python, not the one flightcheck runs on: the final stage's
``FROM python:X.Y`` of the service's Dockerfile, else the lowest version ``requires-python``
allows. Without a config, the defaults stand in for the port and the probe paths.
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from flightcheck.lint import dockerfile

# python:3.11-slim, docker.io/library/python:3.12.4-bookworm, ghcr.io/x/python:3.10
_PYTHON_IMAGE = re.compile(r"(?:^|/)python:(\d+)\.(\d+)(?:[.\-@]|$)")
HOST: tuple[int, int] = (sys.version_info.major, sys.version_info.minor)
HOST_RUFF = f"py{HOST[0]}{HOST[1]}"  # this Python as ruff's --target-version
_KNOWN = [(3, minor) for minor in range(7, 16)]  # what ruff's --target-version accepts


@dataclass(frozen=True)
class Service:
    """What the checks that depend on the deployed service know about it."""

    dockerfile: Path | None = None
    context: Path | None = None  # the build context (default: the Dockerfile's directory)
    port: int = 8080
    probes: tuple[str, ...] = ("/health/startup", "/health")  # (startup, liveness)
    settings_from: str = "flightcheck's defaults"  # said in messages: where port/probes come from
    # Whether a config file declares the probe paths: without one, the defaults are a guess
    # (Cloud Run's own default startup probe is TCP), so FC823 does not judge routes by them.
    probes_declared: bool = False


def service_from_config(config: object, *, from_file: bool) -> Service:
    """The service a flightcheck config describes (``Config``; typed loosely to keep the
    workers free of pydantic)."""
    svc = config.service  # type: ignore[attr-defined]
    health = config.health  # type: ignore[attr-defined]
    where = "flightcheck.toml" if from_file else "flightcheck's defaults"
    return Service(
        dockerfile=config.source_dir / svc.dockerfile,  # type: ignore[attr-defined]
        context=config.source_dir,  # type: ignore[attr-defined]
        port=svc.port,
        probes=(health.startup.path, health.liveness.path),
        settings_from=where,
        probes_declared=from_file,
    )


@dataclass(frozen=True)
class Target:
    version: tuple[int, int]
    source: str  # "Dockerfile:7 (FROM python:3.10-slim)"

    @property
    def label(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"

    @property
    def ruff(self) -> str:
        return f"py{self.version[0]}{self.version[1]}"


def final_image(instructions: list[dockerfile.Instruction]) -> tuple[str, int] | None:
    """The base image of the final stage (following ``FROM stage`` aliases and ARG defaults)."""
    stages, args = dockerfile.stages(instructions)
    if not stages:
        return None
    by_alias = {s.alias.lower(): s for s in stages if s.alias}
    stage = stages[-1]
    seen: set[int] = set()
    while stage.image.lower() in by_alias and id(stage) not in seen:
        seen.add(id(stage))
        stage = by_alias[stage.image.lower()]
    image = stage.image
    if "$" in image:
        image = re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}|\$(\w+)",
                       lambda m: args.get(m.group(1) or m.group(3), m.group(2) or ""), image)
    return image, stage.line


def target_python(instructions: list[dockerfile.Instruction] | None, dockerfile_rel: str | None,
                  project: Path) -> Target | None:
    if instructions:
        found = final_image(instructions)
        if found is not None:
            image, line = found
            m = _PYTHON_IMAGE.search(image)
            if m:
                return Target((int(m.group(1)), int(m.group(2))),
                              f"{dockerfile_rel}:{line} (FROM {image})")
    return _requires_python(project)


def _requires_python(project: Path) -> Target | None:
    path = project / "pyproject.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    project_table = data.get("project")
    spec = project_table.get("requires-python") if isinstance(project_table, dict) else None
    if not isinstance(spec, str):
        return None
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        allowed = SpecifierSet(spec)
    except InvalidSpecifier:
        return None
    for version in _KNOWN:
        # "3.10" as a release matches ">=3.10" and "~=3.10"; 3.10.99 covers ">3.10" style bounds
        if any(allowed.contains(f"{version[0]}.{version[1]}{patch}") for patch in ("", ".99")):
            return Target(version, f"pyproject.toml (requires-python {spec!r})")
    return None


_UNSUPPORTED = re.compile(r"on Python (\d+)\.(\d+) \(syntax was (?:added|removed) in Python")


def is_version_syntax(message: str) -> bool:
    """ruff's message for syntax the target Python does not have."""
    return _UNSUPPORTED.search(message) is not None
