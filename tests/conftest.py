"""Fixtures for every test. Helpers live in mathcoach_support (import that, never conftest:
several conftest modules exist and the name is ambiguous)."""

from mathcoach_support import (  # noqa: F401 - re-exported as fixtures
    docker_client,
    free_port,
    start_mathcoach,
    start_mathcoach_module,
)
