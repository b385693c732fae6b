"""The lessons' command line: ``flightcheck cost|quality|baseline save|resources|parity|
monitoring`` (registered on the main app by cli.py), and the lesson part of ``flightcheck ci``.

Each command judges the evidence in a saved report (``--report-dir``, written by
``flightcheck ci``) against the config, prints a verdict with its evidence, and exits 0 (pass,
warn), 1 (fail) or 2 (usage: no report, bad config). ``resources`` measures on purpose.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from flightcheck import config as config_mod
from flightcheck import report as report_mod
from flightcheck.lessons.evidence import Evidence
from flightcheck.results import LessonResult, Severity, StageResult, Status

if TYPE_CHECKING:
    from flightcheck.context import Context

ConfigOpt = Annotated[
    Optional[Path],  # noqa: UP045 - typer needs Optional on 3.11
    typer.Option("--config", "-c", help="flightcheck.toml (default: ./flightcheck.toml; "
                 "without one, `flightcheck init` writes it)"),
]
ReportDirOpt = Annotated[
    Path, typer.Option("--report-dir", help="the report directory `flightcheck ci` wrote")
]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="text | json")]
OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="directory the files go to")]

_MARK = {Status.PASS: "PASS", Status.WARN: "WARN", Status.FAIL: "FAIL", Status.SKIPPED: "SKIP"}


# --- inside `flightcheck ci` -------------------------------------------------------------


def run_lessons(ctx: Context, results: list[StageResult]) -> list[LessonResult]:
    """Every lesson over this run's results (never raises: a lesson's crash is its verdict)."""
    from flightcheck import lessons

    ev = Evidence(loaded=ctx.loaded, stages=results, report_dir=ctx.report_dir,
                  environment=ctx.environment)
    return [_redacted(x, ctx.redactor) for x in lessons.evaluate(ev)]


def _redacted(lesson: LessonResult, redact: Callable[[str], str]) -> LessonResult:
    """Every string of a lesson through the run's redactor (lessons quote config and output)."""

    def walk(value: object) -> object:
        if isinstance(value, str):
            return redact(value)
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        return value

    return LessonResult.model_validate(walk(lesson.model_dump(mode="json")))


def lessons_ok(lessons: list[LessonResult], *, strict: bool = False) -> bool:
    bad = {Status.FAIL, Status.WARN} if strict else {Status.FAIL}
    return not any(x.gate and x.status in bad for x in lessons)


def print_summary(lessons: list[LessonResult]) -> None:
    for x in lessons:
        what = "lesson " + x.name if x.gate else x.name + " (report)"
        print(f"{_MARK[x.status]:<5} {what:<22} {'':>8}  {x.summary}", file=sys.stderr)
        if x.status is Status.FAIL and x.gate:
            for f in [f for f in x.findings if f.severity is Severity.ERROR][:3]:
                print(f"      {f.message.splitlines()[0][:160]}", file=sys.stderr)
            print(f"      reproduce: {x.repro.local}", file=sys.stderr)


# --- standalone commands --------------------------------------------------------------------


def evidence(config: Path | None, report_dir: Path) -> Evidence:
    """The saved report's evidence and the (current) config."""
    loaded = config_mod.load(config)  # first: without a config, no report is the lesser problem
    rep = report_mod.load(report_dir)
    return Evidence(loaded=loaded, stages=rep.stages, report_dir=report_dir,
                    environment=rep.environment or "dev")


def emit(res: LessonResult, fmt: str, text: Callable[[LessonResult], list[str]] | None = None) -> None:
    """Print a lesson's verdict (text: summary, details, findings, repro; or JSON) and exit."""
    if fmt == "json":
        typer.echo(res.model_dump_json(indent=2))
    elif fmt == "text":
        typer.echo(f"{_MARK[res.status]}  {res.name}: {res.summary}")
        for line in text(res) if text else []:
            typer.echo(f"  {line}")
        for f in res.findings:
            typer.echo(f"  {f.severity.value}: {f.message}" + (f"\n    fix: {f.fix}" if f.fix else ""))
        if res.status is Status.FAIL:
            typer.echo(f"  reproduce: {res.repro.local}\n  in dagger: {res.repro.dagger}")
    else:
        from flightcheck.errors import UsageError

        raise UsageError(f"unknown format {fmt!r}", fix="use --format text|json")
    raise typer.Exit(1 if res.gate and res.status is Status.FAIL else 0)


def register(app: typer.Typer) -> None:
    """Add the lessons' commands to the main app."""
    register_parity(app)
    register_monitoring(app)

    @app.command("cost")
    def cost_cmd(
        config: ConfigOpt = None,
        report_dir: ReportDirOpt = Path("flightcheck-report"),
        requests_per_hour: Annotated[
            Optional[float],  # noqa: UP045
            typer.Option("--requests-per-hour", min=0.001,
                         help="request rate for the projections (default: [cost].requests_per_hour)"),
        ] = None,
        fmt: FormatOpt = "text",
    ) -> None:
        """Cost per request from the run's token usage × the price table, projected per hour and
        day; fails over [cost] budgets (defaults 0.05/request, 10/hour, 100/day USD)."""
        from flightcheck.lessons import cost

        ev = evidence(config, report_dir)
        emit(cost.evaluate(ev, requests_per_hour=requests_per_hour), fmt, cost.text)

    baseline_app = typer.Typer(help="Keep the smoke metrics of a good run to compare later runs with.",
                               no_args_is_help=True)
    app.add_typer(baseline_app, name="baseline")

    @baseline_app.command("save")
    def baseline_save(
        config: ConfigOpt = None,
        report_dir: ReportDirOpt = Path("flightcheck-report"),
        output: Annotated[
            Optional[Path],  # noqa: UP045
            typer.Option("--output", "-o", help="baseline file (default: [quality].baseline)"),
        ] = None,
    ) -> None:
        """Save this run's smoke metrics (assertion pass rate, format compliance, p95 latency,
        cost per request) as the quality baseline. Refuses a run whose ai-smoke failed."""
        from flightcheck.lessons import quality

        path, metrics = quality.save_baseline(evidence(config, report_dir), output)
        shown = ", ".join(f"{k} {v:g}" for k, v in metrics.as_dict().items() if v is not None)
        typer.echo(f"baseline saved: {path} ({shown})")

    @app.command("quality")
    def quality_cmd(
        config: ConfigOpt = None,
        report_dir: ReportDirOpt = Path("flightcheck-report"),
        baseline: Annotated[
            Optional[Path],  # noqa: UP045
            typer.Option("--baseline", help="baseline file (default: [quality].baseline)"),
        ] = None,
        fmt: FormatOpt = "text",
    ) -> None:
        """Compare the run's smoke metrics with the saved baseline: more than 20 % worse warns,
        more than 40 % fails ([quality].warn_worse / fail_worse)."""
        from flightcheck.lessons import quality

        ev = evidence(config, report_dir)
        res = quality.evaluate(ev, baseline=baseline)
        if res.status is Status.SKIPPED and "no baseline" in res.summary and baseline is not None:
            from flightcheck.errors import UsageError

            raise UsageError(f"no baseline at {baseline}",
                             fix="save one from a good run: flightcheck baseline save --output "
                             f"{baseline}")
        emit(res, fmt, quality.text)

    @app.command("resources")
    def resources_cmd(
        config: ConfigOpt = None,
        report_dir: ReportDirOpt = Path("flightcheck-report"),
        runtime: Annotated[str, typer.Option("--runtime", "-r", help="docker | process | auto")] = "auto",
        memory: Annotated[
            Optional[str],  # noqa: UP045
            typer.Option("--memory", "-m", help="the limit the measuring runs get (default: [run].memory_limit)"),
        ] = None,
        runs: Annotated[
            Optional[int],  # noqa: UP045
            typer.Option("--runs", min=1, max=20, help="starts to measure (default: [resources].runs)"),
        ] = None,
        concurrency: Annotated[
            Optional[int],  # noqa: UP045
            typer.Option("--concurrency", min=1, max=1000,
                         help="concurrent smoke requests to drive (default: [resources].concurrency)"),
        ] = None,
        service_env: Annotated[
            list[str], typer.Option("--service-env", "-e", help="KEY=VALUE for the service (repeatable)")
        ] = [],  # noqa: B006 - typer reads the default, never mutates it
        environment: Annotated[str, typer.Option("--env", help="which [environments.X]")] = "dev",
        from_report: Annotated[
            bool, typer.Option("--from-report", help="judge the saved ci run instead of measuring")
        ] = False,
        fmt: FormatOpt = "text",
    ) -> None:
        """Measure peak memory, time-to-ready and memory under N concurrent smoke requests (over
        several runs when asked), recommend Cloud Run memory / CPU / startup probe / min instances,
        and judge [deploy] against it (memory below the measured need fails). Prints the fixed
        formula's answer beside the measured one. Writes resources.json into --report-dir."""
        from flightcheck.lessons import resources

        if from_report:
            emit(resources.evaluate(evidence(config, report_dir)), fmt, resources.text)
        res = measure_resources(config=config, report_dir=report_dir, runtime=runtime,
                                memory=memory, runs=runs, concurrency=concurrency,
                                service_env=service_env, environment=environment)
        emit(res, fmt, resources.text)


def measure_resources(*, config: Path | None, report_dir: Path, runtime: str, memory: str | None,
                      runs: int | None, concurrency: int | None, service_env: list[str],
                      environment: str) -> LessonResult:
    """`flightcheck resources`: measure, recommend, write resources.json; cleans up on every
    path (Ctrl-C included)."""
    import anyio

    from flightcheck.context import Context, env_pairs
    from flightcheck.errors import UsageError
    from flightcheck.lessons import resources

    overrides: dict[str, tuple[object, str]] = {}
    if memory is not None:
        overrides["run.memory_limit"] = (memory, "--memory")
    loaded = config_mod.load(config, overrides=overrides)
    try:
        env = env_pairs(service_env)
    except ValueError as exc:
        raise UsageError(f"--service-env {exc}", fix="write --service-env KEY=VALUE") from None
    ctx = Context(loaded=loaded, report_dir=report_dir, runtime_name=runtime,
                  memory_override=memory, service_env=env, environment=environment,
                  progress=lambda stage, msg: print(f"[resources] {msg}", file=sys.stderr))
    cfg = loaded.config.resources
    n_runs, n_conc = runs or cfg.runs, concurrency or cfg.concurrency

    async def go() -> resources.Measured:
        try:
            return await resources.measure(ctx, runs=n_runs, concurrency=n_conc)
        finally:
            with anyio.CancelScope(shield=True):
                await ctx.stack.aclose()

    measured = anyio.run(go)
    ev = Evidence(loaded=loaded, stages=[], report_dir=report_dir, environment=environment)
    cmd = ["resources", "--runs", str(n_runs), "--concurrency", str(n_conc)]
    if memory:
        cmd += ["--memory", memory]
    res = ev.result("resources", cmd, "resources")
    res = resources.recommend(loaded.config, measured, res)
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "resources.json").write_text(res.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return res


def register_parity(app: typer.Typer) -> None:
    @app.command("parity")
    def parity_cmd(
        envs: Annotated[
            Optional[list[str]],  # noqa: UP045
            typer.Argument(help="two [environments.*] to compare (default: every pair)"),
        ] = None,
        config: ConfigOpt = None,
        report_dir: ReportDirOpt = Path("flightcheck-report"),
        url: Annotated[
            Optional[str],  # noqa: UP045
            typer.Option("--url", help="read the AI parameters from this running service "
                         "instead of the saved run (e.g. http://127.0.0.1:8080)"),
        ] = None,
        environment: Annotated[
            Optional[str],  # noqa: UP045
            typer.Option("--env", help="the environment the running service should match "
                         "(default: the saved run's)"),
        ] = None,
        fmt: FormatOpt = "text",
    ) -> None:
        """AI parameters (model, temperature, top_k, top_p, max_output_tokens, [parity].parameters)
        across [environments.*], as the service under test reports them, and as deployed; a
        mismatch fails with a table, a floating model alias is flagged."""
        import anyio
        import httpx

        from flightcheck.errors import UsageError
        from flightcheck.lessons import parity

        if envs and len(envs) != 2:
            raise UsageError(f"parity compares two environments, got {len(envs)}",
                             fix="flightcheck parity dev prod (or no names: every pair)")
        loaded = config_mod.load(config)
        try:
            rep = report_mod.load(report_dir)
            stages, run_env = rep.stages, rep.environment or "dev"
        except UsageError:  # no saved run: the declared environments (and --url) only
            stages, run_env = [], "dev"
        ev = Evidence(loaded=loaded, stages=stages, report_dir=report_dir,
                      environment=environment or run_env)
        running: dict[str, object] | None = None
        if url is not None:
            path = loaded.config.parity.info_path or loaded.config.health.ai_path
            if not path:
                raise UsageError("--url needs to know where the service reports its AI parameters",
                                 fix="set [parity].info_path (or [health].ai_path)")

            async def read() -> dict[str, object]:
                async with httpx.AsyncClient(trust_env=False) as client:
                    return await parity.read_running(client, url, path, loaded.config.parity.info_key)

            running = anyio.run(read)
        res = parity.evaluate(ev, envs=envs or (), running=running,
                              running_label=url or "running")
        emit(res, fmt, parity.text)


def register_monitoring(app: typer.Typer) -> None:
    mon = typer.Typer(help="Log-based metrics and alert policies as code (Cloud Logging / "
                      "Cloud Monitoring JSON and Terraform), rendered from [monitoring].",
                      no_args_is_help=True)
    app.add_typer(mon, name="monitoring")

    def plan_for(config: Path | None, report_dir: Path) -> Evidence:
        loaded = config_mod.load(config)
        try:  # a saved run's measured prompt/completion split prices the cost alert better
            rep = report_mod.load(report_dir)
            return Evidence(loaded=loaded, stages=rep.stages, report_dir=report_dir,
                            environment=rep.environment or "dev")
        except Exception:  # noqa: BLE001 - no report: the config alone is enough
            return Evidence(loaded=loaded, stages=[], report_dir=report_dir)

    def render_to(ev: Evidence, output: Path) -> Any:
        from flightcheck.errors import ConfigError
        from flightcheck.lessons import monitoring

        try:
            plan = monitoring.render(ev)
        except ValueError as exc:
            raise ConfigError(f"[monitoring] renders an invalid resource: {exc}",
                              fix="correct [monitoring] in flightcheck.toml") from None
        for path in monitoring.write(plan, output):
            typer.echo(f"wrote {path}")
        for note, fix in plan.notes:
            typer.echo(f"note: {note} ({fix})", err=True)
        return plan

    @mon.command("render")
    def render_cmd(
        config: ConfigOpt = None,
        report_dir: ReportDirOpt = Path("flightcheck-report"),
        output: OutputOpt = Path("flightcheck-report/monitoring"),
    ) -> None:
        """Write the log-based error and token metrics and the error-rate, p95-latency and
        cost-per-hour alert policies as API JSON (for gcloud) and monitoring.tf.json (Terraform)."""
        render_to(plan_for(config, report_dir), output)

    @mon.command("apply")
    def apply_cmd(
        config: ConfigOpt = None,
        report_dir: ReportDirOpt = Path("flightcheck-report"),
        output: OutputOpt = Path("flightcheck-report/monitoring"),
        project: Annotated[
            Optional[str],  # noqa: UP045
            typer.Option("--project", help="GCP project (default: [deploy].project)"),
        ] = None,
        endpoint: Annotated[
            Optional[str],  # noqa: UP045
            typer.Option("--endpoint", help="host:port of a local gRPC server speaking the "
                         "Logging and Monitoring APIs (plaintext, no credentials); default: Google's"),
        ] = None,
    ) -> None:
        """Render, then create or update the metrics and policies in the project through
        google-cloud-logging / google-cloud-monitoring (idempotent). Needs Application Default
        Credentials (gcloud auth application-default login, a key file, or Workload Identity)."""
        from flightcheck.errors import UsageError
        from flightcheck.lessons import monitoring

        ev = plan_for(config, report_dir)
        target = project or ev.config.deploy.project
        if not target:
            raise UsageError("monitoring apply needs a project",
                             fix="pass --project PROJECT_ID or set [deploy].project")
        plan = render_to(ev, output)
        try:
            done = monitoring.apply(plan, target, endpoint=endpoint)
        except ImportError:
            raise UsageError("google-cloud-logging / google-cloud-monitoring are not installed",
                             fix="pip install 'flightcheck[monitoring]'") from None
        for what in done.created:
            typer.echo(f"created {what}")
        for what in done.updated:
            typer.echo(f"updated {what}")
