"""The reference suite (smoke.yaml) against real mathcoach processes and its fault knobs,
with flightcheck's fake model server as the sidecar the service's OpenAI client talks to."""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakemodel"))
from fc_support import REPO, ProcRunning, free_port, make_context, start_mathcoach  # noqa: E402  # pyright: ignore[reportMissingImports]

from flightcheck.context import Context  # noqa: E402
from flightcheck.results import StageResult, Status  # noqa: E402
from flightcheck.stages import health, smoke  # noqa: E402

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

Run = Callable[..., Awaitable[tuple[StageResult, Context]]]


@pytest.fixture
async def run_suite(tmp_path: Path) -> AsyncIterator[Run]:
    started: list[ProcRunning] = []

    async def _run(smoke_cfg: dict[str, Any] | None = None,
                   service_env: dict[str, str] | None = None, **faults: str
                   ) -> tuple[StageResult, Context]:
        ctx = make_context(tmp_path, smoke={"suite": str(REPO / "smoke.yaml"),
                                            "fake_model_port": free_port(), **(smoke_cfg or {})})
        ctx.service_env.update(service_env or {})  # like --service-env: wins over the suite
        await smoke.prepare(ctx)
        running = start_mathcoach(ctx, **faults)
        started.append(running)
        ready = await health.run(ctx)
        assert ready.status is Status.PASS, ready.summary + str(ready.findings)
        return await smoke.run(ctx), ctx

    yield _run
    for running in started:
        await running.stop()


def _case(res: StageResult, name: str) -> dict[str, Any]:
    cases = res.details["cases"]
    assert isinstance(cases, list)
    return next(c for c in cases if c["name"] == name)


async def test_reference_suite_passes_over_the_openai_wire_protocol(run_suite: Run) -> None:
    res, ctx = await run_suite()
    assert res.status is Status.PASS, [f.message for f in res.findings]
    assert res.measurement("cases_failed") == 0 and res.measurement("cases_passed") == 9
    assert ctx.service_environment()["AI_PROVIDER"] == "openai"
    # The model calls really went through the fake server, with the configured parameters.
    sent = res.details["provider_requests"]
    assert isinstance(sent, list) and sent
    params = sent[0]["params"]
    assert sent[0]["model"] == "fake-math-1"
    assert params["temperature"] == 0.2 and params["top_p"] == 0.95
    assert params["max_tokens"] == 512 and params["response_format"] == "json_object"
    cost = res.measurement("cost_usd")
    assert isinstance(cost, float) and cost > 0
    retried = _case(res, "a wrong model answer is caught and asked again")
    assert len([r for r in sent if r["case"] == retried["name"]]) == 2


async def test_reference_suite_passes_over_the_gemini_rest_protocol(run_suite: Run) -> None:
    pytest.importorskip("google.genai")  # mathcoach's gemini provider uses the official SDK
    res, _ = await run_suite(service_env={"AI_PROVIDER": "gemini"})
    assert res.status is Status.PASS, [f.message for f in res.findings]
    sent = res.details["provider_requests"]
    assert isinstance(sent, list) and sent
    assert {r["endpoint"] for r in sent} == {"generateContent"}
    assert sent[0]["params"]["top_k"] == 40 and sent[0]["params"]["temperature"] == 0.2


async def test_degraded_answers_fail_with_the_diff(run_suite: Run) -> None:
    res, _ = await run_suite(FAULT_DEGRADE_ANSWERS="1")
    assert res.status is Status.FAIL
    messages = [f.message for f in res.findings]
    assert "case 'evaluate 2+2': $.result: expected \"4\", got \"5\"" in messages
    assert any("$.question.answer: expected \"3/4\", got" in m for m in messages)


async def test_token_inflation_over_budget_fails(run_suite: Run) -> None:
    res, _ = await run_suite(FAULT_TOKEN_MULTIPLIER="10")
    assert res.status is Status.FAIL
    case = _case(res, "question within token, latency and cost budgets")
    bad = [c for c in case["checks"] if c["check"].startswith("tokens.") and not c["ok"]]
    assert bad and all(c["source"] == "service" for c in bad)
    # The provider's own count is within budget: the service misreports (or resends) tokens.
    assert case["usage"]["service"]["total_tokens"] == 10 * case["usage"]["provider"]["total_tokens"]


async def test_5xx_from_the_ai_path_fails(run_suite: Run) -> None:
    res, _ = await run_suite(FAULT_ERROR_RATE="1")
    assert res.status is Status.FAIL
    case = _case(res, "question from a scripted model reply")
    assert case["http_status"] == 500
    assert "FAULT_ERROR_RATE" in case["response_excerpt"]


async def test_hanging_service_is_bounded_by_the_request_timeout(run_suite: Run) -> None:
    began = time.perf_counter()
    res, _ = await run_suite(smoke_cfg={"request_timeout_s": 1}, FAULT_HANG_S="60")
    assert time.perf_counter() - began < 60
    assert res.status is Status.FAIL
    case = _case(res, "ai-health")
    assert "no response within 1 s (timeout)" in case["checks"][0]["message"]
    # Known to hang after two cases: the rest is reported as not run, not waited for.
    assert any(f.code == "smoke.hang" for f in res.findings)
    assert res.measurement("cases_failed") == 2
    assert res.measurement("cases_skipped") == res.measurement("cases_total") - 2


@pytest.mark.docker
async def test_whole_chain_in_docker_with_the_fake_model_inside_the_service_image(
    docker_client: Any,  # skips without a daemon or the base image
) -> None:
    from flightcheck import config, graph

    loaded = config.load(REPO / "flightcheck.toml",
                         overrides={"run.runtime": ("docker", "--runtime")})
    ctx = Context(loaded=loaded, runtime_name="docker")
    stages = [*graph.default_graph()]
    names = [s.name for s in stages]
    if "health-poll" not in names:  # until the lead wires them into the graph
        stages.append(graph.Stage("health-poll", health.run, needs=("run-with-memory-limit",)))
    if "ai-smoke" not in names:
        stages.append(graph.Stage("ai-smoke", smoke.run, needs=("run-with-memory-limit",),
                                  gates=("health-poll",), prepare=smoke.prepare))
    stages = [s for s in stages if s.name in ("build", "run-with-memory-limit", "health-poll",
                                              "ai-smoke")]
    results = {r.name: r for r in await graph.run(ctx, stages)}
    assert results["health-poll"].status is Status.PASS, results["health-poll"].summary
    res = results["ai-smoke"]
    assert res.status is Status.PASS, [f.message for f in res.findings]
    sent = res.details["provider_requests"]
    assert isinstance(sent, list) and {r["endpoint"] for r in sent} == {"chat.completions"}
