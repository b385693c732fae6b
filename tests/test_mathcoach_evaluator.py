"""The sympy evaluator: exact results, clear refusals, and no way to run Python."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from mathcoach.evaluator import MAX_LENGTH, EvaluationError, evaluate, matches, off_by_one
from mathcoach.providers import FakeProvider, Message
from mathcoach.settings import ConfigError, Settings


@pytest.mark.parametrize(
    ("expression", "result", "numeric"),
    [
        ("2+2", "4", 4.0),
        ("1/2 + 1/3", "5/6", 5 / 6),
        ("2^10", "1024", 1024.0),
        ("5!", "120", 120.0),
        ("-3^2", "-9", -9.0),
        ("sqrt(8)", "2*sqrt(2)", 8**0.5),
        ("sin(pi/6)", "1/2", 0.5),
        ("log(E)", "1", 1.0),
        ("sqrt(-1)", "I", None),
    ],
)
def test_exact_results(expression: str, result: str, numeric: float | None) -> None:
    evaluation = evaluate(expression)
    assert evaluation.result == result
    if numeric is None:
        assert evaluation.numeric is None
    else:
        assert evaluation.numeric == pytest.approx(numeric)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "empty"),
        ("2 +", "not a valid expression"),
        ("2 2", "not a valid expression"),
        ("x + 1", "unknown name 'x'"),
        ("1/0", "undefined"),
        ("3!!", "unknown function 'factorial2'"),
        ("sqrt(1, 2)", "exactly one argument"),
        ("1" * (MAX_LENGTH + 1), f"limit is {MAX_LENGTH}"),
    ],
)
def test_bad_expressions_say_why(expression: str, message: str) -> None:
    with pytest.raises(EvaluationError, match=message):
        evaluate(expression)


@pytest.mark.parametrize(
    "expression",
    [
        "9**9**9",
        "2**100000",
        "(10**5)!",
        "1500!",
        "10**4000",
        "exp(exp(exp(100)))",
        "factorial(factorial(10))",
        "2^2^2^2^2",
        "1e999999",
        "floor(exp(10**3000))",
    ],
)
def test_unbounded_expressions_are_refused_at_once(expression: str) -> None:
    started = time.perf_counter()
    with pytest.raises(EvaluationError, match="refused"):
        evaluate(expression)
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    "expression",
    [
        '__import__("os").system("true")',
        "(2).real",
        "lambda: 1",
        "[1, 2]",
        "open('x')",
        "Integer.__class__",
        "globals()",
        "2 if 1 else 3",
        "'a' * 3",
        "Float('nan')",
    ],
)
def test_python_is_never_executed(expression: str) -> None:
    with pytest.raises(EvaluationError):
        evaluate(expression)


def test_large_but_bounded_results_are_exact() -> None:
    assert evaluate("2**10000").result == str(2**10000)
    assert len(evaluate("1000!").result) == 2568


def test_answer_matching_and_degraded_results() -> None:
    three_quarters = evaluate("3/4")
    assert matches(three_quarters, "0.75")
    assert matches(three_quarters, "6/8")
    assert not matches(three_quarters, "0.7")
    assert not matches(three_quarters, "banana")
    assert matches(evaluate("sqrt(8)"), "2*sqrt(2)")
    wrong = off_by_one(three_quarters)
    assert wrong.result == "7/4" and not matches(three_quarters, wrong.result)


def _complete(settings: Settings, messages: list[Message]) -> dict[str, object]:
    completion = asyncio.run(FakeProvider(settings).complete(messages, json_mode=True))
    return {"content": completion.content, "usage": completion.usage.as_dict()}


def test_fake_provider_is_deterministic_per_seed_and_prompt() -> None:
    prompt: list[Message] = [{"role": "user", "content": "topic: fractions\ndifficulty: hard"}]
    first = _complete(Settings(seed=7), prompt)
    assert first == _complete(Settings(seed=7), prompt)
    by_seed = {json.dumps(_complete(Settings(seed=s), prompt)) for s in range(8)}
    assert len(by_seed) > 1
    other_prompt: list[Message] = [{"role": "user", "content": "topic: powers\ndifficulty: hard"}]
    assert _complete(Settings(seed=7), other_prompt) != first
    question = json.loads(str(first["content"]))
    assert matches(evaluate(question["expression"]), question["answer"])
    usage = first["usage"]
    assert (
        isinstance(usage, dict)
        and usage["total_tokens"] == (usage["prompt_tokens"] + usage["completion_tokens"])
        and usage["completion_tokens"] > 0
    )


def test_fake_provider_cuts_output_at_max_output_tokens() -> None:
    prompt: list[Message] = [{"role": "user", "content": "topic: fractions"}]
    cut = _complete(Settings(max_output_tokens=5), prompt)
    assert cut["usage"]["completion_tokens"] == 5  # type: ignore[index]
    with pytest.raises(json.JSONDecodeError):
        json.loads(str(cut["content"]))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "http"}, "PORT='http' is invalid"),
        ({"AI_PROVIDER": "anthropic"}, "expected one of fake, openai, gemini"),
        ({"AI_PROVIDER": "openai"}, "needs OPENAI_API_KEY"),
        ({"AI_PROVIDER": "gemini"}, "needs GEMINI_API_KEY"),
        ({"AI_TEMPERATURE": "hot"}, "AI_TEMPERATURE='hot' is invalid"),
        ({"FAULT_ERROR_RATE": "1.5"}, r"expected a number in \[0, 1\]"),
        ({"FAULT_CRASH_ON_START": "maybe"}, "expected 1/0"),
        ({"OPENAI_BASE_URL": "api.openai.com"}, "not an http"),
    ],
)
def test_settings_errors_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_settings_read_ai_parameters_and_hide_keys() -> None:
    settings = Settings.from_env(
        {
            "AI_PROVIDER": "openai",
            "OPENAI_API_KEY": "sk-secret-123456",
            "AI_MODEL": "m-1",
            "AI_TEMPERATURE": "0.7",
            "AI_TOP_K": "5",
            "AI_TOP_P": "0.5",
            "MAX_OUTPUT_TOKENS": "99",
            "FAULT_HANG_S": "1.5",
        }
    )
    assert settings.ai_params() == {
        "provider": "openai",
        "model": "m-1",
        "temperature": 0.7,
        "top_k": 5,
        "top_p": 0.5,
        "max_output_tokens": 99,
        "seed": None,
    }
    assert settings.faults.active() == {"hang_s": 1.5}
    assert "sk-secret" not in repr(settings)
