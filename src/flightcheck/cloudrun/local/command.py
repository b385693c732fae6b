"""``flightcheck emulator start|status|stop|key|serve``: the local Cloud Run from the command line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from flightcheck.cloudrun.local import lifecycle

emulator_app = typer.Typer(
    name="emulator",
    help="The local Cloud Run (the `local` deploy target): a run_v2 API on 127.0.0.1 that runs "
    "each revision as a container behind a traffic-splitting proxy.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)

StateDirOpt = Annotated[
    Optional[Path],  # noqa: UP045 - typer needs Optional on 3.11
    typer.Option("--state-dir", help="where its state lives (default: ./.flightcheck/emulator)"),
]
RuntimeOpt = Annotated[
    str, typer.Option("--runtime", "-r", help="auto | docker | process (no daemon: host processes)")
]
PortOpt = Annotated[int, typer.Option("--port", help="API port on 127.0.0.1 (0: a free one)")]


@emulator_app.command("start")
def start(state_dir: StateDirOpt = None, runtime: RuntimeOpt = "auto", port: PortOpt = 0) -> None:
    """Start it in the background (or find the one already running) and print its API URL."""
    if runtime not in ("auto", "docker", "process"):
        raise typer.BadParameter("use auto, docker or process", param_hint="--runtime")
    api = lifecycle.ensure_running(state_dir, runtime=runtime, port=port)
    now = lifecycle.status(state_dir)
    typer.echo(api)
    typer.echo(f"pid {now.pid}, runtime {now.runtime}, state {now.state_dir}", err=True)


@emulator_app.command("status")
def status(
    state_dir: StateDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the full status as JSON")] = False,
) -> None:
    """Is it running; its services, URLs and instances. Exit 1 when it is not running."""
    now = lifecycle.status(state_dir)
    if as_json:
        typer.echo(json.dumps({"running": now.running, "state_dir": str(now.state_dir),
                               **(now.detail or {})}, indent=2))
    elif not now.running:
        typer.echo(f"not running (state {now.state_dir}); start it: flightcheck emulator start")
    else:
        detail = now.detail or {}
        typer.echo(f"running: {now.api} (pid {now.pid}, runtime {now.runtime}, "
                   f"state {now.state_dir})")
        for name, svc in sorted(detail.get("services", {}).items()):
            split = ", ".join(f"{rev} {pct}%" for rev, pct in svc.get("split", []))
            typer.echo(f"  {name}: {svc.get('uri')}  [{split or 'no traffic'}]")
            for tag, rev in sorted(svc.get("tags", {}).items()):
                typer.echo(f"    tag {tag} → {rev}")
        typer.echo(f"  {len(detail.get('instances', []))} instance(s) running")
    raise typer.Exit(0 if now.running else 1)


@emulator_app.command("stop")
def stop(state_dir: StateDirOpt = None) -> None:
    """Stop it and remove every container and process it started."""
    was = lifecycle.status(state_dir)
    died = not was.running and (was.state_dir / lifecycle.INFO_FILE).exists()
    leftovers = lifecycle.stop(state_dir)
    left = lifecycle.containers(state_dir)
    if left:
        typer.echo(f"error: {len(left)} container(s) of {was.state_dir} could not be removed: "
                   f"{' '.join(c[:12] for c in left)}", err=True)
        raise typer.Exit(1)
    what = ("stopped" if was.running or was.pid else
            "was not running: it had died" if died else "was not running")
    extra = f"; removed {leftovers} leftover container(s)" if leftovers else ""
    typer.echo(f"{what} (state {was.state_dir}){extra}")


@emulator_app.command("key")
def key(
    email: Annotated[str, typer.Argument(help="the service account, NAME@PROJECT.iam.gserviceaccount.com")],
    out: Annotated[Path, typer.Option("--out", "-o", help="where to write the key file")],
    state_dir: StateDirOpt = None,
) -> None:
    """A service-account key file the running local Cloud Run issues ID tokens for (its
    token_uri is the emulator's Google-shaped token endpoint): deploy a private service as that
    identity with GOOGLE_APPLICATION_CREDENTIALS=FILE. Grant it roles/run.invoker to let it in."""
    import base64
    import os

    import httpx

    api = lifecycle.endpoint(state_dir)
    if api is None:
        typer.echo("error: the local Cloud Run is not running; start it: flightcheck emulator "
                   "start", err=True)
        raise typer.Exit(1)
    resp = httpx.post(f"{api}/v1/projects/-/serviceAccounts/{email}/keys", timeout=30,
                      trust_env=False)
    if resp.status_code != 200:
        typer.echo(f"error: {resp.json().get('error', {}).get('message', resp.text)}", err=True)
        raise typer.Exit(1)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # a private key inside
    with os.fdopen(fd, "wb") as f:
        f.write(base64.b64decode(resp.json()["privateKeyData"]))
    typer.echo(f"wrote a key for {email} to {out} (owner-only)")


@emulator_app.command("serve")
def serve(state_dir: StateDirOpt = None, runtime: RuntimeOpt = "auto", port: PortOpt = 0) -> None:
    """Run it in the foreground until Ctrl-C (which removes what it started)."""
    from flightcheck.cloudrun.local.server import serve as serve_

    directory = (state_dir or Path.cwd() / lifecycle.DEFAULT_STATE_DIR).resolve()
    asyncio.run(serve_(directory, port=port, runtime=runtime))
