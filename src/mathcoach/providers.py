"""LLM providers: a deterministic in-process fake, OpenAI-compatible (httpx), Gemini.

All three speak one small protocol (`complete(messages, json_mode=...)`) and report token usage
the same way, so the service and the pipeline's cost checks cannot tell the fake from a real
model except by its name.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal, Protocol, TypedDict

import httpx

from mathcoach.settings import Settings


class Message(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )

    def scaled(self, factor: float) -> Usage:
        return Usage(round(self.prompt_tokens * factor), round(self.completion_tokens * factor))

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True)
class Completion:
    content: str
    usage: Usage
    model: str


class ProviderError(Exception):
    """The provider failed or answered something unusable; the message says which."""


class Provider(Protocol):
    name: str

    async def complete(self, messages: Sequence[Message], *, json_mode: bool) -> Completion: ...

    async def aclose(self) -> None: ...


def create_provider(settings: Settings) -> Provider:
    """The provider named by AI_PROVIDER (settings are validated: keys are present)."""
    if settings.provider == "openai":
        return OpenAIProvider(settings)
    if settings.provider == "gemini":
        return GeminiProvider(settings)
    return FakeProvider(settings)


def count_tokens(text: str) -> int:
    """The usual ~4 characters per token approximation."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


# --- fake -----------------------------------------------------------------------------------


class FakeProvider:
    """A deterministic stand-in model: same seed, parameters and prompt → same output.

    It reads "topic:" and "difficulty:" from the prompt and writes a question with a correct
    answer (computed with exact fractions, not sympy, so the service's check is independent).
    Output longer than max_output_tokens is cut off, as a real model does.
    """

    name = "fake"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def complete(self, messages: Sequence[Message], *, json_mode: bool) -> Completion:
        s = self._settings
        key = json.dumps(
            [s.seed or 0, s.model, s.temperature, s.top_k, s.top_p, list(messages)],
            sort_keys=True,
        )
        rng = random.Random(hashlib.sha256(key.encode()).digest())
        prompt = messages[-1]["content"] if messages else ""
        topic = re.search(r"topic:\s*(.+)", prompt)
        difficulty = re.search(r"difficulty:\s*(\w+)", prompt)
        if topic:
            level = difficulty.group(1).lower() if difficulty else "easy"
            content = json.dumps(_fake_question(rng, topic.group(1).strip().lower(), level))
        else:
            content = json.dumps({"status": "ok"}) if json_mode else "ok"
        limit = s.max_output_tokens * 4
        content = content[:limit]
        prompt_tokens = sum(count_tokens(m["content"]) + 3 for m in messages)
        return Completion(content, Usage(prompt_tokens, count_tokens(content)), s.model)

    async def aclose(self) -> None:
        return None


_RANGES = {"easy": 10, "medium": 50, "hard": 200}


def _fake_question(rng: random.Random, topic: str, level: str) -> dict[str, str]:
    top = _RANGES.get(level, 10)
    if "fraction" in topic:
        a, c = rng.randint(1, 9), rng.randint(1, 9)
        b, d = rng.randint(2, max(3, top // 2)), rng.randint(2, max(3, top // 2))
        op = rng.choice("+-*")
        value = {
            "+": Fraction(a, b) + Fraction(c, d),
            "-": Fraction(a, b) - Fraction(c, d),
            "*": Fraction(a, b) * Fraction(c, d),
        }[op]
        expression = f"{a}/{b} {op} {c}/{d}"
        text = f"What is {expression}? Give the answer as a fraction in lowest terms."
    elif "power" in topic or "exponent" in topic:
        base, exponent = rng.randint(2, max(3, top // 5)), rng.randint(2, 3 + top // 50)
        value = Fraction(base**exponent)
        expression = f"{base}^{exponent}"
        text = f"What is {base} raised to the power {exponent}?"
    elif "percent" in topic:
        pct, whole = rng.choice([5, 10, 20, 25, 50, 75]), rng.randint(1, top) * 4
        value = Fraction(pct * whole, 100)
        expression = f"{pct}/100 * {whole}"
        text = f"What is {pct}% of {whole}?"
    else:
        a, b, c = rng.randint(1, top), rng.randint(1, top), rng.randint(1, top)
        value = Fraction(a + b * c)
        expression = f"{a} + {b} * {c}"
        text = f"What is {a} plus {b} times {c}?"
    answer = str(value.numerator) if value.denominator == 1 else str(value)
    return {"text": text, "expression": expression, "answer": answer}


# --- OpenAI-compatible ----------------------------------------------------------------------

_RETRY_STATUS = {429, 500, 502, 503, 504}


class OpenAIProvider:
    """Chat Completions over httpx, for api.openai.com or any compatible server."""

    name = "openai"

    def __init__(self, settings: Settings, *, retries: int = 2) -> None:
        self._settings = settings
        self._retries = retries
        self._base = settings.openai_base_url
        self._client = httpx.AsyncClient(
            base_url=self._base + "/",
            timeout=httpx.Timeout(settings.ai_timeout_s, connect=min(5.0, settings.ai_timeout_s)),
            headers={"Authorization": f"Bearer {settings.openai_api_key}"},
        )

    async def complete(self, messages: Sequence[Message], *, json_mode: bool) -> Completion:
        s = self._settings
        body: dict[str, Any] = {
            "model": s.model,
            "messages": list(messages),
            "temperature": s.temperature,
            "max_tokens": s.max_output_tokens,
        }
        if s.top_p is not None:
            body["top_p"] = s.top_p
        if s.seed is not None:
            body["seed"] = s.seed
        if json_mode:
            body["response_format"] = {"type": "json_object"}
        response = await self._post(body)
        return self._parse(response)

    async def _post(self, body: dict[str, Any]) -> httpx.Response:
        where = f"{self._base}/chat/completions"
        for attempt in range(self._retries + 1):
            last = attempt == self._retries
            try:
                response = await self._client.post("chat/completions", json=body)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Nothing was sent, so retrying is safe; a read timeout is not retried.
                if last:
                    raise ProviderError(f"cannot connect to {where}: {exc}") from None
                await asyncio.sleep(0.25 * 2**attempt)
                continue
            except httpx.TimeoutException:
                raise ProviderError(
                    f"{where} did not answer within {self._settings.ai_timeout_s:g}s (AI_TIMEOUT_S)"
                ) from None
            except httpx.HTTPError as exc:
                raise ProviderError(f"request to {where} failed: {exc}") from None
            if response.status_code in _RETRY_STATUS and not last:
                await asyncio.sleep(_retry_after(response, 0.25 * 2**attempt))
                continue
            if response.status_code != 200:
                raise ProviderError(
                    f"{where} answered HTTP {response.status_code}: {response.text[:200]!r}"
                )
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _parse(self, response: httpx.Response) -> Completion:
        try:
            data = response.json()
            content = data["choices"][0]["message"]["content"]
            usage = data.get("usage") or {}
            prompt_tokens = int(usage.get("prompt_tokens", 0))
            completion_tokens = int(usage.get("completion_tokens", 0))
            model = str(data.get("model") or self._settings.model)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ProviderError(
                f"malformed Chat Completions reply ({type(exc).__name__}: {exc}): "
                f"{response.text[:200]!r}"
            ) from None
        if not isinstance(content, str) or not content.strip():
            raise ProviderError("malformed Chat Completions reply: empty message content")
        return Completion(content, Usage(prompt_tokens, completion_tokens), model)

    async def aclose(self) -> None:
        await self._client.aclose()


def _retry_after(response: httpx.Response, default: float) -> float:
    try:
        return min(5.0, max(0.0, float(response.headers.get("retry-after", default))))
    except ValueError:
        return default


# --- Gemini ---------------------------------------------------------------------------------


class GeminiProvider:
    """google-genai, imported lazily: only installs that use Gemini need the package."""

    name = "gemini"

    def __init__(self, settings: Settings) -> None:
        try:
            self._genai: Any = importlib.import_module("google.genai")
            self._types: Any = importlib.import_module("google.genai.types")
        except ImportError:
            raise ProviderError(
                "AI_PROVIDER=gemini needs the google-genai package: pip install google-genai"
            ) from None
        self._settings = settings
        options: dict[str, Any] = {"timeout": int(settings.ai_timeout_s * 1000)}
        if settings.gemini_base_url:
            options["base_url"] = settings.gemini_base_url
        self._client: Any = self._genai.Client(
            api_key=settings.gemini_api_key, http_options=self._types.HttpOptions(**options)
        )

    async def complete(self, messages: Sequence[Message], *, json_mode: bool) -> Completion:
        s, types = self._settings, self._types
        system = "\n".join(m["content"] for m in messages if m["role"] == "system") or None
        contents = [
            types.Content(
                role="model" if m["role"] == "assistant" else "user",
                parts=[types.Part(text=m["content"])],
            )
            for m in messages
            if m["role"] != "system"
        ]
        config = types.GenerateContentConfig(
            system_instruction=system,
            temperature=s.temperature,
            top_k=s.top_k,
            top_p=s.top_p,
            max_output_tokens=s.max_output_tokens,
            seed=s.seed,
            response_mime_type="application/json" if json_mode else None,
        )
        try:
            reply = await asyncio.wait_for(
                self._client.aio.models.generate_content(
                    model=s.model, contents=contents, config=config
                ),
                timeout=s.ai_timeout_s,
            )
        except TimeoutError:
            raise ProviderError(
                f"Gemini did not answer within {s.ai_timeout_s:g}s (AI_TIMEOUT_S)"
            ) from None
        except Exception as exc:  # noqa: BLE001 - the SDK raises many types; all are 502s
            raise ProviderError(f"Gemini call failed: {type(exc).__name__}: {exc}") from None
        text = getattr(reply, "text", None)
        if not isinstance(text, str) or not text.strip():
            raise ProviderError("malformed Gemini reply: no text in the response")
        meta = getattr(reply, "usage_metadata", None)
        usage = Usage(
            int(getattr(meta, "prompt_token_count", 0) or 0),
            int(getattr(meta, "candidates_token_count", 0) or 0),
        )
        return Completion(text, usage, str(getattr(reply, "model_version", None) or s.model))

    async def aclose(self) -> None:
        close = getattr(self._client.aio, "aclose", None)
        if close is not None:
            await close()
