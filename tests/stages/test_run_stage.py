"""run-with-memory-limit end to end: start, crash, OOM at start and under test, peak vs limit."""

from __future__ import annotations

import json
import shutil
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from flightcheck.config import load
from flightcheck.context import Context
from flightcheck.errors import StageError
from flightcheck.results import Status
from flightcheck.runtimes.base import Running
from flightcheck.stages import build, run

SERVICES = Path(__file__).resolve().parent.parent / "fixtures" / "services"
MiB = 1024 * 1024


def make_ctx(
    tmp_path: Path,
    service: str,
    runtime: str,
    *,
    memory: str = "128Mi",
    env: dict[str, str] | None = None,
) -> Context:
    # A copy beside the config: a build context must be inside the config's directory.
    shutil.copytree(SERVICES / service, tmp_path / service,
                    ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    (tmp_path / "flightcheck.toml").write_text(
        f'[service]\nname = "fctest-{service}"\nsource = {json.dumps(service)}\n'
        'command = ["python", "app.py"]\npythonpath = []\nimport_check = []\n'
        f'[run]\nmemory_limit = "{memory}"\n'
    )
    return Context(
        loaded=load(tmp_path / "flightcheck.toml"), runtime_name=runtime, service_env=env or {}
    )


@pytest.fixture
async def started(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """await started(service, runtime, ...) → (ctx, run result); everything stopped after."""
    contexts: list[Context] = []

    async def start(service: str, runtime: str, **kw: Any) -> tuple[Context, Any]:
        d = tmp_path / f"c{len(contexts)}"
        d.mkdir()
        ctx = make_ctx(d, service, runtime, **kw)
        contexts.append(ctx)
        built = await build.run(ctx)
        assert built.status is Status.PASS, built
        return ctx, await run.run(ctx)

    yield start
    for ctx in contexts:
        await ctx.stack.aclose()


async def _until_ended(running: Running) -> None:
    with anyio.fail_after(20):
        while True:
            if await running.status() is not None:
                return
            await anyio.sleep(0.05)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.anyio
async def test_needs_a_built_image(tmp_path: Path) -> None:
    with pytest.raises(StageError, match="needs a built image"):
        await run.run(make_ctx(tmp_path, "hello", "process"))


@pytest.mark.parametrize("runtime", [pytest.param("docker", marks=pytest.mark.docker), "process"])
@pytest.mark.anyio
async def test_healthy_service_passes_and_reports_peak_against_limit(
    runtime: str, started: Callable[..., Any], request: pytest.FixtureRequest
) -> None:
    if runtime == "docker":
        request.getfixturevalue("docker_client")
    ctx, res = await started("hello", runtime)
    assert res.status is Status.PASS, res
    assert res.details["endpoint"].startswith("http://127.0.0.1:")
    assert isinstance(res.measurement("listening_seconds"), float)
    assert res.measurement("memory_limit_bytes") == 128 * MiB
    done = await run.finalize(ctx, res)
    assert done.status is Status.PASS, done
    peak = done.measurement("peak_memory_bytes")
    assert isinstance(peak, int) and 1 * MiB < peak < 64 * MiB
    assert done.measurement("peak_to_limit") == round(peak / (128 * MiB), 3)
    assert done.measurement("headroom_bytes") == 128 * MiB - peak
    assert "of 128Mi" in done.summary


@pytest.mark.parametrize("runtime", [pytest.param("docker", marks=pytest.mark.docker), "process"])
@pytest.mark.anyio
async def test_crash_on_start_fails_with_exit_code_and_logs(
    runtime: str, started: Callable[..., Any], request: pytest.FixtureRequest
) -> None:
    if runtime == "docker":
        request.getfixturevalue("docker_client")
    ctx, res = await started("crash", runtime)
    assert res.status is Status.FAIL
    assert res.summary.startswith("service exited with code 3 ")
    [finding] = res.findings
    assert finding.code == "run.exited" and "ERROR: DATABASE_URL is not set" in finding.message
    done = await run.finalize(ctx, res)
    assert done.status is Status.FAIL and len(done.findings) == 1


@pytest.mark.docker
@pytest.mark.anyio
async def test_oom_at_startup_fails_with_peak_and_limit(
    docker_client: Any, started: Callable[..., Any]
) -> None:
    ctx, res = await started("hog", "docker", env={"ALLOC_MB": "300"})
    assert res.status is Status.FAIL, res
    assert res.summary.startswith("OOM-killed") and "limit 128Mi" in res.summary
    [finding] = res.findings
    assert finding.code == "run.oom" and finding.category == "oom"
    assert "allocating 300 MiB" in finding.message
    done = await run.finalize(ctx, res)
    # The kill says the limit was reached; the 50 ms sampler may have seen less before the
    # cgroup vanished, and that sample is kept beside it, never above it.
    assert done.measurement("peak_memory_bytes") == 128 * MiB
    assert "peak 128Mi" in res.summary
    sampled = done.measurement("peak_sampled_bytes")
    assert sampled is None or 0 < sampled < 128 * MiB


@pytest.mark.parametrize("runtime", [pytest.param("docker", marks=pytest.mark.docker), "process"])
@pytest.mark.anyio
async def test_oom_while_under_test_fails_in_finalize(
    runtime: str, started: Callable[..., Any], request: pytest.FixtureRequest
) -> None:
    if runtime == "docker":
        request.getfixturevalue("docker_client")
    ctx, res = await started("hog", runtime, env={"ALLOC_MB": "300", "ALLOC_DELAY_S": "1.5"})
    assert res.status is Status.PASS, res  # listening before it allocates
    await _until_ended(ctx.artifacts["running"])  # type: ignore[arg-type]
    done = await run.finalize(ctx, res)
    assert done.status is Status.FAIL
    assert done.summary.startswith("OOM-killed while the service was under test")
    assert [f.code for f in done.findings] == ["run.oom"]


@pytest.mark.anyio
async def test_peak_near_the_limit_warns(started: Callable[..., Any]) -> None:
    ctx, res = await started("hog", "process", memory="140Mi", env={"ALLOC_MB": "120"})
    assert res.status is Status.PASS, res
    deadline = time.monotonic() + 10
    while "allocated 120 MiB" not in await ctx.artifacts["running"].logs():  # type: ignore[attr-defined]
        assert time.monotonic() < deadline
        await anyio.sleep(0.05)
    done = await run.finalize(ctx, res)
    assert done.status is Status.WARN, done
    assert [f.code for f in done.findings] == ["run.near-limit"]
    ratio = done.measurement("peak_to_limit")
    assert isinstance(ratio, float) and 0.9 <= ratio < 1


@pytest.mark.anyio
async def test_fixed_busy_port_gets_a_port_hint(
    started: Callable[..., Any], busy_port: int
) -> None:
    _, res = await started("hello", "process", env={"FIXED_PORT": str(busy_port)})
    assert res.status is Status.FAIL
    assert [f.code for f in res.findings] == ["run.exited", "run.port"]
    assert "$PORT" in (res.findings[1].fix or "")
