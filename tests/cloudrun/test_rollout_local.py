"""The rollout and the analysis in-process against the local Cloud Run through the real client,
with the attribution Google's Cloud Run needs: no revision header, so each revision is reached
through its own tag URL (``candidate`` and ``stable``)."""

from __future__ import annotations

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
from flightcheck.cloudrun.rollout import Rollout, Settings, Validation
from flightcheck.config import load
from flightcheck.lessons.rollback import Thresholds
from flightcheck.smoke.runner import Mode, fake_env
from flightcheck.smoke.suite import Defaults, Price, load_suite

SERVICE = "fc-tags"
SUITE = """\
version: 1
cases:
  - name: evaluate 2+2
    request: {method: POST, path: /v1/evaluate, json: {expression: "2+2"}}
    expect:
      json: [{path: result, equals: "4"}]
"""

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, docker_client: object) -> Iterator[RunV2]:
    with rollout_api(tmp_path_factory.mktemp("emulator"), SERVICE) as api:
        yield api


@pytest.fixture(scope="module")
def image(api: RunV2) -> str:
    return push_with_flightcheck(SERVICE, tag="t")


def _rollout(api: RunV2, image: str, tmp_path: Path, name: str, steps: tuple[int, ...],
             **env: str) -> tuple[Rollout, Analysis]:
    config = load(REPO_CONFIG, environ={}).config
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(SUITE)
    suite = load_suite(suite_file)
    service_env = {**config.environments["dev"].as_env(), **fake_env(8929),
                   "AI_PROVIDER": "openai", **env}
    desired = spec.build_service(config, image=image, revision=f"fc-tags-{name}",
                                 env=service_env, fake_model_port=8929)
    analysis = Analysis(
        cases=canary_cases(suite, ai_path=None, mode=Mode("fake")), mode=Mode("fake"),
        defaults=Defaults(), prices={"*": Price(input=0.15, output=0.6)},
        request_timeout_s=20, request_rate=100, min_requests=10, step_duration_s=0,
        max_step_s=60, attribution="tags")

    async def validate(url: str, revision: str) -> Validation:
        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
            resp = await client.get(url + "/health/startup")
        return Validation(resp.status_code == 200, f"HTTP {resp.status_code}")

    rollout = Rollout(api, desired, validator=validate, analyzer=analysis,
                      settings=Settings(steps=steps, stable_tag=True, allow_unauthenticated=True,
                                        thresholds=Thresholds(max_error_rate=0.01)))
    return rollout, analysis


def test_tag_url_attribution_judges_each_revision_apart(
    api: RunV2, image: str, tmp_path: Path
) -> None:
    first, _ = _rollout(api, image, tmp_path, "one", (50, 100))
    assert anyio.run(first.run).status == "promoted"

    good, _ = _rollout(api, image, tmp_path, "two", (50, 100))
    outcome = anyio.run(good.run)
    assert outcome.status == "promoted", outcome.reason
    step = outcome.steps[0]
    assert set(step.metrics) == {"fc-tags-one", "fc-tags-two"}  # no unattributed answers
    assert step.metrics["fc-tags-two"]["requests"] >= 10
    svc = anyio.run(api.get_service)
    assert svc is not None
    assert [(t.revision, t.percent, t.tag) for t in svc.traffic] == [("fc-tags-two", 100, "")]

    bad, _ = _rollout(api, image, tmp_path, "three", (50, 100), FAULT_ERROR_RATE="0.3")
    outcome = anyio.run(bad.run)
    assert outcome.status == "rolled_back", outcome.reason
    assert outcome.reason.startswith("error rate") and "at 50%" in outcome.reason
    svc = anyio.run(api.get_service)
    assert svc is not None
    assert [(t.revision, t.percent) for t in svc.traffic if t.percent] == [("fc-tags-two", 100)]
    assert not [t for t in svc.traffic if t.tag in ("candidate", "stable")]
    metrics = outcome.steps[0].metrics
    assert metrics["fc-tags-three"]["errors"] > 0 and metrics["fc-tags-two"]["errors"] == 0

