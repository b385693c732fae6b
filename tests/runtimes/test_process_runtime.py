"""The process runtime: real host subprocesses under the memory guard (no Docker needed)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from rt_support import INTERRUPT_CHILD, SERVICES, SIDECAR, MiB, await_ready, wait_http, wait_status

from flightcheck.errors import StageError
from flightcheck.runtimes import _proc
from flightcheck.runtimes.base import BuildFailed, Image, Running, Runtime, Sidecar
from flightcheck.runtimes.guard import create_guard
from flightcheck.runtimes.process import ProcessRuntime
from flightcheck.secrets import Redactor

APP = ["python", "app.py"]


def _cgroup_writable() -> bool:
    try:
        create_guard(64 * MiB, mode="cgroup").close()
    except OSError:
        return False
    return True


needs_cgroup = pytest.mark.skipif(
    not _cgroup_writable(), reason="no writable memory cgroup here (the RSS watchdog tests run)"
)


def _image(name: str) -> Image:
    return Image(ref=str(SERVICES / name))


def _group_alive(pgid: int) -> bool:
    return any(True for _ in _members(pgid))


def _members(pgid: int) -> Iterator[int]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                yield int(entry.name)


@pytest.fixture
def listener() -> Iterator[int]:
    """A port something already listens on at 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.anyio
async def test_build_validates_the_source_dir(tmp_path: Path) -> None:
    rt = ProcessRuntime(command=APP)
    image = await rt.build(SERVICES / "hello", "Dockerfile")
    assert image.ref == str(SERVICES / "hello") and image.size_bytes is None
    assert isinstance(rt, Runtime)
    with pytest.raises(BuildFailed, match="does not exist"):
        await rt.build(tmp_path / "nope", "Dockerfile")


@pytest.mark.anyio
async def test_service_gets_a_free_loopback_port_even_when_the_configured_one_is_busy(
    listener: int,
) -> None:
    rt = ProcessRuntime(command=APP)
    running = await rt.start(_image("hello"), port=listener, env={}, memory_limit=128 * MiB)
    try:
        assert isinstance(running, Running)
        assert running.endpoint.startswith("http://127.0.0.1:")
        assert running.port != listener
        assert (await wait_http(running.endpoint + "/health")).json()["status"] == "ok"
        assert f"listening on 127.0.0.1:{running.port}" in await running.logs()
    finally:
        await running.stop()


@pytest.mark.anyio
async def test_service_that_ignores_port_and_hits_a_busy_one_exits_with_the_reason(
    listener: int,
) -> None:
    rt = ProcessRuntime(command=APP)
    running = await rt.start(
        _image("hello"), port=8080, env={"FIXED_PORT": str(listener)}, memory_limit=128 * MiB
    )
    try:
        exit_ = await wait_status(running)
        assert (exit_.kind, exit_.code) == ("exited", 1)
        assert "Address already in use" in await running.logs()
    finally:
        await running.stop()


@pytest.mark.anyio
async def test_crash_on_start_reports_exit_code_and_logs() -> None:
    rt = ProcessRuntime(command=APP)
    running = await rt.start(_image("crash"), port=8080, env={}, memory_limit=128 * MiB)
    try:
        exit_ = await wait_status(running)
        assert (exit_.kind, exit_.code) == ("exited", 3)
        assert "ERROR: DATABASE_URL is not set" in await running.logs()
    finally:
        await running.stop()
    assert "DATABASE_URL" in await running.logs()  # kept after the log file is gone


@pytest.mark.anyio
async def test_missing_command_is_a_clear_error() -> None:
    with pytest.raises(StageError, match=r"\[service\]\.command"):
        await ProcessRuntime().start(_image("hello"), port=1, env={}, memory_limit=MiB)
    running = await ProcessRuntime(command=["no-such-binary-xyz"]).start(
        _image("hello"), port=1, env={}, memory_limit=64 * MiB
    )
    try:
        exit_ = await wait_status(running)
        assert exit_.code == 127
        assert "cannot execute 'no-such-binary-xyz'" in await running.logs()
    finally:
        await running.stop()


@needs_cgroup
@pytest.mark.anyio
async def test_allocation_over_the_limit_is_oom_killed_by_the_cgroup() -> None:
    limit = 128 * MiB
    rt = ProcessRuntime(command=APP, guard="cgroup")
    running = await rt.start(_image("hog"), port=0, env={"ALLOC_MB": "300"}, memory_limit=limit)
    try:
        assert running.guard_kind.startswith("cgroup") and running.cgroup is not None
        exit_ = await wait_status(running)
        assert exit_.oom and exit_.code == 137, exit_
        peak = await running.peak_memory()
        assert peak is not None and 0.95 * limit <= peak <= limit, peak
    finally:
        await running.stop()
    assert not running.cgroup.exists()


@pytest.mark.anyio
async def test_allocation_over_the_limit_is_killed_by_the_rss_watchdog() -> None:
    limit = 128 * MiB
    rt = ProcessRuntime(command=APP, guard="rss")
    running = await rt.start(_image("hog"), port=0, env={"ALLOC_MB": "300"}, memory_limit=limit)
    try:
        assert running.guard_kind == "rss"
        exit_ = await wait_status(running)
        assert exit_.oom and "RSS watchdog" in exit_.detail, exit_
        peak = await running.peak_memory()
        # Polled every 50 ms while allocating ~1.6 GB/s: at the limit or a little over it,
        # and killed long before it got what it asked for.
        assert peak is not None and peak >= limit, peak
        assert "allocated 300 MiB" not in await running.logs()
        assert not _group_alive(running.pid)
    finally:
        await running.stop()


@needs_cgroup
@pytest.mark.anyio
async def test_peak_memory_matches_the_cgroup() -> None:
    rt = ProcessRuntime(command=APP, guard="cgroup")
    running = await rt.start(
        _image("hog"), port=0, env={"ALLOC_MB": "96"}, memory_limit=256 * MiB
    )
    try:
        await wait_http(running.endpoint + "/")
        assert running.cgroup is not None
        truth = int((running.cgroup / "memory.max_usage_in_bytes").read_text())
        peak = await running.peak_memory()
        assert peak is not None and abs(peak - truth) <= 0.05 * truth, (peak, truth)
        assert peak >= 96 * MiB
        procs = (running.cgroup / "cgroup.procs").read_text().split()
        assert str(running.pid) in procs  # joined before it allocated: the launcher exec'd
    finally:
        await running.stop()


@pytest.mark.anyio
async def test_stop_kills_the_whole_process_tree(tmp_path: Path) -> None:
    marker = tmp_path / "grandchild.pid"
    command = ["sh", "-c", f"sleep 300 & echo $! > {marker}; exec python app.py"]
    rt = ProcessRuntime(command=command, grace_s=0.5)
    running = await rt.start(_image("hello"), port=0, env={}, memory_limit=128 * MiB)
    await wait_http(running.endpoint + "/health")
    grandchild = int(marker.read_text())
    assert _proc.start_time(grandchild) is not None
    await running.stop()
    await running.stop()  # idempotent
    assert not _group_alive(running.pid)
    assert _proc.start_time(grandchild) is None or not _alive(grandchild)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.anyio
async def test_environment_is_only_what_the_service_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-developers-shell")
    code = "import os, json; print(json.dumps(dict(os.environ)), flush=True)"
    rt = ProcessRuntime(command=["python", "-c", code], redactor=Redactor())
    running = await rt.start(
        _image("hello"), port=0, env={"AI_MODEL": "m1", "GEMINI_API_KEY": "g-secret-123456"},
        memory_limit=64 * MiB,
    )
    try:
        await wait_status(running)
        logs = await running.logs()
    finally:
        await running.stop()
    env = json.loads(logs.splitlines()[0])
    assert "OPENAI_API_KEY" not in env
    assert env["AI_MODEL"] == "m1" and env["HOST"] == "127.0.0.1"
    assert env["PORT"] == running.endpoint.rsplit(":", 1)[1]
    assert env["GEMINI_API_KEY"] == "***"  # redacted in what flightcheck shows


@pytest.mark.anyio
async def test_sidecar_runs_beside_the_service() -> None:
    port = _proc.free_port()
    rt = ProcessRuntime(command=APP)
    running = await rt.start(
        _image("hello"),
        port=0,
        env={"UPSTREAM_URL": f"http://127.0.0.1:{port}/from-service"},
        memory_limit=128 * MiB,
        sidecar=Sidecar(script=SIDECAR, port=port),
    )
    try:
        assert running.sidecar_endpoint == f"http://127.0.0.1:{port}"
        assert (await wait_http(running.endpoint + "/upstream")).json()["path"] == "/from-service"
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{running.sidecar_endpoint}/x")).json()["sidecar"] is True
    finally:
        await running.stop()
    async with httpx.AsyncClient(timeout=1) as client:
        with pytest.raises(httpx.TransportError):
            await client.get(f"http://127.0.0.1:{port}/")


@pytest.mark.anyio
async def test_sidecar_port_in_use_is_a_clear_error(listener: int) -> None:
    rt = ProcessRuntime(command=APP)
    with pytest.raises(StageError, match=f"port {listener} on 127.0.0.1 is already in use"):
        await rt.start(
            _image("hello"), port=0, env={}, memory_limit=64 * MiB,
            sidecar=Sidecar(script=SIDECAR, port=listener),
        )


@pytest.mark.anyio
async def test_import_check_uses_the_service_pythonpath(tmp_path: Path) -> None:
    pkg = tmp_path / "src" / "mysvc"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("import definitely_not_installed_xyz\n")
    (tmp_path / "src" / "okmod.py").write_text("VALUE = 1\n")
    rt = ProcessRuntime(command=APP, pythonpath=[Path("src")])
    image = await rt.build(tmp_path, "Dockerfile")
    assert await rt.import_check(image, ["okmod", "json"], timeout_s=30) is None
    problem = await rt.import_check(image, ["okmod", "mysvc"], timeout_s=30)
    assert problem is not None
    assert "import mysvc: ModuleNotFoundError: No module named 'definitely_not_installed_xyz'" in problem
    assert "okmod" not in problem


@needs_cgroup
def test_leftovers_of_a_killed_run_are_cleaned_up() -> None:
    child = subprocess.Popen(
        [sys.executable, str(INTERRUPT_CHILD), "process", "hello"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    ready = await_ready(child)
    pid, cgroup = ready["pid"], Path(ready["cgroup"])
    assert _group_alive(pid) and cgroup.is_dir()
    child.kill()  # SIGKILL: no cleanup runs in the child
    child.wait(timeout=10)
    assert cgroup.is_dir()  # left behind
    removed = anyio.run(ProcessRuntime().cleanup_stale)
    assert removed >= 1
    assert not cgroup.exists()
    assert not _group_alive(pid)  # the death signal or the cleanup ended it
    assert not any(p.name == f"{pid}.json" for p in _state_files())


def _state_files() -> list[Path]:
    from flightcheck.runtimes.process import _state_dir

    return list(_state_dir().glob("*.json"))


@pytest.mark.slow
def test_ctrl_c_stops_the_service_and_removes_the_cgroup() -> None:
    child = subprocess.Popen(
        [sys.executable, str(INTERRUPT_CHILD), "process", "hello"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    ready = await_ready(child)
    pid = ready["pid"]
    assert httpx.get(ready["endpoint"] + "/health", timeout=5).status_code == 200
    child.send_signal(signal.SIGINT)
    child.wait(timeout=30)
    assert not _group_alive(pid)
    if ready["cgroup"]:
        assert not Path(ready["cgroup"]).exists()
    assert not any(p.name == f"{pid}.json" for p in _state_files())

