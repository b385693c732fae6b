"""The ``flightcheck`` command line.

Exit codes: 0 every gate passed; 1 a gate failed; 2 usage or configuration error;
130 interrupted (after cleanup).
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import anyio
import typer
from rich.console import Console
from rich.markup import escape

from flightcheck import __version__, graph
from flightcheck import config as config_mod
from flightcheck import report as report_mod
from flightcheck.context import Context, env_pairs
from flightcheck.errors import FlightcheckError, UsageError
from flightcheck.results import StageName, StageResult, Status
from flightcheck.secrets import is_secret, scrub

app = typer.Typer(
    name="flightcheck",
    help="Preflight-and-deploy pipeline for AI (LLM-backed) web services: "
    "lint → build → run-with-memory-limit → health-poll → ai-smoke → deploy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_err = Console(stderr=True, highlight=False, soft_wrap=True)
_STYLE = {Status.PASS: "green", Status.WARN: "yellow", Status.FAIL: "red", Status.SKIPPED: "dim"}

ConfigOpt = Annotated[
    Optional[Path],  # noqa: UP045 - typer needs Optional on 3.11
    typer.Option("--config", "-c", help="flightcheck.toml (default: ./flightcheck.toml; "
                 "without one, `flightcheck init` writes it)"),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"flightcheck {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version")
    ] = False,
) -> None:
    """flightcheck: catch what breaks AI services in production, before production."""


# --- progress ----------------------------------------------------------------------------


# C0/C1 controls (ANSI escapes, \r, backspace, bell), DEL, and the bidi overrides that make
# a terminal show text other than what it is.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def safe_text(text: str) -> str:
    """Service-supplied text made harmless for a terminal: control characters are shown as
    ``\\xNN`` escapes instead of being obeyed."""
    return _CONTROL.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text)


class _Progress:
    """Live per-stage lines: coloured on a TTY, plain ``[stage] message`` otherwise."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.tty = console.is_terminal

    def __call__(self, stage: StageName, message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        message = safe_text(message)
        if self.tty:
            style = next(
                (st for s, st in _STYLE.items() if message.startswith(s.value + ":")), "cyan"
            )
            self.console.print(
                f"[dim]{stamp}[/] [bold]{stage:<22}[/] [{style}]{escape(message)}[/]"
            )
        else:
            print(f"{stamp} [{stage}] {message}", file=sys.stderr, flush=True)


_TAIL_LINES = 12  # log lines of a crashed service shown on the console


def _summary(results: list[StageResult], console: Console) -> None:
    for r in results:
        mark = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skipped": "SKIP"}[r.status.value]
        line = safe_text(f"{mark:<5} {r.name:<22} {r.duration_s:7.2f}s  {r.summary}")
        if console.is_terminal:
            console.print(f"[{_STYLE[r.status]}]{escape(line)}[/]")
        else:
            print(line, file=sys.stderr)
        if r.status is Status.FAIL:
            errors = [f for f in r.findings if f.severity.value == "error"]
            for f in errors[:3]:
                where = f"{f.file}:{f.line} " if f.file and f.line else ""
                first = (f.message.splitlines() or [""])[0]
                print(safe_text(f"      {where}{first[:160]}"), file=sys.stderr)
            if len(errors) > 3:
                print(f"      … {len(errors) - 3} more in the report", file=sys.stderr)
            tail = _log_tail(r)
            if tail:
                print("      last log lines of the service:", file=sys.stderr)
                for text in tail:
                    print(safe_text(f"        {text}"), file=sys.stderr)
            print(safe_text(f"      reproduce: {r.repro.local}"), file=sys.stderr)
            print(safe_text(f"      in dagger: {r.repro.dagger}"), file=sys.stderr)


def _log_tail(r: StageResult) -> list[str]:
    """The last lines the service logged (a crash's traceback), when the stage kept them."""
    from flightcheck.stages.health import compact_log_tail

    text = r.details.get("log_tail") or r.details.get("logs_tail")
    if not isinstance(text, str) or not text.strip() or r.name == "build":
        return []
    return compact_log_tail(text.rstrip(), keep=_TAIL_LINES).splitlines()


# --- ci ------------------------------------------------------------------------------------


def run_pipeline(
    *,
    config: Path | None,
    runtime: str,
    report_dir: Path,
    memory: str | None,
    service_env: list[str],
    only: str | None,
    service_env_files: list[Path] | None = None,
    until: str | None,
    strict: bool,
    environment: str,
    extra_overrides: dict[str, tuple[object, str]] | None = None,
    artifacts: dict[str, object] | None = None,
    prebuilt: bool = False,
    real_model: bool = False,
) -> int:
    """Run the graph and write reports; returns the exit code. Shared by ``ci`` and stages."""
    # An interrupted run, or one refused for its configuration, must not leave the last run's
    # reports looking current.
    report_mod.clear(report_dir)
    overrides: dict[str, tuple[object, str]] = dict(extra_overrides or {})
    if memory is not None:
        overrides["run.memory_limit"] = (memory, "--memory")
    if real_model:
        overrides["smoke.model"] = ("real", "--real-model")
    if runtime not in ("auto", "docker", "process", "attached"):
        raise UsageError(f"unknown runtime {runtime!r}", fix="use --runtime docker|process|auto (attached: inside the Dagger module)")
    loaded = config_mod.load(config, overrides=overrides)
    if loaded.config.environments and environment not in loaded.config.environments:
        raise UsageError(
            f"unknown environment {environment!r}",
            fix=f"use one of {sorted(loaded.config.environments)} or add [environments.{environment}]",
        )
    try:
        env = env_pairs(service_env)
    except ValueError as exc:
        raise UsageError(f"--service-env {exc}", fix="write --service-env KEY=VALUE") from None
    secret_files = list(service_env_files or [])
    secret_env = _read_env_files(secret_files)
    stages = graph.for_config(
        graph.select(graph.default_graph(), only=_stage(only), until=_stage(until)),
        # attached: the checks inside the Dagger module; there `dagger call deploy` deploys.
        deploy_enabled=loaded.config.deploy.enabled and runtime != "attached",
        wanted=(only, until), prebuilt=prebuilt)
    progress = _Progress(_err)
    ctx = Context(
        loaded=loaded,
        report_dir=report_dir,
        runtime_name=runtime,
        memory_override=memory,
        service_env=env,
        secret_env_files=secret_files,
        secret_env=secret_env,
        progress=progress,
        environment=environment,
    )
    ctx.artifacts.update(artifacts or {})
    started = datetime.now(UTC)
    results = anyio.run(_run_until_signalled, ctx, stages)
    # Everything below leaves flightcheck (reports, terminal): one last pass of the redactor.
    results = report_mod.redact_results(results, ctx.redactor)
    lessons = _run_lessons(ctx, results)
    ok = graph.overall_ok(results, strict=strict) and _lessons_ok(lessons, strict=strict)
    used = ctx.artifacts.get("runtime")
    rep = report_mod.Report.build(
        results,
        started=started,
        ok=ok,
        runtime=getattr(used, "name", None) or runtime,
        config_path=str(loaded.path) if loaded.path else None,
        lessons=lessons,
        environment=environment,
    )
    paths = report_mod.write_all(rep, report_dir)
    _summary(results, _err)
    _lessons_summary(lessons)
    summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_file:
        with open(summary_file, "a", encoding="utf-8") as fh:
            fh.write(report_mod.to_markdown(rep))
    print(f"report: {paths['json']}", file=sys.stderr)
    return 0 if ok else 1


def _run_lessons(ctx: Context, results: list[StageResult]) -> list[Any]:
    from flightcheck.lessons.commands import run_lessons

    return run_lessons(ctx, results)


def _lessons_ok(lessons: list[Any], *, strict: bool) -> bool:
    from flightcheck.lessons.commands import lessons_ok

    return lessons_ok(lessons, strict=strict)


def _lessons_summary(lessons: list[Any]) -> None:
    from flightcheck.lessons.commands import print_summary

    print_summary(lessons)


def _read_env_files(files: list[Path]) -> dict[str, str]:
    """KEY=VALUE files (dotenv syntax) whose values are all treated as secrets. A bad line is
    named by its number, never quoted: it may be a key pasted without its name."""
    import io

    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    merged: dict[str, str] = {}
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
            raise UsageError(
                f"--service-env-file {file}: " + ("no such file" if not file.exists() else why),
                fix="pass a file of KEY=VALUE lines (dotenv syntax), e.g. secrets.env",
            ) from None
        problems: list[str] = []
        for binding in parse_stream(io.StringIO(text)):
            line = binding.original.line
            if binding.error:
                problems.append(f"line {line} is not KEY=VALUE")
            elif binding.key is not None and binding.value is None:
                shown = "its name looks like a secret" if is_secret("", binding.key) else (
                    f"{binding.key} has no value")
                problems.append(f"line {line}: {shown}")
        if problems:
            raise UsageError(
                f"--service-env-file {file}: " + "; ".join(problems),
                fix="write KEY=VALUE on each line (the values are kept secret)",
            )
        values = dotenv_values(stream=io.StringIO(text))
        merged.update({k: v for k, v in values.items() if v is not None})
    return merged


async def _run_until_signalled(ctx: Context, stages: list[graph.Stage]) -> list[StageResult]:
    """Run the graph. The first Ctrl-C (SIGINT) or SIGTERM (a cancelled CI job) cancels it;
    more of them while it cleans up are absorbed, so containers and processes are removed
    however often the key is hit. Raises KeyboardInterrupt once everything is cleaned up."""
    results: list[StageResult] = []
    received: list[int] = []
    error: FlightcheckError | None = None
    # Open before anything starts and closed only after cleanup: no signal in between can
    # raise KeyboardInterrupt in the middle of removing a container.
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tg:
            run_scope = anyio.CancelScope()

            async def watch() -> None:
                async for sig in signals:
                    received.append(sig)
                    if len(received) == 1:
                        ctx.progress(ctx.selected[-1] if ctx.selected else "lint",
                                     "interrupted: cleaning up containers and processes")
                        run_scope.cancel()
                    else:
                        ctx.progress(ctx.selected[-1] if ctx.selected else "lint",
                                     "still cleaning up; it ends by itself")

            tg.start_soon(watch)
            with run_scope:
                try:
                    results = await graph.run(ctx, stages)
                except FlightcheckError as exc:  # from a prepare hook: before anything ran
                    error = exc
            tg.cancel_scope.cancel()
    if received:
        # From here to exit a late signal must not interrupt the last steps either (closing
        # the receiver above restored the default handlers).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt
    if error is not None:
        raise error
    return results


def _stage(name: str | None) -> StageName | None:
    if name is None:
        return None
    available = [s.name for s in graph.default_graph()]
    if name not in available:
        raise UsageError(f"unknown stage {name!r}", fix=f"choose one of: {', '.join(available)}")
    return name  # type: ignore[return-value]  # checked against the graph above


RuntimeOpt = Annotated[
    str, typer.Option("--runtime", "-r", help="docker | process | auto (docker when a daemon answers); attached: the Dagger module's")
]
ReportDirOpt = Annotated[
    Path, typer.Option("--report-dir", help="where flightcheck-report.json, junit.xml, summary.md go")
]
MemoryOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option("--memory", "-m", help="memory limit override, e.g. 512Mi, 2Gi (default: [run].memory_limit)"),
]
ServiceEnvOpt = Annotated[
    list[str],
    typer.Option("--service-env", "-e", help="KEY=VALUE added to the service's environment (repeatable)"),
]
ServiceEnvFileOpt = Annotated[
    list[Path],
    typer.Option(
        "--service-env-file",
        help="file of KEY=VALUE lines (dotenv) added to the service's environment; every value "
        "is treated as a secret and redacted from all output (repeatable)",
    ),
]
StrictOpt = Annotated[bool, typer.Option("--strict", help="warnings fail the run too")]
EnvOpt = Annotated[
    str, typer.Option("--env", help="which [environments.X] AI parameters the service gets")
]
RealModelOpt = Annotated[
    bool,
    typer.Option(
        "--real-model",
        help="ai-smoke against the real provider the service's own settings name (its key via "
        "--service-env/--service-env-file) instead of the fake model server ([smoke].model)",
    ),
]


@app.command("ci")
def ci(
    config: ConfigOpt = None,
    runtime: RuntimeOpt = "auto",
    report_dir: ReportDirOpt = Path("flightcheck-report"),
    memory: MemoryOpt = None,
    service_env: ServiceEnvOpt = [],  # noqa: B006 - typer reads the default, never mutates it
    service_env_file: ServiceEnvFileOpt = [],  # noqa: B006
    only: Annotated[
        Optional[str], typer.Option("--only", help="run just this stage (and the stages it needs)")  # noqa: UP045
    ] = None,
    until: Annotated[
        Optional[str], typer.Option("--until", help="stop after this stage")  # noqa: UP045
    ] = None,
    strict: StrictOpt = False,
    environment: EnvOpt = "dev",
    real_model: RealModelOpt = False,
) -> None:
    """Run the whole local graph and write the reports. Exit 0 only if every gate passed."""
    raise typer.Exit(
        run_pipeline(
            config=config, runtime=runtime, report_dir=report_dir, memory=memory,
            service_env=service_env, only=only, until=until, strict=strict, environment=environment,
            service_env_files=service_env_file, real_model=real_model,
        )
    )


def _stage_command(stage: StageName, doc: str) -> None:
    def command(
        config: ConfigOpt = None,
        runtime: RuntimeOpt = "auto",
        report_dir: ReportDirOpt = Path("flightcheck-report"),
        memory: MemoryOpt = None,
        service_env: ServiceEnvOpt = [],  # noqa: B006
        service_env_file: ServiceEnvFileOpt = [],  # noqa: B006
        strict: StrictOpt = False,
        environment: EnvOpt = "dev",
        real_model: RealModelOpt = False,
    ) -> None:
        raise typer.Exit(
            run_pipeline(
                config=config, runtime=runtime, report_dir=report_dir, memory=memory,
                service_env=service_env, only=stage, until=None, strict=strict,
                service_env_files=service_env_file,
                environment=environment, real_model=real_model,
            )
        )

    command.__doc__ = doc
    app.command(stage)(command)


_STAGE_DOCS: dict[StageName, str] = {
    "build": "Build the service image and import its critical modules inside it.",
    "run-with-memory-limit": "Build, then start the service under the memory limit; report peak memory.",
    "health-poll": "Build, start, and poll the startup and liveness probes (Cloud Run semantics).",
    "ai-smoke": "Build, start, poll health, then run the AI smoke suite.",
}


def _register_stage_commands() -> None:
    for stage in graph.default_graph():
        if stage.name in _STAGE_DOCS:
            _stage_command(stage.name, _STAGE_DOCS[stage.name])


# --- config / report ---------------------------------------------------------------------


@app.command("config")
def config_cmd(
    config: ConfigOpt = None,
    explain: Annotated[
        bool, typer.Option("--explain", help="show every effective value and where it came from")
    ] = False,
    memory: MemoryOpt = None,
) -> None:
    """Validate the configuration; with --explain, print each value and its source."""
    overrides: dict[str, tuple[object, str]] = {}
    if memory is not None:
        overrides["run.memory_limit"] = (memory, "--memory")
    # Validating needs a file; --explain without one shows the defaults a new file starts from.
    loaded = config_mod.load(config, overrides=overrides, missing="defaults" if explain else "error")
    if not explain:
        typer.echo(f"config ok: {loaded.path}")
        return
    if loaded.path is None:
        typer.echo(f"# no {config_mod.DEFAULT_FILE} in {Path.cwd()}: the generic defaults a new "
                   f"{config_mod.DEFAULT_FILE} starts from (plus FLIGHTCHECK__* and flags). "
                   "Commands that check a service refuse to run here: `flightcheck init` writes "
                   "the file for your service")
    else:
        typer.echo(f"# effective configuration ({loaded.path})")
    rows = loaded.explain()
    width = max(len(k) for k, _, _ in rows)
    for key, value, source in rows:
        typer.echo(f"{key:<{width}}  {_show(key, value):<30}  [{source}]")


def _show(key: str, value: Any) -> str:
    from flightcheck.context import masked_env
    from flightcheck.secrets import MASK

    if key.endswith(".env") and isinstance(value, dict):
        value = masked_env({str(k): str(v) for k, v in value.items()})
    elif isinstance(value, str) and is_secret(key, value):
        value = MASK
    return scrub(str(value))


@app.command("report")
def report_cmd(
    report_dir: ReportDirOpt = Path("flightcheck-report"),
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="markdown | junit | json | html")
    ] = "markdown",
) -> None:
    """Re-render a report from flightcheck-report.json (default: print the Markdown summary)."""
    rep = report_mod.load(report_dir)
    if fmt == "markdown":
        typer.echo(report_mod.to_markdown(rep), nl=False)
    elif fmt == "junit":
        sys.stdout.buffer.write(report_mod.to_junit(rep))
    elif fmt == "json":
        typer.echo(rep.model_dump_json(indent=2))
    elif fmt == "html":
        typer.echo(report_mod.to_html(rep), nl=False)
    else:
        raise UsageError(f"unknown format {fmt!r}", fix="use --format markdown|junit|json|html")
    raise typer.Exit(0 if rep.ok else 1)


# --- deploy / rollback ----------------------------------------------------------------------

TargetOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option("--target", "-t", help="local (the local Cloud Run on 127.0.0.1) | cloudrun "
                 "(Google's); default: [deploy].target"),
]
ApiEndpointOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option("--api-endpoint", help="any run_v2-compatible endpoint, e.g. "
                 "http://127.0.0.1:8099 (http://: anonymous credentials)"),
]


ProjectOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option("--project", help="GCP project id (target cloudrun); default: [deploy].project"),
]


def _deploy_overrides(target: str | None, project: str | None = None
                      ) -> dict[str, tuple[object, str]]:
    out: dict[str, tuple[object, str]] = {}
    if project is not None:
        out["deploy.project"] = (project, "--project")
    if target is None:
        return out
    if target not in ("local", "cloudrun"):
        raise UsageError(f"unknown deploy target {target!r}", fix="use --target local|cloudrun")
    return {**out, "deploy.target": (target, "--target")}


@app.command("deploy")
def deploy_cmd(
    config: ConfigOpt = None,
    target: TargetOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the Cloud Run Service and a diff against "
                           "what is deployed now; change nothing")
    ] = False,
    fmt: Annotated[str, typer.Option("--format", "-f", help="yaml | json (with --dry-run)")] = "yaml",
    api_endpoint: ApiEndpointOpt = None,
    project: ProjectOpt = None,
    image: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--image", help="deploy this pushed image (REGISTRY/NAME@sha256:…) "
                     "instead of building and pushing one (the Dagger module publishes it)"),
    ] = None,
    runtime: RuntimeOpt = "auto",
    report_dir: ReportDirOpt = Path("flightcheck-report"),
    service_env: ServiceEnvOpt = [],  # noqa: B006
    service_env_file: ServiceEnvFileOpt = [],  # noqa: B006
    environment: EnvOpt = "dev",
    strict: StrictOpt = False,
    real_model: RealModelOpt = False,
) -> None:
    """Build, then roll out to Cloud Run (default target: the local Cloud Run): candidate at 0%
    with a tag, its tag URL checked with health-poll and ai-smoke, canary steps with analysis,
    promote — or roll back automatically with the reason."""
    from flightcheck.stages import deploy as deploy_stage

    overrides = _deploy_overrides(target, project)
    if real_model:  # the revision talks to the real provider, as ai-smoke would
        overrides["smoke.model"] = ("real", "--real-model")
    if image is not None:
        from flightcheck.cloudrun.images import by_digest

        try:
            by_digest(image)
        except ValueError as exc:
            raise UsageError(f"--image {exc}", why="deploys go by digest, never by tag",
                             fix="pass the digest the push printed: REGISTRY/NAME@sha256:…") from None
    options = deploy_stage.DeployOptions(api_endpoint=api_endpoint, image=image)
    if fmt not in ("yaml", "json"):
        raise UsageError(f"unknown format {fmt!r}", fix="use --format yaml|json")
    if dry_run:
        loaded = config_mod.load(config, overrides=overrides)
        try:
            env = env_pairs(service_env)
        except ValueError as exc:
            raise UsageError(f"--service-env {exc}", fix="write --service-env KEY=VALUE") from None
        ctx = Context(loaded=loaded, service_env=env, environment=environment,
                      secret_env=_read_env_files(list(service_env_file)),
                      progress=_Progress(_err))
        ctx.artifacts[deploy_stage.OPTIONS] = options
        text, changes = anyio.run(
            lambda: deploy_stage.dry_run(ctx, fmt="json" if fmt == "json" else "yaml"))
        sys.stdout.write(text)
        sys.stderr.write(changes)
        raise typer.Exit(0)
    raise typer.Exit(
        run_pipeline(
            config=config, runtime=runtime, report_dir=report_dir, memory=None,
            service_env=service_env, only="deploy", until=None, strict=strict,
            environment=environment, service_env_files=service_env_file,
            extra_overrides=overrides, artifacts={deploy_stage.OPTIONS: options},
            prebuilt=image is not None,
        )
    )


@app.command("init")
def init_cmd(
    directory: Annotated[
        Path, typer.Argument(help="the service's directory (its Dockerfile and source)")
    ] = Path("."),
    force: Annotated[
        bool, typer.Option("--force", help="replace an existing flightcheck.toml / smoke.yaml")
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="run the first `flightcheck ci` without asking")
    ] = False,
) -> None:
    """Read a service statically and write a flightcheck.toml and smoke.yaml for it."""
    from flightcheck import onboard

    if not directory.is_dir():
        raise UsageError(f"{directory} is not a directory",
                         fix="pass the service's directory: flightcheck init path/to/service")
    present = onboard.existing(directory)
    if present and not force:  # before any work: init never overwrites without --force
        onboard.write(directory.resolve(), "", "", force=False)
    started = time.perf_counter()
    plan = onboard.inspect(directory)
    typer.echo(onboard.render(plan))
    _, suite = onboard.write(directory.resolve(), plan.toml_text, plan.suite_text, force=force)
    config_path = directory / config_mod.DEFAULT_FILE
    typer.echo(
        f"\nwrote {config_path} and {directory / 'smoke.yaml'} ({len(suite.cases)} cases) in "
        f"{time.perf_counter() - started:.2f} s; flightcheck's own config and suite loaders accept both"
    )
    stages = [s.name for s in graph.default_graph()]
    until = "ai-smoke" if "deploy" in stages else None  # the first run is a preflight, not a deploy
    here = directory.resolve() == Path.cwd().resolve()
    command = "flightcheck ci" + ("" if here else f" --config {config_path}") + (
        f" --until {until}" if until else "")
    if not yes:
        if not sys.stdin.isatty() or not typer.confirm(f"run the first check now ({command})?", default=True):
            typer.echo(f"next: {command}")
            return
    typer.echo(f"running: {command}")
    raise typer.Exit(
        run_pipeline(
            config=None if here else config_path, runtime="auto", report_dir=Path("flightcheck-report"),
            memory=None, service_env=[], only=None, until=until, strict=False, environment="dev",
        )
    )


@app.command("rollback")
def rollback_cmd(
    config: ConfigOpt = None,
    target: TargetOpt = None,
    api_endpoint: ApiEndpointOpt = None,
    project: ProjectOpt = None,
    to: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--to", help="send 100% to this revision (default: the split recorded "
                     "before the last promotion)"),
    ] = None,
) -> None:
    """Move the service's traffic back now: to the split before the last promotion, or to
    --to REVISION. Also clears the lock of a deploy that died."""
    from flightcheck.stages import deploy as deploy_stage

    loaded = config_mod.load(config, overrides=_deploy_overrides(target, project))
    ctx = Context(loaded=loaded, progress=_Progress(_err))
    ctx.artifacts[deploy_stage.OPTIONS] = deploy_stage.DeployOptions(api_endpoint=api_endpoint)
    before, after = anyio.run(lambda: deploy_stage.rollback(ctx, to=to))
    typer.echo(f"rolled back: {before} → {after}")


def _register_lint() -> None:
    try:
        from flightcheck.lint.command import lint_command
    except ImportError:  # lint lands with its own issue
        return
    app.command("lint")(lint_command)


def _register_emulator() -> None:
    try:
        from flightcheck.cloudrun.local.command import emulator_app
    except ImportError:  # google-cloud-run missing: the local Cloud Run cannot run
        return
    app.add_typer(emulator_app, name="emulator")


_register_lint()
_register_stage_commands()
_register_emulator()


def _register_lessons() -> None:
    from flightcheck.lessons.commands import register

    register(app)


_register_lessons()


def _repro_here(argv: list[str]) -> str:
    """``cd DIR && flightcheck COMMAND``: the command words only, never the options (their
    values may be secrets, e.g. --service-env)."""
    import shlex

    words = []
    for arg in argv:
        if arg.startswith("-"):
            break
        words.append(arg)
    return f"cd {shlex.quote(str(Path.cwd()))} && " + shlex.join(["flightcheck", *words])


def main(argv: list[str] | None = None) -> None:
    """Console entry point: no tracebacks for expected errors, cleanup on Ctrl-C."""
    try:
        rc = app(args=argv, prog_name="flightcheck", standalone_mode=False)
        if rc == 130:  # typer turns KeyboardInterrupt into Exit(130) after our cleanup ran
            raise KeyboardInterrupt
    except FlightcheckError as exc:
        if isinstance(exc, config_mod.MissingConfig):
            exc.repro = _repro_here(sys.argv[1:] if argv is None else argv)
        print(safe_text(scrub(exc.render())), file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _err.print("interrupted: containers and processes were cleaned up", markup=False)
        sys.exit(130)
    except Exception as exc:
        # Usage errors come from typer's bundled click (typer._click), not the click package.
        from typer._click.exceptions import ClickException

        if isinstance(exc, ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
