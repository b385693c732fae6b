"""What the Dockerfile says: the final stage's base image and Python, EXPOSE, ENV, WORKDIR,
the command it runs, how dependencies are installed. Parsing reuses the lint stage's
Dockerfile reader (continuation lines, heredocs, stages)."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from flightcheck.lint.dockerfile import Instruction, Stage, parse, stages

_PY_TAG = re.compile(r"(?:^|/)python:(\d+\.\d+)")
_PIP = re.compile(r"\b(?:pip3?|python3?\s+-m\s+pip|uv\s+pip|uv)\s+(?:install|sync)\b[^;&|]*")


@dataclass
class DockerFacts:
    """The final stage of a Dockerfile, as far as running the service is concerned."""

    file: str  # relative to the service directory
    base_image: str = ""
    python: str | None = None  # "3.11" from python:3.11-slim
    expose: list[int] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    argv: list[str] = field(default_factory=list)  # ENTRYPOINT + CMD; shell form → sh -c
    shell_form: bool = False
    cmd_line: int | None = None
    installs: list[str] = field(default_factory=list)  # the install commands, shortened
    requirement_files: list[str] = field(default_factory=list)
    copies: list[tuple[str, str]] = field(default_factory=list)  # (host source, image dest)
    user: str | None = None
    healthcheck: bool = False

    def where(self, line: int | None) -> str:
        return f"{self.file}:{line}" if line else self.file


def _words(args: str) -> list[str]:
    """Arguments of COPY/EXPOSE/…: JSON array form or whitespace-separated words."""
    text = args.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
            if isinstance(value, list):
                return [str(v) for v in value]
        except ValueError:
            pass
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def _command(args: str) -> tuple[list[str], bool]:
    """CMD/ENTRYPOINT arguments → (argv, shell form?)."""
    text = args.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
            if isinstance(value, list):
                return [str(v) for v in value], False
        except ValueError:
            pass
    return ["/bin/sh", "-c", text], True


def _env_pairs(args: str) -> dict[str, str]:
    words = _words(args)
    if len(words) >= 2 and "=" not in words[0]:  # legacy "ENV KEY value"
        return {words[0]: " ".join(words[1:])}
    out = {}
    for w in words:
        key, sep, value = w.partition("=")
        if sep:
            out[key] = value
    return out


def _chain(final: Stage, all_stages: list[Stage]) -> list[Stage]:
    """The final stage and the stages it is built FROM, base first."""
    by_alias = {s.alias.lower(): s for s in all_stages if s.alias}
    out = [final]
    while out[-1].image.lower() in by_alias and by_alias[out[-1].image.lower()] not in out:
        out.append(by_alias[out[-1].image.lower()])
    return list(reversed(out))


def read(root: Path, name: str = "Dockerfile") -> DockerFacts | None:
    """Facts of ``root/name``; None when there is no such file."""
    path = root / name
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    all_stages, args = stages(parse(text))
    facts = DockerFacts(file=name)
    if not all_stages:
        return facts
    chain = _chain(all_stages[-1], all_stages)
    facts.base_image = chain[0].image
    if "$" in facts.base_image:
        facts.base_image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)),
                                  facts.base_image)
    m = _PY_TAG.search(facts.base_image)
    facts.python = m.group(1) if m else None
    entrypoint: list[str] = []
    cmd: list[str] = []
    for stage in chain:
        for ins in stage.instructions:
            _apply(facts, ins)
            if ins.keyword == "ENTRYPOINT":
                entrypoint, shell = _command(ins.args)
                facts.shell_form = facts.shell_form or shell
                facts.cmd_line = ins.line
                cmd = []  # ENTRYPOINT resets an inherited CMD
            elif ins.keyword == "CMD":
                cmd, shell = _command(ins.args)
                facts.shell_form = shell
                facts.cmd_line = ins.line
    # Dependencies may be installed in an earlier (builder) stage and copied over.
    for stage in all_stages:
        if stage in chain:
            continue
        for ins in stage.instructions:
            if ins.keyword == "RUN":
                _installs(facts, ins)
    facts.argv = entrypoint + cmd
    return facts


def _apply(facts: DockerFacts, ins: Instruction) -> None:
    if ins.keyword == "EXPOSE":
        for w in _words(ins.args):
            port = w.split("/")[0]
            if port.isdigit():
                facts.expose.append(int(port))
    elif ins.keyword == "ENV":
        facts.env.update(_env_pairs(ins.args))
    elif ins.keyword == "WORKDIR":
        wd = ins.args.strip().strip("\"'")
        facts.workdir = wd if wd.startswith("/") else f"{facts.workdir.rstrip('/')}/{wd}"
    elif ins.keyword == "USER":
        facts.user = ins.args.split()[0] if ins.args.split() else None
    elif ins.keyword == "HEALTHCHECK":
        facts.healthcheck = not ins.args.strip().upper().startswith("NONE")
    elif ins.keyword in ("COPY", "ADD"):
        words = [w for w in _words(ins.args) if not w.startswith("--")]
        if "--from" in ins.args or len(words) < 2:
            return
        dest = words[-1]
        if not dest.startswith("/"):
            dest = f"{facts.workdir.rstrip('/')}/{dest}"
        for src in words[:-1]:
            facts.copies.append((src, dest))
    elif ins.keyword == "RUN":
        _installs(facts, ins)


def _installs(facts: DockerFacts, ins: Instruction) -> None:
    for m in _PIP.finditer(ins.args):
        command = " ".join(m.group(0).split())
        short = command if len(command) <= 90 else command[:87] + "…"
        if short not in facts.installs:
            facts.installs.append(short)
        words = command.split()
        for i, w in enumerate(words):
            if w in ("-r", "--requirement") and i + 1 < len(words):
                req = words[i + 1]
                if req not in facts.requirement_files:
                    facts.requirement_files.append(req)
            elif w.startswith("--requirement="):
                facts.requirement_files.append(w.split("=", 1)[1])
