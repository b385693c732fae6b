"""The emulator as a background process: CLI start/status/stop, state kept across restarts,
and every container removed on every way it can end (stop, Ctrl-C, a killed emulator)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.cloud import run_v2
from local_support import (
    PARENT,
    InvokerAuth,
    clients,
    push_mathcoach,
    source_template,
    template,
)

from flightcheck.cloudrun import local
from flightcheck.cloudrun.local.lifecycle import run_id_for

pytestmark = pytest.mark.slow
OP_TIMEOUT = 180


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "flightcheck.cli", "emulator", *args],
                          capture_output=True, text=True, timeout=120)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def _health(url: str, state: str | Path | None) -> httpx.Response:
    """GET /health, as the local deployer (the service is private) unless ``state`` is None."""
    return httpx.get(url + "/health", timeout=20, trust_env=False,
                     auth=InvokerAuth(Path(state)) if state is not None else None)


def test_cli_start_status_stop_and_state_kept_across_restarts(tmp_path: Path) -> None:
    state = str(tmp_path / "emu")
    api = cli("start", "--state-dir", state, "--runtime", "process").stdout.strip()
    assert api.startswith("http://127.0.0.1:")
    try:
        assert local.ensure_running(state) == api  # already running: found, not started
        c = clients(api)
        svc = c.services.create_service(
            parent=PARENT, service_id="keep",
            service=run_v2.Service(template=source_template("keep-a"))).result(timeout=OP_TIMEOUT)
        status = cli("status", "--state-dir", state)
        assert "keep: " + svc.uri in status.stdout and "keep-a 100%" in status.stdout
        as_json = json.loads(cli("status", "--state-dir", state, "--json").stdout)
        assert as_json["running"] and as_json["services"]["keep"]["uri"] == svc.uri
        assert local.endpoint(state) == api
    finally:
        stopped = cli("stop", "--state-dir", state)
    assert stopped.stdout.startswith("stopped")
    assert local.endpoint(state) is None and not local.status(state).running
    with pytest.raises(httpx.TransportError):
        _health(svc.uri, None)  # nothing listens: no token could change that

    api2 = local.ensure_running(state, runtime="process")  # the next deploy finds it as it was
    try:
        assert api2 == api  # the API's port, too, is kept while it is free
        again = clients(api2).services.get_service(name=svc.name)
        assert again.uri == svc.uri and again.latest_ready_revision == svc.latest_ready_revision
        deadline = time.monotonic() + 60  # the instance starts again in the background
        while time.monotonic() < deadline:
            try:
                resp = _health(svc.uri, state)
                if resp.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        assert resp.status_code == 200 and resp.headers["x-flightcheck-revision"] == "keep-a"
    finally:
        local.stop(state)


def _deploy_mathcoach(api: str, image: str) -> run_v2.Service:
    return clients(api).services.create_service(
        parent=PARENT, service_id="life",
        service=run_v2.Service(template=template(image, "life-a"))).result(timeout=OP_TIMEOUT)


@pytest.fixture(scope="module")
def image(docker_client: Any) -> str:
    return push_mathcoach()


@pytest.mark.docker
def test_ctrl_c_on_the_foreground_emulator_removes_its_containers(tmp_path: Path,
                                                                   image: str) -> None:
    state = tmp_path / "emu"
    proc = subprocess.Popen([sys.executable, "-m", "flightcheck.cli", "emulator", "serve",
                             "--state-dir", str(state), "--runtime", "docker"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while local.endpoint(state) is None:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout
            time.sleep(0.1)
        svc = _deploy_mathcoach(local.endpoint(state) or "", image)
        assert _health(svc.uri, state).status_code == 200
        assert len(local.containers(state)) == 2  # the revision and its fake-model sidecar
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        local.stop(state)
    assert proc.returncode == 0, out
    assert "stopping: removing every instance" in out
    assert local.containers(state) == []


@pytest.mark.docker
def test_stop_removes_the_containers_of_a_killed_emulator(tmp_path: Path, image: str,
                                                          docker_client: Any) -> None:
    state = tmp_path / "emu"
    api = local.ensure_running(state, runtime="docker")
    try:
        _deploy_mathcoach(api, image)
        pid = local.status(state).pid
        assert pid
        os.kill(pid, signal.SIGKILL)  # no chance to clean up
        deadline = time.monotonic() + 10
        while local.status(state).running and time.monotonic() < deadline:
            time.sleep(0.05)
        # Its containers outlive it. Any flightcheck run on this host may remove them now (their
        # owner is dead: the runtimes' stale cleanup), so pin the backstop with one more
        # container that only this state's label names.
        docker_client.containers.create("python:3.11-slim", ["sleep", "60"],
                                        labels={"flightcheck.run": run_id_for(state.resolve())})
        assert 1 <= len(local.containers(state)) <= 3
    finally:
        removed = cli("stop", "--state-dir", str(state))
    assert "was not running: it had died" in removed.stdout, removed.stdout
    assert "leftover container(s)" in removed.stdout, removed.stdout
    assert local.containers(state) == []
