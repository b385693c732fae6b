"""The harness itself: it answers like the engine for the subset the module uses, through the real
dagger-io SDK, on real containers — and rejects what the engine's schema rejects."""

from __future__ import annotations

import os
import re
from pathlib import Path

import dagger
import graphql
import pytest
from dagger_harness import FunctionFailed, Harness
from dagger_recording import require_schema

pytestmark = [pytest.mark.docker, pytest.mark.anyio]

BASE = "python:3.11-slim"
MODULE_SOURCE = (Path(__file__).resolve().parents[2] / "ci/src/flightcheck_ci/main.py").read_text()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- the schema is the engine's -------------------------------------------------------------------

REJECTED = {
    "an argument the field does not have": '{ container { from(image: "python:3.11-slim") { id } } }',
    "a required argument left out": "{ container { from { id } } }",
    "a value of the wrong type": "{ container { withExec(args: 42) { id } } }",
    "a field that does not exist": "{ container { run(cmd: \"true\") { id } } }",
    "an enum value that does not exist": '{ container { withExec(args: ["true"], expect: MAYBE) '
                                         "{ id } } }",
    "a leaf without a selection set missing": "{ container }",
}


@pytest.mark.parametrize("what", REJECTED)
def test_a_query_the_engine_schema_rejects_is_rejected_before_anything_runs(
    harness: Harness, what: str,
) -> None:
    text = REJECTED[what]
    engine_says = [e.message for e in graphql.validate(
        require_schema("the comparison needs it"), graphql.parse(text))]
    assert engine_says, f"the engine's schema accepts {what}: not a rejection test"
    execs = len(harness.engine.exec_log)
    with pytest.raises(FunctionFailed) as caught:
        harness.query(text)
    assert [e["message"] for e in caught.value.errors] == engine_says
    assert len(harness.engine.exec_log) == execs


def test_the_module_functions_are_in_the_schema_as_the_engine_adds_them(harness: Harness) -> None:
    with pytest.raises(FunctionFailed, match="Unknown argument 'memoryLimit'"):
        harness.query('{ flightcheck { runWithMemoryLimit(memoryLimit: "1Gi") } }')
    with pytest.raises(FunctionFailed, match="Cannot query field 'deployNow'"):
        harness.query("{ flightcheck { deployNow } }")
    fields = harness.query('{ __type(name: "Flightcheck") { fields { name args { name } } } }')
    found = {f["name"]: [a["name"] for a in f["args"]] for f in fields["__type"]["fields"]}
    assert found["ci"] == ["source", "memory", "environment", "openaiApiKey", "geminiApiKey",
                           "allowFailure"]
    assert found["lint"] == ["source", "format"]


async def test_the_sdks_stale_load_from_id_is_rejected_as_the_engine_would(
    harness: Harness,
) -> None:
    """dagger-io 0.21.11's generated ``load_*_from_id`` select ``loadContainerFromID``, which
    the 0.21 schema no longer has (IDs load through ``node``). The SDK builds every query from
    the schema the engine serves, so against the engine's schema it refuses before sending, and
    the harness rejects the raw query; the module never calls them."""
    schema = require_schema("the comparison needs it")
    assert "loadDirectoryFromID" not in schema.type_map["Query"].fields  # type: ignore[union-attr]
    async with harness.client() as dag:
        known = await dag.container().from_(BASE).id()
        with pytest.raises(dagger.InvalidQueryError, match="Failed to build GraphQL query"):
            await dag.load_container_from_id(dagger.ContainerID(known)).id()
    with pytest.raises(FunctionFailed, match="Cannot query field 'loadContainerFromID'"):
        harness.query(f'{{ loadContainerFromID(id: "{known}") {{ id }} }}')
    assert "_from_id" not in MODULE_SOURCE


def test_a_valid_field_outside_the_subset_says_it_is_not_modelled(harness: Harness) -> None:
    with pytest.raises(FunctionFailed, match="Container.platform is not modelled"):
        harness.query('{ container { from(address: "python:3.11-slim") { platform } } }')


# --- containers, through the SDK ------------------------------------------------------------------


async def test_exec_exit_codes_output_and_exec_errors(harness: Harness) -> None:
    async with harness.client() as dag:
        base = dag.container().from_(BASE)
        script = "echo out; echo err >&2; exit 3"
        with pytest.raises(dagger.ExecError) as caught:
            await base.with_exec(["sh", "-c", script]).stdout()
        err = caught.value
        assert (err.exit_code, err.stdout, err.stderr) == (3, "out\n", "err\n")
        assert err.command == ["sh", "-c", script]
        assert "did not complete successfully: exit code: 3" in str(err)
        tolerated = base.with_exec(["sh", "-c", script], expect=dagger.ReturnType.ANY)
        assert await tolerated.exit_code() == 3
        assert await tolerated.stdout() == "out\n"
        with pytest.raises(dagger.QueryError, match="a failure was expected"):
            await base.with_exec(["true"], expect=dagger.ReturnType.FAILURE).sync()
        # a later exec sees the files an earlier one wrote; the workdir and user apply
        ctr = (base.with_workdir("/work").with_exec(["sh", "-c", "echo 1 > n"])
               .with_user("nobody").with_exec(["sh", "-c", "cat n; id -un; pwd"]))
        assert await ctr.stdout() == "1\nnobody\n/work\n"


async def test_environment_and_secrets_never_show_their_values(harness: Harness) -> None:
    value = "s3cr3t-" + "x" * 20
    async with harness.client() as dag:
        secret = dag.set_secret("token", value)
        ctr = (dag.container().from_(BASE).with_env_variable("GREETING", "hi")
               .with_secret_variable("TOKEN", secret)
               .with_exec(["sh", "-c", 'echo "$GREETING $TOKEN ${#TOKEN}"']))
        out = await ctr.stdout()
        assert await ctr.env_variable("GREETING") == "hi"
        assert await ctr.env_variable("TOKEN") is None  # a secret is not a plain variable
    assert out == f"hi *** {len(value)}\n"  # there, and scrubbed from the output
    assert any("'token'" in leak for leak in harness.engine.secret_leaks)
    assert value not in repr(harness.engine.exec_log) and value not in " ".join(harness.errors)
    harness.engine.secret_leaks.clear()


async def test_files_directories_and_export(harness: Harness, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "a.py").write_text("A = 1\n")
    (src / "skip.log").write_text("noise\n")
    async with harness.client() as dag:
        source = dag.host().directory(str(src), exclude=["*.log"])
        assert await source.entries() == ["pkg/"]
        ctr = (dag.container().from_(BASE).with_directory("/app", source)
               .with_new_file("/app/notes.txt", "hello\n")
               .with_file("/opt/a.py", source.file("pkg/a.py"))
               .with_exec(["sh", "-c", "mkdir -p /out && ls -R /app > /out/ls.txt"]))
        assert "a.py" in await ctr.file("/out/ls.txt").contents()
        assert await ctr.file("/opt/a.py").contents() == "A = 1\n"
        out = ctr.directory("/out").with_new_file("extra", "x\n")
        exported = await out.export(str(tmp_path / "exported"))
        with pytest.raises(dagger.QueryError, match="no such file or directory"):
            await ctr.file("/nope").contents()
    assert sorted(os.listdir(exported)) == ["extra", "ls.txt"]


async def test_docker_build_and_its_failures_in_buildkits_words(
    harness: Harness, tmp_path: Path,
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {BASE}\nUSER nobody\nCMD [\"echo\", \"built\"]\n")
    (ctx / "Bad.Dockerfile").write_text(f"FROM {BASE}\nRUN echo compiling && exit 7\n")
    async with harness.client() as dag:
        d = dag.host().directory(str(ctx))
        image = d.docker_build()
        assert await image.default_args() == ["echo", "built"]
        assert await image.user() == "nobody"
        with pytest.raises(dagger.ExecError) as caught:
            await d.docker_build(dockerfile="Bad.Dockerfile").sync()
    assert str(caught.value) == ('process "/bin/sh -c echo compiling && exit 7" did not '
                                 "complete successfully: exit code: 7")
    assert caught.value.exit_code == 7 and "compiling" in caught.value.stdout


async def test_an_image_that_is_not_here_is_never_pulled(harness: Harness) -> None:
    async with harness.client() as dag:
        with pytest.raises(dagger.QueryError, match="no registry to pull from"):
            await dag.container().from_("registry.example/nothing:1").sync()


# --- services ---------------------------------------------------------------------------------------

SERVE = ["python", "-m", "http.server", "8000"]


async def test_a_bound_service_is_up_and_answers_at_its_alias_before_the_dependent_runs(
    harness: Harness,
) -> None:
    async with harness.client() as dag:
        # Slow to listen: the dependent only runs once the exposed port accepts connections.
        web = (dag.container().from_(BASE).with_exposed_port(8000)
               .as_service(args=["sh", "-c", "sleep 2; exec " + " ".join(SERVE)]))
        probe = ("import urllib.request as u; "
                 "print(u.urlopen('http://web:8000/', timeout=5).status)")
        client = dag.container().from_(BASE).with_service_binding("web", web)
        first = client.with_exec(["python", "-c", probe])
        second = client.with_env_variable("AGAIN", "1").with_exec(["python", "-c", probe])
        assert await first.stdout() == "200\n"
        assert await second.stdout() == "200\n"
    logs = [s for s in harness.engine.service_logs if s.alias == "web"]
    assert len(logs) == 2 and all("GET / HTTP" in s.logs for s in logs)  # stopped after each


async def test_readiness_is_the_images_healthcheck_unless_dropped(
    harness: Harness, tmp_path: Path,
) -> None:
    """Dagger 0.21 waits on an image's HEALTHCHECK instead of its ports (dagger/dagger#11951):
    a service that never passes it fails its dependents; withoutDockerHealthcheck restores the
    port wait (what the flightcheck module relies on)."""
    ctx = tmp_path / "hc"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {BASE}\nHEALTHCHECK --interval=1s --timeout=1s --retries=2 CMD [\"false\"]\n")
    async with harness.client() as dag:
        image = dag.host().directory(str(ctx)).docker_build()
        serve = ["python", "-m", "http.server", "8000"]
        unhealthy = image.with_exposed_port(8000).as_service(args=serve)
        dependent = dag.container().from_(BASE).with_service_binding("svc", unhealthy)
        with pytest.raises(dagger.QueryError, match="unhealthy: its HEALTHCHECK failed"):
            await dependent.with_exec(["true"]).sync()
        ports_only = image.without_docker_healthcheck().with_exposed_port(8000).as_service(
            args=serve)
        ok = dag.container().from_(BASE).with_service_binding("svc", ports_only)
        assert await ok.with_exec(["true"]).exit_code() == 0


async def test_a_service_that_exits_before_it_is_ready_fails_its_dependent(
    harness: Harness,
) -> None:
    async with harness.client() as dag:
        dead = (dag.container().from_(BASE).with_exposed_port(8000)
                .as_service(args=["sh", "-c", "echo bye; exit 4"]))
        dependent = dag.container().from_(BASE).with_service_binding("dead", dead)
        with pytest.raises(dagger.QueryError, match=r"exited with code 4 before it became "
                                                    r"healthy:\nbye"):
            await dependent.with_exec(["true"]).sync()


async def test_root_capabilities_give_a_writable_memory_cgroup(harness: Harness) -> None:
    make = "mkdir /sys/fs/cgroup/memory/fc-harness-probe && rmdir /sys/fs/cgroup/memory/fc-harness-probe"
    async with harness.client() as dag:
        base = dag.container().from_(BASE)
        plain = base.with_exec(["sh", "-c", make], expect=dagger.ReturnType.ANY)
        insecure = base.with_exec(["sh", "-c", make + " && grep CapEff /proc/self/status"],
                                  insecure_root_capabilities=True)
        assert await plain.exit_code() != 0  # read-only without them
        caps = int(re.search(r"CapEff:\s*([0-9a-f]+)", await insecure.stdout()).group(1), 16)  # type: ignore[union-attr]
    assert caps >> 21 & 1  # CAP_SYS_ADMIN
