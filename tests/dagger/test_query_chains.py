"""The module's functions run against a recording engine: the query chains they would send.

Each function is invoked the way the engine invokes it — through the SDK's ``Module.get_result``
with JSON inputs and object IDs — and the queries are recorded at the GraphQL boundary
(dagger_recording). The plan the module reads is the real ``attached plan`` output for this
repository; the image config answers come from the real Dockerfile. What is asserted is the
chain: docker_build → guard → as_service, service bindings, secrets, the checker's exec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio
import dagger
import gql
import pytest
from ci_support import FAKE_SECRET, REPO, _plan_text, engine_answers, report_json
from dagger._exceptions import QueryErrorValue
from dagger.mod._exceptions import FunctionError
from dagger_recording import Recorder, Step, index, one, require_schema, steps
from flightcheck_ci.main import GUARD_PORT, Flightcheck

PLAN = ("plan", "--env", "dev", "--sidecar-host", "fakemodel")


@dataclass(frozen=True)
class Ref:
    """An object argument: the engine passes its ID."""

    label: str


def call(monkeypatch: pytest.MonkeyPatch, function: str, answers: dict[str, Any] | None = None,
         **inputs: Any) -> tuple[Recorder, Any]:
    """Invoke ``function`` as the engine would; returns the recorder and the JSON result."""
    rec = Recorder(engine_answers() if answers is None else answers).install(monkeypatch)
    mod = Flightcheck.__dagger_module__
    fn = mod.get_object("Flightcheck").functions[function]
    unknown = set(inputs) - {p.name for p in fn.parameters.values()}
    assert not unknown, f"{function} takes no {unknown}"  # the SDK would drop them silently
    raw = {k: rec.input_id(v.label) if isinstance(v, Ref) else v for k, v in inputs.items()}
    parent = {"library": rec.input_id("library")}
    result = anyio.run(mod.get_result, "Flightcheck", parent, function, raw)
    assert rec.invalid() == []  # vacuous without the schema file; see the test at the end
    return rec, result


def _input(rec: Recorder, id_: str) -> str:
    chain = rec.object_chain(id_)
    assert len(chain) == 1 and chain[0].type == "Input", chain
    return chain[0].field


def _library_file(rec: Recorder, id_: str) -> str:
    """The path of a File taken from the library directory (and it exists in this repo)."""
    chain = rec.object_chain(id_)
    assert [s.field for s in chain] == ["library", "file"], chain
    path = chain[1].args["path"]
    assert (REPO / path).is_file(), path
    return path


def _env(chain: list[Step]) -> dict[str, str]:
    return {s.args["name"]: s.args["value"] for s in steps(chain, "withEnvVariable")}


def _plan_env(*extra: str, secrets: tuple[str, ...] = ()) -> dict[str, Any]:
    import json

    return json.loads(_plan_text(PLAN + extra, secrets))


def test_checker_installs_flightcheck_from_the_module_then_mounts_the_source(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rec, result = call(monkeypatch, "checker", source=Ref("source"))
    chain = rec.object_chain(result)
    assert chain[:2] == [Step("Query", "container", {}),
                         Step("Container", "from", {"address": "python:3.11-slim"})]
    lib = index(chain, "withDirectory", path="/opt/flightcheck")
    pip = index(chain, "withExec", args=["pip", "install", "/opt/flightcheck"])
    src = index(chain, "withDirectory", path="/src")
    assert lib < pip < src  # a source change does not reinstall flightcheck
    assert _input(rec, chain[lib].args["source"]) == "library"
    assert _input(rec, chain[src].args["source"]) == "source"
    assert chain[-1] == Step("Container", "withWorkdir", {"path": "/src"})


def test_lint_runs_flightcheck_lint_in_the_checker_and_returns_its_output(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = {**engine_answers(), "stdout": "0 errors, 0 warnings"}
    rec, result = call(monkeypatch, "lint", answers, source=Ref("source"), format="sarif")
    assert result == "0 errors, 0 warnings"
    chain = rec.last("stdout")
    assert chain[-2] == Step("Container", "withExec",
                             {"args": ["flightcheck", "lint", "--format", "sarif"]})
    assert index(chain, "withExec", args=["pip", "install", "/opt/flightcheck"]) < len(chain) - 2


def test_build_is_docker_build_of_the_context_and_dockerfile_the_plan_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rec, result = call(monkeypatch, "build", source=Ref("source"))
    # "Dockerfile" is the API default: the SDK leaves it out of the query.
    assert rec.object_chain(result) == [Step("Input", "source", {}),
                                        Step("Directory", "dockerBuild", {})]
    plan_exec = steps(rec.last("contents"), "withExec")[-1].args["args"]
    assert plan_exec[:4] == ["python", "-m", "flightcheck.attached_cli", "plan"]
    rec, result = call(monkeypatch, "build", source=Ref("source"), dockerfile="ci.Dockerfile")
    assert rec.object_chain(result)[-1] == Step("Directory", "dockerBuild",
                                                {"dockerfile": "ci.Dockerfile"})


def test_a_build_context_below_the_source_is_a_subdirectory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plan = ('{"service": "api", "context": "services/api", "dockerfile": "Dockerfile.prod", '
            '"port": 9000, "memory_limit": "2Gi", "env": {}, "sidecar": null}')
    answers = {**engine_answers(), "contents": plan}
    rec, result = call(monkeypatch, "build", answers, source=Ref("source"))
    assert rec.object_chain(result) == [
        Step("Input", "source", {}),
        Step("Directory", "directory", {"path": "services/api"}),
        Step("Directory", "dockerBuild", {"dockerfile": "Dockerfile.prod"}),
    ]


def _service_chain(rec: Recorder, service_id: str) -> list[Step]:
    chain = rec.object_chain(service_id)
    assert chain[:2] == [Step("Input", "source", {}), Step("Directory", "dockerBuild", {})]
    return chain


def test_service_is_the_image_under_the_guard_with_root_capabilities(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rec, result = call(monkeypatch, "service", source=Ref("source"), memory="512Mi")
    chain = _service_chain(rec, result)
    plan = _plan_env("--memory", "512Mi")
    assert chain[2] == Step("Container", "withUser", {"name": "root"})
    files = {s.args["path"]: _library_file(rec, s.args["source"]) for s in steps(chain, "withFile")}
    assert files == {"/fc/guard.py": "src/flightcheck/runtimes/guard.py",
                     "/fc/_proc.py": "src/flightcheck/runtimes/_proc.py"}
    assert _env(chain) == plan["env"]  # exactly what the library decided, fake model URLs included
    assert plan["env"]["OPENAI_BASE_URL"] == f"http://fakemodel:{plan['sidecar']['port']}/v1"
    ports = [s.args for s in steps(chain, "withExposedPort")]
    assert ports == [{"port": 8080, "experimentalSkipHealthcheck": True}, {"port": GUARD_PORT}]
    # the image's HEALTHCHECK would be Dagger's readiness wait (and fail a crashing service)
    assert one(chain, "withoutDockerHealthcheck").args == {}
    assert chain[-1] == Step("Container", "asService", {
        "args": ["python3", "/fc/guard.py", "--limit", "512Mi", "--status-port", "8931",
                 "--status-host", "0.0.0.0", "--user", "10001:10001", "--",
                 "python", "-m", "mathcoach"],  # USER and CMD of the Dockerfile
        "insecureRootCapabilities": True,
    })
    binding = one(chain, "withServiceBinding")
    assert binding.args["alias"] == "fakemodel"
    fake = rec.object_chain(binding.args["service"])
    port = plan["sidecar"]["port"]
    assert _library_file(rec, one(fake, "withFile").args["source"]) == \
        "src/flightcheck/fakemodel/server.py"
    assert one(fake, "withExposedPort").args == {"port": port}
    assert fake[-1] == Step("Container", "asService", {
        "args": ["python", "/fc/server.py", "--host", "0.0.0.0", "--port", str(port)]})


def test_a_root_image_runs_the_guard_without_switching_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = {**engine_answers(), "user": "", "entrypoint": ["/app/run"], "defaultArgs": ["--x"]}
    rec, result = call(monkeypatch, "service", answers, source=Ref("source"))
    args = rec.object_chain(result)[-1].args["args"]
    assert "--user" not in args and args[args.index("--") + 1:] == ["/app/run", "--x"]
    assert args[args.index("--limit") + 1] == "1Gi"  # [run].memory_limit of flightcheck.toml


def test_an_image_without_a_command_is_refused_with_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = {**engine_answers(), "entrypoint": [], "defaultArgs": []}
    with pytest.raises(FunctionError, match="neither ENTRYPOINT nor CMD"):
        call(monkeypatch, "service", answers, source=Ref("source"))


def test_ci_runs_flightcheck_attached_in_the_checker_bound_to_service_and_fake_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rec, result = call(monkeypatch, "ci", source=Ref("source"), memory="512Mi")
    plan = _plan_env("--memory", "512Mi")
    reports = rec.object_chain(result)
    assert reports[-2:] == [
        Step("Container", "directory", {"path": "/flightcheck-report"}),
        Step("Directory", "withNewFile", {"path": "exit-code", "contents": "0\n"}),
    ]
    checker = rec.last("exitCode")
    assert reports[:-2] == checker[:-1]  # the reports of that very run
    run = checker[-2]
    assert run.args == {"args": ["sh", "-c", 'exec flightcheck "$@"', "flightcheck", "ci",
                                 "--runtime", "attached", "--report-dir", "/flightcheck-report",
                                 "--env", "dev", "--memory", "512Mi"],
                        "expect": "ANY"}  # a failed gate still yields its reports
    bindings = {s.args["alias"]: rec.object_chain(s.args["service"])
                for s in steps(checker, "withServiceBinding")}
    assert sorted(bindings) == ["fakemodel", "svc"]
    svc = _service_chain(rec, steps(checker, "withServiceBinding")[0].args["service"])
    assert svc[-1].field == "asService" and "--limit" in svc[-1].args["args"]
    # the very fake model server (one recipe, one ID) the service binds: Dagger runs it once
    ids = {s.args["alias"]: s.args["service"] for s in steps(checker, "withServiceBinding")}
    assert ids["fakemodel"] == one(svc, "withServiceBinding").args["service"]
    port = plan["sidecar"]["port"]
    env = _env(checker)
    assert {k: v for k, v in env.items() if k.startswith("FLIGHTCHECK_ATTACH_")
            and k not in ("FLIGHTCHECK_ATTACH_BUILD_SECONDS", "FLIGHTCHECK_ATTACH_IMAGE")} == {
        "FLIGHTCHECK_ATTACH_ENDPOINT": "http://svc:8080",
        "FLIGHTCHECK_ATTACH_GUARD": "http://svc:8931",
        "FLIGHTCHECK_ATTACH_SIDECAR": f"http://fakemodel:{port}",
    }
    assert float(env["FLIGHTCHECK_ATTACH_BUILD_SECONDS"]) >= 0
    # a fresh value right before the exec: a check run is never served from the cache
    assert checker[-3].args["name"] == "FLIGHTCHECK_RUN" and checker[-3].args["value"].isdigit()
    # the image was built (synced) before the service was defined from it
    assert [q.leaf.field for q in rec.queries].index("sync") < \
        [q.leaf.field for q in rec.queries].index("entrypoint")


def test_a_failed_gate_fails_ci_with_the_summary_unless_failure_is_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    summary = "## flightcheck: FAIL run-with-memory-limit — OOM-killed\n"
    rerun = "dagger call run-with-memory-limit --source=. --memory=160Mi"
    answers = engine_answers(exit_code=1, summary=summary,
                             report=report_json(("run-with-memory-limit", rerun)))
    with pytest.raises(FunctionError, match="OOM-killed") as caught:
        call(monkeypatch, "ci", answers, source=Ref("source"))
    assert "a gate failed (flightcheck exit code 1)" in str(caught.value)
    assert f"- run-with-memory-limit: `{rerun}`" in str(caught.value)
    assert "`dagger call -i run-with-memory-limit --source=. --memory=160Mi`" in str(caught.value)
    rec, result = call(monkeypatch, "ci", answers, source=Ref("source"), allow_failure=True)
    assert rec.object_chain(result)[-1].args == {"path": "exit-code", "contents": "1\n"}


def test_a_usage_error_fails_ci_even_when_failure_is_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = engine_answers(exit_code=2, stderr="error: unknown environment 'stage'")
    with pytest.raises(FunctionError, match="unknown environment 'stage'"):
        call(monkeypatch, "ci", answers, source=Ref("source"), allow_failure=True)


def test_a_provider_key_is_a_secret_everywhere_and_replaces_the_fake_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rec, _ = call(monkeypatch, "ci", source=Ref("source"), openai_api_key=Ref("openai"))
    plan_chain = rec.last("contents")
    assert steps(plan_chain, "withExec")[-1].args["args"][-3:] == ["--secret-env",
                                                                    "OPENAI_API_KEY",
                                                                    "--real-model"]
    checker = rec.last("exitCode")
    # Giving a key is the explicit choice of the real provider, in the checks too.
    assert "--real-model" in checker[-2].args["args"]
    svc = _service_chain(rec, one(checker, "withServiceBinding").args["service"])
    for chain in (plan_chain, svc, checker):
        secret = one(chain, "withSecretVariable")
        assert secret.args["name"] == "OPENAI_API_KEY"
        assert _input(rec, secret.args["secret"]) == "openai"
        assert "OPENAI_API_KEY" not in _env(chain)
    # a real key: no fake model server anywhere, the provider's own URLs
    assert [s.args["alias"] for s in steps(checker, "withServiceBinding")] == ["svc"]
    assert not steps(svc, "withServiceBinding")
    assert "OPENAI_BASE_URL" not in _env(svc)
    assert "FLIGHTCHECK_ATTACH_SIDECAR" not in _env(checker)
    script = checker[-2].args["args"][2]
    assert script == 'exec flightcheck "$@" --service-env "OPENAI_API_KEY=$OPENAI_API_KEY"'
    # the key's value (given to the real plan run) appears in no query at all
    assert not any(FAKE_SECRET in repr(q.chain) for q in rec.queries)


def test_a_failed_image_build_becomes_the_build_stages_finding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def build_fails(_rec: Recorder, chain: list[Step]) -> Any:
        if steps(chain, "dockerBuild"):
            message = 'process "/bin/sh -c pip install -r req.txt" did not complete successfully'
            raise dagger.QueryError([QueryErrorValue(message=message)],
                                    gql.GraphQLRequest("{ __typename }"))
        return "Container#sync"

    answers = {**engine_answers(exit_code=1), "sync": build_fails}
    rec, result = call(monkeypatch, "ci", answers, source=Ref("source"), allow_failure=True)
    checker = rec.last("exitCode")
    error_file = one(checker, "withNewFile")
    assert error_file.args["path"] == "/fc/build-error.txt"
    assert "pip install -r req.txt" in error_file.args["contents"]
    env = _env(checker)
    assert env["FLIGHTCHECK_ATTACH_BUILD_ERROR"] == "/fc/build-error.txt"
    assert "FLIGHTCHECK_ATTACH_GUARD" not in env
    assert not steps(checker, "withServiceBinding")  # nothing to start
    assert not list(rec.with_leaf("entrypoint"))
    assert rec.object_chain(result)[-1].args["contents"] == "1\n"


@pytest.mark.parametrize("function, stage", [
    ("run_with_memory_limit", "run-with-memory-limit"),
    ("health_poll", "health-poll"),
    ("ai_smoke", "ai-smoke"),
])
def test_stage_functions_run_their_stage_and_return_the_summary(
    monkeypatch: pytest.MonkeyPatch, function: str, stage: str,
) -> None:
    rec, result = call(monkeypatch, function, engine_answers(summary=f"PASS {stage}\n"),
                       source=Ref("source"), memory="768Mi", environment="prod")
    assert result == f"PASS {stage}\n"
    args = rec.last("exitCode")[-2].args["args"]
    assert args[args.index("--only") + 1] == stage
    assert args[args.index("--memory") + 1] == "768Mi"
    assert args[args.index("--env") + 1] == "prod"
    plan_args = steps(rec.last("contents"), "withExec")[-1].args["args"]
    assert plan_args[plan_args.index("--env") + 1] == "prod"
    with pytest.raises(FunctionError, match=f"FAIL {stage}"):
        call(monkeypatch, function, engine_answers(exit_code=1, summary=f"FAIL {stage}\n"),
             source=Ref("source"))


@pytest.mark.parametrize("function, inputs, command", [
    ("cost", {"requests_per_hour": 500.0}, ["cost", "--requests-per-hour", "500"]),
    ("parity", {"envs": ["dev", "prod"]}, ["parity", "dev", "prod"]),
    ("resources", {}, ["resources", "--from-report"]),
])
def test_lesson_functions_judge_the_smoke_runs_report_in_the_same_container(
    monkeypatch: pytest.MonkeyPatch, function: str, inputs: dict[str, Any], command: list[str],
) -> None:
    answers = {**engine_answers(), "stdout": f"PASS  {function}: ok\n"}
    rec, result = call(monkeypatch, function, answers, source=Ref("source"), **inputs)
    assert result == f"PASS  {function}: ok\n"
    lesson = rec.last("stdout")
    assert lesson[-2] == Step("Container", "withExec", {
        "args": ["flightcheck", *command, "--report-dir", "/flightcheck-report"], "expect": "ANY"})
    checks = lesson[:-2]
    run = checks[-1].args["args"]
    assert run[run.index("--only") + 1] == "ai-smoke"  # the lessons' evidence, nothing more
    assert [s.args["alias"] for s in steps(checks, "withServiceBinding")] == ["svc", "fakemodel"]
    # a failing lesson fails the call with its own output
    bad = {**engine_answers(exit_code=1), "stdout": f"FAIL  {function}: over\n"}
    with pytest.raises(FunctionError, match=f"FAIL  {function}: over"):
        call(monkeypatch, function, bad, source=Ref("source"), **inputs)


def test_baseline_save_returns_the_file_and_quality_compares_with_a_given_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rec, result = call(monkeypatch, "baseline_save", source=Ref("source"))
    chain = rec.object_chain(result)
    assert chain[-1] == Step("Container", "file", {"path": "/tmp/flightcheck-baseline.json"})
    assert chain[-2].args["args"][:4] == ["flightcheck", "baseline", "save", "--output"]
    rec, _ = call(monkeypatch, "quality", {**engine_answers(), "stdout": "PASS  quality"},
                  source=Ref("source"), baseline=Ref("baseline"))
    lesson = rec.last("stdout")
    given = one(lesson, "withFile")
    assert given.args["path"] == "/tmp/flightcheck-baseline.json"
    assert _input(rec, given.args["source"]) == "baseline"
    assert lesson[-2].args["args"] == ["flightcheck", "quality", "--baseline",
                                       "/tmp/flightcheck-baseline.json", "--report-dir",
                                       "/flightcheck-report"]


def test_monitoring_render_and_apply_need_no_service_and_take_credentials_as_a_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rec, result = call(monkeypatch, "monitoring_render", source=Ref("source"))
    chain = rec.object_chain(result)
    assert chain[-1] == Step("Container", "directory", {"path": "/tmp/flightcheck-monitoring"})
    assert index(chain, "withExec", args=["pip", "install", "/opt/flightcheck[monitoring]"]) > 0
    assert not steps(chain, "withServiceBinding")
    rec, _ = call(monkeypatch, "monitoring_apply", {**engine_answers(), "stdout": "created"},
                  source=Ref("source"), gcp_credentials=Ref("gcp"), project="demo")
    chain = rec.last("stdout")
    mount = one(chain, "withMountedSecret")
    assert _input(rec, mount.args["source"]) == "gcp"
    assert _env(chain)["GOOGLE_APPLICATION_CREDENTIALS"] == mount.args["path"]
    assert chain[-2].args["args"] == ["flightcheck", "monitoring", "apply", "--output",
                                      "/tmp/flightcheck-monitoring", "--project", "demo"]


def test_every_query_the_module_sends_is_valid_against_the_engine_schema(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_schema("chains were asserted, queries not validated")
    calls: list[tuple[str, dict[str, Any]]] = [
        ("checker", {}), ("lint", {"format": "json"}), ("build", {"dockerfile": "x"}),
        ("service", {"memory": "256Mi", "gemini_api_key": Ref("gemini")}),
        ("ci", {"openai_api_key": Ref("openai"), "allow_failure": True}),
        ("ai_smoke", {}),
        ("cost", {}), ("parity", {"envs": ["dev", "prod"]}), ("quality", {"baseline": Ref("b")}),
        ("baseline_save", {}), ("resources", {}), ("readiness", {}), ("monitoring_render", {}),
        ("monitoring_apply", {"gcp_credentials": Ref("gcp")}),
    ]
    sent = 0
    for function, inputs in calls:
        rec, _ = call(monkeypatch, function, source=Ref("source"), **inputs)
        assert all(q.text for q in rec.queries) and rec.invalid() == []
        sent += len(rec.queries)
    assert sent > 40


# --- deploy ---------------------------------------------------------------------------------------

REPOSITORY = "europe-west1-docker.pkg.dev/acme/flightcheck/mathcoach"
DIGEST = "sha256:" + "c" * 64


def _deploy_answers(exit_code: int = 0, summary: str = "## deploy: promoted\n") -> dict[str, Any]:
    base = engine_answers(exit_code=exit_code, summary=summary)
    plan_or_summary = base["contents"]

    def contents(rec: Recorder, chain: list[Step]) -> str:
        path = steps(rec.lineage(chain), "file")[-1].args["path"]
        if path == "/tmp/flightcheck-registry-token":
            return "ya29.a-fresh-access-token\n"
        return plan_or_summary(rec, chain)

    def publish(rec: Recorder, chain: list[Step]) -> str:
        return f"{chain[-1].args['address']}@{DIGEST}"

    return {**base, "contents": contents, "stdout": REPOSITORY + "\n", "publish": publish}


def test_deploy_publishes_by_digest_with_registry_auth_then_rolls_out_in_the_checker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rec, result = call(monkeypatch, "deploy", _deploy_answers(), source=Ref("source"),
                       project="acme", region="europe-west1", gcp_credentials=Ref("gcp"))
    assert result == "## deploy: promoted\n"
    published = rec.last("publish")
    address = published[-1].args["address"]
    assert address.startswith(REPOSITORY + ":flightcheck-")
    assert [s.field for s in published[:2]] == ["source", "dockerBuild"]  # the service's image
    auth = one(published, "withRegistryAuth").args
    assert (auth["address"], auth["username"]) == (address, "oauth2accesstoken")
    secret = rec.object_chain(auth["secret"])
    assert secret[0].field == "setSecret"
    # the token came through a file written by the library, never through an exec's output
    token_exec = [s for q in rec.queries for s in rec.lineage(q.chain) if s.field == "withExec"
                  and "token" in s.args["args"]]
    assert token_exec and token_exec[0].args["args"] == [
        "python", "-m", "flightcheck.cloudrun.images", "token", "--output",
        "/tmp/flightcheck-registry-token"]
    rollout = rec.last("exitCode")
    assert rollout[-2].args["args"] == [
        "flightcheck", "deploy", "--target", "cloudrun", "--env", "dev",
        "--image", f"{REPOSITORY}@{DIGEST}", "--report-dir", "/flightcheck-report"]
    env = _env(rollout)
    assert env["FLIGHTCHECK__DEPLOY__PROJECT"] == "acme"
    assert env["FLIGHTCHECK__DEPLOY__TARGET"] == "cloudrun"
    assert env["GOOGLE_APPLICATION_CREDENTIALS"] == "/run/flightcheck/gcp-credentials.json"
    mounted = one(rollout, "withMountedSecret").args
    assert mounted["path"] == "/run/flightcheck/gcp-credentials.json"
    assert _input(rec, mounted["source"]) == "gcp"
    assert all("ya29" not in str(s.args) for s in rollout)  # the token is not in the rollout
    # published before the rollout ran: the rollout deploys what was pushed
    leaves = [q.leaf.field for q in rec.queries]
    assert leaves.index("publish") < len(leaves) - 1 - leaves[::-1].index("exitCode")


def test_deploy_fails_with_the_summary_when_the_rollout_did_not_promote(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = _deploy_answers(exit_code=1, summary="FAIL deploy rolled back: error rate 0.31\n")
    with pytest.raises(FunctionError, match="rolled back: error rate 0.31"):
        call(monkeypatch, "deploy", answers, source=Ref("source"), gcp_credentials=Ref("gcp"))
    with pytest.raises(FunctionError, match="--gcp-credentials"):
        call(monkeypatch, "deploy", _deploy_answers(), source=Ref("source"))


def test_deploy_dry_run_builds_and_pushes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = {**_deploy_answers(), "stdout": "template: {}\n", "stderr": "# diff\n"}
    rec, result = call(monkeypatch, "deploy", answers, source=Ref("source"), dry_run=True,
                       registry="europe-west1-docker.pkg.dev/acme/apps")
    assert result == "template: {}\n# diff\n"
    leaves = {q.leaf.field for q in rec.queries}
    assert "publish" not in leaves and "sync" not in leaves
    run = rec.last("stdout")
    assert run[-1 - 1].args["args"] == ["flightcheck", "deploy", "--target", "cloudrun", "--env",
                                        "dev", "--dry-run"]
    assert _env(run)["FLIGHTCHECK__DEPLOY__REGISTRY"] == "europe-west1-docker.pkg.dev/acme/apps"


def test_deploy_to_the_local_cloud_run_binds_it_and_publishes_without_auth(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = {**_deploy_answers(), "stdout": "127.0.0.1:5000/mathcoach\n"}
    rec, result = call(monkeypatch, "deploy", answers, source=Ref("source"), target="local",
                       api_endpoint="http://cloudrun:8123", cloud_run=Ref("cloud-run"))
    assert result == "## deploy: promoted\n"
    published = rec.last("publish")
    assert published[-1].args["address"].startswith("127.0.0.1:5000/mathcoach:flightcheck-")
    assert steps(published, "withRegistryAuth") == []  # the local registry takes none
    leaves = [q.leaf.field for q in rec.queries]
    repository = next(q.chain for q in rec.queries if q.leaf.field == "stdout")
    assert steps(rec.lineage(repository), "withExec")[-1].args["args"] == [
        "python", "-m", "flightcheck.cloudrun.images", "repository", "--target", "local"]
    rollout = rec.last("exitCode")
    assert rollout[-2].args["args"] == [
        "flightcheck", "deploy", "--target", "local", "--env", "dev", "--api-endpoint",
        "http://cloudrun:8123", "--image", f"127.0.0.1:5000/mathcoach@{DIGEST}",
        "--report-dir", "/flightcheck-report"]
    assert _env(rollout)["FLIGHTCHECK__DEPLOY__TARGET"] == "local"
    binding = one(rollout, "withServiceBinding").args
    assert binding["alias"] == "cloudrun" and _input(rec, binding["service"]) == "cloud-run"
    assert "withMountedSecret" not in {s.field for s in rollout} and "setSecret" not in leaves


def test_deploy_to_the_local_cloud_run_needs_its_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FunctionError, match="--target=local needs --api-endpoint"):
        call(monkeypatch, "deploy", _deploy_answers(), source=Ref("source"), target="local")
    with pytest.raises(FunctionError, match="unknown --target 'gke'"):
        call(monkeypatch, "deploy", _deploy_answers(), source=Ref("source"), target="gke")
