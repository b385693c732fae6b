"""The Dagger module as the Python SDK registers it: files, functions, arguments, docs, defaults.

No engine runs here. What is checked is what the engine would be told: the SDK's own view of
the module (``Flightcheck.__dagger_module__``: ObjectType, Function, Parameter) and the very
registration query its ``Module._typedefs`` sends, recorded at the GraphQL boundary and
validated against the engine's schema when that file is present.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import anyio
import dagger
import flightcheck_ci
import pytest
from ci_support import REPO
from dagger.mod._module import Module
from dagger_recording import Recorder, Step, one, require_schema, steps
from flightcheck_ci.main import Flightcheck

STAGE_CHECKS = ("run_with_memory_limit", "health_poll", "ai_smoke", "ci")
CHECKS = (*STAGE_CHECKS, "deploy")  # never cached: a cached check is a stale verdict
# The lessons: over the checks' evidence (same service arguments), never cached either.
LESSONS = ("parity", "cost", "baseline_save", "quality", "resources", "readiness")
NEVER_CACHED = (*CHECKS, *LESSONS, "monitoring_apply")
STAGE_ARGS = ["source", "memory", "environment", "openai_api_key", "gemini_api_key"]
DEPLOY_ARGS = ["source", "project", "region", "gcp_credentials", "oidc_token", "registry",
               "registry_username", "registry_password", "environment", "dry_run", "target",
               "api_endpoint", "cloud_run"]
EXPECTED: dict[str, tuple[list[str], object]] = {
    # function: (arguments in order, return type)
    "checker": (["source"], dagger.Container),
    "lint": (["source", "format"], str),
    "build": (["source", "dockerfile"], dagger.Container),
    "service": (STAGE_ARGS, dagger.Service),
    "run_with_memory_limit": (STAGE_ARGS, str),
    "health_poll": (STAGE_ARGS, str),
    "ai_smoke": (STAGE_ARGS, str),
    "ci": ([*STAGE_ARGS, "allow_failure"], dagger.Directory),
    "deploy": (DEPLOY_ARGS, str),
    "parity": (["source", "envs", *STAGE_ARGS[1:]], str),
    "cost": (["source", "requests_per_hour", *STAGE_ARGS[1:]], str),
    "baseline_save": (STAGE_ARGS, dagger.File),
    "quality": (["source", "baseline", *STAGE_ARGS[1:]], str),
    "resources": (STAGE_ARGS, str),
    "readiness": (STAGE_ARGS, dagger.Directory),
    "monitoring_render": (["source"], dagger.Directory),
    "monitoring_apply": (["source", "gcp_credentials", "project"], str),
}


def _module() -> Module:
    mod = Flightcheck.__dagger_module__
    assert isinstance(mod, Module)
    return mod


def test_dagger_json_names_the_module_its_sdk_source_and_the_installed_engine_line() -> None:
    data = json.loads((REPO / "dagger.json").read_text())
    assert data["name"] == "flightcheck"
    assert data["sdk"] == {"source": "python"}
    assert data["source"] == "ci"
    sdk = importlib.metadata.version("dagger-io")  # the SDK pinned in .venv
    major_minor = ".".join(sdk.split(".")[:2])
    assert data["engineVersion"].startswith(f"v{major_minor}."), (data["engineVersion"], sdk)


def test_the_entry_point_loads_the_main_object_as_the_sdk_does() -> None:
    project = tomllib.loads((REPO / "ci" / "pyproject.toml").read_text())["project"]
    assert project["name"] != "flightcheck"  # that is the library the checker installs
    assert "dagger-io" in project["dependencies"]
    value = project["entry-points"]["dagger.mod"]["main_object"]
    # dagger.mod.cli.get_entry_point: group "dagger.mod", name "main_object"
    from dagger.mod import cli

    ep = importlib.metadata.EntryPoint(name=cli.ENTRY_POINT_NAME, value=value,
                                       group=cli.ENTRY_POINT_GROUP)
    cls = ep.load()
    assert cls is Flightcheck and cls.__dagger_module__ is _module()
    name = json.loads((REPO / "dagger.json").read_text())["name"]
    assert cls.__name__ == name.title().replace("-", "")  # the engine's main object name
    assert (REPO / "ci" / "src" / "flightcheck_ci" / "main.py").is_file()


def test_the_sdks_own_loader_finds_the_main_object_as_in_the_runtime_container(
    tmp_path: Path,
) -> None:
    """dagger.mod.cli.load_module, in a fresh interpreter with DAGGER_MAIN_OBJECT set as the
    engine sets it, finding the entry point from installed metadata (written from
    ci/pyproject.toml, as installing the package would)."""
    project = tomllib.loads((REPO / "ci" / "pyproject.toml").read_text())["project"]
    dist = tmp_path / f"flightcheck_ci-{project['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\n"
                                   f"Version: {project['version']}\n")
    entries = "".join(f"{k} = {v}\n" for k, v in project["entry-points"]["dagger.mod"].items())
    (dist / "entry_points.txt").write_text(f"[dagger.mod]\n{entries}")
    code = ("from dagger.mod.cli import load_module; m = load_module(); "
            "print(m.main_cls.__module__, m.main_cls.__name__, len(m._objects))")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO / 'ci' / 'src'}",
           "DAGGER_MAIN_OBJECT": "Flightcheck", "DAGGER_MODULE": "flightcheck"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["flightcheck_ci.main", "Flightcheck", "1"]


def test_the_generated_sdk_directory_is_ignored_by_git() -> None:
    assert "ci/sdk/" in (REPO / ".gitignore").read_text().splitlines()
    done = subprocess.run(["git", "check-ignore", "-q", "ci/sdk/dagger/client/gen.py"],
                          cwd=REPO, capture_output=True)
    assert done.returncode == 0


def test_every_function_is_registered_with_its_arguments_and_return_type() -> None:
    obj = _module().get_object("Flightcheck")
    functions = {name: fn for name, fn in obj.functions.items() if name}
    assert sorted(functions) == sorted(EXPECTED)
    for name, (args, returns) in EXPECTED.items():
        fn = functions[name]
        assert [p.name for p in fn.parameters.values()] == args, name
        assert fn.return_type is returns, name


def test_every_function_and_argument_is_documented() -> None:
    obj = _module().get_object("Flightcheck")
    for name, fn in obj.functions.items():
        what = name or "constructor"
        assert fn.doc and len(fn.doc) > 40, f"{what} has no real docstring"
        for p in fn.parameters.values():
            assert p.doc and len(p.doc) > 10, f"{what}({p.name}) has no Doc()"


def test_checks_are_never_cached_and_pure_functions_are() -> None:
    obj = _module().get_object("Flightcheck")
    for name, fn in obj.functions.items():
        if name:
            assert fn.cache_policy == ("never" if name in NEVER_CACHED else None), name


def test_source_defaults_to_the_context_root_without_caches_and_vcs() -> None:
    obj = _module().get_object("Flightcheck")
    for name, fn in obj.functions.items():
        if not name:
            continue
        source = fn.parameters["source"]
        assert source.resolved_type is dagger.Directory, name
        assert source.default_path == "/", name
        assert not source.is_nullable, name
        assert {".git", ".venv", "**/__pycache__", ".pytest_cache", "ci/sdk"} <= set(source.ignore or [])


def test_the_constructor_takes_flightchecks_own_source_with_only_what_pip_needs() -> None:
    ctor = _module().get_object("Flightcheck").get_constructor()
    (library,) = ctor.parameters.values()
    assert library.name == "library" and library.resolved_type is dagger.Directory
    assert library.default_path == "/"
    assert library.ignore == ["*", "!pyproject.toml", "!README.md", "!src/flightcheck",
                              "**/__pycache__"]


def test_defaults_and_optional_arguments() -> None:
    obj = _module().get_object("Flightcheck")
    for name in (*STAGE_CHECKS, *LESSONS, "service"):
        params = obj.functions[name].parameters
        for key in ("memory", "openai_api_key", "gemini_api_key"):
            assert params[key].is_nullable and params[key].default_value == dagger.JSON("null")
        assert params["environment"].default_value == dagger.JSON('"dev"'), name
        assert params["openai_api_key"].resolved_type == dagger.Secret | None
    assert obj.functions["ci"].parameters["allow_failure"].default_value == dagger.JSON("false")
    assert obj.functions["lint"].parameters["format"].default_value == dagger.JSON('"text"')
    assert obj.functions["build"].parameters["dockerfile"].is_nullable
    deploy = obj.functions["deploy"].parameters
    for key in ("project", "region", "gcp_credentials", "oidc_token", "registry",
                "registry_password", "api_endpoint", "cloud_run"):
        assert deploy[key].is_nullable and deploy[key].default_value == dagger.JSON("null"), key
    assert deploy["gcp_credentials"].resolved_type == dagger.Secret | None
    assert deploy["registry_password"].resolved_type == dagger.Secret | None
    assert deploy["registry_username"].default_value == dagger.JSON('"oauth2accesstoken"')
    assert deploy["dry_run"].default_value == dagger.JSON("false")
    assert deploy["target"].default_value == dagger.JSON('"cloudrun"')
    assert deploy["cloud_run"].resolved_type == dagger.Service | None
    assert deploy["environment"].default_value == dagger.JSON('"dev"')
    for name, arg in (("parity", "envs"), ("cost", "requests_per_hour"), ("quality", "baseline"),
                      ("monitoring_apply", "project")):
        param = obj.functions[name].parameters[arg]
        assert param.is_nullable and param.default_value == dagger.JSON("null"), name
    assert obj.functions["quality"].parameters["baseline"].resolved_type == dagger.File | None
    assert not obj.functions["monitoring_apply"].parameters["gcp_credentials"].is_nullable


def _typedefs(monkeypatch: pytest.MonkeyPatch) -> tuple[Recorder, str]:
    mod = _module()
    # The engine names the main object (DAGGER_MAIN_OBJECT, read when the SDK is imported):
    # the module's name in PascalCase.
    monkeypatch.setattr(mod, "_main_name", "Flightcheck")
    monkeypatch.setattr(mod, "_main", mod.get_object("Flightcheck"))
    rec = Recorder().install(monkeypatch)
    module_id = anyio.run(mod._typedefs)
    return rec, module_id


def _function_chains(rec: Recorder) -> dict[str, list[Step]]:
    """Function name → the chain that built its Function typedef (from the Function IDs the
    object typedef received in withFunction/withConstructor)."""
    out: dict[str, list[Step]] = {}
    for q in rec.queries:
        chain = rec.lineage(q.chain)
        for s in chain:
            if s.field in ("withFunction", "withConstructor"):
                fn_chain = rec.object_chain(s.args["function"])
                out[fn_chain[0].args["name"]] = fn_chain
    return out


def test_the_registration_query_carries_docs_defaults_ignores_and_cache_policy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rec, module_id = _typedefs(monkeypatch)
    module = rec.object_chain(module_id)
    assert module[0].field == "module"
    # The SDK describes the module with its package's docstring.
    assert one(module, "withDescription").args["description"] == flightcheck_ci.__doc__.strip()
    functions = _function_chains(rec)
    assert sorted(functions) == sorted(["", *EXPECTED])
    for name, chain in functions.items():
        assert one(chain, "withDescription").args["description"]
        args = {s.args["name"]: s.args for s in steps(chain, "withArg")}
        policy = [s.args["policy"] for s in steps(chain, "withCachePolicy")]
        assert policy == (["Never"] if name in NEVER_CACHED else []), name
        for arg in args.values():
            assert arg["description"], (name, arg["name"])
        if name:
            assert args["source"]["defaultPath"] == "/"
            assert ".git" in args["source"]["ignore"]
    ci = {s.args["name"]: s.args for s in steps(functions["ci"], "withArg")}
    assert ci["allow_failure"]["defaultValue"] == "false"
    assert ci["environment"]["defaultValue"] == '"dev"'
    assert ci["memory"]["defaultValue"] == "null"
    key_type = rec.object_chain(ci["openai_api_key"]["typeDef"])
    assert one(key_type, "withObject").args == {"name": "Secret"}
    assert {"optional": True} in [s.args for s in steps(key_type, "withOptional")]
    returns = {name: one(rec.object_chain(chain[0].args["returnType"]), "withObject").args["name"]
               for name, chain in functions.items()
               if name and EXPECTED[name][1] is not str}
    assert returns == {"checker": "Container", "build": "Container", "service": "Service",
                       "ci": "Directory", "baseline_save": "File", "readiness": "Directory",
                       "monitoring_render": "Directory"}
    creds = {s.args["name"]: s.args for s in steps(functions["monitoring_apply"], "withArg")}
    cred_type = rec.object_chain(creds["gcp_credentials"]["typeDef"])
    assert one(cred_type, "withObject").args == {"name": "Secret"}
    assert not [s for s in steps(cred_type, "withOptional")]  # required, never a plain string
    ctor = {s.args["name"]: s.args for s in steps(functions[""], "withArg")}
    assert ctor["library"]["defaultPath"] == "/"


def test_the_registration_query_is_valid_against_the_engine_schema(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_schema("the queries were recorded but not validated")
    rec, _ = _typedefs(monkeypatch)
    assert len(rec.queries) > 50
    assert rec.invalid() == []
    assert all(q.text for q in rec.queries)


@pytest.mark.slow
def test_pyright_finds_the_module_clean_against_the_installed_sdk() -> None:
    pyright = Path(sys.executable).parent / "pyright"
    if not pyright.exists():
        pytest.skip("pyright is not installed in this environment (pip install -e '.[dev]')")
    done = subprocess.run([str(pyright), "--outputjson", "ci/src"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    summary = json.loads(done.stdout)["summary"]
    problems = [d["message"] for d in json.loads(done.stdout)["generalDiagnostics"]
                if d["severity"] == "error"]
    assert summary["filesAnalyzed"] >= 2 and summary["errorCount"] == 0, problems
