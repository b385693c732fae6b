"""quotebot: summarise a text in one sentence with an OpenAI chat model.

POST /v1/summarize {"text": "..."} -> {"summary", "model", "usage"}
GET  /healthz  liveness: the process serves HTTP
GET  /ready    readiness: the OpenAI client is initialised

Configuration (environment):
  OPENAI_API_KEY, OPENAI_BASE_URL   read by the openai SDK itself
  AI_MODEL                          pinned model id (default gpt-4o-mini-2024-07-18)
  AI_TEMPERATURE, MAX_OUTPUT_TOKENS sampling parameters
  OPENAI_TIMEOUT_S, OPENAI_MAX_RETRIES
  HOST, PORT                        where to listen (see app/__main__.py)

Fault knobs, off by default, used by flightcheck's tests to prove its gates catch them:
  QUOTEBOT_FAULT_PROMPT_REPEAT=N    repeat the instructions N times (prompt bloat: token budgets)
  QUOTEBOT_FAULT_ECHO_ENV=NAME      log the value of $NAME at startup and append it to every
                                    summary (a careless debug line: proves secrets get redacted)
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import openai
from fastapi import FastAPI, HTTPException, Request
from openai import AsyncOpenAI
from pydantic import BaseModel, Field

DEFAULT_MODEL = "gpt-4o-mini-2024-07-18"
INSTRUCTIONS = (
    "You summarise the user's text in one short sentence. Reply with the sentence only, "
    "no preamble."
)


def log(event: str, **fields: object) -> None:
    """One JSON object per line on stdout: what log collectors (and Cloud Run) expect."""
    print(json.dumps({"event": event, "ts": time.time(), **fields}), file=sys.stdout, flush=True)


class Settings(BaseModel):
    model: str = DEFAULT_MODEL
    temperature: float = 0.2
    max_output_tokens: int = 200
    timeout_s: float = 20.0
    max_retries: int = 2
    prompt_repeat: int = 1
    echo_env: str = ""

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            model=env.get("AI_MODEL") or DEFAULT_MODEL,
            temperature=float(env.get("AI_TEMPERATURE", "0.2")),
            max_output_tokens=int(env.get("MAX_OUTPUT_TOKENS", "200")),
            timeout_s=float(env.get("OPENAI_TIMEOUT_S", "20")),
            max_retries=int(env.get("OPENAI_MAX_RETRIES", "2")),
            prompt_repeat=max(1, int(env.get("QUOTEBOT_FAULT_PROMPT_REPEAT", "1"))),
            echo_env=env.get("QUOTEBOT_FAULT_ECHO_ENV", ""),
        )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = Settings.from_env()
    # The SDK reads OPENAI_API_KEY and OPENAI_BASE_URL from the environment itself.
    client = AsyncOpenAI(timeout=settings.timeout_s, max_retries=settings.max_retries)
    app.state.settings = settings
    app.state.client = client
    app.state.echo = os.environ.get(settings.echo_env, "") if settings.echo_env else ""
    log("startup_complete", model=settings.model, base_url=str(client.base_url))
    if app.state.echo:
        log("debug", echo=app.state.echo)
    try:
        yield
    finally:
        await client.close()


app = FastAPI(title="quotebot", lifespan=lifespan)


class SummarizeIn(BaseModel):
    text: str = Field(min_length=1, max_length=20_000)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class SummarizeOut(BaseModel):
    summary: str
    model: str
    usage: Usage


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/ready")
async def ready(request: Request) -> dict[str, str]:
    if getattr(request.app.state, "client", None) is None:
        raise HTTPException(503, "starting")
    return {"status": "ready"}


@app.post("/v1/summarize")
async def summarize(body: SummarizeIn, request: Request) -> SummarizeOut:
    settings: Settings = request.app.state.settings
    client: AsyncOpenAI = request.app.state.client
    started = time.perf_counter()
    try:
        resp = await client.chat.completions.create(
            model=settings.model,
            temperature=settings.temperature,
            max_tokens=settings.max_output_tokens,
            messages=[
                {"role": "system", "content": " ".join([INSTRUCTIONS] * settings.prompt_repeat)},
                {"role": "user", "content": body.text},
            ],
        )
    except openai.APITimeoutError:
        log("provider_error", kind="timeout")
        raise HTTPException(504, "model provider timed out") from None
    except openai.APIConnectionError as exc:
        log("provider_error", kind="connection", error=str(exc))
        raise HTTPException(502, f"model provider unreachable: {exc}") from None
    except openai.APIStatusError as exc:
        log("provider_error", kind="status", status=exc.status_code)
        raise HTTPException(502, f"model provider returned HTTP {exc.status_code}") from None
    except (openai.APIError, ValueError) as exc:
        # A truncated body surfaces as a bare json.JSONDecodeError (a ValueError), not as an
        # openai error: flightcheck's fake model found that one.
        log("provider_error", kind="malformed", error=type(exc).__name__)
        raise HTTPException(502, f"malformed model provider response: {type(exc).__name__}") from None

    content = (resp.choices[0].message.content or "").strip() if resp.choices else ""
    if not content:
        raise HTTPException(502, "the model returned an empty summary")
    if request.app.state.echo:
        content = f"{content} [debug {request.app.state.echo}]"
    usage = Usage(
        prompt_tokens=resp.usage.prompt_tokens if resp.usage else 0,
        completion_tokens=resp.usage.completion_tokens if resp.usage else 0,
        total_tokens=resp.usage.total_tokens if resp.usage else 0,
    )
    log("summarized", model=resp.model, latency_ms=round((time.perf_counter() - started) * 1000, 1),
        total_tokens=usage.total_tokens)
    return SummarizeOut(summary=content, model=resp.model, usage=usage)
