"""The mathcoach HTTP service: math questions written by an LLM and checked by sympy.

Startup follows Cloud Run's probe model: uvicorn answers /health at once, while a background
task creates the provider client and warms up sympy; /health/startup is 503 until that task is
done. Fault knobs (settings.Faults) are applied here, at the edge, so the core stays honest.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from mathcoach import logs
from mathcoach.providers import (
    Completion,
    Message,
    Provider,
    ProviderError,
    Usage,
    create_provider,
)
from mathcoach.settings import Settings

if TYPE_CHECKING:  # imported in the background at startup: sympy takes a while to load
    from mathcoach import evaluator as evaluator_module

_SYSTEM_PROMPT = (
    "You write short math practice questions. Reply with only a JSON object with the string "
    "fields text (the question for the student), expression (an arithmetic expression using "
    "numbers, + - * / ^ and parentheses whose value is the answer) and answer (the exact "
    "answer, e.g. 3/4)."
)
_AI_PATHS = ("/v1/", "/health/ai")


class EvaluateRequest(BaseModel):
    expression: str = Field(description="arithmetic expression, e.g. 2+2 or 1/2 + 1/3")


class QuestionRequest(BaseModel):
    topic: str = Field(min_length=1, max_length=60, pattern=r"^[A-Za-z0-9 ,'-]+$")
    difficulty: Literal["easy", "medium", "hard"] = "easy"


@dataclass
class _State:
    settings: Settings
    started: float = field(default_factory=time.time)
    ready: bool = False
    startup_s: float | None = None
    provider: Provider | None = None
    evaluator: Any = None  # the mathcoach.evaluator module once loaded
    ballast: bytearray | None = None
    v1_requests: int = 0
    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=2, thread_name_prefix="eval")
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ASGI app; settings default to the process environment."""
    settings = settings or Settings.from_env(os.environ)
    state = _State(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loader = asyncio.create_task(_load(state))
        try:
            yield
        finally:
            loader.cancel()
            if state.provider is not None:
                await state.provider.aclose()
            state.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="mathcoach", version="0.1.0", lifespan=lifespan)

    @app.middleware("http")
    async def _edge(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await _apply_faults(state, request, call_next)
        logs.event(
            "request",
            method=request.method,
            path=request.url.path,
            status=response.status_code,
            latency_ms=round((time.perf_counter() - started) * 1000, 2),
        )
        return response

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/health/startup")
    async def health_startup() -> JSONResponse:
        if not state.ready:
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ready", "startup_s": state.startup_s})

    @app.get("/health/ai")
    async def health_ai() -> JSONResponse:
        provider, evaluator = _require_ready(state)
        checks = {
            "provider": await _timed(_provider_check(provider)),
            "evaluator": await _timed(_evaluator_check(state, evaluator)),
        }
        ok = all(c["status"] == "ok" for c in checks.values())
        body = {
            "status": "ok" if ok else "fail",
            "dependencies": checks,
            "ai": settings.ai_params(),
        }
        return JSONResponse(_redact(state, body), status_code=200 if ok else 503)

    @app.post("/v1/evaluate")
    async def evaluate(request: EvaluateRequest) -> dict[str, Any]:
        _, evaluator = _require_ready(state)
        result = await _evaluate(state, evaluator, request.expression)
        if settings.faults.degrade_answers:
            result = evaluator.off_by_one(result)
        return {"expression": result.expression, "result": result.result, "numeric": result.numeric}

    @app.post("/v1/questions")
    async def questions(request: QuestionRequest) -> dict[str, Any]:
        provider, evaluator = _require_ready(state)
        return await _question(state, provider, evaluator, request)

    return app


# --- startup --------------------------------------------------------------------------------


async def _load(state: _State) -> None:
    settings, faults = state.settings, state.settings.faults
    try:
        state.provider = create_provider(settings)
        state.evaluator = await asyncio.to_thread(importlib.import_module, "mathcoach.evaluator")
        await asyncio.to_thread(state.evaluator.warm_up)
        if faults.startup_alloc_mb:
            state.ballast = await asyncio.to_thread(_allocate, faults.startup_alloc_mb)
            logs.event("fault_alloc", mib=faults.startup_alloc_mb)
        if faults.startup_delay_s:
            await asyncio.sleep(faults.startup_delay_s)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - any load failure must end the process visibly
        logs.event("startup_failed", logging.ERROR, error=_redact(state, str(exc)))
        os._exit(1)
    if faults.crash_on_start:
        logs.event(
            "startup_crash",
            logging.ERROR,
            error="FAULT_CRASH_ON_START is set: exiting with status 1",
        )
        os._exit(1)
    state.ready = True
    now = time.time()
    state.startup_s = round(now - _process_start(state.started), 3)
    logs.event(
        "startup_complete",
        startup_s=state.startup_s,
        pid=os.getpid(),
        ai=settings.ai_params(),
        faults=faults.active(),
    )


def _allocate(mib: int) -> bytearray:
    """N MiB that count against the memory limit: every page is written, not just reserved."""
    ballast = bytearray(mib * 1024 * 1024)
    ballast[::4096] = b"\x01" * len(range(0, len(ballast), 4096))
    return ballast


def _process_start(fallback: float) -> float:
    """When this process started (epoch seconds), from /proc; `fallback` elsewhere."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 (starttime), counted after "pid (comm)"
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return fallback


# --- edge: readiness and faults ---------------------------------------------------------------


def _require_ready(state: _State) -> tuple[Provider, Any]:
    if not state.ready or state.provider is None:
        raise HTTPException(503, detail="mathcoach is still starting; poll /health/startup")
    return state.provider, state.evaluator


async def _apply_faults(
    state: _State, request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    faults, path = state.settings.faults, request.url.path
    if faults.hang_s and path.startswith(_AI_PATHS):
        await asyncio.sleep(faults.hang_s)
    if faults.error_rate and path.startswith("/v1/"):
        # Deterministic: request n fails when floor((n+1)*rate) steps up, so exactly
        # round(rate*N) of any N consecutive requests fail, evenly spread.
        n = state.v1_requests
        state.v1_requests += 1
        if math.floor((n + 1) * faults.error_rate) > math.floor(n * faults.error_rate):
            return JSONResponse(
                {"detail": f"injected fault: FAULT_ERROR_RATE={faults.error_rate:g}"},
                status_code=500,
            )
    return await call_next(request)


# --- AI paths -------------------------------------------------------------------------------


async def _evaluate(state: _State, evaluator: Any, expression: str) -> evaluator_module.Evaluation:
    timeout = state.settings.eval_timeout_s
    loop = asyncio.get_running_loop()
    try:
        return await asyncio.wait_for(
            loop.run_in_executor(state.executor, evaluator.evaluate, expression), timeout
        )
    except evaluator.EvaluationError as exc:
        raise HTTPException(422, detail=str(exc)) from None
    except TimeoutError:
        raise HTTPException(
            422,
            detail=f"{expression[:80]!r} took longer than {timeout:g}s to evaluate; "
            "simplify it (EVAL_TIMEOUT_S sets the limit)",
        ) from None


async def _question(
    state: _State, provider: Provider, evaluator: Any, request: QuestionRequest
) -> dict[str, Any]:
    settings = state.settings
    messages: list[Message] = [
        {"role": "system", "content": _SYSTEM_PROMPT},
        {
            "role": "user",
            "content": f"topic: {request.topic}\ndifficulty: "
            f"{request.difficulty}\nWrite one question.",
        },
    ]
    usage = Usage()
    problems: list[str] = []
    for attempt in (1, 2):
        completion = await _complete(state, provider, messages)
        usage = usage + completion.usage
        question = _parse_question(state, completion)
        if settings.faults.degrade_answers:
            # The fault: skip the check and hand out a wrong answer.
            question["answer"] = _wrong_answer(evaluator, question)
            return _question_body(state, question, completion, attempt, usage)
        problem = await _verify(state, evaluator, question)
        if problem is None:
            return _question_body(state, question, completion, attempt, usage)
        problems.append(problem)
        logs.event("question_rejected", logging.WARNING, attempt=attempt, reason=problem)
        messages = [
            *messages,
            {"role": "assistant", "content": completion.content},
            {
                "role": "user",
                "content": f"That is wrong: {problem}. Write a new question "
                "whose answer is the exact value of its expression. Reply with JSON only.",
            },
        ]
    raise HTTPException(
        502,
        detail=_redact(
            state,
            f"the {provider.name} provider's answer did not verify "
            f"after 2 attempts: {'; '.join(problems)}",
        ),
    )


async def _complete(state: _State, provider: Provider, messages: list[Message]) -> Completion:
    try:
        return await provider.complete(messages, json_mode=True)
    except ProviderError as exc:
        detail = _redact(state, f"{provider.name} provider failed: {exc}")
        logs.event("provider_error", logging.ERROR, error=detail)
        raise HTTPException(502, detail=detail) from None


def _parse_question(state: _State, completion: Completion) -> dict[str, str]:
    try:
        data = json.loads(completion.content)
    except ValueError:
        data = None
    fields = ("text", "expression", "answer")
    if isinstance(data, dict):
        values = {k: data.get(k) for k in fields}
        if all(isinstance(v, str | int | float) and str(v).strip() for v in values.values()):
            return {k: str(v).strip() for k, v in values.items()}
    detail = _redact(
        state,
        f"the {state.settings.provider} provider returned malformed output: expected a JSON "
        f"object with string fields text, expression and answer, got {completion.content[:200]!r}",
    )
    logs.event("provider_malformed", logging.ERROR, error=detail)
    raise HTTPException(502, detail=detail)


async def _verify(state: _State, evaluator: Any, question: dict[str, str]) -> str | None:
    try:
        value = await _evaluate(state, evaluator, question["expression"])
    except HTTPException as exc:
        return f"its expression is not usable ({exc.detail})"
    if evaluator.matches(value, question["answer"]):
        return None
    return f"answer {question['answer']!r} does not equal {question['expression']} = {value.result}"


def _wrong_answer(evaluator: Any, question: dict[str, str]) -> str:
    try:
        return evaluator.off_by_one(evaluator.evaluate(question["answer"])).result
    except evaluator.EvaluationError:
        return question["answer"] + " + 1"


def _question_body(
    state: _State, question: dict[str, str], completion: Completion, attempts: int, usage: Usage
) -> dict[str, Any]:
    reported = usage.scaled(state.settings.faults.token_multiplier)
    logs.event("question", attempts=attempts, model=completion.model, usage=reported.as_dict())
    return {
        "question": question,
        "provider": state.settings.provider,
        "model": completion.model,
        "attempts": attempts,
        "usage": reported.as_dict(),
    }


async def _provider_check(provider: Provider) -> dict[str, Any]:
    messages: list[Message] = [
        {"role": "user", "content": 'Reply with the JSON object {"status": "ok"}.'}
    ]
    completion = await provider.complete(messages, json_mode=True)
    return {"model": completion.model, "usage": completion.usage.as_dict()}


async def _evaluator_check(state: _State, evaluator: Any) -> dict[str, Any]:
    result = await _evaluate(state, evaluator, "2+2")
    if result.result != "4":
        raise ProviderError(f"2+2 evaluated to {result.result}")
    return {}


async def _timed(check: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        extra = await check
        status: dict[str, Any] = {"status": "ok", **extra}
    except (ProviderError, HTTPException) as exc:
        status = {"status": "fail", "error": str(getattr(exc, "detail", None) or exc)}
    status["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return status


def _redact(state: _State, value: Any) -> Any:
    """Mask API keys in anything a client or a log line will see."""
    if isinstance(value, str):
        for secret in state.settings.secrets:
            value = value.replace(secret, "***")
        return value
    if isinstance(value, dict):
        return {k: _redact(state, v) for k, v in value.items()}
    return value
