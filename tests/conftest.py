"""Fixtures for every test. Helpers live in mathcoach_support (import that, never conftest:
several conftest modules exist and the name is ambiguous)."""

from collections.abc import Iterator

import pytest
from mathcoach_support import (  # noqa: F401 - re-exported as fixtures
    docker_client,
    free_port,
    start_mathcoach,
    start_mathcoach_module,
)


@pytest.fixture(autouse=True, scope="session")
def _own_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The suite's caches (lint, dependency calls) in a directory of its own, never the
    user's ~/.cache: a test sees only what this run wrote (tests/lint isolates each test)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLIGHTCHECK_CACHE_DIR", str(tmp_path_factory.mktemp("flightcheck-cache")))
        yield
