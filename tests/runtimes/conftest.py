"""Fixtures for runtime tests: a DockerRuntime and the fixture services, built once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from rt_support import SERVICES

from flightcheck.runtimes.base import Image


@pytest.fixture
def docker_rt(docker_client: Any) -> Iterator[Any]:
    """A DockerRuntime on the session's client (its own run id per test)."""
    from flightcheck.runtimes.docker import DockerRuntime

    yield DockerRuntime(name="fctest", client=docker_client)


@pytest.fixture(scope="session")
def fixture_images(docker_client: Any) -> Callable[[str], Awaitable[Image]]:
    """``await fixture_images("hog")`` → the built fixture service (built once per session)."""
    from flightcheck.runtimes.docker import DockerRuntime

    built: dict[str, Image] = {}

    async def get(name: str) -> Image:
        if name not in built:
            rt = DockerRuntime(name=f"fctest-{name}", client=docker_client)
            built[name] = await rt.build(SERVICES / name, "Dockerfile")
        return built[name]

    return get
