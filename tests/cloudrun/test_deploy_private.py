"""A private service on Google's Cloud Run is refused before anything is built: the rollout's
checks call the service without an identity token, so Cloud Run would answer them 403 and every
deploy would end in a rollback for the wrong reason."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flightcheck.config import load
from flightcheck.context import Context
from flightcheck.errors import ConfigError
from flightcheck.stages import deploy as deploy_stage

CONFIG = """[service]
name = "fc-private"
[deploy]
target = "cloudrun"
project = "acme"
allow_unauthenticated = {allow}
"""


def _project(tmp_path: Path, allow: str) -> Path:
    config = tmp_path / "flightcheck.toml"
    config.write_text(CONFIG.format(allow=allow))
    (tmp_path / "Dockerfile").write_text("FROM python:3.11-slim\n")
    return config


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GOOGLE_APPLICATION_CREDENTIALS"}
    return subprocess.run([sys.executable, "-m", "flightcheck.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_a_private_cloud_run_service_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    config = _project(tmp_path, "false")
    out = _cli("deploy", "--config", str(config), "--report-dir", str(tmp_path / "r"),
               cwd=tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    assert "allow_unauthenticated = false" in text and "403" in text, text
    assert "fix: set [deploy].allow_unauthenticated = true" in text
    assert "Traceback" not in text and "[build]" not in text
    assert not (tmp_path / "r").exists()


def test_dry_run_still_prints_a_private_services_spec(tmp_path: Path) -> None:
    config = _project(tmp_path, "false")
    out = _cli("deploy", "--dry-run", "--config", str(config), cwd=tmp_path)
    # No credentials here: the dry run gets as far as asking Google what is deployed.
    assert "private Cloud Run service" not in out.stdout + out.stderr
    assert "no Google credentials" in out.stderr, out.stderr


@pytest.mark.parametrize("allow, endpoint", [("true", None), ("false", "http://127.0.0.1:9")])
def test_public_services_and_other_endpoints_are_not_refused(
    tmp_path: Path, allow: str, endpoint: str | None
) -> None:
    config = _project(tmp_path, allow)
    ctx = Context(loaded=load(config, environ={}))
    if endpoint:
        ctx.artifacts[deploy_stage.OPTIONS] = deploy_stage.DeployOptions(api_endpoint=endpoint)
    deploy_stage._refuse_private_cloud_run(ctx)  # pyright: ignore[reportPrivateUsage]
    ctx.artifacts.pop(deploy_stage.OPTIONS, None)
    if endpoint:
        with pytest.raises(ConfigError, match="private Cloud Run service"):
            deploy_stage._refuse_private_cloud_run(ctx)  # pyright: ignore[reportPrivateUsage]
