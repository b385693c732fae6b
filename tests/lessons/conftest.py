"""Fixtures of the lessons' tests. Helpers live in lessons_support (import that, never
conftest). One healthy `flightcheck ci` of the reference service is shared by the session."""

from collections.abc import Iterator

import pytest
from lessons_support import Run, ci


@pytest.fixture(scope="session")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """`flightcheck ci` of the reference service with no fault (process runtime)."""
    run = ci(tmp_path_factory.mktemp("healthy") / "report")
    assert run.rc == 0, run.why()
    yield run
