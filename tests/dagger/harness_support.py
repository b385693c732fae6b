"""The Dagger harness as a fixture: one engine stand-in per test session (the checker's pip
install then runs once), with the module registered by its own runtime."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagger_harness import Harness
from dagger_recording import REPO, SCHEMA_FILE, require_schema

HOST_SECRET = "sk-live-HARNESS0123456789abcdefXYZ"  # what env:OPENAI_API_KEY holds in tests


@pytest.fixture(scope="session")
def harness(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """The module registered in a harness on the real Docker daemon (docker_client skips when
    there is no daemon or no local python:3.11-slim)."""
    del docker_client
    require_schema("the harness serves the engine's API from it")
    h = Harness(module_dir=REPO, schema_file=SCHEMA_FILE,
                work_dir=Path(tmp_path_factory.mktemp("dagger-harness")),
                host_env={"OPENAI_API_KEY": HOST_SECRET})
    h.start()
    try:
        yield h
    finally:
        h.close()
