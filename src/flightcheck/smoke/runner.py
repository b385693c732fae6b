"""Running smoke cases against a started service, with the fake model server scripted per case.

Every request is bounded (the case's timeout, at most ``request_timeout_s``), so a hanging
service ends in a verdict, never a stuck pipeline. A case's token usage comes from two
places when both exist: the provider's own count (the fake model server's log) and what the
service reports in its response; budgets are checked against each.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import httpx

from flightcheck.fakemodel.server import FAKE_API_KEY
from flightcheck.secrets import excerpt
from flightcheck.smoke.assertions import (
    CheckResult,
    check_cost,
    check_json,
    check_latency,
    check_schema,
    check_status,
    check_tokens,
)
from flightcheck.smoke.jsonpath import resolve
from flightcheck.smoke.suite import Case, Defaults, ModelScript, Price

CaseStatus = Literal["pass", "fail", "warn", "skipped"]

# Provider keys that switch the suite to the real provider, by provider.
PROVIDER_KEYS: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY",),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
}

# What a service says when its provider cannot be reached (connect errors, DNS, timeouts,
# provider-side outage). Only consulted on 502/503/504 answers of `external: true` cases.
_UNREACHABLE = re.compile(
    r"unreachable|could not connect|cannot connect|failed to connect|connect(ion)?[ _]?"
    r"(error|refused|reset|timeout|timed out|aborted)|connecterror|connecttimeout|"
    r"name or service not known|nodename nor servname|temporary failure in name resolution|"
    r"getaddrinfo|name resolution|no route to host|network is unreachable|timed? ?out|"
    r"did not answer|readtimeout|remoteprotocolerror|server disconnected|provider[^\n]{0,60}"
    r"(unavailable|down|overloaded|not reachable)|overloaded",
    re.IGNORECASE,
)
_EXCERPT = 500


@dataclass(frozen=True)
class Mode:
    """Which model the service talks to during the suite: an explicit choice
    (``[smoke].model``, ``--real-model``), never inferred from the keys it was given."""

    kind: Literal["fake", "real"]
    provider: str | None = None  # openai | gemini in real mode, when its key is given

    def describe(self) -> str:
        if self.kind == "fake":
            return "fake model server"
        if self.provider is None:
            return "real provider (the service's own settings)"
        return f"real provider ({self.provider})"


def detect_provider(env: Mapping[str, str]) -> str | None:
    """The provider whose key the service was given (real mode), if any."""
    for provider, names in PROVIDER_KEYS.items():
        if any(env.get(n) and env.get(n) != FAKE_API_KEY for n in names):
            return provider
    return None


def detect_mode(env: Mapping[str, str], model: Literal["fake", "real"]) -> Mode:
    """The mode ``model`` asks for; in real mode, the provider named by the keys in ``env``."""
    return Mode("fake") if model == "fake" else Mode("real", detect_provider(env))


def fake_env(port: int, given: Mapping[str, str] | None = None) -> dict[str, str]:
    """The service env that points every supported SDK at the fake model server. It wins over
    whatever the service was given: a key the user passed (because the service insists on
    one) must not reach the real provider, and a base URL must not lead away from the fake."""
    base = f"http://127.0.0.1:{port}"
    env = {
        "OPENAI_BASE_URL": f"{base}/v1",
        "OPENAI_API_BASE": f"{base}/v1",  # older openai SDKs and LangChain
        "OPENAI_API_KEY": FAKE_API_KEY,
        "GOOGLE_GEMINI_BASE_URL": base,
        "GEMINI_API_KEY": FAKE_API_KEY,
    }
    for names in PROVIDER_KEYS.values():
        env.update({n: FAKE_API_KEY for n in names if n in (given or {})})
    return env


def provider_unreachable(status: int | None, text: str) -> bool:
    """True when an answer says the external provider could not be reached."""
    return status in (502, 503, 504) and _UNREACHABLE.search(text) is not None


@dataclass
class CaseResult:
    """What one case did and how it was judged."""

    name: str
    status: CaseStatus = "pass"
    checks: list[CheckResult] = field(default_factory=list)
    http_status: int | None = None
    latency_ms: float | None = None
    note: str = ""
    line: int | None = None
    usage: dict[str, dict[str, int]] = field(default_factory=dict)  # by source
    cost_usd: float | None = None
    model: str | None = None
    provider_requests: list[dict[str, Any]] = field(default_factory=list)
    excerpt: str = ""
    timed_out: bool = False  # no response within the case's time limit

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.ok]

    @property
    def tokens(self) -> dict[str, int]:
        """The case's token usage: the provider's count when known, else the service's."""
        return self.usage.get("provider") or self.usage.get("service") or {}

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "name": self.name,
            "status": self.status,
            "http_status": self.http_status,
            "latency_ms": self.latency_ms,
            "checks": [c.to_json() for c in self.checks],
            "usage": self.usage,
            "cost_usd": None if self.cost_usd is None else round(self.cost_usd, 10),
            "model": self.model,
        }
        if self.note:
            out["note"] = self.note
        if self.line is not None:
            out["line"] = self.line
        if self.status in ("fail", "warn") and self.excerpt:
            out["response_excerpt"] = self.excerpt
        return out


class ControlError(Exception):
    """The fake model server's control API did not answer as expected."""


class FakeControl:
    """flightcheck's side of the fake model server's control API."""

    def __init__(self, client: httpx.AsyncClient, endpoint: str, timeout_s: float = 5.0) -> None:
        self._client = client
        self._base = endpoint.rstrip("/")
        self._timeout = timeout_s

    async def _call(self, method: str, path: str, body: object = None) -> dict[str, Any]:
        try:
            with anyio.fail_after(self._timeout):
                resp = await self._client.request(
                    method, self._base + path, json=body, timeout=self._timeout
                )
        except (httpx.HTTPError, TimeoutError) as exc:
            raise ControlError(
                f"fake model server at {self._base} did not answer {method} {path}: "
                f"{_transport_reason(exc, self._timeout)}"
            ) from None
        if resp.status_code != 200:
            raise ControlError(f"fake model server refused {method} {path}: HTTP "
                               f"{resp.status_code} {excerpt(resp.text, 200, str)}")
        data = resp.json()
        return data if isinstance(data, dict) else {}

    async def reset(self) -> None:
        await self._call("POST", "/_fc/reset")

    async def script(self, script: ModelScript) -> None:
        await self._call("PUT", "/_fc/script", script.model_dump())

    async def usage(self) -> dict[str, Any]:
        return await self._call("GET", "/_fc/usage")


def _transport_reason(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return f"no response within {timeout_s:g} s (timeout)"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect ({exc or 'connection refused'})"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the connection closed without a complete response"
    return f"{type(exc).__name__}: {exc}"


def _service_usage(body: Any, path: str) -> dict[str, int] | None:
    """Token usage as a service reports it (OpenAI, Anthropic or Gemini field names)."""
    found, usage = resolve(body, path)
    if not found or not isinstance(usage, dict):
        return None

    def num(*keys: str) -> int | None:
        for key in keys:
            value = usage.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return int(value)
        return None

    prompt = num("prompt_tokens", "input_tokens", "promptTokenCount")
    completion = num("completion_tokens", "output_tokens", "candidatesTokenCount")
    total = num("total_tokens", "totalTokenCount")
    if prompt is None and completion is None and total is None:
        return None
    prompt, completion = prompt or 0, completion or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total if total is not None else prompt + completion,
    }


def price_for(prices: Mapping[str, Price], model: str | None) -> Price | None:
    if model is not None and model in prices:
        return prices[model]
    return prices.get("*")


class Runner:
    """Runs cases one by one against ``endpoint``."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        endpoint: str,
        *,
        mode: Mode,
        defaults: Defaults,
        prices: Mapping[str, Price],
        request_timeout_s: float,
        external_failure: Literal["warn", "fail"] = "warn",
        control: FakeControl | None = None,
        default_model: str | None = None,
        redact: Callable[[str], str] = lambda s: s,
    ) -> None:
        self._client = client
        self._base = endpoint.rstrip("/")
        self.mode = mode
        self._defaults = defaults
        self._prices = prices
        self._timeout = request_timeout_s
        self._external = external_failure
        self.control = control
        self._default_model = default_model
        self._redact = redact

    def timeout_for(self, case: Case) -> float:
        own = case.timeout_s or self._defaults.timeout_s
        return min(self._timeout, own) if own else self._timeout

    async def run_case(self, case: Case, *, limit_s: float | None = None) -> CaseResult:
        """Run one case; ``limit_s`` (what is left of the stage's deadline) caps its time."""
        result = CaseResult(name=case.name, line=case.line)
        if case.model is not None and self.mode.kind != "fake":
            result.status = "skipped"
            result.note = (
                f"scripted model replies need the fake model server; the suite runs against "
                f"{self.mode.describe()}"
            )
            return result
        timeout = self.timeout_for(case)
        if limit_s is not None:
            timeout = max(0.001, min(timeout, limit_s))
        try:
            # Bounds the control calls too: nothing in a case can wait forever.
            with anyio.fail_after(timeout + 2 * 5.0 + 1.0):
                await self._run(case, timeout, result)
        except ControlError as exc:
            result.checks.append(CheckResult("fake-model", False, "control API answers", None,
                                             message=str(exc)))
        except TimeoutError:
            result.timed_out = True
            result.checks.append(CheckResult("response", False, "a verdict", None,
                                             message=f"case did not finish within {timeout:g} s"))
        self._judge(case, result)
        return result

    async def _run(self, case: Case, limit_s: float, result: CaseResult) -> None:
        control = self.control
        if control is not None:
            try:
                await control.reset()
            except ControlError as exc:
                if case.model is not None:
                    raise
                # Still ask the service: its answer says more than the control API's silence.
                result.checks.append(CheckResult("fake-model", False, "control API answers",
                                                 None, message=str(exc)))
                control = None
            if control is not None and case.model is not None:
                await control.script(case.model)
        elif case.model is not None:
            raise ControlError("no fake model server is running, so the case's model "
                               "replies cannot be scripted")
        req = case.request
        started = time.perf_counter()
        try:
            with anyio.fail_after(limit_s):
                resp = await self._client.request(
                    req.method,
                    self._base + req.path,
                    json=req.body if "body" in req.model_fields_set else None,
                    headers={**self._defaults.headers, **req.headers},
                    params={k: _query_value(v) for k, v in req.query.items()},
                    timeout=limit_s,
                )
        except (httpx.HTTPError, TimeoutError) as exc:
            result.timed_out = isinstance(exc, TimeoutError | httpx.TimeoutException)
            reason = _transport_reason(exc, limit_s)
            result.checks.append(CheckResult(
                "response", False, "an HTTP response", None,
                message=f"{req.method} {req.path}: {reason}",
            ))
            await self._provider_usage(result, control)
            return
        result.latency_ms = round((time.perf_counter() - started) * 1000, 2)
        result.http_status = resp.status_code
        text = resp.text
        result.excerpt = excerpt(text, _EXCERPT, self._redact, one_line=True)
        self._check_response(case, resp.status_code, text, result)
        await self._provider_usage(result, control)
        self._check_budgets(case, text, result)

    def _check_response(self, case: Case, status: int, text: str, result: CaseResult) -> None:
        exp = case.expect
        status_check = check_status(exp.statuses, status, result.excerpt[:200])
        result.checks.append(status_check)
        if exp.schema_ is None and not exp.checks:
            return
        if not status_check.ok:
            # An error body fails every body check; one finding says it better than ten.
            result.note = "body checks skipped: the status was already wrong"
            return
        try:
            body = json.loads(text)
        except ValueError as exc:
            result.checks.append(CheckResult(
                "json", False, "a JSON body", result.excerpt[:200],
                message=f"response is not JSON ({exc}): {result.excerpt[:200]}",
            ))
            return
        if isinstance(exp.schema_, dict):
            result.checks.append(check_schema(exp.schema_, body))
        result.checks.extend(check_json(c, body) for c in exp.checks)

    async def _provider_usage(self, result: CaseResult, control: FakeControl | None) -> None:
        if control is None:
            return
        log = await control.usage()
        requests = [r for r in log.get("requests", []) if isinstance(r, dict)]
        result.provider_requests = requests
        totals = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        for r in requests:
            for key in totals:
                totals[key] += int(r.get(key, 0))
        result.usage["provider"] = totals
        if requests:
            result.model = str(requests[-1].get("model"))

    def _check_budgets(self, case: Case, text: str, result: CaseResult) -> None:
        exp = case.expect
        if exp.latency_ms is not None and result.latency_ms is not None:
            result.checks.append(check_latency(exp.latency_ms, result.latency_ms))
        try:
            body: Any = json.loads(text)
        except ValueError:
            body = None
        service = _service_usage(body, case.usage_path or self._defaults.usage_path)
        if service is not None:
            result.usage["service"] = service
        if result.model is None:
            found, model = resolve(body, self._defaults.model_path)
            result.model = model if found and isinstance(model, str) else self._default_model
        if exp.tokens is not None:
            if not result.usage:
                result.checks.append(CheckResult(
                    "tokens", False, exp.tokens.model_dump(exclude_none=True), None,
                    message="no token usage to check: the response has no "
                    f"'{case.usage_path or self._defaults.usage_path}' and no fake model ran",
                ))
            sources = list(result.usage.items())
            if len(sources) == 2 and sources[0][1] == sources[1][1]:
                # Both counts agree: one check (one finding), naming both sources.
                sources = [(" and ".join(name for name, _ in sources), sources[0][1])]
            for source, usage in sources:
                result.checks.extend(check_tokens(exp.tokens, usage, source))
        result.cost_usd, why = self._cost(result)
        if exp.cost_usd is not None:
            result.checks.append(check_cost(exp.cost_usd, result.cost_usd, why))

    def _cost(self, result: CaseResult) -> tuple[float | None, str]:
        """Estimated USD for the case, or (None, why not)."""
        if result.provider_requests:
            total = 0.0
            for r in result.provider_requests:
                model = str(r.get("model"))
                price = price_for(self._prices, model)
                if price is None:
                    return None, _no_price(model)
                total += price.cost(int(r.get("prompt_tokens", 0)),
                                    int(r.get("completion_tokens", 0)))
            return total, ""
        usage = result.tokens
        if not usage:
            return (0.0, "") if "provider" in result.usage else (None, "no token usage reported")
        price = price_for(self._prices, result.model)
        if price is None:
            return None, _no_price(result.model)
        return price.cost(usage["prompt_tokens"], usage["completion_tokens"]), ""

    def _judge(self, case: Case, result: CaseResult) -> None:
        if not result.failed:
            result.status = "pass"
            return
        result.status = "fail"
        if (
            case.external
            and self._external == "warn"
            and provider_unreachable(result.http_status, result.excerpt)
        ):
            result.status = "warn"
            result.note = (
                f"the external AI provider looks unreachable (HTTP {result.http_status}: "
                f"{result.excerpt[:160]}); a warning because the case is external and "
                "[smoke].external_failure = \"warn\""
            )


def _no_price(model: str | None) -> str:
    return (
        f"no price for model {model!r}: add it (or '*') to the suite's prices or "
        "[smoke].prices, in USD per 1M input/output tokens"
    )


def _query_value(v: str | int | float | bool) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]
