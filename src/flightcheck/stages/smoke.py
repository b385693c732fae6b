"""ai-smoke: is the AI path right, not just up?

Which model the service talks to is an explicit choice, made before anything starts
(:func:`prepare_model`, run by build's prepare hook so that every stage that runs the service
gives it the same environment): ``[smoke].model = "fake"`` (the default) starts flightcheck's
fake model server as a sidecar and points the service at it — its URLs and placeholder keys
win over any key the service was given, so the suite runs with no key and no cost;
``"real"`` (``--real-model``) leaves the service's own provider settings alone.
:func:`prepare` loads and validates the suite before the build, so a typo costs seconds.

``run`` checks ``[health].ai_path`` first, then every case of the suite: status, JSON schema,
values on JSON paths, latency, token and cost budgets. A failure of an ``external: true`` case
caused by an unreachable provider is a warning (the seed's rule). The whole stage is bounded
(``[smoke].stage_timeout_s``), and it stops once the service is known to hang. A run in which
no case executed checked nothing: it fails (``[smoke].allow_empty``: a warning).
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from flightcheck.context import Context
from flightcheck.errors import ConfigError
from flightcheck.fakemodel import SERVER_SCRIPT
from flightcheck.lessons import parity
from flightcheck.results import Finding, Severity, StageName, StageResult, Status
from flightcheck.runtimes._proc import free_port
from flightcheck.runtimes.base import Running, Sidecar, request_auth
from flightcheck.smoke.runner import (
    PROVIDER_KEYS,
    CaseResult,
    FakeControl,
    Mode,
    Runner,
    detect_mode,
    fake_env,
    percentile,
)
from flightcheck.smoke.suite import Case, Expect, Price, Request, Suite, load_suite
from flightcheck.stages.health import describe_exit

STAGE: StageName = "ai-smoke"
MODE_ARTIFACT = "ai-smoke.mode"
SUITE_ARTIFACT = "ai-smoke.suite"
_HANG_PROBE_S = 5.0  # how long the liveness path may take to prove the service still answers

_FIX = {
    "status": "the service answered with an unexpected status: read the response excerpt and "
    "the service log tail in the report",
    "json": "the AI path returned something that is not JSON (malformed model output passed "
    "through?): validate the model's output before returning it",
    "schema": "the response shape changed: fix the service or update the case's schema",
    "response": "the service did not answer in time or dropped the connection: it hangs or "
    "crashed — see the log tail; every LLM call needs a timeout",
    "latency_ms": "the AI path is slower than budgeted: check model, max tokens and timeouts, "
    "or raise expect.latency_ms",
    "tokens": "the AI path uses more tokens than budgeted: check the prompt size and "
    "MAX_OUTPUT_TOKENS, or raise expect.tokens",
    "cost_usd": "the AI path costs more than budgeted (or its price is unknown): check model "
    "and token use, or the prices table",
    "exited": "the service crashed or was OOM-killed while serving the suite: read the log "
    "tail in the report",
    "fake-model": "the fake model server was not reachable: the runtime must start the "
    "sidecar (ctx.sidecar) and expose running.sidecar_endpoint",
    "hang": "the service stopped answering: an LLM or HTTP call without a timeout, or a "
    "blocked event loop — read the log tail; every outbound call needs a timeout",
    "deadline": "the suite took longer than [smoke].stage_timeout_s: make the slow cases "
    "faster, or raise the bound",
    "nothing-checked": "no case executed, so nothing was checked: run in fake mode (the "
    "default; cases with a `model` script need it) or add cases that run against a real "
    "provider; [smoke].allow_empty = true makes this a warning",
}
_ANSWER_FIX = (
    "the AI path returns wrong or degraded answers: compare actual vs expected; check the model "
    "and its parameters (AI_MODEL, AI_TEMPERATURE, ...) against the last good run"
)
_NO_CALL_FIX = (
    "the fake model received no request during this case: the service never called the model. "
    "The answer came from the service's own code, or its client talks to another URL than "
    "OPENAI_BASE_URL / GOOGLE_GEMINI_BASE_URL (a hard-coded base_url?)"
)


def _suite_path(ctx: Context) -> Path:
    return ctx.config.resolve(ctx.config.smoke.suite)


def _suite(ctx: Context, *, strict: bool) -> Suite | None:
    """The validated suite (loaded once per run). ``strict``: a missing or invalid suite is a
    ConfigError (exit 2); otherwise None."""
    cached = ctx.artifacts.get(SUITE_ARTIFACT)
    if isinstance(cached, Suite):
        return cached
    path = _suite_path(ctx)
    if not strict and not path.is_file():
        return None
    try:
        suite = load_suite(path, root=ctx.config.root)
    except ConfigError:
        if strict:
            raise
        return None
    ctx.artifacts[SUITE_ARTIFACT] = suite
    return suite


async def prepare(ctx: Context) -> None:
    """Before any stage runs (ai-smoke is part of the run): the suite exists and is valid."""
    _suite(ctx, strict=True)
    await prepare_model(ctx)


async def prepare_model(ctx: Context) -> None:
    """Fake model server or real provider, and the service env that goes with it. Runs once,
    before anything starts, for every run that starts the service (build's prepare hook)."""
    if MODE_ARTIFACT in ctx.artifacts:
        return
    cfg = ctx.config.smoke
    suite = _suite(ctx, strict=False)
    env = ctx.service_environment()
    mode = detect_mode(env, cfg.model)
    ctx.artifacts[MODE_ARTIFACT] = mode
    if mode.kind == "real":
        wanted = suite.env_for(mode.provider) if suite and mode.provider else {}
        # The user's own settings win over the suite's defaults for real mode.
        ctx.extra_service_env.update({k: v for k, v in wanted.items() if k not in env})
        ctx.log(STAGE, f"{mode.describe()}: [smoke].model is real, no fake model server")
        return
    # Port 0: a free one, so concurrent runs on one host (process runtime) never collide.
    port = cfg.fake_model_port or free_port()
    ctx.sidecar = Sidecar(script=SERVER_SCRIPT, port=port)
    if suite is not None:
        ctx.extra_service_env.update(suite.env_for("fake"))
    given = {n for names in PROVIDER_KEYS.values() for n in names if env.get(n)}
    ctx.provider_env.update(fake_env(port, {n: "" for n in given}))
    ctx.log(STAGE, f"fake model server on port {port} (no key, no cost)")
    if given:
        ctx.log(STAGE, f"fake mode: the {', '.join(sorted(given))} you gave the service is "
                       "replaced by a placeholder; --real-model (or [smoke].model = \"real\") "
                       "runs the suite against the real provider")


async def run(ctx: Context) -> StageResult:
    running = ctx.running(STAGE)
    cfg = ctx.config.smoke
    res = ctx.result(STAGE)
    mode = ctx.artifacts.get(MODE_ARTIFACT)
    if not isinstance(mode, Mode):
        mode = detect_mode(ctx.service_environment(), cfg.model)
    suite = _suite(ctx, strict=True)  # validated before the build already (prepare)
    assert suite is not None
    res.details["mode"] = mode.describe()
    res.details["suite"] = str(_suite_path(ctx))
    deadline = time.monotonic() + cfg.stage_timeout_s

    prices = {k: Price(input=i, output=o) for k, (i, o) in cfg.prices.items()}
    prices.update(suite.prices)
    async with httpx.AsyncClient(trust_env=False, follow_redirects=False,
                                 auth=request_auth(running)) as client:
        control = None
        if mode.kind == "fake" and running.sidecar_endpoint:
            control = FakeControl(client, running.sidecar_endpoint)
        elif mode.kind == "fake":
            res.findings.append(_finding(ctx, "fake-model", "the fake model server was "
                                         "requested but the runtime started no sidecar", None))
        runner = Runner(
            client, running.endpoint, mode=mode, defaults=suite.defaults,
            prices=prices, request_timeout_s=cfg.request_timeout_s,
            external_failure=cfg.external_failure, control=control,
            default_model=ctx.service_environment().get("AI_MODEL"), redact=ctx.redactor,
        )
        cases = _cases(ctx, suite, mode)
        results: list[CaseResult] = []
        timeouts: list[str] = []  # consecutive cases without a response in time
        for i, case in enumerate(cases):
            left = deadline - time.monotonic()
            if left <= 0:
                res.findings.append(_finding(
                    ctx, "deadline", f"the suite did not finish within [smoke].stage_timeout_s "
                    f"= {cfg.stage_timeout_s:g} s; {_not_run(results, cases[i:])}", None,
                ))
                break
            exit_ = await running.status()
            if exit_ is not None:
                res.findings.append(_finding(
                    ctx, "exited", f"the service {describe_exit(exit_)} during the suite, "
                    f"before case {case.name!r}", None,
                ))
                break
            ctx.log(STAGE, f"case {case.name}")
            result = await runner.run_case(case, limit_s=left)
            results.append(result)
            ctx.log(STAGE, f"  {result.status}" + (f" — {result.note}" if result.note else ""))
            timeouts = [*timeouts, case.name] if result.timed_out else []
            if timeouts and i + 1 < len(cases):
                hung = await _hangs(client, running.endpoint, ctx.config.health.liveness.path)
                if hung or len(timeouts) >= 2:
                    why = (f"{ctx.config.health.liveness.path} does not answer either" if hung
                           else "two cases in a row got no response")
                    res.findings.append(_finding(
                        ctx, "hang", f"the service hangs: {', '.join(map(repr, timeouts))} got "
                        f"no response in time and {why}; {_not_run(results, cases[i + 1:])}",
                        None,
                    ))
                    break
        # The AI parameters the service says it runs with: evidence for the parity lesson.
        hanging = any(f.code == "smoke.hang" for f in res.findings)
        observed = None if hanging else await parity.observe(ctx.config, client, running.endpoint)
        if observed is not None:
            res.details[parity.ARTIFACT] = _redact_json(ctx, observed)
            ctx.artifacts[parity.ARTIFACT] = res.details[parity.ARTIFACT]  # deploy's parity gate
    await _report(ctx, res, running, results, suite)
    return res


async def _hangs(client: httpx.AsyncClient, endpoint: str, path: str) -> bool:
    """True when the service does not even answer its liveness path (any status will do)."""
    try:
        await client.get(endpoint.rstrip("/") + path, timeout=_HANG_PROBE_S)
    except httpx.HTTPError:
        return True
    return False


def _not_run(results: list[CaseResult], rest: list[Case]) -> str:
    """Record the cases the stage gave up on; a phrase saying which."""
    for case in rest:
        results.append(CaseResult(name=case.name, status="skipped", line=case.line,
                                  note="not run: the stage stopped early"))
    if not rest:
        return "no case was left"
    names = ", ".join(repr(c.name) for c in rest[:5]) + (" …" if len(rest) > 5 else "")
    return f"{len(rest)} case(s) not run: {names}"


def _cases(ctx: Context, suite: Suite | None, mode: Mode) -> list[Case]:
    out: list[Case] = []
    ai_path = ctx.config.health.ai_path
    if ai_path:
        # Against a real provider, /health/ai depends on it: external by nature.
        out.append(Case(name="ai-health", request=Request(path=ai_path), expect=Expect(),
                        external=mode.kind == "real"))
    return out + (list(suite.cases) if suite else [])


def _finding(ctx: Context, check: str, message: str, case: CaseResult | None,
             suite: Suite | None = None, severity: Severity = Severity.ERROR) -> Finding:
    base = check.split(".")[0]
    fix = _FIX.get(base, _ANSWER_FIX)
    if base not in _FIX and case is not None and "provider" in case.usage and (
            not case.provider_requests):
        fix = _NO_CALL_FIX  # a wrong answer, and the fake model was never asked
    file, line = None, None
    if case is not None and suite is not None and suite.path is not None and case.line:
        file, line = _rel(ctx, suite.path), case.line
    return Finding(
        code=f"smoke.{check}", category="smoke", severity=severity,
        message=ctx.redactor(message), file=file, line=line, fix=fix,
    )


def _rel(ctx: Context, path: Path) -> str:
    try:
        return str(path.relative_to(ctx.config.source_dir))
    except ValueError:
        return str(path)


async def _report(ctx: Context, res: StageResult, running: Running,
                  results: list[CaseResult], suite: Suite | None) -> None:
    for case in results:
        severity = Severity.WARNING if case.status == "warn" else Severity.ERROR
        for check in case.failed:
            res.findings.append(_finding(
                ctx, check.check, f"case {case.name!r}: {check.message}", case, suite, severity,
            ))
        if case.status == "warn":
            res.findings.append(_finding(
                ctx, "external", f"case {case.name!r}: {case.note}", case, suite,
                Severity.WARNING,
            ))
    counts = {s: sum(1 for c in results if c.status == s)
              for s in ("pass", "fail", "warn", "skipped")}
    latencies = [c.latency_ms for c in results if c.latency_ms is not None]
    tokens = [c.tokens for c in results if c.tokens]
    costs = [c.cost_usd for c in results if c.cost_usd is not None]
    checks = [chk for c in results for chk in c.checks]
    res.measure("cases_total", len(results))
    res.measure("cases_passed", counts["pass"])
    res.measure("cases_failed", counts["fail"])
    res.measure("cases_warned", counts["warn"])
    res.measure("cases_skipped", counts["skipped"])
    res.measure("latency_p50_ms", percentile(latencies, 50), "ms")
    res.measure("latency_p95_ms", percentile(latencies, 95), "ms")
    res.measure("tokens_total", sum(t.get("total_tokens", 0) for t in tokens), "tokens")
    res.measure("tokens_prompt", sum(t.get("prompt_tokens", 0) for t in tokens), "tokens")
    res.measure("tokens_completion", sum(t.get("completion_tokens", 0) for t in tokens), "tokens")
    unknown_cost = any(c.cost_usd is None and c.tokens for c in results)
    res.measure("cost_usd", None if unknown_cost else round(sum(costs), 8), "USD")
    # Share of passed assertions: the quality score later runs are compared against.
    res.measure("quality_score", round(sum(c.ok for c in checks) / len(checks), 4)
                if checks else None)
    ai = next((c for c in results if c.name == "ai-health"), None)
    if ai is not None:
        res.measure("ai_health_latency_ms", ai.latency_ms, "ms")
    res.details["cases"] = _redact_json(ctx, [c.to_json() for c in results])
    res.details["provider_requests"] = _redact_json(ctx, [
        {"case": c.name, "model": r.get("model"), "endpoint": r.get("endpoint"),
         "params": r.get("params"), "status": r.get("status"),
         "total_tokens": r.get("total_tokens")}
        for c in results for r in c.provider_requests
    ])
    executed = counts["pass"] + counts["fail"] + counts["warn"]
    if executed == 0 and not res.findings:
        allowed = ctx.config.smoke.allow_empty
        res.findings.append(_finding(
            ctx, "nothing-checked", f"no case executed ({len(results)} skipped): the stage "
            "checked nothing" + (" ([smoke].allow_empty = true)" if allowed else ""), None,
            severity=Severity.WARNING if allowed else Severity.ERROR,
        ))
    failed = counts["fail"] > 0 or any(f.severity is Severity.ERROR for f in res.findings)
    if failed:
        res.status = Status.FAIL
        res.details["logs_tail"] = ctx.redactor(await running.logs(40))
    elif counts["warn"] or res.findings:
        res.status = Status.WARN
    parts = [f"{counts['pass']}/{len(results)} passed"]
    parts += [f"{counts[s]} {n}" for s, n in (("fail", "failed"), ("warn", "warned"),
                                              ("skipped", "skipped")) if counts[s]]
    p95 = res.measurement("latency_p95_ms")
    extra = f"p95 {p95:.0f} ms" if isinstance(p95, int | float) else ""
    total_tokens = res.measurement("tokens_total")
    cost = res.measurement("cost_usd")
    summary = ", ".join(parts) + (f"; {extra}" if extra else "")
    summary += f"; {total_tokens} tokens"
    if isinstance(cost, int | float):
        summary += f", ~${cost:.6f}"
    res.summary = summary + f" ({res.details['mode']})"


def _redact_json(ctx: Context, value: object) -> object:
    """Response values can echo anything, keys included: mask them before the report."""
    if isinstance(value, str):
        return ctx.redactor(value)
    if isinstance(value, list):
        return [_redact_json(ctx, v) for v in value]
    if isinstance(value, dict):
        return {k: _redact_json(ctx, v) for k, v in value.items()}
    return value
