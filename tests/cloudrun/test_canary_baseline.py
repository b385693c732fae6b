"""The canary analysis compares each step's candidate with the saved quality baseline (issue 10:
the canary uses the quality lesson's comparison), in-process against the local Cloud Run: real
revisions of the reference service, the baseline saved by `flightcheck baseline save` from a real
healthy run of the same suite, degraded answers from the service's own FAULT_DEGRADE_ANSWERS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from config_support import REPO_CONFIG
from local_support import push_with_flightcheck, rollout_api

from flightcheck.cloudrun import spec
from flightcheck.cloudrun.analysis import Analysis, canary_cases
from flightcheck.cloudrun.client import RunV2
from flightcheck.cloudrun.rollout import Outcome, Rollout, Settings, Validation
from flightcheck.config import load
from flightcheck.lessons.quality import QualityMetrics, load_baseline
from flightcheck.lessons.rollback import Thresholds
from flightcheck.smoke.runner import Mode, fake_env
from flightcheck.smoke.suite import Defaults, Price, load_suite

REPO = Path(__file__).resolve().parents[2]
SUITE = "tests/fixtures/deploy/quality-suite.yaml"  # inside the project: the CLI refuses others
SERVICE = "fc-quality"

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, docker_client: object) -> Iterator[RunV2]:
    with rollout_api(tmp_path_factory.mktemp("emulator"), SERVICE) as api:
        yield api


@pytest.fixture(scope="module")
def image(api: RunV2) -> str:
    return push_with_flightcheck(SERVICE, tag="q")


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> QualityMetrics:
    """A healthy run of the suite (`flightcheck ci` up to ai-smoke), saved as the baseline."""
    tmp = tmp_path_factory.mktemp("baseline")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AI_", "FAULT_", "FLIGHTCHECK__"))}
    env["FLIGHTCHECK__SMOKE__SUITE"] = SUITE

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "flightcheck.cli", *args], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=300, check=False)

    run = cli("ci", "--runtime", "process", "--until", "ai-smoke", "--report-dir",
              str(tmp / "report"))
    assert run.returncode == 0, run.stderr[-3000:]
    saved = cli("baseline", "save", "--report-dir", str(tmp / "report"), "--output",
                str(tmp / "baseline.json"))
    assert saved.returncode == 0, saved.stderr
    assert json.loads((tmp / "baseline.json").read_text())["metrics"]["assertion_pass_rate"] == 1.0
    return load_baseline(tmp / "baseline.json")


def _rollout(api: RunV2, image: str, name: str, *, baseline: QualityMetrics | None,
             **env: str) -> Rollout:
    config = load(REPO_CONFIG, environ={}).config
    suite = load_suite(REPO / SUITE)
    desired = spec.build_service(
        config, image=image, revision=f"{SERVICE}-{name}", fake_model_port=8929,
        env={**config.environments["dev"].as_env(), **fake_env(8929), "AI_PROVIDER": "openai",
             **env})
    analysis = Analysis(
        cases=canary_cases(suite, ai_path=None, mode=Mode("fake")), mode=Mode("fake"),
        defaults=Defaults(), prices={"*": Price(input=0.15, output=0.6)},
        request_timeout_s=20, request_rate=100, min_requests=10, step_duration_s=0,
        max_step_s=60, attribution="header", baseline=baseline)

    async def validate(url: str, revision: str) -> Validation:
        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
            resp = await client.get(url + "/health/startup")
        return Validation(resp.status_code == 200, f"HTTP {resp.status_code}")

    return Rollout(api, desired, validator=validate, analyzer=analysis,
                   settings=Settings(steps=(50, 100), allow_unauthenticated=True,
                                     thresholds=Thresholds(
                       max_error_rate=0.01, min_quality=0.6)))


def _run(rollout: Rollout) -> Outcome:
    return anyio.run(rollout.run)


def _serving(api: RunV2) -> list[tuple[str, int]]:
    svc = anyio.run(api.get_service)
    assert svc is not None
    return [(t.revision, t.percent) for t in svc.traffic if t.percent]


def test_degraded_answers_roll_back_against_the_baseline_not_without_one(
    api: RunV2, image: str, baseline: QualityMetrics
) -> None:
    first = _run(_rollout(api, image, "good", baseline=baseline))
    assert first.status == "promoted", first.reason
    healthy = _run(_rollout(api, image, "good2", baseline=baseline))
    assert healthy.status == "promoted", healthy.reason
    step = healthy.steps[0].metrics[f"{SERVICE}-good2"]
    assert step["vs_baseline"]["status"] == "pass", step  # type: ignore[index]

    degraded = _run(_rollout(api, image, "bad", baseline=baseline, FAULT_DEGRADE_ANSWERS="1"))
    assert degraded.status == "rolled_back", degraded.reason
    assert degraded.reason.startswith(
        "worse than the quality baseline: assertion_pass_rate 0.5 vs 1 (50% worse > 40%) at 50%")
    assert "quality 0.67" not in degraded.reason  # min_quality = 0.6 held: the baseline caught it
    metrics = degraded.steps[0].metrics[f"{SERVICE}-bad"]
    assert metrics["quality"] == 0.6667 and metrics["assertion_pass_rate"] == 0.5
    assert metrics["vs_baseline"]["status"] == "fail"  # type: ignore[index]
    assert _serving(api) == [(f"{SERVICE}-good2", 100)]

    # No baseline: min_quality alone judges quality, and 0.67 ≥ 0.6 is promoted.
    unguarded = _run(_rollout(api, image, "bad2", baseline=None, FAULT_DEGRADE_ANSWERS="1"))
    assert unguarded.status == "promoted", unguarded.reason
    assert "vs_baseline" not in unguarded.steps[0].metrics[f"{SERVICE}-bad2"]
    assert _serving(api) == [(f"{SERVICE}-bad2", 100)]
