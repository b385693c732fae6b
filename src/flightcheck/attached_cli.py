"""``python -m flightcheck.attached_cli plan``: how to start the service, for a starter.

The Dagger module (and any orchestrator that starts the service itself, then checks it with
``flightcheck ci --runtime attached``) reads this plan and holds no pipeline logic of its own:
build context, Dockerfile, port, memory limit, the service's environment and the fake model
server, decided by the graph's prepare hooks exactly as for the local runtimes. It runs graph
hooks, so it lives above the stages; the attached runtime itself (``runtimes/attached.py``) stays
below them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path

import anyio

from flightcheck import config as config_mod
from flightcheck import graph
from flightcheck.context import Context, env_pairs
from flightcheck.errors import FlightcheckError, UsageError
from flightcheck.secrets import Redactor


async def service_plan(
    *,
    config: Path | None = None,
    memory: str | None = None,
    environment: str = "dev",
    service_env: Mapping[str, str] | None = None,
    withheld: Sequence[str] = (),
    sidecar_host: str = "fakemodel",
    real_model: bool = False,
) -> dict[str, object]:
    """Build context, Dockerfile, port, memory limit, environment and fake model server of the
    service, after the graph's prepare hooks (ai-smoke: fake model server or real provider).

    ``withheld`` names env variables whose values the starter injects itself (secrets): they
    shape the decisions but never appear in the plan. The fake model server's address is
    rewritten from the local runtimes' ``127.0.0.1:PORT`` to ``sidecar_host:PORT``.
    """
    overrides: dict[str, tuple[object, str]] = {}
    if memory is not None:
        overrides["run.memory_limit"] = (memory, "--memory")
    if real_model:
        overrides["smoke.model"] = ("real", "--real-model")
    loaded = config_mod.load(config, overrides=overrides)
    if environment not in loaded.config.environments:
        raise UsageError(
            f"unknown environment {environment!r}",
            fix=f"use one of {sorted(loaded.config.environments)}",
        )
    ctx = Context(loaded=loaded, memory_override=memory, service_env=dict(service_env or {}),
                  environment=environment)
    for stage in graph.default_graph():
        if stage.prepare is not None:
            await stage.prepare(ctx)
    cfg = loaded.config
    root = (loaded.path.parent if loaded.path else Path.cwd()).resolve()
    try:
        context_dir = cfg.source_dir.relative_to(root)
    except ValueError:
        raise UsageError(
            f"[service].source {cfg.service.source} is outside {root}",
            fix="keep the build context inside the directory the config lives in",
        ) from None
    port = cfg.service.port
    env = {"PYTHONUNBUFFERED": "1", **ctx.service_environment(), "PORT": str(port)}
    sidecar: dict[str, object] | None = None
    if ctx.sidecar is not None:
        local = f"127.0.0.1:{ctx.sidecar.port}"
        env = {k: v.replace(local, f"{sidecar_host}:{ctx.sidecar.port}") for k, v in env.items()}
        sidecar = {"host": sidecar_host, "port": ctx.sidecar.port, "args": list(ctx.sidecar.args)}
    for name in withheld:
        env.pop(name, None)
    return {
        "version": 1,
        "service": cfg.service.name,
        "context": context_dir.as_posix(),
        "dockerfile": cfg.service.dockerfile,
        "port": port,
        "memory_limit": ctx.memory_limit,
        "memory_limit_bytes": ctx.memory_limit_bytes,
        "import_check": list(cfg.service.import_check),
        "env": env,
        "sidecar": sidecar,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flightcheck.attached_cli")
    sub = parser.add_subparsers(dest="command", required=True)
    plan = sub.add_parser("plan", help="print how to start the service (JSON) for a starter")
    plan.add_argument("--config", type=Path)
    plan.add_argument("--memory", help="memory limit (default: [run].memory_limit)")
    plan.add_argument("--env", default="dev", dest="environment", help="[environments.X]")
    plan.add_argument("--service-env", action="append", default=[], metavar="KEY=VALUE")
    plan.add_argument("--secret-env", action="append", default=[], metavar="NAME",
                      help="a service variable whose value is in this process's environment "
                      "(a secret): it counts, but never appears in the plan")
    plan.add_argument("--real-model", action="store_true",
                      help="the real provider instead of the fake model server ([smoke].model)")
    plan.add_argument("--sidecar-host", default="fakemodel",
                      help="host name the service reaches the fake model server at")
    plan.add_argument("--output", type=Path,
                      help="write the plan here instead of stdout (logs stay free of its values)")
    args = parser.parse_args(argv)
    secrets = {n: os.environ.get(n, "") for n in args.secret_env}
    redact = Redactor(secrets.values())
    try:
        try:
            env = env_pairs(args.service_env)
        except ValueError as exc:
            raise UsageError(f"--service-env {exc}", fix="write --service-env KEY=VALUE") from None
        missing = [n for n, v in secrets.items() if not v]
        if missing:
            raise UsageError(f"--secret-env {', '.join(missing)}: not set in the environment",
                             fix="set the variable (the Dagger module passes it as a secret)")
        result = anyio.run(partial(
            service_plan, config=args.config, memory=args.memory, environment=args.environment,
            service_env={**env, **secrets}, withheld=list(secrets), sidecar_host=args.sidecar_host,
            real_model=args.real_model,
        ))
    except FlightcheckError as exc:
        if isinstance(exc, config_mod.MissingConfig):
            # A starter (the Dagger module) runs this in a copy of the service's source: init
            # belongs on the user's own directory, not in that copy.
            exc.fix = ("write one on your machine with `flightcheck init DIR` (DIR: the service's "
                       "directory, the one given as --source to the Dagger module), or pass "
                       "--config FILE")
            exc.repro = "python -m flightcheck.attached_cli plan"
        print(redact(exc.render()), file=sys.stderr)
        return exc.exit_code
    text = json.dumps(result, indent=2, sort_keys=True) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
