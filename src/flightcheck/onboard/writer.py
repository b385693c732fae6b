"""Writing flightcheck.toml and smoke.yaml: rendered with comments, never over an existing
file without ``--force``, and proven valid by loading them back through ``config.py`` and the
smoke suite loader — a file flightcheck would reject is rolled back, not left behind."""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flightcheck import config as config_mod
from flightcheck.errors import FlightcheckError, UsageError
from flightcheck.smoke.suite import Suite, load_suite, parse_suite

CONFIG_NAME = config_mod.DEFAULT_FILE
SUITE_NAME = "smoke.yaml"


class InitError(FlightcheckError):
    """init produced something flightcheck itself rejects: a bug in init, never the user's."""


@dataclass
class Entry:
    key: str
    value: Any
    comment: str = ""


@dataclass
class Table:
    name: str
    entries: list[Entry] = field(default_factory=list)
    comment: str = ""

    def add(self, key: str, value: Any, comment: str = "") -> None:
        self.entries.append(Entry(key, value, comment))


_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(key: str) -> str:
    return key if _BARE.match(key) else json.dumps(key)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def render_toml(header: list[str], tables: list[Table]) -> str:
    lines = [f"# {h}" if h else "#" for h in header]
    for table in tables:
        if not table.entries:
            continue
        lines.append("")
        if table.comment:
            lines.extend(f"# {c}" for c in table.comment.splitlines())
        lines.append(f"[{table.name}]")
        width = max(len(f"{_key(e.key)} = {toml_value(e.value)}") for e in table.entries)
        for e in table.entries:
            text = f"{_key(e.key)} = {toml_value(e.value)}"
            lines.append(f"{text:<{min(width, 44)}}  # {e.comment}" if e.comment else text)
    return "\n".join(lines) + "\n"


class _Dumper(yaml.SafeDumper):
    """Block style, keys in the order given, long strings unfolded."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str)
_Dumper.ignore_aliases = lambda self, data: True  # type: ignore[method-assign]  # no &id001 anchors


def render_yaml(header: list[str], suite: dict[str, Any]) -> str:
    body = yaml.dump(suite, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100,
                     default_flow_style=False)
    # A blank line between cases, for the reader.
    body = re.sub(r"\n(- name: )", r"\n\n\1", body)
    return "\n".join(f"# {h}" if h else "#" for h in header) + "\n" + body


def existing(root: Path) -> list[Path]:
    return [p for p in (root / CONFIG_NAME, root / SUITE_NAME) if p.exists()]


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write(root: Path, toml_text: str, suite_text: str, *, force: bool) -> tuple[config_mod.Loaded, Suite]:
    """Write both files and load them back the way ``flightcheck ci`` will. On any rejection
    the previous state of both files is restored and :class:`InitError` says why."""
    config_path, suite_path = root / CONFIG_NAME, root / SUITE_NAME
    present = existing(root)
    if present and not force:
        raise UsageError(
            f"{', '.join(str(p) for p in present)} already exist{'s' if len(present) == 1 else ''}",
            why="flightcheck init never overwrites a file without --force",
            fix="review or move the file(s), or rerun with --force to replace them",
            repro=f"flightcheck init {root} --force",
        )
    # The suite is checked before anything touches the disk.
    try:
        parse_suite(yaml.safe_load(suite_text), path=suite_path, text=suite_text)
    except FlightcheckError as exc:
        raise InitError("init generated a smoke suite the loader rejects (a bug in init)",
                        why=exc.what, fix="please report it with the service's layout") from None
    before = {p: p.read_text(encoding="utf-8") if p.is_file() else None for p in (config_path, suite_path)}
    try:
        _atomic_write(suite_path, suite_text)
        _atomic_write(config_path, toml_text)
        loaded = config_mod.load(config_path, environ={})
        suite = load_suite(loaded.config.resolve(loaded.config.smoke.suite))
    except FlightcheckError as exc:
        _restore(before)
        raise InitError("init generated a configuration flightcheck rejects (a bug in init); "
                        "nothing was written", why=exc.what,
                        fix="please report it with the service's layout") from None
    except BaseException:
        _restore(before)
        raise
    return loaded, suite


def _restore(before: dict[Path, str | None]) -> None:
    for path, text in before.items():
        if text is None:
            path.unlink(missing_ok=True)
        else:
            _atomic_write(path, text)
