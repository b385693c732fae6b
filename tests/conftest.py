"""Fixtures for every test. Helpers live in mathcoach_support (import that, never conftest:
several conftest modules exist and the name is ambiguous)."""

from mathcoach_support import (  # noqa: F401 - re-exported as fixtures
    docker_client,
    free_port,
    start_mathcoach,
    start_mathcoach_module,
)

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def _own_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The suite's caches (lint, dependency calls) in a directory of its own, never the
    user's ~/.cache: a test sees only what this run wrote (tests/lint isolates each test)."""
    before = os.environ.get("FLIGHTCHECK_CACHE_DIR")
    os.environ["FLIGHTCHECK_CACHE_DIR"] = str(tmp_path_factory.mktemp("flightcheck-cache"))
    yield
    if before is None:
        os.environ.pop("FLIGHTCHECK_CACHE_DIR", None)
    else:
        os.environ["FLIGHTCHECK_CACHE_DIR"] = before
