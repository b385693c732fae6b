"""deploy: a Cloud Run rollout that can never leave users on a bad revision.

First the parity gate (``lessons/parity.py``): the AI parameters declared, seen running and
about to be given to the revision must agree, or nothing is pushed or created. The built image
is pushed and deployed by digest; the service spec comes from the config
(``cloudrun/spec.py``, checked against Cloud Run's limits first); the rollout
(``cloudrun/rollout.py``) records the rollback point, creates the candidate at 0% with a tag,
validates the tag URL with this pipeline's own health-poll and ai-smoke stages, then moves
traffic in canary steps judged by the analysis (``cloudrun/analysis.py``, with the saved
quality baseline when there is one) — promote, or roll back with the reason. Targets: ``local`` (the local Cloud Run on 127.0.0.1, started on demand,
with the local registry) and ``cloudrun`` (Google's API and Artifact Registry); the same code
talks to both through the official client.

Besides the stage, :func:`dry_run` (``flightcheck deploy --dry-run``) and :func:`rollback`
(``flightcheck rollback``) live here: they share how a target is reached.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anyio.to_thread
import httpx
from google.cloud import run_v2

from flightcheck import graph
from flightcheck.cloudrun import images, spec
from flightcheck.cloudrun.analysis import REVISION_HEADER, Analysis, canary_cases
from flightcheck.cloudrun.client import Connection, RunV2
from flightcheck.cloudrun.idtoken import (
    CREDENTIALS_ENV,
    BearerAuth,
    IdTokens,
    denied_reason,
    local_key_file,
)
from flightcheck.cloudrun.local.identity import DEPLOYER_KEY_FILE
from flightcheck.cloudrun.revision import RevisionRunning
from flightcheck.cloudrun.rollout import (
    Outcome,
    Rollout,
    Settings,
    Validation,
    describe,
    recorded_split,
)
from flightcheck.config import Config, parse_memory
from flightcheck.context import Context
from flightcheck.errors import FlightcheckError, StageError, UsageError
from flightcheck.lessons import parity, quality
from flightcheck.lessons.quality import QualityMetrics
from flightcheck.lessons.rollback import Thresholds
from flightcheck.results import Finding, Severity, StageName, StageResult, Status
from flightcheck.runtimes.base import Image, Runtime
from flightcheck.secrets import MASK, is_secret
from flightcheck.smoke.runner import Mode, detect_mode, detect_provider
from flightcheck.smoke.suite import Defaults, Price, Suite, load_suite
from flightcheck.stages import health, smoke

STAGE: StageName = "deploy"
OPTIONS = "deploy.options"


@dataclass(frozen=True)
class DeployOptions:
    """What the command line adds to the config."""

    api_endpoint: str | None = None
    state_dir: Path | None = None  # the local Cloud Run's state (default ./.flightcheck/emulator)
    image: str | None = None  # an image pushed already (REGISTRY/NAME@sha256:…): no build, no push


def _options(ctx: Context) -> DeployOptions:
    opts = ctx.artifacts.get(OPTIONS)
    return opts if isinstance(opts, DeployOptions) else DeployOptions()


async def prepare(ctx: Context) -> None:
    """Before anything runs: the model the revision talks to — the one every stage's service
    gets (fake model server or real provider; decided once, idempotent) — and the deploy spec
    against Cloud Run's limits (a bad value stops the run at once, exit 2)."""
    await smoke.prepare_model(ctx)
    _validate_spec(ctx)
    await _check_identity(ctx)


def _validate_spec(ctx: Context) -> None:
    env, _ = revision_env(ctx)
    spec.validate(ctx.config, where=_where(ctx),
                  secret_env={k: v for k, v in env.items() if k in ctx.secret_env
                              or k in ctx.service_env},
                  repro=f"flightcheck deploy --dry-run{_config_flag(ctx)}")


TOKENS = "deploy.id_tokens"
_PREFLIGHT_AUDIENCE = "https://flightcheck.invalid/preflight/"


def private(ctx: Context) -> bool:
    return not ctx.config.deploy.allow_unauthenticated


def _local_flavour(ctx: Context) -> bool:
    endpoint = _options(ctx).api_endpoint or ctx.config.deploy.api_endpoint
    return ctx.config.deploy.target == "local" or bool(endpoint and endpoint.startswith("http://"))


def id_tokens(ctx: Context) -> IdTokens | None:
    """The run's ID tokens for a private service (None for a public one): the local target
    mints with a key its local Cloud Run issued, Google's with Application Default
    Credentials (``cloudrun/idtoken.py``)."""
    if not private(ctx):
        return None
    tokens = ctx.artifacts.get(TOKENS)
    if isinstance(tokens, IdTokens):
        return tokens
    key_file = None
    if _local_flavour(ctx):
        from flightcheck.cloudrun.local import DEFAULT_STATE_DIR

        key_file = local_key_file((_options(ctx).state_dir or Path.cwd() / DEFAULT_STATE_DIR)
                                  .resolve())
    tokens = IdTokens(key_file=key_file, redact=ctx.redactor.add,
                      repro=f"flightcheck deploy --target {ctx.config.deploy.target}"
                            f"{_config_flag(ctx)}")
    ctx.artifacts[TOKENS] = tokens
    return tokens


async def _local_key(ctx: Context, conn: Connection) -> None:
    """On a local Cloud Run reached by its endpoint: unless GOOGLE_APPLICATION_CREDENTIALS
    names a key it issued, mint with the deployer key of the one that answers there — fetched
    from its admin API, its token endpoint as this side reaches it (from a container too)."""
    tokens = id_tokens(ctx)
    if tokens is None or tokens.key_file is None or not conn.endpoint:
        return
    if tokens.key_file.name != DEPLOYER_KEY_FILE or tokens.key_file == Path(
            os.environ.get(CREDENTIALS_ENV) or "/nonexistent"):
        return  # a key of the user's choice (GOOGLE_APPLICATION_CREDENTIALS)
    try:
        async with httpx.AsyncClient(trust_env=False) as client:
            resp = await client.get(conn.endpoint + "/flightcheck/v1/deployer-key", timeout=10)
        info = resp.json() if resp.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        info = None
    if isinstance(info, dict) and info.get("token_uri"):
        info["token_uri"] = conn.reach(str(info["token_uri"]))
        tokens.key_info = info
        ctx.redactor.add(str(info.get("private_key", "")))


async def _check_identity(ctx: Context) -> None:
    """A private service on Google's Cloud Run: mint one ID token now, before anything is
    built or pushed — credentials that cannot are a clear error (exit 2), not a rollback for
    the wrong reason later. (The local target's key is the emulator's; it is checked on use.)"""
    tokens = id_tokens(ctx)
    if tokens is None or tokens.key_file is not None:
        return
    service = spec.target_of(ctx.config).service
    await anyio.to_thread.run_sync(tokens.token, _PREFLIGHT_AUDIENCE + service)
    ctx.log(STAGE, f"identity for the private service: {tokens.email(_PREFLIGHT_AUDIENCE + service)}"
                   f" (ID token minted in {tokens.mint_seconds[-1] * 1000:.0f} ms)")


# --- reaching a target ---------------------------------------------------------------------------


def connection(config: Config, opts: DeployOptions, *, start: bool) -> Connection | None:
    """Where the run_v2 API is. Local target: the local Cloud Run's endpoint, started when
    ``start`` (else None when it is not running). Blocking; call it from a worker thread."""
    endpoint = opts.api_endpoint or config.deploy.api_endpoint
    if endpoint:
        return Connection(endpoint.rstrip("/"), anonymous=endpoint.startswith("http://"))
    if config.deploy.target == "cloudrun":
        return Connection(None, anonymous=False)
    from flightcheck.cloudrun import local

    if start:
        return Connection(local.ensure_running(opts.state_dir), anonymous=True)
    api = local.endpoint(opts.state_dir)
    return Connection(api, anonymous=True) if api else None


def revision_env(ctx: Context) -> tuple[dict[str, str], int | None]:
    """The revision's environment and the fake model port it asks the local target for."""
    env = ctx.service_environment()
    target = ctx.config.deploy.target
    fake = ctx.sidecar is not None
    if fake and target == "local":
        return env, ctx.sidecar.port if ctx.sidecar is not None else None
    if fake:  # no fake model server on Google's Cloud Run: the service's own settings
        env = {k: v for k, v in env.items() if k not in ctx.provider_env
               and k not in ctx.extra_service_env}
    return env, None


def thresholds(config: Config) -> Thresholds:
    c = config.deploy.canary
    return Thresholds(max_error_rate=c.max_error_rate, min_quality=c.min_quality,
                      max_p95_ms=c.max_p95_latency_ms, max_cost_ratio=c.max_cost_ratio,
                      max_cost_per_hour_usd=c.max_cost_per_hour_usd)


def _suite(ctx: Context) -> Suite | None:
    path = ctx.config.resolve(ctx.config.smoke.suite)
    return load_suite(path, root=ctx.config.root) if path.is_file() else None


def _prices(ctx: Context, suite: Suite | None) -> dict[str, Price]:
    prices = {k: Price(input=i, output=o) for k, (i, o) in ctx.config.smoke.prices.items()}
    prices.update(suite.prices if suite else {})
    return prices


def _mode(ctx: Context) -> Mode:
    mode = ctx.artifacts.get(smoke.MODE_ARTIFACT)
    if isinstance(mode, Mode):
        if mode.kind == "fake" and ctx.config.deploy.target != "local":
            # No fake model server on Google's Cloud Run: the revision uses its own settings.
            return Mode("real", detect_provider(revision_env(ctx)[0]))
        return mode
    return detect_mode(ctx.service_environment(), ctx.config.smoke.model)


# --- the stage -----------------------------------------------------------------------------------


async def run(ctx: Context) -> StageResult:
    res = ctx.result(STAGE)
    cfg = ctx.config
    d = cfg.deploy
    opts = _options(ctx)
    env, fake_port = revision_env(ctx)
    _validate_spec(ctx)  # prepare did already; a stage run on its own must not skip it
    await _check_identity(ctx)
    target = spec.target_of(cfg)
    res.details.update(target=d.target, service=target.service, project=target.project,
                       region=target.region)
    if not _parity_gate(ctx, res, spec.plain_env(cfg, env)):  # 0. before any push or API call
        return res
    baseline = _quality_baseline(ctx, res)  # a broken baseline file stops us before the push
    pushed = await _image(ctx, opts)  # 1. the image, by digest
    res.details["image"] = pushed.ref
    ctx.log(STAGE, f"image {pushed.ref}")

    # 2. the service spec and the API
    conn = await anyio.to_thread.run_sync(lambda: connection(cfg, opts, start=True))
    assert conn is not None
    res.details["api_endpoint"] = conn.endpoint or "https://run.googleapis.com"
    await _local_key(ctx, conn)
    revision = spec.revision_name(target.service, pushed.ref)
    desired = spec.build_service(cfg, image=pushed.ref, revision=revision, env=env,
                                 sha=await anyio.to_thread.run_sync(spec.git_sha, cfg.source_dir), fake_model_port=fake_port)
    # What `flightcheck parity` reads back as the deployed revision's env.
    res.details["revision_env"] = shown_env(ctx, desired)
    api = RunV2(target, conn, log=lambda line: ctx.log(STAGE, line))
    suite = _suite(ctx)
    mode = _mode(ctx)
    cases = canary_cases(suite, ai_path=cfg.health.ai_path, mode=mode)
    if not cases:
        raise StageError("nothing to send as canary traffic",
                         why="the smoke suite has no case without scripted model replies, and "
                         "[health].ai_path is off", fix="add a case to smoke.yaml (docs/smoke.md)")
    attribution: Literal["header", "tags"] = "header" if conn.local else "tags"
    analysis = Analysis(
        cases=cases, mode=mode, defaults=suite.defaults if suite else Defaults(),
        prices=_prices(ctx, suite), request_timeout_s=cfg.smoke.request_timeout_s,
        request_rate=d.canary.request_rate, min_requests=d.canary.min_requests,
        step_duration_s=d.canary.step_duration_s, max_step_s=d.canary.max_step_s,
        attribution=attribution, default_model=env.get("AI_MODEL"), redact=ctx.redactor,
        metrics=api.metrics, log=lambda line: ctx.log(STAGE, line),
        baseline=baseline, warn_worse=cfg.quality.warn_worse, fail_worse=cfg.quality.fail_worse,
        auth=_auth_for(ctx))

    async def validate(url: str, name: str) -> Validation:
        return await _validate(ctx, api, url, name, mode)

    rollout = Rollout(
        api, desired, validator=validate, analyzer=analysis,
        settings=Settings(steps=tuple(d.canary.steps), thresholds=thresholds(cfg),
                          allow_unauthenticated=d.allow_unauthenticated,
                          ready_timeout_s=d.ready_timeout_s, stable_tag=attribution == "tags"),
        log=lambda line: ctx.log(STAGE, line))
    started = time.perf_counter()
    try:
        outcome = await rollout.run()
    except FlightcheckError as exc:
        outcome = rollout.outcome
        outcome.reason = ctx.redactor(exc.what)
        _report(ctx, res, outcome, pushed.ref, time.perf_counter() - started)
        res.status = Status.FAIL
        res.summary = ctx.redactor(exc.what)
        res.findings.append(Finding(code="deploy.api", category="deploy",
                                    message=ctx.redactor(exc.what + (f" — {exc.why}" if exc.why
                                                                     else "")),
                                    fix=ctx.redactor(exc.fix) or None))
        _measure_tokens(ctx, res)
        return res
    _report(ctx, res, outcome, pushed.ref, time.perf_counter() - started)
    _measure_tokens(ctx, res)
    return res


def _measure_tokens(ctx: Context, res: StageResult) -> None:
    """How often and how fast the private service's ID tokens were minted (never the tokens)."""
    tokens = id_tokens(ctx)
    if tokens is None or not tokens.mint_seconds:
        return
    res.measure("id_tokens_minted", tokens.minted)
    res.measure("id_token_mint_ms", round(max(tokens.mint_seconds) * 1000, 1), "ms")


def _parity_gate(ctx: Context, res: StageResult, to_deploy: dict[str, str]) -> bool:
    """Issue 10's parity lesson as a gate: the declared environments, the service ai-smoke just
    checked and the env the revision is about to get must agree on the AI parameters. False
    (the stage failed with the table as findings): nothing is pushed, created or moved."""
    gate = parity.before_deploy(ctx, to_deploy)
    res.details["parity"] = {"status": gate.status.value, "summary": gate.summary,
                             "tables": gate.details.get("tables", {})}
    ctx.log(STAGE, f"parity gate: {gate.status.value} — {gate.summary}")
    if gate.status is not Status.FAIL:
        return True
    res.status = Status.FAIL
    res.summary = ctx.redactor(f"parity gate failed, nothing deployed: {gate.summary}")
    for f in gate.findings:
        if f.severity is Severity.ERROR:
            res.findings.append(f.model_copy(update={
                "message": ctx.redactor(f.message),
                "fix": ctx.redactor((f.fix or "") + "; then deploy again (flightcheck parity "
                                    "shows the table)")}))
    return False


def _quality_baseline(ctx: Context, res: StageResult) -> QualityMetrics | None:
    """The saved quality baseline each canary step's candidate is compared with (issue 10:
    the canary uses the quality lesson's comparison); None without one: then only
    ``[deploy.canary].min_quality`` judges quality (it does with one, too)."""
    path = ctx.config.resolve(ctx.config.quality.baseline)
    try:
        baseline = quality.load_baseline(path)
    except FileNotFoundError:
        res.details["quality_baseline"] = None
        ctx.log(STAGE, f"no quality baseline at {path}: canary quality is judged by "
                       f"min_quality = {ctx.config.deploy.canary.min_quality:g} only")
        return None
    except OSError as exc:
        raise StageError(f"cannot read the quality baseline {path}: {exc.strerror or exc}",
                         fix="point [quality].baseline at a file `flightcheck baseline save` "
                         "wrote, or remove it") from None
    res.details["quality_baseline"] = {"path": str(path), "metrics": baseline.as_dict()}
    ctx.log(STAGE, f"canary steps are compared with the quality baseline {path}")
    return baseline


def shown_env(ctx: Context, desired: run_v2.Service) -> dict[str, str]:
    """The env given to the revision, for the report: a secret value — by its name or look,
    from a --service-env-file, or known to the redactor — is masked whole, never in part;
    Secret Manager references show as the mask too."""
    out: dict[str, str] = {}
    for var in desired.template.containers[0].env:
        value = var.value
        secret = ("value_source" in var or is_secret(var.name, value)
                  or var.name in ctx.secret_env or ctx.redactor(value) != value)
        out[var.name] = MASK if secret else value
    return out


async def _image(ctx: Context, opts: DeployOptions) -> images.Pushed:
    """The build stage's image pushed to the target's registry, by digest (or the one given)."""
    if opts.image:
        ref = images.by_digest(opts.image)
        return images.Pushed(repository=ref.partition("@")[0], tag="", digest=ref.partition("@")[2])
    runtime = ctx.artifacts.get("runtime")
    image = ctx.artifacts.get("image")
    if not isinstance(runtime, Runtime) or not isinstance(image, Image):
        raise StageError("deploy needs the built image", why="the build stage left none",
                         fix="run it with the build stage: flightcheck deploy")
    client = getattr(runtime, "client", None)
    if runtime.name != "docker" or client is None:
        raise StageError(
            f"deploy needs a container image, but the build ran on the {runtime.name} runtime",
            why="revisions run images pulled by digest from a registry",
            fix="start Docker (scripts/provision.sh) and deploy again, or --runtime docker")
    repo = images.repository_for(ctx.config)
    auth = None
    if ctx.config.deploy.target == "cloudrun" and not repo.startswith(("127.", "localhost")):
        token = await anyio.to_thread.run_sync(images.google_token, ctx.redactor)
        auth = {"username": images.AR_USER, "password": token}
    ctx.log(STAGE, f"pushing {image.ref} to {repo}")
    return await images.push(client, image.ref, repo, tag=image.ref.rpartition(":")[2],
                             auth=auth, redactor=ctx.redactor,
                             log=lambda line: ctx.log(STAGE, line))


def _where(ctx: Context) -> str:
    return str(ctx.loaded.path) if ctx.loaded.path else "the configuration"


def _config_flag(ctx: Context) -> str:
    return f" --config {ctx.loaded.path}" if ctx.loaded.path else ""


async def _validate(ctx: Context, api: RunV2, url: str, revision: str, mode: Mode) -> Validation:
    """health-poll and ai-smoke — the stages themselves, through the graph — on the tag URL."""
    sidecar = await api.revision_sidecar(revision) if mode.kind == "fake" else None
    sub = Context(
        loaded=ctx.loaded, report_dir=ctx.report_dir, runtime_name=ctx.runtime_name,
        memory_override=ctx.memory_override, service_env=dict(ctx.service_env),
        secret_env_files=list(ctx.secret_env_files), secret_env=dict(ctx.secret_env),
        redactor=ctx.redactor, environment=ctx.environment,
        progress=lambda stage, message: ctx.progress(STAGE, f"[{stage} on the tag URL] {message}"),
    )
    sub.extra_service_env = dict(ctx.extra_service_env)
    sub.provider_env = dict(ctx.provider_env)
    sub.sidecar = ctx.sidecar
    sub.artifacts[smoke.MODE_ARTIFACT] = mode
    service = await api.get_service()
    audience = service.uri if service is not None and service.uri else url
    tokens = id_tokens(ctx)
    if tokens is not None:  # mint off the event loop; the auth below then finds it cached
        await anyio.to_thread.run_sync(tokens.token, audience)
    auth_who = _auth_for(ctx)(audience, [url])
    auth, who = auth_who if auth_who else (None, "anonymous (no ID token)")
    denied = await _denied(url + ctx.config.health.liveness.path, auth, who)
    if denied:
        return Validation(ok=False, reason=denied, details={"url": url, "access": denied})
    sub.artifacts["running"] = RevisionRunning(
        api, revision, url, memory_limit=parse_memory(ctx.config.deploy.memory),
        sidecar_endpoint=sidecar, auth=auth)
    stages = (graph.Stage("health-poll", health.run),
              graph.Stage("ai-smoke", smoke.run, needs=("health-poll",)))
    results = await graph.run(sub, stages)
    details: dict[str, object] = {"url": url}
    problems: list[str] = []
    for r in results:
        details[r.name] = {"status": r.status.value, "summary": r.summary,
                           "measurements": {m.name: m.value for m in r.measurements},
                           "findings": [f.message.splitlines()[0] for f in r.findings][:10]}
        if not r.gate_passed:
            problems.append(f"{r.name}: {r.summary}")
    smoked = next((r for r in results if r.name == "ai-smoke"), None)
    quality = smoked.measurement("quality_score") if smoked else None
    minimum = ctx.config.deploy.canary.min_quality
    if isinstance(quality, int | float) and quality < minimum:
        problems.insert(0, f"quality {quality:.2f} < {minimum:.2f}")
    return Validation(ok=not problems, reason="; ".join(problems), details=details)


def _auth_for(ctx: Context) -> Callable[[str, list[str]], tuple[httpx.Auth, str] | None]:
    """(service URL, URLs to call) → the bearer auth for them and who it says we are; None
    for a public service. The audience is the service URL: Cloud Run accepts it on every URL
    of the service (tag URLs too)."""
    tokens = id_tokens(ctx)

    def auth(service_url: str, urls: list[str]) -> tuple[httpx.Auth, str] | None:
        if tokens is None:
            return None
        return BearerAuth(tokens, service_url, [service_url, *urls]), tokens.email(service_url)

    return auth


async def _denied(url: str, auth: httpx.Auth | None, who: str) -> str:
    """The IAM reason when Cloud Run's front end turns flightcheck away from ``url`` (401/403
    that no revision answered), else ""."""
    try:
        async with httpx.AsyncClient(trust_env=False, follow_redirects=False, auth=auth) as c:
            resp = await c.get(url, timeout=10)
    except httpx.HTTPError:
        return ""  # not an identity answer: health-poll will say what it is
    if resp.status_code in (401, 403) and REVISION_HEADER not in resp.headers:
        return denied_reason(resp.status_code, url, who)
    return ""


def _report(ctx: Context, res: StageResult, outcome: Outcome, image: str, seconds: float) -> None:
    data = outcome.to_json()
    data["image"] = image
    data["logs_tail"] = ctx.redactor(str(data.get("logs_tail", "")))
    res.details.update(data)
    res.measure("deploy_seconds", round(seconds, 3), "s")
    res.measure("steps_passed", sum(1 for s in outcome.steps if s.verdict == "pass"))
    res.measure("rolled_back", outcome.rolled_back)
    if outcome.rollback_s is not None:
        res.measure("first_bad_to_rollback_s", outcome.rollback_s, "s")
    if outcome.verdict_to_rollback_s is not None:
        res.measure("verdict_to_rollback_s", outcome.verdict_to_rollback_s, "s")
    reason = ctx.redactor(outcome.reason)
    if outcome.status == "promoted":
        steps = " → ".join(f"{s.percent}%" for s in outcome.steps) or "first deploy"
        res.summary = f"{outcome.revision} promoted ({steps}) at {outcome.url}"
        return
    res.status = Status.FAIL
    res.summary = {"rolled_back": f"rolled back: {reason}", "halted": f"halted: {reason}",
                   "interrupted": "interrupted"}.get(outcome.status, reason)
    fix = {
        "rolled_back": "the new revision got worse than the thresholds: read the step's "
        "metrics in the report, fix it, deploy again",
        "halted": "a person must act: the rollback point is unhealthy too (see the reason)",
    }.get(outcome.status, "read the reason, the conditions and the log tail in the report")
    logs = data["logs_tail"]
    res.findings.append(Finding(
        code=f"deploy.{outcome.status}", category="deploy", severity=Severity.ERROR,
        message=reason + (f"\nlast log lines:\n{health.compact_log_tail(str(logs))}"
                          if logs else ""),
        fix=fix))


# --- dry run and rollback (the CLI's) -------------------------------------------------------------


async def dry_run(ctx: Context, *, fmt: Literal["yaml", "json"]) -> tuple[str, str]:
    """(the Service document in ``fmt``, a diff against what is deployed): changes nothing —
    no build, no push, no emulator started."""
    cfg = ctx.config
    await smoke.prepare_model(ctx)
    _validate_spec(ctx)  # not the identity check: printing a spec needs no ID token
    env, fake_port = revision_env(ctx)
    target = spec.target_of(cfg)
    image = f"{images.repository_for(cfg)}@sha256:<digest of the image this deploy builds and pushes>"
    desired = spec.build_service(cfg, image=image,
                                 revision=spec.revision_name(target.service, "0" * 7),
                                 env=env, sha=await anyio.to_thread.run_sync(spec.git_sha, cfg.source_dir),
                                 fake_model_port=fake_port)
    doc = spec.document(desired)
    conn = await anyio.to_thread.run_sync(
        lambda: connection(cfg, _options(ctx), start=False))
    current = None
    note = ""
    if conn is None:
        note = "the local Cloud Run is not running, so nothing is deployed"
    else:
        current = await RunV2(target, conn).get_service()
        if current is None:
            note = f"service {target.service} does not exist yet"
    text = spec.to_json(doc) if fmt == "json" else spec.to_yaml(doc)
    steps = " → ".join(f"{p}%" for p in cfg.deploy.canary.steps)
    plan = ("first deploy: 100% to the new revision, then validation" if current is None
            else f"candidate at 0% (tag candidate) → validate its tag URL → {steps}")
    now = note or f"serving now: {describe(recorded_split(current))}" if current else note
    header = f"# rollout: {plan}\n# {now}\n"
    changes = spec.diff(spec.document(current) if current is not None else None, doc,
                        name=target.service)
    return ctx.redactor(text), ctx.redactor(header + (changes or "# no changes\n"))


async def rollback(ctx: Context, *, to: str | None) -> tuple[str, str]:
    """Move traffic back on demand: (before, after) as text."""
    cfg = ctx.config
    conn = await anyio.to_thread.run_sync(
        lambda: connection(cfg, _options(ctx), start=False))
    if conn is None:
        raise UsageError("the local Cloud Run is not running: nothing is deployed to roll back",
                         fix="flightcheck emulator status (or deploy first: flightcheck deploy)")
    from flightcheck.cloudrun import rollout

    api = RunV2(spec.target_of(cfg), conn, log=lambda line: ctx.log(STAGE, line))
    before, after = await rollout.rollback(api, to=to, timeout_s=cfg.deploy.ready_timeout_s,
                                           log=lambda line: ctx.log(STAGE, line))
    return describe(before), describe(after)

