"""A failed deploy prints the command that reruns it: `flightcheck deploy …` locally, and in
Dagger a `deploy` call with only the arguments that function takes."""

from __future__ import annotations

import shlex

from config_support import REPO_CONFIG

from flightcheck.config import load
from flightcheck.context import Context


def test_local_target_repro_is_flightcheck_deploy() -> None:
    ctx = Context(loaded=load(REPO_CONFIG, environ={}), environment="prod",
                  service_env={"FAULT_ERROR_RATE": "0.3", "OPENAI_API_KEY": "sk-live-0123456789"})
    repro = ctx.repro("deploy")
    assert repro.local.startswith("flightcheck deploy")
    assert "--env prod" in repro.local and "--service-env FAULT_ERROR_RATE=0.3" in repro.local
    assert 'OPENAI_API_KEY="$OPENAI_API_KEY"' in repro.local
    assert "sk-live" not in repro.local + repro.dagger
    assert shlex.split(repro.dagger) == ["dagger", "call", "deploy", "--source=.",
                                         "--environment=prod"]


def test_cloudrun_repro_names_target_project_and_credentials() -> None:
    loaded = load(REPO_CONFIG, environ={}, overrides={"deploy.target": ("cloudrun", "--target"),
                                               "deploy.project": ("acme", "--project")})
    repro = Context(loaded=loaded).repro("deploy")
    assert "--target cloudrun --project acme" in repro.local
    assert repro.dagger.endswith('--project=acme --gcp-credentials=file:'
                                 '"$GOOGLE_APPLICATION_CREDENTIALS"')
