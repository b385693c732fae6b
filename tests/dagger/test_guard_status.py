"""The guard as the Dagger module runs it: a status port, a lingering verdict, another user, and
no flightcheck installed (a copied guard.py + _proc.py and plain python)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from guard_support import ALLOC, REPO, Starter, verdict, wait_for

from flightcheck.runtimes import guard as guard_mod
from flightcheck.runtimes._proc import free_port

MiB = 1 << 20
SLEEPER = "print('ready', flush=True); import time; time.sleep(60)"


def test_the_status_port_serves_verdict_logs_and_import_checks(starter: Starter) -> None:
    g = starter.guard([sys.executable, "-c", SLEEPER], limit="64Mi")
    wait_for(lambda: "ready" in httpx.get(g.url + "/logs", timeout=2).text, 10, g)
    data = verdict(g.url)
    assert data is not None
    assert set(data) == {"kind", "limit", "peak", "oom", "exit", "detail", "started_at", "current"}
    assert isinstance(data["current"], int) and 0 < data["current"] <= 64 * MiB  # memory now
    assert (data["limit"], data["oom"], data["exit"], data["detail"]) == (64 * MiB, False, None, "")
    assert data["kind"] in ("cgroup-v1", "cgroup-v2", "rss")
    assert 0 < time.time() - data["started_at"] < 30
    assert httpx.get(g.url + "/logs", params={"tail": 1}, timeout=2).text == "ready"
    assert "ready" in g.text()  # teed: the container log still has the service's output
    ok = httpx.get(g.url + "/imports", params=[("module", "json"), ("module", "http.server")],
                   timeout=30).json()
    assert ok == {"ok": True, "exit": 0, "output": ""}
    bad = httpx.get(g.url + "/imports", params={"module": "no_such_module_xyz"}, timeout=30).json()
    assert bad["ok"] is False and "No module named 'no_such_module_xyz'" in bad["output"]
    refused = httpx.get(g.url + "/imports", params={"module": "os; rm -rf /"}, timeout=5)
    assert refused.status_code == 400 and refused.json()["ok"] is False
    assert httpx.get(g.url + "/nope", timeout=2).status_code == 404
    started = time.monotonic()
    assert g.stop() == 128 + signal.SIGTERM  # forwarded to the service, which died of it
    assert time.monotonic() - started < 5


def test_an_oom_verdict_stays_readable_after_the_kill_until_sigterm(starter: Starter) -> None:
    g = starter.guard([sys.executable, "-c", f"import time; time.sleep(0.5); {ALLOC}"],
                      limit="64Mi", extra=["--linger", "60"])
    wait_for(lambda: (verdict(g.url) or {}).get("exit") is not None, 20, g)
    data = verdict(g.url)
    assert data is not None and data["oom"] is True and data["exit"] == -signal.SIGKILL
    assert data["peak"] >= 56 * MiB and "survived" not in g.text()
    assert data["detail"]  # how it was killed: the kernel at the cgroup limit, or the watchdog
    time.sleep(1)
    assert g.proc.poll() is None and verdict(g.url) == data  # lingering, the verdict unchanged
    assert g.stop() == 137
    assert verdict(g.url) is None


def test_without_a_signal_the_guard_lingers_only_as_long_as_asked(starter: Starter) -> None:
    g = starter.guard([sys.executable, "-c", "import time; time.sleep(0.3); raise SystemExit(3)"],
                      extra=["--linger", "1"])
    assert g.proc.wait(timeout=20) == 3
    assert "Traceback" not in g.text()


def test_the_guard_runs_standalone_from_copied_files_without_flightcheck(tmp_path: Path) -> None:
    for name in ("guard.py", "_proc.py"):
        shutil.copy(REPO / "src" / "flightcheck" / "runtimes" / name, tmp_path / name)
    # -S -E -s: no site-packages, no PYTHONPATH, no user site — flightcheck (and pydantic)
    # cannot be imported; the script's own directory (with _proc.py) is on the path.
    bare = [sys.executable, "-S", "-E", "-s"]
    probe = subprocess.run([*bare, "-c", "import flightcheck"], capture_output=True, text=True)
    assert probe.returncode == 1 and "No module named 'flightcheck'" in probe.stderr
    report = tmp_path / "verdict.json"
    done = subprocess.run(
        [*bare, str(tmp_path / "guard.py"), "--limit", "64Mi", "--report", str(report), "--",
         sys.executable, "-c", ALLOC],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert done.returncode == 137, done.stderr
    assert "survived" not in done.stdout and "flightcheck guard:" in done.stderr
    import json

    data = json.loads(report.read_text())
    assert data["oom"] is True and data["limit"] == 64 * MiB
    bad = subprocess.run([*bare, str(tmp_path / "guard.py"), "--limit", "64MB", "--", "true"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "--limit" in bad.stderr and "Traceback" not in bad.stderr


def test_the_limit_grammar_is_the_same_with_and_without_flightcheck() -> None:
    from flightcheck.config import parse_memory

    for text in ("512Mi", "1Gi", "1.5Gi", "100M", "64Ki", "2G"):
        assert guard_mod._parse_limit(text) == parse_memory(text)
    code = (
        "import sys; sys.modules['flightcheck'] = None; sys.path.insert(0, sys.argv[1]); "
        "import guard; print(guard._parse_limit('1.5Gi'), guard._parse_limit('100M'))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(REPO / "src/flightcheck/runtimes")],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.split() == [str(parse_memory("1.5Gi")), str(parse_memory("100M"))], out.stderr


SYSTEM_PYTHON = Path("/usr/bin/python3")  # one that any user may run (the venv's may not be)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
@pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason="no /usr/bin/python3")
def test_the_command_runs_as_the_images_user_while_the_guard_stays_root(
    starter: Starter, tmp_path: Path,
) -> None:
    fc = _copy_guard(tmp_path)
    standalone = (str(SYSTEM_PYTHON), str(fc / "guard.py"))  # as in the service image
    show = "import os; print(os.getuid(), os.getgid(), os.getgroups(), os.environ['HOME'], flush=True)"
    g = starter.guard([str(SYSTEM_PYTHON), "-c", show + "; import time; time.sleep(60)"],
                      extra=["--user", "65534:65534"], python=standalone)
    wait_for(lambda: httpx.get(g.url + "/logs", timeout=2).text.strip() != "", 10, g)
    uid, gid, groups, _home = httpx.get(g.url + "/logs", timeout=2).text.split(" ", 3)
    assert (uid, gid, groups) == ("65534", "65534", "[]")
    imports = httpx.get(g.url + "/imports", params={"module": "json"}, timeout=30).json()
    assert imports["ok"] is True  # the import check runs as that user too
    g.stop()
    by_name = starter.guard([str(SYSTEM_PYTHON), "-c", show], python=standalone, wait=False,
                            extra=["--user", "nobody", "--linger", "0"])
    by_name.proc.wait(timeout=20)
    import pwd

    nobody = pwd.getpwnam("nobody")
    assert by_name.text().split()[:2] == [str(nobody.pw_uid), str(nobody.pw_gid)]
    assert by_name.text().split()[-1] == nobody.pw_dir
    unknown = starter.guard([str(SYSTEM_PYTHON), "-c", "print('ran')"], python=standalone,
                            extra=["--user", "no-such-user-xyz", "--linger", "0"], wait=False)
    assert unknown.proc.wait(timeout=20) == 126
    assert "cannot run as user 'no-such-user-xyz'" in unknown.text() and "ran" not in unknown.text()


def test_a_busy_status_port_is_a_clear_error(starter: Starter) -> None:
    g = starter.guard([sys.executable, "-c", SLEEPER])
    port = g.url.rsplit(":", 1)[1]
    done = subprocess.run(
        [sys.executable, "-m", "flightcheck.runtimes.guard", "--limit", "64Mi", "--status-port",
         port, "--", sys.executable, "-c", "print('started')"],
        capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 2 and "cannot serve the status port" in done.stderr
    assert "started" not in done.stdout


# --- in a container, as in Dagger -------------------------------------------------------------


def _copy_guard(tmp_path: Path) -> Path:
    d = tmp_path / "fc"
    d.mkdir()
    for name in ("guard.py", "_proc.py"):
        shutil.copy(REPO / "src" / "flightcheck" / "runtimes" / name, d / name)
    d.chmod(0o755)
    return d


def _host_memory_cgroup_v1() -> bool:
    return any(line.split(" - ")[1].split()[0] == "cgroup" and "memory" in line.split()[-1]
               for line in Path("/proc/self/mountinfo").read_text().splitlines() if " - " in line)


@pytest.mark.docker
@pytest.mark.slow
def test_in_the_base_image_without_privileges_the_watchdog_enforces_the_limit(
    docker_client: object, tmp_path: Path,
) -> None:
    from docker.models.containers import Container

    fc = _copy_guard(tmp_path)
    client = docker_client
    ctr: Container = client.containers.create(  # type: ignore[attr-defined]
        "python:3.11-slim",
        ["python3", "/fc/guard.py", "--limit", "64Mi", "--", "python3", "-c", ALLOC],
        volumes={str(fc): {"bind": "/fc", "mode": "ro"}}, network_mode="none",
    )
    try:
        ctr.start()
        result = ctr.wait(timeout=120)
        logs = ctr.logs().decode()
    finally:
        ctr.remove(force=True)
    assert result["StatusCode"] == 137, logs
    assert "RSS watchdog" in logs and "survived" not in logs


@pytest.mark.docker
@pytest.mark.slow
def test_with_a_writable_cgroupfs_the_kernel_enforces_and_the_verdict_crosses_containers(
    docker_client: object, tmp_path: Path,
) -> None:
    """What Dagger's insecure_root_capabilities gives the service: a writable cgroupfs, so the
    kernel enforces the limit; the verdict is read from outside over the status port. This
    machine's dockerd cannot start privileged containers ("unable to apply caps"), so the
    memory hierarchy is bind-mounted writable instead."""
    if not _host_memory_cgroup_v1():
        pytest.skip("this host's memory controller is cgroup v2: in a container the guard falls "
                    "back to its RSS watchdog there (docs/dagger.md, 'not verified')")
    fc = _copy_guard(tmp_path)
    port = free_port()
    code = f"import os; print('uid', os.getuid(), flush=True); import time; time.sleep(1); {ALLOC}"
    client = docker_client
    ctr = client.containers.create(  # type: ignore[attr-defined]
        "python:3.11-slim",
        ["python3", "/fc/guard.py", "--limit", "64Mi", "--status-port", "8931", "--status-host",
         "0.0.0.0", "--user", "10001:10001", "--", "python3", "-c", code],
        volumes={str(fc): {"bind": "/fc", "mode": "ro"},
                 "/sys/fs/cgroup/memory": {"bind": "/sys/fs/cgroup/memory", "mode": "rw"}},
        ports={"8931/tcp": ("127.0.0.1", port)},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        ctr.start()
        wait_for(lambda: (verdict(url) or {}).get("exit") is not None, 60)
        data = verdict(url)
        assert data is not None
        assert data["kind"] == "cgroup-v1" and data["oom"] is True, data
        assert "kernel" in data["detail"] and data["peak"] >= 56 * MiB
        assert httpx.get(url + "/logs", timeout=5).text.strip() == "uid 10001"
        ctr.stop(timeout=10)  # SIGTERM ends the lingering guard, as Dagger stopping the service
        assert ctr.wait(timeout=30)["StatusCode"] == 137
    finally:
        ctr.remove(force=True)


# --- a guard in a container shares the cgroup hierarchy with the host --------------------------


def _dead_owner() -> str:
    from flightcheck.runtimes import _proc

    gone = subprocess.Popen(["sleep", "60"])
    token = _proc.owner_token(gone.pid)
    gone.kill()
    gone.wait()
    return token


def test_a_sweep_removes_only_stale_cgroups_of_its_own_pid_namespace() -> None:
    try:
        probe = guard_mod.create_guard(64 * MiB, mode="cgroup")
    except OSError as exc:
        pytest.skip(f"no writable memory cgroup: {exc}")
    assert probe.cgroup is not None
    parent = probe.cgroup.parent
    assert probe.cgroup.name.endswith(f"-ns{guard_mod._pid_namespace()}")
    probe.close()
    dead = _dead_owner()
    ours = parent / f"flightcheck-{dead}-deadbeef-ns{guard_mod._pid_namespace()}"
    legacy = parent / f"flightcheck-{dead}-deadbee0"
    theirs = parent / f"flightcheck-{dead}-deadbee1-ns4026599999"  # a container's guard
    for d in (ours, legacy, theirs):
        d.mkdir()
    try:
        guard_mod.remove_stale_cgroups()
        assert not ours.exists() and not legacy.exists()
        assert theirs.is_dir()  # its owner's pid means nothing here: never swept
    finally:
        for d in (ours, legacy, theirs):
            if d.exists():
                d.rmdir()


@pytest.mark.docker
@pytest.mark.slow
def test_a_host_sweep_leaves_the_service_under_a_containers_guard_alone(
    docker_client: object, tmp_path: Path,
) -> None:
    """A flightcheck on the host cleaning up after crashed runs must not take the cgroup of the
    Dagger module's guard for stale and SIGKILL the service (found by running the module in the
    harness): the guard nests its cgroup in its container's own (the writable cgroupfs mounted
    over the read-only one is the one it reads), and a sweep leaves other pid namespaces'
    cgroups alone anyway."""
    if not _host_memory_cgroup_v1():
        pytest.skip("this host's memory controller is cgroup v2")
    fc = _copy_guard(tmp_path)
    port = free_port()
    client = docker_client
    ctr = client.containers.create(  # type: ignore[attr-defined]
        "python:3.11-slim",
        ["python3", "/fc/guard.py", "--limit", "64Mi", "--status-port", "8931", "--status-host",
         "0.0.0.0", "--", "sh", "-c", "grep memory /proc/self/cgroup; exec sleep 60"],
        volumes={str(fc): {"bind": "/fc", "mode": "ro"},
                 "/sys/fs/cgroup/memory": {"bind": "/sys/fs/cgroup/memory", "mode": "rw"}},
        ports={"8931/tcp": ("127.0.0.1", port)},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        ctr.start()
        wait_for(lambda: "memory" in (httpx.get(url + "/logs", timeout=2).text
                                      if verdict(url) else ""), 60)
        before = verdict(url)
        assert before is not None and before["kind"] == "cgroup-v1", before
        cgroup = httpx.get(url + "/logs", timeout=5).text.strip().split(":", 2)[2]
        assert f"/{ctr.id}/flightcheck-" in cgroup, cgroup  # nested in the container's cgroup
        guard_mod.remove_stale_cgroups()
        time.sleep(1)
        after = verdict(url)
        assert after is not None and after["exit"] is None, after  # still running
    finally:
        ctr.remove(force=True)
