"""Environment parity: the AI-critical parameters must be the same everywhere the service runs.

Three views are compared on ``[parity].parameters`` (model, temperature, top_k, top_p,
max_output_tokens by default):

- **declared**: ``[environments.*]`` against each other (all pairs, or the two named);
- **running**: what the service under test *reports* (``[parity].info_path``, default
  ``[health].ai_path``; mathcoach's ``/health/ai`` has them under ``"ai"``) against what the run
  declared for its environment — a service that hard-codes a model or reads another variable
  ignores its config, and no declared table shows that;
- **deployed**: the env of the revision on the deploy target, when a deploy stage promoted one
  and reported its env (``details["revision_env"]``); before a deploy, the env the new revision
  is about to get (the deploy stage's gate, :func:`before_deploy`).

Any mismatch fails, with a table (parameter, each side's value, impact). A floating model alias
(``*-latest``, ``gpt-4o``, …: lint's list) is flagged: identical names need not be identical models.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import TYPE_CHECKING, Any

import httpx

from flightcheck.config import AIParams, Config
from flightcheck.lessons.evidence import Evidence
from flightcheck.results import Finding, LessonResult, Severity, Status

if TYPE_CHECKING:
    from flightcheck.context import Context

COMMAND = ["parity"]
ARTIFACT = "service_ai_params"  # key in ai-smoke's details

IMPACT: dict[str, str] = {
    "model": "a different model: answers, latency and cost all differ; tests of one say "
    "nothing about the other",
    "temperature": "different randomness: quality measured in one environment does not hold in "
    "the other",
    "top_k": "a different sampling pool: answer variety and quality differ",
    "top_p": "a different sampling pool: answer variety and quality differ",
    "max_output_tokens": "answers cut off at a different length; cost per request differs",
}
# Environment variables the parameters reach the service as (AIParams.as_env): the deploy
# target's revision env is read back through them.
ENV_NAMES: dict[str, str] = {
    "model": "AI_MODEL", "temperature": "AI_TEMPERATURE", "top_k": "AI_TOP_K",
    "top_p": "AI_TOP_P", "max_output_tokens": "MAX_OUTPUT_TOKENS",
}


def _same(a: object, b: object) -> bool:
    """Equal as parameters: 0.2 == "0.2", 40 == 40.0; None only equals None."""
    if a is None or b is None:
        return a is None and b is None
    fa, fb = _as_float(a), _as_float(b)
    if fa is not None and fb is not None:
        return math.isclose(fa, fb, rel_tol=1e-9, abs_tol=1e-12)
    return str(a) == str(b)


def _as_float(v: object) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def declared_params(params: AIParams, names: Sequence[str]) -> dict[str, object]:
    data = params.model_dump()
    return {n: data.get(n) for n in names}


def compare_views(views: Mapping[str, Mapping[str, object]], names: Sequence[str]) -> list[dict[str, Any]]:
    """One row per parameter: every view's value, whether they agree, and the impact."""
    rows = []
    for name in names:
        values = {view: params.get(name) for view, params in views.items() if name in params}
        if len(values) < 2:
            continue
        first = next(iter(values.values()))
        same = all(_same(first, v) for v in values.values())
        rows.append({"parameter": name, "values": values, "same": same,
                     "impact": "" if same else IMPACT.get(name, "a different AI parameter: "
                                                          "behaviour may differ")})
    return rows


def floating_models(config: Config) -> dict[str, str]:
    """Environment → its model, where the model is a floating alias."""
    from flightcheck.lint.textscan import FLOATING_MODELS, is_floating_model

    known = FLOATING_MODELS | frozenset(config.lint.extra_floating_models)
    return {env: p.model for env, p in config.environments.items() if is_floating_model(p.model, known)}


async def read_running(client: httpx.AsyncClient, endpoint: str, path: str, key: str,
                       timeout_s: float = 10.0) -> dict[str, object]:
    """The AI parameters a running service reports: ``{"params": {...}}`` or ``{"error": why}``."""
    url = endpoint.rstrip("/") + path
    try:
        resp = await client.get(url, timeout=timeout_s)
        body = resp.json()
    except (httpx.HTTPError, ValueError) as exc:
        return {"path": path, "error": f"GET {path}: {type(exc).__name__}: {exc}"}
    found = body.get(key) if isinstance(body, dict) else None
    if not isinstance(found, dict):
        return {"path": path, "error": f"GET {path} (HTTP {resp.status_code}) has no object "
                f"under {key!r}: set [parity].info_path / info_key to where the service reports "
                "its AI parameters"}
    return {"path": path, "params": {str(k): v for k, v in found.items()}}


async def observe(ctx_config: Config, client: httpx.AsyncClient, endpoint: str) -> dict[str, object] | None:
    """What ai-smoke records for parity (None when the service has no info path)."""
    path = ctx_config.parity.info_path or ctx_config.health.ai_path
    if not path:
        return None
    return await read_running(client, endpoint, path, ctx_config.parity.info_key)


def evaluate(ev: Evidence, *, envs: Sequence[str] = (), running: Mapping[str, object] | None = None,
             running_label: str = "running", deployed: Mapping[str, object] | None = None,
             deployed_label: str = "deployed") -> LessonResult:
    """Parity across declared environments, the running service and the deployed revision
    (``deployed``: its AI parameters; default: what the run's deploy stage reported)."""
    cfg = ev.config
    names = list(cfg.parity.parameters)
    res = ev.result("parity", [*COMMAND, *envs], "parity",
                    dagger_args=[f"--envs={','.join(envs)}"] if envs else [])
    declared = cfg.environments
    unknown = [e for e in envs if e not in declared]
    if unknown:
        from flightcheck.errors import UsageError

        raise UsageError(f"unknown environment(s) {', '.join(unknown)}",
                         fix=f"use names from [environments]: {', '.join(sorted(declared)) or '(none declared)'}")
    tables: dict[str, list[dict[str, Any]]] = {}
    chosen = list(envs) or sorted(declared)
    for a, b in combinations(chosen, 2):
        tables[f"{a} vs {b}"] = compare_views(
            {a: declared_params(declared[a], names), b: declared_params(declared[b], names)}, names)

    observed = running if running is not None else _from_smoke(ev)
    run_env = ev.environment
    if observed is not None:
        if "params" in observed and isinstance(observed["params"], Mapping):
            if run_env in declared:
                view = {f"declared {run_env}": declared_params(declared[run_env], names),
                        running_label: dict(observed["params"])}
                tables[f"{run_env} declared vs {running_label}"] = compare_views(view, names)
            res.details["running"] = observed["params"]
        else:
            res.findings.append(Finding(
                code="parity.running-unknown", category="parity", severity=Severity.WARNING,
                message=f"could not read the running service's AI parameters: {observed.get('error')}",
                fix="expose them (mathcoach: /health/ai's 'ai' object) and point "
                "[parity].info_path / info_key at them",
            ))
    if deployed is None:
        deployed = _from_deploy(ev)
    if deployed is not None:
        target_env = "prod" if "prod" in declared else run_env
        if target_env in declared:
            tables[f"{target_env} declared vs {deployed_label}"] = compare_views(
                {f"declared {target_env}": declared_params(declared[target_env], names),
                 deployed_label: dict(deployed)}, names)
        res.details[deployed_label.replace(" ", "_")] = dict(deployed)

    res.details["tables"] = tables
    res.details["parameters"] = names
    mismatches = [(label, row) for label, rows in tables.items() for row in rows if not row["same"]]
    for label, row in mismatches:
        shown = ", ".join(f"{k}={v!r}" for k, v in row["values"].items())
        param = row["parameter"]
        if " declared vs " in label:
            fix = (f"the service does not run with its declared {param}: find what overrides "
                   f"{ENV_NAMES.get(param, param)} (--service-env, [service].env, a Dockerfile "
                   "ENV, the revision's env) or a value hard-coded in the service")
        else:
            fix = f"use one value of {param} in every [environments.*] table"
        res.findings.append(Finding(
            code=f"parity.{param}", category="parity",
            message=f"{label}: {param} differs ({shown}) — {row['impact']}", fix=fix,
        ))
    for env, model in floating_models(cfg).items():
        res.findings.append(Finding(
            code="parity.floating-model", category="parity", severity=Severity.WARNING,
            message=f"[environments.{env}].model {model!r} is a floating alias: the provider can "
            "move it, so identical names need not be identical models",
            fix="pin a dated/versioned model id, e.g. gpt-4o-mini-2024-07-18",
        ))
    compared = sum(len(rows) for rows in tables.values())
    res.measure("comparisons", compared)
    res.measure("mismatches", len(mismatches))
    if not compared:
        res.status = Status.SKIPPED
        res.summary = ("skipped: nothing to compare — declare at least two [environments.*] or "
                       "let the service report its AI parameters ([parity].info_path)")
        if res.findings:
            res.status = Status.WARN
        return res
    res.status = (Status.FAIL if mismatches
                  else Status.WARN if res.findings else Status.PASS)
    if mismatches:
        where = sorted({f"{label} ({row['parameter']})" for label, row in mismatches})
        res.summary = f"{len(mismatches)} mismatch(es): {'; '.join(where)}"
    else:
        res.summary = f"{len(names)} parameters identical in {', '.join(tables)}"
    return res


TO_DEPLOY = "to deploy"  # the view of the env a deploy is about to give its revision


def before_deploy(ctx: Context, revision_env: Mapping[str, str] | None = None) -> LessonResult:
    """The parity gate the deploy stage runs before it changes anything: the declared
    environments against each other, the service ai-smoke just checked (what it reported,
    ``ctx.artifacts[ARTIFACT]``) against its environment, and ``revision_env`` — the env the
    new revision is about to get — against the declared target. ``status`` FAIL: do not deploy."""
    observed = ctx.artifacts.get(ARTIFACT)
    ev = Evidence(loaded=ctx.loaded, stages=[], report_dir=ctx.report_dir,
                  environment=ctx.environment)
    return evaluate(ev, running=observed if isinstance(observed, Mapping) else None,
                    deployed=params_from_env(revision_env) if revision_env is not None else None,
                    deployed_label=TO_DEPLOY)


def params_from_env(env: Mapping[str, object]) -> dict[str, object]:
    """The AI parameters in a revision's env (the variables they reach the service as)."""
    return {p: env[var] for p, var in ENV_NAMES.items() if var in env}


def _from_smoke(ev: Evidence) -> Mapping[str, object] | None:
    smoke = ev.stage("ai-smoke")
    found = smoke.details.get(ARTIFACT) if smoke is not None else None
    return found if isinstance(found, Mapping) else None


def _from_deploy(ev: Evidence) -> dict[str, object] | None:
    """The AI parameters in the deployed revision's env, as the deploy stage reported it
    (``details["revision_env"]``: {name: value}) — only when that revision was promoted: a
    candidate that was rolled back (or never got ready) serves nobody."""
    deploy = ev.stage("deploy")
    if deploy is None or deploy.details.get("status") != "promoted":
        return None
    env = deploy.details.get("revision_env")
    return params_from_env(env) if isinstance(env, Mapping) else None


def text(res: LessonResult) -> list[str]:
    tables = res.details.get("tables")
    if not isinstance(tables, Mapping):
        return []
    lines: list[str] = []
    for label, rows in tables.items():
        if not isinstance(rows, list) or not rows:
            continue
        views = list(rows[0]["values"])
        lines.append(f"{label}:")
        lines.append("  " + f"{'parameter':<20}" + "".join(f"{v[:22]:<24}" for v in views) + "impact")
        for row in rows:
            mark = "" if row["same"] else row["impact"]
            lines.append("  " + f"{row['parameter']:<20}"
                         + "".join(f"{str(row['values'].get(v))[:22]:<24}" for v in views)
                         + ("≠ " + mark if mark else "="))
    return lines
