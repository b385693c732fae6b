"""Resource sizing from measurements; memory below the measured need trips it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lessons_support import REPO, Run, evidence, flightcheck, measurement

from flightcheck import config as config_mod
from flightcheck.config import parse_memory
from flightcheck.lessons import defaults
from flightcheck.lessons.resources import (
    MEMORY_SIZES,
    Measured,
    RunSample,
    formula_gb,
    min_cpu_for,
    probe_for,
    recommend,
    size_for,
)
from flightcheck.results import LessonResult, Repro, Status

MiB = 2**20


def _judge(toml_extra: str, measured: Measured, tmp_path: Path) -> LessonResult:
    ev = evidence([], "[service]\nname='x'\n" + toml_extra, tmp_path)
    res = LessonResult(name="resources", status=Status.PASS, repro=Repro(local="x", dagger="y"))
    return recommend(ev.config, measured, res)


def test_sizes_cpus_and_the_fixed_formula() -> None:
    assert size_for(100 * MiB, gen2=True) == 512 * MiB  # gen2's minimum
    assert size_for(100 * MiB, gen2=False) == 128 * MiB
    assert size_for(3 * 2**30, gen2=True) == 4 * 2**30
    assert size_for(40 * 2**30, gen2=True) is None
    assert [min_cpu_for(s) for s in (1 * 2**30, 8 * 2**30, 16 * 2**30, 24 * 2**30, 32 * 2**30)] == [
        "1", "2", "4", "6", "8"]
    assert formula_gb(1, 8) == pytest.approx(4.1)  # 1.5 + 1 + 0.2 × 8
    assert formula_gb(0, 1) == defaults.FORMULA_MIN_GB


def test_every_recommendation_is_a_config_cloud_run_accepts(tmp_path: Path) -> None:
    for peak in (30 * MiB, 700 * MiB, 3 * 2**30, 7 * 2**30, 20 * 2**30):
        res = _judge("", Measured(runs=[RunSample(peak_bytes=peak, time_to_ready_s=3.0)]), tmp_path)
        rec = res.details["recommended"]
        assert isinstance(rec, dict) and rec["memory"] is not None
        (tmp_path / "c.toml").write_text(
            f"[service]\nname='x'\n[deploy]\nmemory='{rec['memory']}'\ncpu='{rec['cpu']}'\n")
        config_mod.load(tmp_path / "c.toml", environ={})  # validated like a user's file
        assert parse_memory(str(rec["memory"])) in MEMORY_SIZES
        assert parse_memory(str(rec["memory"])) >= peak * (1 + defaults.RESOURCES_HEADROOM)


def test_probe_settings_fit_cloud_runs_limits() -> None:
    for ready in (0.5, 12.0, 119.0, 200.0):
        probe = probe_for(ready, 1.0)
        assert probe is not None
        assert probe["window_s"] <= 240 and probe["timeout_s"] <= probe["period_s"]
        assert probe["window_s"] >= min(240, ready * 2)
    assert probe_for(300.0, 1.0) is None


def test_memory_below_the_measured_need_fails_with_the_fix(tmp_path: Path) -> None:
    res = _judge("[deploy]\nmemory='512Mi'\n",
                 Measured(runs=[RunSample(peak_bytes=700 * MiB, time_to_ready_s=2.0)]), tmp_path)
    assert res.status is Status.FAIL
    (f,) = [f for f in res.findings if f.code == "resources.memory-below-need"]
    assert "512Mi" in f.message and 'memory = "1Gi"' in (f.fix or "")


def test_far_above_warns_about_cost_and_a_right_size_passes(tmp_path: Path) -> None:
    small = Measured(runs=[RunSample(peak_bytes=80 * MiB, time_to_ready_s=1.0)])
    far = _judge("[deploy]\nmemory='4Gi'\n", small, tmp_path)
    assert far.status is Status.WARN and far.findings[0].code == "resources.memory-far-above"
    right = _judge("[deploy]\nmemory='512Mi'\n", small, tmp_path)
    assert right.status is Status.PASS, right.findings
    assert "fixed formula: 4.1 GB" in right.summary


def test_slow_startup_short_window_and_cold_start(tmp_path: Path) -> None:
    slow = Measured(runs=[RunSample(peak_bytes=80 * MiB, time_to_ready_s=30.0)])
    res = _judge("[deploy]\nmemory='512Mi'\n[health.startup]\nperiod_s=1\nfailure_threshold=20\n",
                 slow, tmp_path)
    codes = {f.code for f in res.findings}
    assert {"resources.startup-window", "resources.cold-start"} <= codes
    assert res.status is Status.FAIL
    assert res.details["recommended"]["min_instances"] == 1  # type: ignore[index]
    too_slow = _judge("", Measured(runs=[RunSample(peak_bytes=80 * MiB, time_to_ready_s=400.0)]), tmp_path)
    assert "resources.startup-too-slow" in {f.code for f in too_slow.findings}


def test_per_request_memory_is_the_median_over_runs() -> None:
    m = Measured(concurrency=4, runs=[
        RunSample(idle_bytes=100 * MiB, load_peak_bytes=140 * MiB),
        RunSample(idle_bytes=100 * MiB, load_peak_bytes=120 * MiB),
        RunSample(idle_bytes=100 * MiB, load_peak_bytes=180 * MiB),
    ])
    assert m.per_request_bytes == 10 * MiB
    assert m.peak_bytes == 180 * MiB


@pytest.mark.slow
def test_the_ci_run_judges_sizing_from_its_one_start(healthy: Run) -> None:
    lesson = healthy.lesson("resources")
    assert lesson["status"] in ("pass", "warn"), lesson
    assert measurement(lesson, "peak_memory_bytes") > 10 * MiB
    assert measurement(lesson, "runs") == 1
    assert "fixed formula" in lesson["summary"]


@pytest.mark.slow
@pytest.mark.docker
def test_resources_measures_runs_and_load_in_docker(docker_client: object, tmp_path: Path) -> None:
    proc = flightcheck("resources", "--runtime", "docker", "--runs", "2", "--concurrency", "4",
                       "--report-dir", str(tmp_path), "--format", "json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    assert res == json.loads((tmp_path / "resources.json").read_text())
    runs = res["details"]["measured"]["runs"]
    assert len(runs) == 2 and all(r["requests"] > 0 and r["errors"] == 0 for r in runs)
    assert all(r["idle_bytes"] and r["load_peak_bytes"] and r["time_to_ready_s"] for r in runs)
    assert measurement(res, "memory_per_request_bytes") is not None
    assert parse_memory(res["details"]["recommended"]["memory"]) in MEMORY_SIZES
    text = flightcheck("resources", "--from-report", "--report-dir", str(REPO / "nonexistent"))
    assert text.returncode == 2


@pytest.mark.slow
def test_memory_below_the_measured_need_trips_the_gate(tmp_path: Path) -> None:
    """The service holds 600 MiB at startup; [deploy] gives it 512Mi."""
    proc = flightcheck("resources", "--runtime", "process", "--concurrency", "2",
                       "--service-env", "FAULT_STARTUP_ALLOC_MB=600", "--report-dir", str(tmp_path),
                       env={"FLIGHTCHECK__DEPLOY__MEMORY": "512Mi"})
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    assert proc.stdout.startswith("FAIL  resources:")
    assert "is below the measured need" in proc.stdout and "fixed formula" in proc.stdout
    saved = json.loads((tmp_path / "resources.json").read_text())
    assert measurement(saved, "need_bytes") > 600 * MiB
