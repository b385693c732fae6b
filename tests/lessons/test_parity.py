"""Parity: AI parameters across declared environments, as running, and as deployed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lessons_support import Run, ci, evidence, flightcheck, measurement, stage

from flightcheck.errors import UsageError
from flightcheck.lessons import parity
from flightcheck.results import Status

ENVS = """
[service]
name = "x"
[environments.dev]
model = "gpt-4o-mini-2024-07-18"
temperature = 0.2
[environments.prod]
model = "gpt-4o-mini-2024-07-18"
temperature = {prod_temperature}
"""


def _ev(tmp_path: Path, prod_temperature: float = 0.2, stages: list[Any] | None = None,
        extra: str = "") -> parity.Evidence:
    return evidence(stages or [], ENVS.format(prod_temperature=prod_temperature) + extra, tmp_path)


def test_identical_environments_pass(tmp_path: Path) -> None:
    res = parity.evaluate(_ev(tmp_path))
    assert res.status is Status.PASS, res.findings
    assert res.measurement("comparisons") == 5 and res.measurement("mismatches") == 0


def test_a_declared_mismatch_fails_with_a_table_and_the_impact(tmp_path: Path) -> None:
    res = parity.evaluate(_ev(tmp_path, prod_temperature=0.9))
    assert res.status is Status.FAIL
    (f,) = res.findings
    assert f.code == "parity.temperature"
    assert "dev=0.2, prod=0.9" in f.message and "randomness" in f.message
    table = res.details["tables"]["dev vs prod"]  # type: ignore[index]
    row = next(r for r in table if r["parameter"] == "temperature")
    assert row == {"parameter": "temperature", "values": {"dev": 0.2, "prod": 0.9}, "same": False,
                   "impact": parity.IMPACT["temperature"]}
    text = "\n".join(parity.text(res))
    assert "temperature" in text and "≠" in text


def test_a_floating_model_alias_is_flagged(tmp_path: Path) -> None:
    ev = evidence([], "[service]\nname='x'\n[environments.dev]\nmodel='gpt-4o'\n"
                  "[environments.prod]\nmodel='gpt-4o'\n", tmp_path)
    res = parity.evaluate(ev)
    assert res.status is Status.WARN
    assert {f.code for f in res.findings} == {"parity.floating-model"}


def test_running_params_are_compared_with_the_runs_environment(tmp_path: Path) -> None:
    observed = {"params": {"provider": "openai", "model": "gpt-4o-mini-2024-07-18",
                           "temperature": 0.2, "top_k": 40, "top_p": "0.95", "max_output_tokens": 512,
                           "seed": None}}
    ok = parity.evaluate(_ev(tmp_path, stages=[stage("ai-smoke", details={parity.ARTIFACT: observed})]))
    assert ok.status is Status.PASS and "dev declared vs running" in ok.summary
    observed["params"]["model"] = "gpt-4o-2024-08-06"  # type: ignore[index]
    bad = parity.evaluate(_ev(tmp_path, stages=[stage("ai-smoke", details={parity.ARTIFACT: observed})]))
    assert bad.status is Status.FAIL
    assert "does not run with its declared model" in (bad.findings[0].fix or "")


def test_deployed_revision_env_is_compared_when_deploy_reported_it(tmp_path: Path) -> None:
    env = {"AI_MODEL": "gpt-4o-mini-2024-07-18", "AI_TEMPERATURE": "0.7"}
    deploy = stage("deploy", details={"status": "promoted", "revision_env": env})
    res = parity.evaluate(_ev(tmp_path, stages=[deploy]))
    assert res.status is Status.FAIL
    assert "prod declared vs deployed (temperature)" in res.summary
    assert res.details["deployed"] == {"model": "gpt-4o-mini-2024-07-18", "temperature": "0.7"}
    # A candidate that was rolled back serves nobody: its env is not "the deployed revision's".
    back = stage("deploy", Status.FAIL, details={"status": "rolled_back", "revision_env": env})
    assert parity.evaluate(_ev(tmp_path, stages=[back])).status is Status.PASS


def test_the_two_named_environments_only_and_unknown_names(tmp_path: Path) -> None:
    ev = _ev(tmp_path, prod_temperature=0.9, extra="[environments.staging]\nmodel='gpt-4o-mini-2024-07-18'\n")
    assert list(parity.evaluate(ev, envs=["dev", "staging"]).details["tables"]) == ["dev vs staging"]  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="qa"):
        parity.evaluate(ev, envs=["dev", "qa"])


def test_nothing_declared_and_nothing_observed_is_skipped_not_passed(tmp_path: Path) -> None:
    res = parity.evaluate(evidence([], "[service]\nname='x'\n", tmp_path))
    assert res.status is Status.SKIPPED


def test_values_compare_as_parameters() -> None:
    assert parity._same(0.2, "0.2") and parity._same(40, 40.0) and not parity._same(None, 0)
    assert not parity._same("gpt-4o", "gpt-4o-2024-08-06")


# --- on the reference service --------------------------------------------------------------


@pytest.mark.slow
def test_the_healthy_run_matches_what_the_service_reports(healthy: Run) -> None:
    lesson = healthy.lesson("parity")
    assert lesson["status"] == "pass", lesson
    assert set(lesson["details"]["tables"]) == {"dev vs prod", "dev declared vs running"}
    assert lesson["details"]["running"]["model"] == "fake-math-1"
    assert measurement(lesson, "comparisons") == 10


@pytest.mark.slow
def test_an_overridden_parameter_in_the_running_service_fails_the_run(tmp_path: Path) -> None:
    run = ci(tmp_path / "report", "--service-env", "AI_TEMPERATURE=0.9")
    assert run.rc == 1, run.why()
    lesson = run.lesson("parity")
    assert lesson["status"] == "fail"
    assert [f["code"] for f in lesson["findings"]] == ["parity.temperature"]
    assert "FAIL  lesson parity" in run.stderr
    cmd = flightcheck("parity", "--report-dir", str(run.report_dir))
    assert cmd.returncode == 1 and "0.9" in cmd.stdout


@pytest.mark.slow
def test_parity_reads_a_running_service_by_url(start_mathcoach: Callable[..., Any], tmp_path: Path) -> None:
    svc = start_mathcoach({"AI_MODEL": "fake-math-2", "AI_TEMPERATURE": "0.2"})
    proc = flightcheck("parity", "--url", svc.url, "--env", "prod", "--report-dir", str(tmp_path))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "prod declared vs " + svc.url in proc.stdout
    assert "model differs" in proc.stdout and "fake-math-2" in proc.stdout
    same = start_mathcoach({})
    ok = flightcheck("parity", "--url", same.url, "--report-dir", str(tmp_path))
    assert ok.returncode == 0, ok.stdout


def test_declared_environments_from_the_command_line_with_no_saved_run(tmp_path: Path) -> None:
    cfg = tmp_path / "flightcheck.toml"
    cfg.write_text(ENVS.format(prod_temperature=0.7))
    proc = flightcheck("parity", "dev", "prod", "--config", str(cfg), "--report-dir", str(tmp_path / "none"))
    assert proc.returncode == 1
    assert proc.stdout.startswith("FAIL  parity: 1 mismatch(es): dev vs prod (temperature)")
    three = flightcheck("parity", "dev", "prod", "qa", "--config", str(cfg))
    assert three.returncode == 2 and "two environments" in three.stderr


def test_the_gate_before_deploy_judges_declared_and_just_observed_parameters(tmp_path: Path) -> None:
    from flightcheck import config as config_mod
    from flightcheck.context import Context

    cfg = tmp_path / "flightcheck.toml"
    cfg.write_text(ENVS.format(prod_temperature=0.2))
    ctx = Context(loaded=config_mod.load(cfg, environ={}), report_dir=tmp_path, environment="prod")
    assert parity.before_deploy(ctx).status is Status.PASS
    to_deploy = {"AI_MODEL": "gpt-4o-mini-2024-07-18", "AI_TEMPERATURE": "0.2", "PORT_X": "1"}
    assert parity.before_deploy(ctx, to_deploy).status is Status.PASS
    overridden = parity.before_deploy(ctx, {**to_deploy, "AI_TEMPERATURE": "0.9"})
    assert overridden.status is Status.FAIL
    assert overridden.summary == "1 mismatch(es): prod declared vs to deploy (temperature)"
    ctx.artifacts[parity.ARTIFACT] = {"params": {"model": "gpt-4o-2024-08-06", "temperature": 0.2}}
    blocked = parity.before_deploy(ctx)
    assert blocked.status is Status.FAIL and "prod declared vs running (model)" in blocked.summary


def test_the_repro_lines_carry_the_commands_own_arguments(tmp_path: Path) -> None:
    """A rerun that drops the environments asked for would judge a different pair."""
    repro = parity.evaluate(_ev(tmp_path, prod_temperature=0.9), envs=["dev", "prod"]).repro
    assert repro.local.startswith("flightcheck parity dev prod")
    assert "dagger call parity" in repro.dagger and "--envs=dev,prod" in repro.dagger
    plain = parity.evaluate(_ev(tmp_path)).repro
    assert "--envs" not in plain.dagger
