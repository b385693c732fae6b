"""The lint tests keep their lint cache to themselves (never the user's ~/.cache)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _lint_cache_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path_factory.getbasetemp() / "lint-cache"
    monkeypatch.setenv("FLIGHTCHECK_CACHE_DIR", str(path))
    return path
