"""Helpers for the config tests (tests/unit, tests/trust): write a flightcheck.toml, load it, and
return the rendered ConfigError it must raise."""

from __future__ import annotations

from pathlib import Path

import pytest

from flightcheck.config import load
from flightcheck.errors import ConfigError

# The reference service's config (mathcoach). Named, not found in the working directory:
# without a flightcheck.toml there, load() refuses, wherever pytest runs from.
REPO_CONFIG = Path(__file__).resolve().parents[1] / "flightcheck.toml"


def write_config(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "flightcheck.toml"
    p.write_text(text)
    return p


def config_error(tmp_path: Path, text: str, **kw: object) -> str:
    with pytest.raises(ConfigError) as info:
        load(write_config(tmp_path, text), environ={}, **kw)  # type: ignore[arg-type]
    assert info.value.exit_code == 2
    return info.value.render()
