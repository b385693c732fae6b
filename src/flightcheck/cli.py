"""The ``flightcheck`` command line.

Exit codes: 0 every gate passed; 1 a gate failed; 2 usage or configuration error;
130 interrupted (after cleanup).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import anyio
import typer
from rich.console import Console

from flightcheck import __version__, graph
from flightcheck import config as config_mod
from flightcheck import report as report_mod
from flightcheck.context import Context, env_pairs
from flightcheck.errors import FlightcheckError, UsageError
from flightcheck.results import StageName, StageResult, Status

app = typer.Typer(
    name="flightcheck",
    help="Preflight-and-deploy pipeline for AI (LLM-backed) web services: "
    "lint → build → run-with-memory-limit → health-poll → ai-smoke.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_err = Console(stderr=True, highlight=False, soft_wrap=True)
_STYLE = {Status.PASS: "green", Status.WARN: "yellow", Status.FAIL: "red", Status.SKIPPED: "dim"}

ConfigOpt = Annotated[
    Optional[Path],  # noqa: UP045 - typer needs Optional on 3.11
    typer.Option("--config", "-c", help="flightcheck.toml (default: ./flightcheck.toml, else built-in defaults)"),
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


class _Progress:
    """Live per-stage lines: coloured on a TTY, plain ``[stage] message`` otherwise."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.tty = console.is_terminal

    def __call__(self, stage: StageName, message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        if self.tty:
            style = next(
                (st for s, st in _STYLE.items() if message.startswith(s.value + ":")), "cyan"
            )
            self.console.print(f"[dim]{stamp}[/] [bold]{stage:<22}[/] [{style}]{message}[/]")
        else:
            print(f"{stamp} [{stage}] {message}", file=sys.stderr, flush=True)


def _summary(results: list[StageResult], console: Console) -> None:
    for r in results:
        mark = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skipped": "SKIP"}[r.status.value]
        line = f"{mark:<5} {r.name:<22} {r.duration_s:7.2f}s  {r.summary}"
        if console.is_terminal:
            console.print(f"[{_STYLE[r.status]}]{line}[/]")
        else:
            print(line, file=sys.stderr)
        if r.status is Status.FAIL:
            errors = [f for f in r.findings if f.severity.value == "error"]
            for f in errors[:3]:
                where = f"{f.file}:{f.line} " if f.file and f.line else ""
                print(f"      {where}{f.message.splitlines()[0][:160]}", file=sys.stderr)
            if len(errors) > 3:
                print(f"      … {len(errors) - 3} more in the report", file=sys.stderr)
            print(f"      reproduce: {r.repro.local}", file=sys.stderr)
            print(f"      in dagger: {r.repro.dagger}", file=sys.stderr)


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
) -> int:
    """Run the graph and write reports; returns the exit code. Shared by ``ci`` and stages."""
    overrides: dict[str, tuple[object, str]] = {}
    if memory is not None:
        overrides["run.memory_limit"] = (memory, "--memory")
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
    stages = graph.select(graph.default_graph(), only=_stage(only), until=_stage(until))
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
    if loaded.path is None:
        progress(stages[0].name if stages else "lint", "no flightcheck.toml here: checking the embedded reference service (mathcoach); pass --config for yours")
    started = datetime.now(UTC)
    results = anyio.run(_run_until_signalled, ctx, stages)
    ok = graph.overall_ok(results, strict=strict)
    used = ctx.artifacts.get("runtime")
    rep = report_mod.Report.build(
        results,
        started=started,
        ok=ok,
        runtime=getattr(used, "name", None) or runtime,
        config_path=str(loaded.path) if loaded.path else None,
    )
    paths = report_mod.write_all(rep, report_dir)
    _summary(results, _err)
    summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_file:
        with open(summary_file, "a", encoding="utf-8") as fh:
            fh.write(report_mod.to_markdown(rep))
    print(f"report: {paths['json']}", file=sys.stderr)
    return 0 if ok else 1


def _read_env_files(files: list[Path]) -> dict[str, str]:
    """KEY=VALUE files (dotenv syntax) whose values are all treated as secrets."""
    from dotenv import dotenv_values

    merged: dict[str, str] = {}
    for file in files:
        if not file.is_file():
            raise UsageError(
                f"--service-env-file {file}: no such file",
                fix="pass a file of KEY=VALUE lines (dotenv syntax), e.g. secrets.env",
            )
        values = dotenv_values(file)
        missing = [k for k, v in values.items() if v is None]
        if missing:
            raise UsageError(
                f"--service-env-file {file}: {', '.join(missing)} has no value",
                fix="write KEY=VALUE on each line",
            )
        merged.update({k: v for k, v in values.items() if v is not None})
    return merged


async def _run_until_signalled(ctx: Context, stages: list[graph.Stage]) -> list[StageResult]:
    """Run the graph; SIGTERM (a cancelled CI job) cleans up like Ctrl-C does."""
    results: list[StageResult] = []
    terminated = False
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            nonlocal terminated
            with anyio.open_signal_receiver(signal.SIGTERM) as signals:
                async for _ in signals:
                    terminated = True
                    tg.cancel_scope.cancel()

        tg.start_soon(watch)
        results = await graph.run(ctx, stages)
        tg.cancel_scope.cancel()
    if terminated:
        raise KeyboardInterrupt
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
) -> None:
    """Run the whole local graph and write the reports. Exit 0 only if every gate passed."""
    raise typer.Exit(
        run_pipeline(
            config=config, runtime=runtime, report_dir=report_dir, memory=memory,
            service_env=service_env, only=only, until=until, strict=strict, environment=environment,
            service_env_files=service_env_file,
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
    ) -> None:
        raise typer.Exit(
            run_pipeline(
                config=config, runtime=runtime, report_dir=report_dir, memory=memory,
                service_env=service_env, only=stage, until=None, strict=strict,
                service_env_files=service_env_file,
                environment=environment,
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
    loaded = config_mod.load(config, overrides=overrides)
    where = str(loaded.path) if loaded.path else "built-in defaults (no flightcheck.toml found)"
    if not explain:
        typer.echo(f"config ok: {where}")
        return
    typer.echo(f"# effective configuration ({where})")
    rows = loaded.explain()
    width = max(len(k) for k, _, _ in rows)
    for key, value, source in rows:
        typer.echo(f"{key:<{width}}  {_show(key, value):<30}  [{source}]")


def _show(key: str, value: Any) -> str:
    from flightcheck.context import masked_env

    if key.endswith(".env") and isinstance(value, dict):
        value = masked_env({str(k): str(v) for k, v in value.items()})
    return str(value)


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


def _register_lint() -> None:
    try:
        from flightcheck.lint.command import lint_command
    except ImportError:  # lint lands with its own issue
        return
    app.command("lint")(lint_command)


_register_lint()
_register_stage_commands()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: no tracebacks for expected errors, cleanup on Ctrl-C."""
    try:
        rc = app(args=argv, prog_name="flightcheck", standalone_mode=False)
        if rc == 130:  # typer turns KeyboardInterrupt into Exit(130) after our cleanup ran
            raise KeyboardInterrupt
    except FlightcheckError as exc:
        print(exc.render(), file=sys.stderr)
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
