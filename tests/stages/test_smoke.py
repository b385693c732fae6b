"""ai-smoke end to end: tests/fakemodel/svc.py as a host process, flightcheck's fake model
server as its sidecar, real HTTP on 127.0.0.1 only."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakemodel"))
from fc_support import ProcRunning, free_port, make_context, start_fake_model, start_svc  # noqa: E402  # pyright: ignore[reportMissingImports]

from flightcheck.context import Context  # noqa: E402
from flightcheck.errors import StageError  # noqa: E402
from flightcheck.fakemodel import FAKE_API_KEY, SERVER_SCRIPT  # noqa: E402
from flightcheck.results import Severity, Status  # noqa: E402
from flightcheck.smoke.runner import Mode  # noqa: E402
from flightcheck.stages import health, smoke  # noqa: E402

pytestmark = pytest.mark.anyio

SUITE = """\
version: 1
defaults:
  timeout_s: 5
prices:
  gpt-4o-mini: {input: 0.15, output: 0.60}
env:
  fake: {AI_MODEL: gpt-4o-mini}
  openai: {AI_PROVIDER: openai, AI_TEMPERATURE: "0.7"}
cases:
  - name: add
    request: {method: POST, path: /v1/add, json: {a: 2, b: 2}}
    expect:
      status: 200
      json:
        - {path: sum, equals: 4}
        - {path: sum, approx: 4.0, tolerance: 0.001}
        - {path: text, regex: "= 4$"}
  - name: ask
    model:
      replies: [{content: "Paris is the capital of France."}]
    request: {method: POST, path: /v1/ask, json: {question: "Capital of France?"}}
    expect:
      json:
        - {path: answer, contains: Paris}
        - {path: usage.total_tokens, exists: true}
      latency_ms: 3000
      tokens: {max_total: 200}
      cost_usd: 0.001
  - name: ask json
    model:
      replies:
        - json: {city: Paris, population_m: 2.1}
    request: {method: POST, path: /v1/ask_json, json: {question: "Tell me about Paris"}}
    expect:
      schema:
        type: object
        required: [answer]
        properties:
          answer:
            type: object
            required: [city, population_m]
            properties:
              city: {type: string}
              population_m: {type: number}
      json:
        - {path: answer.city, equals: Paris}
        - {path: answer.population_m, approx: 2.0, tolerance: 0.2}
  - name: ask upstream
    external: true
    request: {method: POST, path: /v1/ask, json: {question: "anything"}}
    expect:
      json:
        - {path: answer, regex: "fake-model"}
"""

Start = Callable[..., Awaitable[tuple[Context, ProcRunning]]]


def _write(tmp: Path, text: str) -> Path:
    path = tmp / "smoke.yaml"
    path.write_text(text)
    return path


def _with_case(case_yaml: str) -> str:
    return SUITE + textwrap.indent(textwrap.dedent(case_yaml), "  ")


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    """prepare() (which decides the service's env and sidecar), then start svc.py."""
    started: list[ProcRunning] = []

    async def _start(suite: str | None = SUITE, smoke_cfg: dict[str, Any] | None = None,
                     service_env: dict[str, str] | None = None, **faults: str
                     ) -> tuple[Context, ProcRunning]:
        if suite is not None:
            _write(tmp_path, suite)
        ctx = make_context(
            tmp_path,
            service={"env": service_env or {}},
            smoke={"fake_model_port": free_port(), **(smoke_cfg or {})},
        )
        await smoke.prepare(ctx)
        running = start_svc(ctx, free_port(), **faults)
        started.append(running)
        ready = await health.wait_ready(running.endpoint, ctx.config.health.startup,
                                        status=running.status)
        assert ready.ready, await running.logs()
        return ctx, running

    yield _start
    for running in started:
        await running.stop()


def _case(res_details: dict[str, object], name: str) -> dict[str, Any]:
    cases = res_details["cases"]
    assert isinstance(cases, list)
    return next(c for c in cases if c["name"] == name)


def _check(case: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in case["checks"] if c["check"] == kind)


# --- prepare: which model the service talks to ---------------------------------------------


async def test_prepare_without_key_starts_the_fake_model_as_sidecar(tmp_path: Path) -> None:
    _write(tmp_path, SUITE)
    ctx = make_context(tmp_path, smoke={"fake_model_port": 9123})
    await smoke.prepare(ctx)
    assert ctx.sidecar is not None and ctx.sidecar.script == SERVER_SCRIPT
    assert ctx.sidecar.port == 9123
    env = ctx.service_environment()
    assert env["OPENAI_BASE_URL"] == "http://127.0.0.1:9123/v1"
    assert env["GOOGLE_GEMINI_BASE_URL"] == "http://127.0.0.1:9123"
    assert env["OPENAI_API_KEY"] == FAKE_API_KEY
    assert env["AI_MODEL"] == "gpt-4o-mini"  # the suite's env for fake mode
    assert ctx.artifacts[smoke.MODE_ARTIFACT] == Mode("fake")


async def test_prepare_in_real_mode_uses_the_real_provider(tmp_path: Path) -> None:
    _write(tmp_path, SUITE)
    ctx = make_context(tmp_path, service={"env": {"OPENAI_API_KEY": "sk-live-abcdefghijkl",
                                                  "AI_TEMPERATURE": "0.1"}},
                       smoke={"model": "real"})
    await smoke.prepare(ctx)
    assert ctx.sidecar is None
    env = ctx.service_environment()
    assert "OPENAI_BASE_URL" not in env
    assert env["AI_TEMPERATURE"] == "0.1"  # the user's own setting wins over the suite's
    assert env["AI_PROVIDER"] == "openai"
    assert ctx.artifacts[smoke.MODE_ARTIFACT] == Mode("real", "openai")


async def test_prepare_treats_the_fake_marker_key_as_no_key(tmp_path: Path) -> None:
    _write(tmp_path, SUITE)
    ctx = make_context(tmp_path, service={"env": {"GEMINI_API_KEY": FAKE_API_KEY}})
    await smoke.prepare(ctx)
    assert ctx.sidecar is not None


async def test_prepare_in_real_mode_without_a_key_leaves_the_service_alone(
    tmp_path: Path,
) -> None:
    _write(tmp_path, SUITE)
    ctx = make_context(tmp_path, smoke={"model": "real"})
    await smoke.prepare(ctx)
    assert ctx.sidecar is None and ctx.extra_service_env == {} and ctx.provider_env == {}
    assert ctx.artifacts[smoke.MODE_ARTIFACT] == Mode("real", None)


async def test_prepare_refuses_a_broken_suite_before_anything_runs(tmp_path: Path) -> None:
    from flightcheck.errors import ConfigError

    _write(tmp_path, "cases: [ {name: x, request: {path: nope}} ]")
    ctx = make_context(tmp_path)
    with pytest.raises(ConfigError, match="must start with '/'"):
        await smoke.prepare(ctx)


# --- the suite against a live service -------------------------------------------------------


async def test_healthy_service_passes_every_case(start: Start) -> None:
    ctx, _ = await start()
    res = await smoke.run(ctx)
    assert res.status is Status.PASS, [f.message for f in res.findings]
    names = [c["name"] for c in res.details["cases"]]  # type: ignore[union-attr]
    assert names == ["ai-health", "add", "ask", "ask json", "ask upstream"]  # /health/ai first
    assert res.measurement("cases_passed") == 5
    ask = _case(res.details, "ask")
    provider, service = ask["usage"]["provider"], ask["usage"]["service"]
    assert provider == service and provider["total_tokens"] > 0
    expected_cost = (provider["prompt_tokens"] * 0.15 + provider["completion_tokens"] * 0.6) / 1e6
    assert ask["cost_usd"] == pytest.approx(expected_cost)
    tokens = res.measurement("tokens_total")
    assert isinstance(tokens, int) and tokens >= provider["total_tokens"]
    assert res.measurement("latency_p95_ms") is not None
    assert res.measurement("quality_score") == 1.0
    # What the service sent the provider: the parity surface.
    sent = [r for r in res.details["provider_requests"] if r["case"] == "ask"]  # type: ignore[union-attr]
    assert sent[0]["model"] == "gpt-4o-mini" and sent[0]["params"]["temperature"] == 0.2
    # Everything the report needs survives JSON unchanged.
    assert json.loads(res.model_dump_json())["details"] == res.details


async def test_degraded_answers_fail_with_actual_vs_expected(start: Start) -> None:
    ctx, _ = await start(SVC_DEGRADE="1")
    res = await smoke.run(ctx)
    assert res.status is Status.FAIL
    add = _case(res.details, "add")
    assert add["status"] == "fail"
    eq = _check(add, "equals")
    assert (eq["expected"], eq["actual"]) == (4, 5)
    finding = next(f for f in res.findings if f.code == "smoke.equals")
    assert "case 'add': $.sum: expected 4, got 5" in finding.message
    assert finding.file == "smoke.yaml" and finding.line == SUITE.splitlines().index(
        "  - name: add") + 1
    approx = next(f for f in res.findings if f.code == "smoke.approx")
    assert "expected 4.0 ± 0.001, got 5" in approx.message
    assert res.measurement("cases_failed") == 1
    quality = res.measurement("quality_score")
    assert isinstance(quality, float) and quality < 1.0


async def test_5xx_from_the_ai_path_fails(start: Start) -> None:
    ctx, _ = await start(SVC_ERROR_AI="1")
    res = await smoke.run(ctx)
    assert res.status is Status.FAIL
    ask = _case(res.details, "ask")
    assert ask["http_status"] == 500 and ask["status"] == "fail"
    assert "internal error" in ask["response_excerpt"]
    # Not a provider outage: even the external case fails.
    assert _case(res.details, "ask upstream")["status"] == "fail"
    assert "logs_tail" in res.details


async def test_provider_errors_scripted_on_the_fake_model_fail_the_case(start: Start) -> None:
    ctx, _ = await start(_with_case("""\
        - name: provider 500
          model: {replies: [{status: 500, error: boom, times: 3}]}
          request: {method: POST, path: /v1/ask, json: {question: q}}
    """))
    res = await smoke.run(ctx)
    case = _case(res.details, "provider 500")
    assert case["status"] == "fail" and case["http_status"] == 502
    assert "provider error: HTTP 500" in case["response_excerpt"]
    assert case["usage"]["provider"]["total_tokens"] == 0  # failed calls cost nothing


async def test_malformed_model_output_fails_both_ways(start: Start) -> None:
    ctx, _ = await start(_with_case("""\
        - name: malformed via service check
          model: {replies: [{json: {city: Paris}, malformed: true}]}
          request: {method: POST, path: /v1/ask_json, json: {question: q}}
        - name: malformed passed through
          model: {replies: [{json: {city: Paris}, malformed: true}]}
          request: {method: POST, path: /v1/ask_raw, json: {question: q}}
          expect:
            json: [{path: city, equals: Paris}]
    """))
    res = await smoke.run(ctx)
    guarded = _case(res.details, "malformed via service check")
    assert guarded["http_status"] == 502 and "malformed output" in guarded["response_excerpt"]
    passed = _case(res.details, "malformed passed through")
    assert passed["http_status"] == 200
    assert "response is not JSON" in _check(passed, "json")["message"]
    assert any(f.code == "smoke.json" for f in res.findings)


async def test_token_inflation_over_budget_fails_for_the_source_that_inflates(
    start: Start,
) -> None:
    ctx, _ = await start(SVC_TOKEN_MULT="50")
    res = await smoke.run(ctx)
    ask = _case(res.details, "ask")
    tokens = _check(ask, "tokens.total_tokens")  # the first token check is the provider's
    failing = [c for c in ask["checks"] if c["check"].startswith("tokens.") and not c["ok"]]
    assert tokens["source"] == "provider" and tokens["ok"]
    assert [c["source"] for c in failing] == ["service"]
    assert failing[0]["actual"] == ask["usage"]["provider"]["total_tokens"] * 50
    assert any("over the budget of 200" in f.message for f in res.findings)


async def test_provider_side_token_inflation_is_caught_from_the_fake_models_count(
    start: Start,
) -> None:
    ctx, _ = await start(_with_case("""\
        - name: huge completion
          model: {replies: [{content: "ok", usage: {prompt_tokens: 10, completion_tokens: 5000}}]}
          request: {method: POST, path: /v1/ask, json: {question: q}}
          expect:
            tokens: {max_completion: 100}
            cost_usd: 0.0001
    """))
    res = await smoke.run(ctx)
    case = _case(res.details, "huge completion")
    assert case["status"] == "fail"
    codes = {f.code for f in res.findings}
    assert {"smoke.tokens.completion_tokens", "smoke.cost_usd"} <= codes
    cost = _check(case, "cost_usd")
    assert cost["actual"] == pytest.approx((10 * 0.15 + 5000 * 0.6) / 1e6)


async def test_latency_budget(start: Start) -> None:
    ctx, _ = await start(_with_case("""\
        - name: slow model
          model: {replies: [{content: "late", delay_ms: 400}]}
          request: {method: POST, path: /v1/ask, json: {question: q}}
          expect: {latency_ms: 150}
    """))
    res = await smoke.run(ctx)
    latency = _check(_case(res.details, "slow model"), "latency_ms")
    assert not latency["ok"] and latency["actual"] >= 400
    assert any(f.code == "smoke.latency_ms" for f in res.findings)


async def test_hanging_endpoint_is_bounded_by_the_case_timeout(start: Start) -> None:
    ctx, _ = await start(_with_case("""\
        - name: hangs
          timeout_s: 1
          request: {method: GET, path: /v1/hang}
    """))
    began = time.perf_counter()
    res = await smoke.run(ctx)
    assert time.perf_counter() - began < 10
    case = _case(res.details, "hangs")
    assert case["status"] == "fail"
    assert "no response within 1 s (timeout)" in _check(case, "response")["message"]


async def test_request_timeout_caps_every_case(start: Start) -> None:
    ctx, _ = await start(smoke_cfg={"request_timeout_s": 1}, SVC_HANG_AI="1")
    res = await smoke.run(ctx)
    assert _case(res.details, "ask")["status"] == "fail"
    # Two cases in a row without a response: the service hangs, the rest is not run.
    assert res.measurement("cases_failed") == 2  # ask, ask json
    assert _case(res.details, "ask upstream")["status"] == "skipped"
    assert any(f.code == "smoke.hang" for f in res.findings)


async def test_unreachable_provider_on_an_external_case_is_a_warning(start: Start) -> None:
    suite = SUITE.replace("""    request: {method: POST, path: /v1/ask, json: {question: "anything"}}""",
                          """    model: {replies: [{drop: true}]}
    request: {method: POST, path: /v1/ask, json: {question: "anything"}}""")
    ctx, _ = await start(suite)
    res = await smoke.run(ctx)
    assert res.status is Status.WARN, [f.message for f in res.findings]
    case = _case(res.details, "ask upstream")
    assert case["status"] == "warn" and "provider looks unreachable" in case["note"]
    assert all(f.severity is Severity.WARNING for f in res.findings)
    assert res.measurement("cases_warned") == 1


async def test_external_failure_fail_policy_turns_the_warning_into_a_failure(
    start: Start,
) -> None:
    suite = SUITE.replace("""    request: {method: POST, path: /v1/ask, json: {question: "anything"}}""",
                          """    model: {replies: [{drop: true}]}
    request: {method: POST, path: /v1/ask, json: {question: "anything"}}""")
    ctx, _ = await start(suite, smoke_cfg={"external_failure": "fail"})
    res = await smoke.run(ctx)
    assert res.status is Status.FAIL
    assert _case(res.details, "ask upstream")["status"] == "fail"


async def test_ai_health_fails_when_the_fake_provider_is_gone(start: Start) -> None:
    ctx, running = await start()
    side = running._side
    assert side is not None
    os.killpg(side.pid, signal.SIGTERM)
    side.wait(5)
    res = await smoke.run(ctx)
    assert res.status is Status.FAIL
    ai = _case(res.details, "ai-health")
    assert ai["status"] == "fail" and ai["http_status"] == 503
    assert any("fake model server" in f.message for f in res.findings)


async def test_service_dying_mid_suite_stops_the_suite(start: Start) -> None:
    ctx, running = await start()
    os.killpg(running.proc.pid, signal.SIGKILL)
    running.proc.wait(5)
    res = await smoke.run(ctx)
    assert res.status is Status.FAIL
    assert res.findings[0].code == "smoke.exited"
    assert "signal" in res.findings[0].message
    assert res.details["cases"] == []


async def test_missing_suite_is_a_config_error_before_anything_runs(tmp_path: Path) -> None:
    from flightcheck.errors import ConfigError

    ctx = make_context(tmp_path)
    with pytest.raises(ConfigError, match="smoke suite .* not found") as err:
        await smoke.prepare(ctx)
    assert err.value.exit_code == 2


async def test_real_mode_skips_scripted_cases_and_redacts_the_key(
    start: Start, tmp_path: Path
) -> None:
    # A local fake model stands in for the real provider the user's base URL points at.
    port = free_port()
    provider = start_fake_model(port)
    key = "sk-live-0123456789abcdefghij"
    try:
        ctx, _ = await start(service_env={"OPENAI_API_KEY": key, "SVC_LOG_KEY": "1",
                                          "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1"},
                             smoke_cfg={"model": "real"}, SVC_ERROR_AI="1")
        res = await smoke.run(ctx)
    finally:
        provider.terminate()
        provider.wait(5)
    assert ctx.sidecar is None
    assert _case(res.details, "ask")["status"] == "skipped"
    assert "need the fake model server" in _case(res.details, "ask")["note"]
    assert res.details["mode"] == "real provider (openai)"
    dumped = res.model_dump_json()
    assert key not in dumped and "***" in str(res.details["logs_tail"])


async def test_real_provider_unreachable_is_a_warning_on_external_cases(start: Start) -> None:
    closed = free_port()
    ctx, _ = await start(service_env={"OPENAI_API_KEY": "sk-live-0123456789abcdefghij",
                                      "OPENAI_BASE_URL": f"http://127.0.0.1:{closed}/v1"},
                         smoke_cfg={"model": "real"})
    res = await smoke.run(ctx)
    assert _case(res.details, "ai-health")["status"] == "warn"  # external against a real provider
    assert _case(res.details, "ask upstream")["status"] == "warn"
    assert res.status is Status.WARN, [f.message for f in res.findings if f.severity == "error"]


async def test_no_running_service_is_a_clear_stage_error(tmp_path: Path) -> None:
    with pytest.raises(StageError, match="needs a running service"):
        await smoke.run(make_context(tmp_path))


async def test_invalid_suite_is_refused_with_the_key(tmp_path: Path) -> None:
    _write(tmp_path, SUITE.replace("equals: 4}", "equal: 4}"))
    from flightcheck.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        await smoke.prepare(make_context(tmp_path))
    assert "cases.0.expect.json.0" in err.value.what and "(case 'add')" in err.value.what
