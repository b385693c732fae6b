"""Where the engine's schema comes from, and what a test that needs it does without it."""

from __future__ import annotations

from pathlib import Path

import dagger_recording
import pytest
from dagger_recording import REPO, SCHEMA_FILE, load_schema, require_schema


def test_the_schema_is_found_beside_the_repository_not_at_a_fixed_path() -> None:
    assert SCHEMA_FILE == REPO.parent / "shared" / "dagger" / "schema-0.21.graphqls"
    assert not str(SCHEMA_FILE).startswith("/work/shared") or REPO.parent == Path("/work")


def _without_schema(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(dagger_recording, "SCHEMA_FILE", tmp_path / "absent.graphqls")
    load_schema.cache_clear()
    monkeypatch.setattr(dagger_recording, "load_schema", load_schema)  # the cleared one


def test_without_the_schema_a_test_that_needs_it_fails_in_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    _without_schema(monkeypatch, tmp_path)
    try:
        monkeypatch.setenv("CI", "true")
        with pytest.raises(pytest.fail.Exception, match="absent.graphqls.*CI must provide it"):
            require_schema("nothing validated")
        monkeypatch.delenv("CI")
        with pytest.raises(pytest.skip.Exception, match="nothing validated"):
            require_schema("nothing validated")
    finally:
        load_schema.cache_clear()


def test_with_the_schema_it_is_the_engines() -> None:
    schema = require_schema("cannot check the schema itself")
    assert schema.query_type is not None and schema.query_type.name == "Query"
    assert "withExec" in schema.type_map["Container"].fields  # type: ignore[union-attr]
