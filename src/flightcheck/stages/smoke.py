"""ai-smoke: is the AI path right, not just up?

``prepare`` decides which model the service talks to before anything starts: a real
provider when a real key is in the service's env, otherwise flightcheck's fake model server
as a sidecar (the service gets OPENAI_BASE_URL etc. pointed at it), so the suite runs with
no key and no cost. ``run`` checks ``[health].ai_path`` first, then every case of the suite:
status, JSON schema, values on JSON paths, latency, token and cost budgets. A failure of an
``external: true`` case caused by an unreachable provider is a warning (the seed's rule).
"""

from __future__ import annotations

from pathlib import Path

import httpx

from flightcheck.context import Context
from flightcheck.errors import ConfigError
from flightcheck.fakemodel import SERVER_SCRIPT
from flightcheck.results import Finding, Severity, StageName, StageResult, Status
from flightcheck.runtimes._proc import free_port
from flightcheck.runtimes.base import Running, Sidecar
from flightcheck.smoke.runner import (
    CaseResult,
    FakeControl,
    Mode,
    Runner,
    detect_mode,
    fake_env,
    percentile,
)
from flightcheck.smoke.suite import Case, Defaults, Expect, Price, Request, Suite, load_suite
from flightcheck.stages.health import describe_exit

STAGE: StageName = "ai-smoke"
MODE_ARTIFACT = "ai-smoke.mode"

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
}
_ANSWER_FIX = (
    "the AI path returns wrong or degraded answers: compare actual vs expected; check the model "
    "and its parameters (AI_MODEL, AI_TEMPERATURE, ...) against the last good run"
)


def _suite_path(ctx: Context) -> Path:
    return ctx.config.resolve(ctx.config.smoke.suite)


def _try_suite(ctx: Context) -> Suite | None:
    try:
        return load_suite(_suite_path(ctx))
    except ConfigError:
        return None  # run() reports it; prepare must not abort the other stages


async def prepare(ctx: Context) -> None:
    """Choose real provider / fake model server and give the service its env."""
    cfg = ctx.config.smoke
    env = ctx.service_environment()
    mode = detect_mode(env, cfg.fake_model)
    suite = _try_suite(ctx)
    ctx.artifacts[MODE_ARTIFACT] = mode
    if mode.kind == "real" and mode.provider is not None:
        wanted = suite.env_for(mode.provider) if suite else {}
        # The user's own settings win over the suite's defaults for real mode.
        ctx.extra_service_env.update({k: v for k, v in wanted.items() if k not in env})
        ctx.log(STAGE, f"{mode.describe()}: a real key is set, no fake model server")
    elif mode.kind == "fake":
        # Port 0: a free one, so concurrent runs on one host (process runtime) never collide.
        port = cfg.fake_model_port or free_port()
        ctx.sidecar = Sidecar(script=SERVER_SCRIPT, port=port)
        ctx.extra_service_env.update(fake_env(port, suite))
        ctx.log(STAGE, f"fake model server on port {port} (no key, no cost)")


async def run(ctx: Context) -> StageResult:
    running = ctx.running(STAGE)
    cfg = ctx.config.smoke
    res = ctx.result(STAGE)
    mode = ctx.artifacts.get(MODE_ARTIFACT)
    if not isinstance(mode, Mode):
        mode = detect_mode(ctx.service_environment(), running.sidecar_endpoint is not None)
    path = _suite_path(ctx)
    suite: Suite | None = None
    if path.is_file():
        suite = load_suite(path)  # ConfigError → a failed stage with the exact key
    else:
        res.findings.append(Finding(
            code="smoke.no-suite", category="smoke", severity=Severity.WARNING,
            message=f"no smoke suite at {path}: only the AI health path was checked",
            fix="write smoke.yaml (docs/smoke.md has the format and an example)",
        ))
    res.details["mode"] = mode.describe()
    res.details["suite"] = str(path)

    prices = {k: Price(input=i, output=o) for k, (i, o) in cfg.prices.items()}
    prices.update(suite.prices if suite else {})
    async with httpx.AsyncClient(trust_env=False, follow_redirects=False) as client:
        control = None
        if mode.kind == "fake" and running.sidecar_endpoint:
            control = FakeControl(client, running.sidecar_endpoint)
        elif mode.kind == "fake":
            res.findings.append(_finding(ctx, "fake-model", "the fake model server was "
                                         "requested but the runtime started no sidecar", None))
        runner = Runner(
            client, running.endpoint, mode=mode,
            defaults=suite.defaults if suite else Defaults(),
            prices=prices, request_timeout_s=cfg.request_timeout_s,
            external_failure=cfg.external_failure, control=control,
            default_model=ctx.service_environment().get("AI_MODEL"), redact=ctx.redactor,
        )
        cases = _cases(ctx, suite, mode)
        results: list[CaseResult] = []
        for case in cases:
            exit_ = await running.status()
            if exit_ is not None:
                res.findings.append(_finding(
                    ctx, "exited", f"the service {describe_exit(exit_)} during the suite, "
                    f"before case {case.name!r}", None,
                ))
                break
            ctx.log(STAGE, f"case {case.name}")
            result = await runner.run_case(case)
            results.append(result)
            ctx.log(STAGE, f"  {result.status}" + (f" — {result.note}" if result.note else ""))
    await _report(ctx, res, running, results, suite)
    return res


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
    failed = counts["fail"] > 0 or any(f.severity is Severity.ERROR for f in res.findings)
    if failed:
        res.status = Status.FAIL
        logs = ctx.redactor(await running.logs(40))
        res.details["logs_tail"] = logs
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
