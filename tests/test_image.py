"""The mathcoach image: builds from the repo's Dockerfile, runs as non-root, becomes healthy."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from mathcoach_support import REPO

pytestmark = [pytest.mark.docker, pytest.mark.slow]
TAG = "flightcheck-test/mathcoach:latest"


def _poll(url: str, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer 200 within {timeout}s")


@pytest.fixture(scope="module")
def image(docker_client: Any) -> Any:
    image, _ = docker_client.images.build(path=str(REPO), tag=TAG, rm=True, forcerm=True)
    return image


def test_image_is_lean_and_hardened(docker_client: Any, image: Any) -> None:
    config = image.attrs["Config"]
    assert config["User"] and config["User"].split(":")[0] not in ("", "0", "root")
    assert config["Healthcheck"]["Test"][0] == "CMD"
    assert "urllib" in " ".join(config["Healthcheck"]["Test"])
    assert config["Cmd"] == ["python", "-m", "mathcoach"]
    assert "8080/tcp" in config["ExposedPorts"]
    probe = docker_client.containers.run(
        image.id,
        [
            "python",
            "-c",
            "import importlib.util as u, json; print(json.dumps("
            "[u.find_spec(m) is not None for m in ('mathcoach', 'fastapi', 'flightcheck')]))",
        ],
        remove=True,
    )
    assert json.loads(probe) == [True, True, False]  # the pipeline is not in the image


def test_container_serves_and_becomes_healthy(
    docker_client: Any, image: Any, free_port: int
) -> None:
    container = docker_client.containers.run(
        image.id, detach=True, ports={"8080/tcp": ("127.0.0.1", free_port)}
    )
    try:
        url = f"http://127.0.0.1:{free_port}"
        _poll(f"{url}/health", 60)
        _poll(f"{url}/health/startup", 60)
        answer = httpx.post(f"{url}/v1/evaluate", json={"expression": "6*7"}, timeout=10)
        assert answer.json()["result"] == "42"
        container.reload()
        assert container.attrs["Config"]["User"].startswith("10001")
        health = "starting"
        deadline = time.monotonic() + 45  # the HEALTHCHECK's first run comes after 10 s
        while time.monotonic() < deadline:
            container.reload()
            health = container.attrs["State"]["Health"]["Status"]
            if health != "starting":
                break
            time.sleep(1)
        assert health == "healthy", container.attrs["State"]["Health"]
        logs = [json.loads(line) for line in container.logs(stdout=True).decode().splitlines()]
        (complete,) = [r for r in logs if r.get("event") == "startup_complete"]
        print(f"\nmathcoach container startup_s={complete['startup_s']}")
        assert 0 < complete["startup_s"] < 30
    finally:
        container.remove(force=True)
