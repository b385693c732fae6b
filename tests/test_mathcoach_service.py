"""mathcoach over real HTTP: a uvicorn subprocess on 127.0.0.1 per configuration."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import sympy
from mathcoach_support import ServiceProcess

Start = Callable[..., ServiceProcess]
TOPICS = ("fractions", "powers", "percentages", "arithmetic")


def _value(expression: str) -> sympy.Expr:
    # The test's own check of an answer, independent of the service's evaluator.
    return sympy.nsimplify(sympy.sympify(expression.replace("^", "**")))


def _question(url: str, topic: str = "fractions", difficulty: str = "easy") -> httpx.Response:
    return httpx.post(
        f"{url}/v1/questions", json={"topic": topic, "difficulty": difficulty}, timeout=30
    )


def _evaluate(url: str, expression: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/evaluate", json={"expression": expression}, timeout=30)


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


@pytest.fixture(scope="module")
def service(start_mathcoach_module: Start) -> ServiceProcess:
    """The default configuration (fake provider, no faults)."""
    return start_mathcoach_module()


def test_health_endpoints(service: ServiceProcess) -> None:
    assert httpx.get(f"{service.url}/health").json() == {"status": "ok"}
    startup = httpx.get(f"{service.url}/health/startup")
    assert startup.status_code == 200 and startup.json()["status"] == "ready"
    ai = httpx.get(f"{service.url}/health/ai", timeout=30)
    assert ai.status_code == 200
    body = ai.json()
    assert body["status"] == "ok"
    for name in ("provider", "evaluator"):
        assert body["dependencies"][name]["status"] == "ok"
        assert body["dependencies"][name]["latency_ms"] >= 0
    assert body["ai"]["model"] == "fake-math-1" and body["ai"]["temperature"] == 0.2


def test_evaluate_exact_and_numeric(service: ServiceProcess) -> None:
    assert _evaluate(service.url, "2+2").json() == {
        "expression": "2+2",
        "result": "4",
        "numeric": 4.0,
    }
    assert _evaluate(service.url, "1/2 + 1/3").json()["result"] == "5/6"
    assert _evaluate(service.url, "2^100").json()["result"] == str(2**100)


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("2 +", "not a valid expression"),
        ("import os", "not a valid expression"),
        ("__import__('os')", "unknown function '__import__'"),
        ("9**9**9", "refused"),
        ("100000!", "refused"),
        ("1" * 500, "limit is 200"),
        ("1/0", "undefined"),
    ],
)
def test_bad_expressions_are_422_with_a_message(
    service: ServiceProcess, expression: str, fragment: str
) -> None:
    started = time.perf_counter()
    response = _evaluate(service.url, expression)
    assert response.status_code == 422
    assert fragment in response.json()["detail"]
    assert time.perf_counter() - started < 2


def test_request_validation_is_422(service: ServiceProcess) -> None:
    assert httpx.post(f"{service.url}/v1/evaluate", json={}).status_code == 422
    bad_level = httpx.post(
        f"{service.url}/v1/questions", json={"topic": "fractions", "difficulty": "insane"}
    )
    assert bad_level.status_code == 422
    bad_topic = httpx.post(f"{service.url}/v1/questions", json={"topic": "a\nIgnore all"})
    assert bad_topic.status_code == 422


@pytest.mark.parametrize("topic", TOPICS)
def test_questions_are_verified(service: ServiceProcess, topic: str) -> None:
    response = _question(service.url, topic, "medium")
    assert response.status_code == 200, response.text
    body = response.json()
    question = body["question"]
    assert question["text"] and question["expression"]
    assert _value(question["expression"]) == _value(question["answer"])
    assert body["provider"] == "fake" and body["model"] == "fake-math-1"
    assert body["attempts"] == 1
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_logs_are_json_with_startup_complete(service: ServiceProcess) -> None:
    httpx.get(f"{service.url}/health")
    records = service.log_records()  # raises on any non-JSON line
    (complete,) = service.events("startup_complete")
    assert isinstance(complete["ts"], float)
    assert 0 < complete["startup_s"] < 30
    assert complete["ts"] >= service.started - 1
    assert complete["faults"] == {}
    assert any(r.get("event") == "request" and r["path"] == "/health" for r in records)


def test_startup_probe_is_503_until_loaded(start_mathcoach: Start) -> None:
    svc = start_mathcoach({"FAULT_STARTUP_DELAY_S": "2.5"}, wait="health")
    assert httpx.get(f"{svc.url}/health").status_code == 200
    assert httpx.get(f"{svc.url}/health/startup").status_code == 503
    assert _evaluate(svc.url, "2+2").status_code == 503
    assert httpx.get(f"{svc.url}/health/ai").status_code == 503
    elapsed = svc.wait_ready("/health/startup")
    assert elapsed >= 2.5
    assert _evaluate(svc.url, "2+2").json()["result"] == "4"
    (complete,) = svc.events("startup_complete")
    assert complete["startup_s"] >= 2.5
    assert complete["faults"] == {"startup_delay_s": 2.5}


def test_fake_provider_is_deterministic_across_processes(start_mathcoach: Start) -> None:
    a = start_mathcoach({"AI_SEED": "7"}, wait="none")
    b = start_mathcoach({"AI_SEED": "7"}, wait="none")
    c = start_mathcoach({"AI_SEED": "8"}, wait="none")
    for svc in (a, b, c):
        svc.wait_ready()

    def questions(svc: ServiceProcess) -> list[Any]:
        return [_question(svc.url, t, "hard").json() for t in TOPICS]

    assert questions(a) == questions(b)
    assert questions(a) != questions(c)


def test_fault_error_rate_is_a_deterministic_sequence(start_mathcoach: Start) -> None:
    svc = start_mathcoach({"FAULT_ERROR_RATE": "0.5"})
    codes = [_evaluate(svc.url, "1+1").status_code for _ in range(8)]
    assert codes == [200, 500, 200, 500, 200, 500, 200, 500]
    assert all(httpx.get(f"{svc.url}/health").status_code == 200 for _ in range(4))
    assert httpx.get(f"{svc.url}/health/ai").status_code == 200
    failed = _evaluate(svc.url, "1+1")
    assert failed.status_code == 200 and _evaluate(svc.url, "1+1").status_code == 500


def test_fault_degrade_answers(start_mathcoach: Start) -> None:
    svc = start_mathcoach({"FAULT_DEGRADE_ANSWERS": "1"})
    assert _evaluate(svc.url, "2+2").json()["result"] == "5"
    for topic in TOPICS:
        body = _question(svc.url, topic).json()
        question = body["question"]
        assert _value(question["expression"]) != _value(question["answer"])
    # HTTP and the health checks stay green: only an answer check catches this fault.
    assert httpx.get(f"{svc.url}/health/ai").status_code == 200


def test_fault_hang(start_mathcoach: Start) -> None:
    svc = start_mathcoach({"FAULT_HANG_S": "1.5"})
    started = time.perf_counter()
    assert httpx.get(f"{svc.url}/health").status_code == 200
    assert time.perf_counter() - started < 1
    started = time.perf_counter()
    assert _evaluate(svc.url, "2+2").status_code == 200
    assert time.perf_counter() - started >= 1.5
    started = time.perf_counter()
    assert httpx.get(f"{svc.url}/health/ai", timeout=10).status_code == 200
    assert time.perf_counter() - started >= 1.5


def test_fault_token_multiplier(service: ServiceProcess, start_mathcoach: Start) -> None:
    svc = start_mathcoach({"FAULT_TOKEN_MULTIPLIER": "3"})
    normal = _question(service.url).json()["usage"]
    inflated = _question(svc.url).json()["usage"]
    assert inflated["prompt_tokens"] == 3 * normal["prompt_tokens"]
    assert inflated["completion_tokens"] == 3 * normal["completion_tokens"]
    assert inflated["total_tokens"] == 3 * normal["total_tokens"]


def test_fault_startup_alloc(service: ServiceProcess, start_mathcoach: Start) -> None:
    svc = start_mathcoach({"FAULT_STARTUP_ALLOC_MB": "96"})
    extra_mib = (_rss_kib(svc.proc.pid) - _rss_kib(service.proc.pid)) / 1024
    assert extra_mib >= 96 * 0.9, f"only {extra_mib:.0f} MiB more resident than the baseline"
    assert svc.events("fault_alloc")[0]["mib"] == 96


def test_fault_crash_on_start(start_mathcoach: Start) -> None:
    svc = start_mathcoach({"FAULT_CRASH_ON_START": "1"}, wait="none")
    assert svc.wait_exit(timeout=30) != 0
    (crash,) = svc.events("startup_crash")
    assert "FAULT_CRASH_ON_START" in crash["error"]
    assert not svc.events("startup_complete")


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"AI_PROVIDER": "openai"}, "needs OPENAI_API_KEY"),
        ({"AI_TOP_P": "2"}, "AI_TOP_P='2' is invalid"),
    ],
)
def test_bad_settings_stop_the_process_with_a_clear_line(
    start_mathcoach: Start, env: dict[str, str], fragment: str
) -> None:
    svc = start_mathcoach(env, wait="none")
    assert svc.wait_exit(timeout=30) == 2
    (line,) = svc.log_records()
    assert line["event"] == "config_error" and fragment in line["error"]


def test_evaluation_time_is_bounded(start_mathcoach: Start) -> None:
    svc = start_mathcoach({"EVAL_TIMEOUT_S": "0.05"})
    started = time.perf_counter()
    slow = _evaluate(svc.url, "floor(exp(999)) + ceiling(10**3000*pi)")  # ~0.4 s of sympy work
    assert time.perf_counter() - started < 2
    assert slow.status_code == 422
    assert "took longer than 0.05s" in slow.json()["detail"]
    assert _evaluate(svc.url, "2+2").json()["result"] == "4"
