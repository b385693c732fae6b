"""The `dagger call` a failure prints is one the module accepts: every flag of every stage's repro
is an argument the SDK registered for that function (a wrong flag fails the pasted command)."""

from __future__ import annotations

import shlex

import pytest
from config_support import REPO_CONFIG
from flightcheck_ci.main import Flightcheck, _interactive

from flightcheck.config import load
from flightcheck.context import DAGGER_FUNCTION, Context
from flightcheck.results import StageName


def _flags(function: str) -> set[str]:
    fn = Flightcheck.__dagger_module__.get_object("Flightcheck").functions[function]
    return {p.name.replace("_", "-") for p in fn.parameters.values()}


def _registered() -> set[str]:
    return {n for n in Flightcheck.__dagger_module__.get_object("Flightcheck").functions if n}


@pytest.mark.parametrize("stage", [s for s in DAGGER_FUNCTION
                                   if DAGGER_FUNCTION[s].replace("-", "_") in _registered()])
@pytest.mark.parametrize("model", ["fake", "real"])
def test_every_flag_of_a_dagger_repro_is_an_argument_of_its_function(
    stage: StageName, model: str
) -> None:
    loaded = load(REPO_CONFIG, environ={}, overrides={"smoke.model": (model, "--real-model")})
    ctx = Context(loaded=loaded, memory_override="768Mi", environment="prod",
                  service_env={"OPENAI_API_KEY": "sk-live-0123456789abcdef"},
                  runtime_name="attached")
    argv = shlex.split(ctx.repro(stage).dagger)
    assert argv[:3] == ["dagger", "call", DAGGER_FUNCTION[stage]]
    used = {a.split("=", 1)[0].removeprefix("--") for a in argv[3:]}
    function = DAGGER_FUNCTION[stage].replace("-", "_")
    assert used <= _flags(function), f"{stage}: {used - _flags(function)} are not arguments"
    assert "source" in used
    if "memory" in _flags(function):  # the overrides reach the functions that take them
        assert {"memory", "environment"} <= used
        # In Dagger a key passed as a Secret selects the real provider: only a real-model
        # run's repro passes it (a fake-model run never sends the key anywhere).
        assert ("openai-api-key" in used) == (model == "real")


def test_the_interactive_variant_is_the_same_call_with_dash_i() -> None:
    call = "dagger call run-with-memory-limit --source=. --memory=160Mi"
    assert _interactive(call) == "dagger call -i run-with-memory-limit --source=. --memory=160Mi"
    remote = "dagger -m github.com/o/flightcheck call ci --source=."
    assert _interactive(remote) == "dagger -m github.com/o/flightcheck call -i ci --source=."
    assert _interactive("flightcheck ci") == "flightcheck ci"  # not a dagger call: unchanged
