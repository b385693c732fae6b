"""The attached runtime for real: a service under the guard (host processes, 127.0.0.1), checked by
`flightcheck ci --runtime attached` — the in-container half of the Dagger module, without Dagger.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from guard_support import REPO, Starter, clean_env, verdict, wait_for

from flightcheck.errors import StageError, UsageError
from flightcheck.runtimes import select_runtime
from flightcheck.runtimes._proc import free_port
from flightcheck.runtimes.attached import AttachedRuntime, AttachSettings
from flightcheck.runtimes.base import BuildFailed, Image, Sidecar
from flightcheck.secrets import Redactor

MiB = 1 << 20
IMAGE = Image(ref="attached")
SECRET = "sk-live-abcdefghijklmnop0123"


def _runtime(guard: str | None, *, wait_s: float = 10, log: list[str] | None = None,
             **more: Any) -> AttachedRuntime:
    settings = AttachSettings(endpoint="http://127.0.0.1:9", guard=guard, **more)
    return AttachedRuntime(settings, redactor=Redactor([SECRET]), wait_s=wait_s,
                           on_log=None if log is None else log.append)


# --- settings -------------------------------------------------------------------------------


def test_without_an_endpoint_the_runtime_says_what_to_set() -> None:
    with pytest.raises(UsageError) as caught:
        AttachSettings.from_env({})
    assert "FLIGHTCHECK_ATTACH_ENDPOINT" in caught.value.why
    assert "--runtime docker" in caught.value.fix
    with pytest.raises(UsageError, match="not an http://HOST:PORT URL"):
        AttachSettings.from_env({"FLIGHTCHECK_ATTACH_ENDPOINT": "http://svc:8080",
                                 "FLIGHTCHECK_ATTACH_GUARD": "svc:8931"})
    s = AttachSettings.from_env({"FLIGHTCHECK_ATTACH_ENDPOINT": "http://svc:8080/",
                                 "FLIGHTCHECK_ATTACH_GUARD": "http://svc:8931",
                                 "FLIGHTCHECK_ATTACH_BUILD_SECONDS": "12.5"})
    assert (s.endpoint, s.guard, s.sidecar, s.build_seconds) == (
        "http://svc:8080", "http://svc:8931", None, 12.5)


def test_the_runtime_is_selected_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLIGHTCHECK_ATTACH_ENDPOINT", "http://127.0.0.1:8080")
    assert isinstance(select_runtime("attached"), AttachedRuntime)
    monkeypatch.delenv("FLIGHTCHECK_ATTACH_ENDPOINT")
    with pytest.raises(UsageError):
        select_runtime("attached")


def test_the_cli_accepts_the_runtime_and_reports_a_missing_endpoint(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "flightcheck.cli", "ci", "--runtime", "attached", "--only", "build",
         "--report-dir", str(tmp_path)],
        cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1, done.stderr  # the build stage failed; not a usage error
    report = json.loads((tmp_path / "flightcheck-report.json").read_text())
    (build,) = [s for s in report["stages"] if s["name"] == "build"]
    assert build["status"] == "fail"
    assert "FLIGHTCHECK_ATTACH_ENDPOINT" in json.dumps(build["findings"])


# --- the plan a starter reads -----------------------------------------------------------------


def _plan(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flightcheck.attached_cli", "plan", *args],
                          cwd=REPO, env=clean_env(env), capture_output=True, text=True, timeout=60)


def test_the_plan_is_what_the_local_runtimes_would_start(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    done = _plan("--memory", "768Mi", "--sidecar-host", "fakemodel", "--output", str(out))
    assert done.returncode == 0 and done.stdout == "", done.stderr
    plan = json.loads(out.read_text())
    port = plan["sidecar"]["port"]
    assert plan["service"] == "mathcoach" and plan["context"] == "." and plan["port"] == 8080
    assert (plan["memory_limit"], plan["memory_limit_bytes"]) == ("768Mi", 768 * MiB)
    env = plan["env"]
    assert env["OPENAI_BASE_URL"] == f"http://fakemodel:{port}/v1"
    assert env["GOOGLE_GEMINI_BASE_URL"] == f"http://fakemodel:{port}"
    assert env["AI_PROVIDER"] == "openai"  # smoke.yaml's env.fake
    assert env["AI_MODEL"] == "fake-math-1"  # [environments.dev]
    assert (env["PORT"], env["PYTHONUNBUFFERED"]) == ("8080", "1")
    assert not any("127.0.0.1" in v for v in env.values())
    assert plan["import_check"] == ["mathcoach", "mathcoach.app"]


def test_a_real_key_counts_but_never_appears_in_the_plan() -> None:
    done = _plan("--secret-env", "OPENAI_API_KEY", "--real-model",
                 env={"OPENAI_API_KEY": SECRET})
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr
    plan = json.loads(done.stdout)
    assert plan["sidecar"] is None  # a real provider: no fake model server
    assert "OPENAI_API_KEY" not in plan["env"] and "OPENAI_BASE_URL" not in plan["env"]
    missing = _plan("--secret-env", "GEMINI_API_KEY")
    assert missing.returncode == 2 and "GEMINI_API_KEY" in missing.stderr
    bad = _plan("--service-env", "NOEQUALS", "--memory", "12 parsecs")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "KEY=VALUE" in bad.stderr
    unknown = _plan("--env", "staging")
    assert unknown.returncode == 2 and "unknown environment 'staging'" in unknown.stderr


# --- the runtime against a real guard ---------------------------------------------------------


@pytest.mark.anyio
async def test_start_reads_limit_start_time_and_kind_from_the_guard(starter: Starter) -> None:
    code = f"print('token {SECRET}', flush=True); import time; time.sleep(60)"
    g = starter.guard([sys.executable, "-c", code], limit="96Mi")
    first = verdict(g.url)
    assert first is not None
    log: list[str] = []
    running = await _runtime(g.url, log=log).start(IMAGE, port=1, env={}, memory_limit=128 * MiB)
    try:
        assert running.memory_limit == 96 * MiB  # the guard's, which is what is enforced
        assert any("not the requested" in line for line in log)
        assert running.started_at == first["started_at"]
        assert getattr(running, "guard_kind") == first["kind"]  # noqa: B009
        assert await running.status() is None
        peak = await running.peak_memory()
        assert peak is not None and peak > 1 * MiB
        wait_for(lambda: "token" in g.text(), 10, g)
        logs = await running.logs(5)
        assert "token ***" in logs and SECRET not in logs  # redacted on the way in
        assert running.sidecar_endpoint is None
    finally:
        await running.stop()
        await running.stop()


@pytest.mark.anyio
async def test_an_oom_under_the_guard_is_an_oom_exit_with_its_peak(starter: Starter) -> None:
    alloc = "import time; time.sleep(0.5); b = [bytearray(8 << 20) for _ in range(40)]"
    g = starter.guard([sys.executable, "-c", alloc], limit="64Mi")
    running = await _runtime(g.url).start(IMAGE, port=1, env={}, memory_limit=64 * MiB)
    try:
        wait_for(lambda: (verdict(g.url) or {}).get("exit") is not None, 20, g)
        exit_ = await running.status()
        assert exit_ is not None and exit_.oom and exit_.code == 137
        assert exit_.detail  # the guard's own words: kernel at the cgroup limit, or the watchdog
        peak = await running.peak_memory()
        assert peak is not None and peak >= 56 * MiB
    finally:
        await running.stop()


@pytest.mark.anyio
async def test_a_guard_that_vanishes_is_a_service_that_ended(starter: Starter) -> None:
    g = starter.guard([sys.executable, "-c", "import time; time.sleep(60)"])
    running = await _runtime(g.url).start(IMAGE, port=1, env={}, memory_limit=64 * MiB)
    try:
        assert await running.status() is None
        g.proc.kill()  # SIGKILL: no lingering; the service dies with it (death signal)
        g.proc.wait(timeout=10)
        exit_ = await running.status()
        assert exit_ is not None and exit_.kind == "exited" and "stopped answering" in exit_.detail
        assert "does not answer" in await running.logs()
    finally:
        await running.stop()


@pytest.mark.anyio
async def test_a_guard_that_never_answers_fails_start_with_the_fix() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(StageError) as caught:
        await _runtime(dead, wait_s=0.5).start(IMAGE, port=1, env={}, memory_limit=MiB)
    assert "does not answer" in caught.value.what and "--status-port" in caught.value.fix
    with pytest.raises(StageError, match="does not listen"):
        await _runtime(dead, wait_s=0.5, sidecar=dead).start(
            IMAGE, port=1, env={}, memory_limit=MiB, sidecar=Sidecar(script=Path("x")))


@pytest.mark.anyio
async def test_the_import_check_runs_through_the_guard(starter: Starter) -> None:
    g = starter.guard([sys.executable, "-c", "import time; time.sleep(60)"],
                      env={"PYTHONPATH": str(REPO / "src")})
    runtime = _runtime(g.url)
    assert await runtime.import_check(IMAGE, ["mathcoach", "mathcoach.app"], 60) is None
    problem = await runtime.import_check(IMAGE, ["mathcoach", "not_installed_xyz"], 60)
    assert problem is not None and "No module named 'not_installed_xyz'" in problem


@pytest.mark.anyio
async def test_without_a_guard_nothing_is_claimed() -> None:
    log: list[str] = []
    runtime = _runtime(None, log=log)
    assert await runtime.import_check(IMAGE, ["anything"], 5) is None
    assert any("not checked" in line for line in log)
    running = await runtime.start(IMAGE, port=1, env={}, memory_limit=MiB)
    assert await running.status() is None and await running.peak_memory() is None
    assert any("without a guard" in line for line in log)
    await running.stop()


@pytest.mark.anyio
async def test_a_build_error_from_the_starter_is_a_build_failure(tmp_path: Path) -> None:
    error = tmp_path / "build-error.txt"
    error.write_text('process "/bin/sh -c pip install -r requirements.txt" did not complete '
                     f"successfully: exit code: 1\nERROR: no matching distribution\ntoken {SECRET}\n")
    with pytest.raises(BuildFailed) as caught:
        await _runtime(None, build_error=error).build(tmp_path, "Dockerfile")
    assert caught.value.step == "/bin/sh -c pip install -r requirements.txt"
    assert "no matching distribution" in caught.value.log_tail
    assert SECRET not in caught.value.log_tail
    image = await _runtime(None, image="svc (dagger)", build_seconds=3.5).build(tmp_path, "x")
    assert (image.ref, image.build_seconds) == ("svc (dagger)", 3.5)


# --- end to end: mathcoach under the guard, checked by `flightcheck ci --runtime attached` -----


def _service(starter: Starter, *, limit: str, extra_env: dict[str, str] | None = None,
             ) -> tuple[dict[str, str], Any]:
    """mathcoach under the guard with the env the plan gives it (fake model on 127.0.0.1), the
    fake model server started by hand. Returns the env for the checker and the guard."""
    port, fake_port = free_port(), free_port()
    config = {"FLIGHTCHECK__SERVICE__PORT": str(port),
              "FLIGHTCHECK__SMOKE__FAKE_MODEL_PORT": str(fake_port)}
    done = _plan("--sidecar-host", "127.0.0.1", "--memory", limit, env=config)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    starter.fake_model(fake_port)
    env = {**plan["env"], "HOST": "127.0.0.1", "PYTHONPATH": str(REPO / "src"), **(extra_env or {})}
    g = starter.guard([sys.executable, "-m", "mathcoach"], limit=limit, env=env)
    checker_env = {**config, "FLIGHTCHECK_ATTACH_ENDPOINT": f"http://127.0.0.1:{port}",
                   "FLIGHTCHECK_ATTACH_GUARD": g.url,
                   "FLIGHTCHECK_ATTACH_SIDECAR": f"http://127.0.0.1:{fake_port}"}
    return checker_env, g


def _m(stage: dict[str, Any], name: str) -> Any:
    values = [m["value"] for m in stage["measurements"] if m["name"] == name]
    assert values, f"no measurement {name} in {stage['name']}"
    return values[-1]


def _ci(env: dict[str, str], report_dir: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    done = subprocess.run(
        [sys.executable, "-m", "flightcheck.cli", "ci", "--runtime", "attached",
         "--report-dir", str(report_dir), *args],
        cwd=REPO, env=clean_env(env), capture_output=True, text=True, timeout=240,
    )
    report = json.loads((report_dir / "flightcheck-report.json").read_text())
    return done.returncode, {s["name"]: s for s in report["stages"]}, done.stderr


@pytest.mark.slow
def test_ci_attached_to_mathcoach_under_the_guard_passes_with_the_guards_peak(
    starter: Starter, tmp_path: Path,
) -> None:
    env, g = _service(starter, limit="512Mi")
    code, stages, stderr = _ci(env, tmp_path)
    assert code == 0, stderr
    assert stages.pop("lint")["status"] in ("pass", "warn")  # whatever the working tree holds
    assert {n: s["status"] for n, s in stages.items()} == {
        "build": "pass", "run-with-memory-limit": "pass", "health-poll": "pass", "ai-smoke": "pass"}
    assert "imports ok: mathcoach, mathcoach.app" in stages["build"]["summary"]
    run = stages["run-with-memory-limit"]
    after = verdict(g.url)
    assert after is not None and after["exit"] is None  # still up: attached never stops it
    peak = _m(run, "peak_memory_bytes")
    assert 20 * MiB < peak <= after["peak"]  # the guard's number (it only grows)
    assert _m(run, "memory_limit_bytes") == 512 * MiB
    assert run["details"]["guard"] == after["kind"]
    assert stages["ai-smoke"]["details"]["mode"] == "fake model server"
    assert _m(stages["ai-smoke"], "cases_failed") == 0 and _m(stages["ai-smoke"], "cases_total") > 3


@pytest.mark.slow
def test_ci_attached_reports_an_oom_at_startup_under_the_guard(
    starter: Starter, tmp_path: Path,
) -> None:
    env, g = _service(starter, limit="160Mi", extra_env={"FAULT_STARTUP_ALLOC_MB": "400"})
    code, stages, stderr = _ci(env, tmp_path, "--only", "run-with-memory-limit")
    assert code == 1, stderr
    run = stages["run-with-memory-limit"]
    assert run["status"] == "fail" and run["details"]["exit"]["kind"] == "oom", run
    assert [f["code"] for f in run["findings"]] == ["run.oom"]
    assert "OOM-killed" in run["summary"] and "limit 160Mi" in run["summary"]
    data = verdict(g.url)
    assert data is not None and data["oom"] is True  # the guard's verdict, read across processes
    # The kill means the limit was reached; the guard's own sample stays beside it.
    assert _m(run, "peak_memory_bytes") == max(data["peak"], 160 * MiB)
    if data["peak"] < 160 * MiB:
        assert _m(run, "peak_sampled_bytes") == data["peak"]
