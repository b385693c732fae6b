"""The Dagger module's functions, run end to end through the harness on real containers, with the
verdicts of ``flightcheck ci --runtime docker`` and ``--runtime process`` on the same cases.

The harness stands where the Dagger engine would (tests/dagger/dagger_harness); no Dagger engine
has run these. What runs for real: the module's code in the SDK's own runtime, the checker's
``pip install``, ``docker_build`` of the service, the service under the memory guard with root
capabilities (a kernel-enforced cgroup limit), the fake model server bound as ``fakemodel``,
``flightcheck ci --runtime attached`` in the checker, the reports exported to the host.

The table (also in docs/dagger.md, kept equal by a test):
"""

from __future__ import annotations

import asyncio
import random
import string
from pathlib import Path
from typing import Any

import httpx
import pytest
from dagger_harness import FunctionFailed, Harness
from e2e_support import (
    CASES,
    EXPECTED_TABLE,
    Case,
    DaggerRun,
    LocalRun,
    cell,
    make_source,
    render_table,
    run_dagger,
    run_local,
)
from harness_support import HOST_SECRET

# The first test runs every case on the three runtimes (module fixtures): ~10-16 min on a
# loaded 2-core machine, far over the suite's per-test default.
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(2700)]

RUNTIMES = ("docker", "process")
BY_NAME = {c.name: c for c in CASES}
__doc__ = (__doc__ or "") + "\n" + EXPECTED_TABLE + "\n"


@pytest.fixture(scope="module")
def cases_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("module-cases")


@pytest.fixture(scope="module")
def local_runs(docker_client: Any, cases_root: Path) -> dict[tuple[str, str], LocalRun]:
    del docker_client
    return {(c.name, rt): run_local(c, rt, cases_root, HOST_SECRET)
            for c in CASES for rt in RUNTIMES}


@pytest.fixture(scope="module")
def dagger_runs(harness: Harness, cases_root: Path) -> dict[str, tuple[DaggerRun, list[str]]]:
    """Each case through the module, with the secret sightings the engine recorded for it."""
    out = {}
    for c in CASES:
        before = len(harness.engine.secret_leaks)
        run = run_dagger(harness, c, cases_root)
        out[c.name] = (run, harness.engine.secret_leaks[before:])
    return out


def test_the_verdicts_of_the_three_runtimes_side_by_side(
    dagger_runs: dict[str, tuple[DaggerRun, list[str]]],
    local_runs: dict[tuple[str, str], LocalRun],
) -> None:
    cells = {c.name: {"dagger": cell(c, dagger_runs[c.name][0].verdict),
                      **{rt: cell(c, local_runs[(c.name, rt)].verdict) for rt in RUNTIMES}}
             for c in CASES}
    print("\n" + render_table(cells))
    assert render_table(cells) == EXPECTED_TABLE
    for c in CASES:  # not only the decisive stage: every stage the run reported
        dagger = dagger_runs[c.name][0].verdict
        for rt in RUNTIMES:
            assert dagger == local_runs[(c.name, rt)].verdict, (c.name, rt)


def test_ci_exports_every_report_of_the_healthy_service_with_the_guards_measurements(
    dagger_runs: dict[str, tuple[DaggerRun, list[str]]],
) -> None:
    run, _ = dagger_runs["healthy reference service"]
    assert run.report_dir is not None and run.report is not None
    assert sorted(p.name for p in run.report_dir.iterdir()) == [
        "exit-code", "flightcheck-report.json", "junit.xml", "lint.sarif", "report.html",
        "summary.md"]
    stages = {s["name"]: s for s in run.report["stages"]}
    rwml = stages["run-with-memory-limit"]
    measured = {m["name"]: m["value"] for m in rwml["measurements"]}
    assert measured["memory_limit_bytes"] == 512 << 20
    assert 20 << 20 < measured["peak_memory_bytes"] < 512 << 20
    assert rwml["details"]["guard"] == "cgroup-v1"  # the kernel enforces it, in the container
    assert stages["build"]["summary"].startswith("image mathcoach (dagger docker_build")
    # the image's packages reached the checker as a tar: calls into them were judged
    assert stages["build"]["details"]["dependency_calls"] == "checked"
    assert "calls into the installed dependencies ok" in stages["build"]["summary"]
    assert stages["ai-smoke"]["details"]["mode"] == "fake model server"
    assert run.report["runtime"] == "attached"  # checked from the checker container


@pytest.mark.parametrize("name", ["OOM at startup", "crash at start",
                                  "slow startup past the probe window", "degraded answers"])
def test_a_failed_stage_function_prints_its_summary_and_how_to_rerun_it(
    dagger_runs: dict[str, tuple[DaggerRun, list[str]]], harness: Harness, name: str,
) -> None:
    run, _ = dagger_runs[name]
    case = BY_NAME[name]
    out = run.output
    assert out.startswith("FunctionError: a gate failed (flightcheck exit code 1)"), out[:300]
    call = f"dagger call {case.function} --source=." + (f" --memory={case.memory}"
                                                          if case.memory else "")
    assert f"- {case.function}: `{call}`\n" in out
    assert f"  interactive, a shell where it failed: `{call.replace('call', 'call -i', 1)}`" in out
    # the failing exec `-i` would open its terminal at: where the checks ran, reports in place
    landing = [a for a, code, _ in harness.engine.exec_log
               if a[:2] == ["sh", "-c"] and "the reports are in /flightcheck-report" in a[2]]
    assert landing and all(code == 1 for a, code, _ in harness.engine.exec_log if a in landing)


def test_the_oom_is_the_kernels_at_the_guards_limit_inside_the_container(
    dagger_runs: dict[str, tuple[DaggerRun, list[str]]],
) -> None:
    out = dagger_runs["OOM at startup"][0].output
    assert "OOM-killed by the kernel at the cgroup-v1 memory limit" in out
    assert "limit 160Mi" in out


def test_a_provider_key_passed_as_a_secret_appears_in_no_output(
    dagger_runs: dict[str, tuple[DaggerRun, list[str]]],
    local_runs: dict[tuple[str, str], LocalRun], harness: Harness,
) -> None:
    run, sightings = dagger_runs["real-provider key as a secret"]
    assert run.report is not None and run.report_dir is not None
    smoke = next(s for s in run.report["stages"] if s["name"] == "ai-smoke")
    assert smoke["details"]["mode"] == "real provider (openai)"  # the key reached the service
    assert "--openai-api-key=env:OPENAI_API_KEY" in smoke["repro"]["dagger"]
    assert sightings == [], sightings  # not even in raw exec or runtime output
    outputs = {
        "function result": run.output,
        "engine errors": "\n".join(harness.errors),
        "module runtime output": "\n".join(r[2] for r in harness.runs),
        "exec arguments": repr(harness.engine.exec_log),
        "service logs": "\n".join(s.logs for s in harness.engine.service_logs),
        **{f"exported {p.name}": p.read_text(errors="replace")
           for p in run.report_dir.iterdir()},
    }
    for rt in RUNTIMES:
        local = local_runs[("real-provider key as a secret", rt)]
        outputs[f"{rt} stderr"] = local.stderr
        for p in local.report_dir.iterdir():
            outputs[f"{rt} {p.name}"] = p.read_text(errors="replace")
    leaked = [where for where, text in outputs.items() if HOST_SECRET in text
              or HOST_SECRET[8:24] in text]
    assert leaked == []


def test_lint_passes_and_fails_like_the_lint_stage(
    harness: Harness, cases_root: Path,
) -> None:
    assert harness.call("lint").startswith("0 errors, 0 warnings in ")
    bad = make_source(Case("planted key", "lint"), cases_root)
    rng = random.Random(11)
    planted = "sk-proj-" + "".join(rng.choice(string.ascii_letters + string.digits)
                                   for _ in range(64))
    (bad / "src" / "mathcoach" / "keys.py").write_text(f'OPENAI_API_KEY = "{planted}"\n')
    local = run_local(Case("planted key", "lint"), "process", cases_root, HOST_SECRET)
    assert local.verdict.exit_code == 1 and local.verdict.stages["lint"][0] == "fail"
    codes = local.verdict.stages["lint"][1]
    assert codes
    with pytest.raises(FunctionFailed) as caught:
        harness.call("lint", source=bad)
    out = caught.value.message
    assert out.startswith("FunctionError: flightcheck lint exited with code 1")
    assert all(code in out for code in codes), (codes, out[:2000])
    assert "- lint: `dagger call lint --source=.`" in out
    assert "`dagger call -i lint --source=.`" in out
    assert planted[12:40] not in out  # the planted key is shown redacted, as locally


def test_service_up_serves_the_reference_service_under_the_guard(harness: Harness) -> None:
    """``dagger call service up --ports …``: the service and its guard on 127.0.0.1 until the
    CLI goes away, then stopped."""
    from mathcoach_support import find_free_port

    app, guard = find_free_port(), find_free_port()
    ports = [{"frontend": app, "backend": 8080}, {"frontend": guard, "backend": 8931}]
    query = harness.call_query("service", f"{{ up(ports: {_ports(ports)}) }}", memory="512Mi")

    async def session() -> tuple[dict[str, Any], int, str]:
        async with httpx.AsyncClient(auth=harness.auth, timeout=None) as cli, \
                httpx.AsyncClient(timeout=5) as probe:
            up = asyncio.ensure_future(cli.post(harness.url, json={"query": query}))
            try:
                ready = await _until_ready(probe, f"http://127.0.0.1:{app}/health/startup", up)
                asked = await probe.post(f"http://127.0.0.1:{app}/v1/questions",
                                         json={"topic": "addition", "level": "easy"})
                verdict = (await probe.get(f"http://127.0.0.1:{guard}/")).json()
                return verdict, asked.status_code, ready
            finally:
                up.cancel()  # the CLI's Ctrl-C
                await asyncio.gather(up, return_exceptions=True)

    verdict, asked, ready = asyncio.run(session())
    assert ready == "ok"
    assert asked == 200  # through the fake model server, bound as fakemodel
    assert verdict["kind"] == "cgroup-v1" and verdict["limit"] == 512 << 20
    assert verdict["exit"] is None and verdict["peak"] > 0
    stopped = _wait_stopped(harness, "up")
    assert stopped, "the service was not stopped after the CLI went away"


def _ports(ports: list[dict[str, int]]) -> str:
    return "[" + ", ".join(f"{{frontend: {p['frontend']}, backend: {p['backend']}}}"
                           for p in ports) + "]"


async def _until_ready(probe: httpx.AsyncClient, url: str, up: asyncio.Future[Any]) -> str:
    for _ in range(1200):
        if up.done():
            return f"up ended: {up.result().text[:2000]}"
        try:
            if (await probe.get(url)).status_code == 200:
                return "ok"
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.25)
    return "not ready in 300 s"


def _wait_stopped(harness: Harness, alias: str) -> bool:
    import time

    for _ in range(200):
        if any(s.alias == alias for s in harness.engine.service_logs):
            return True
        time.sleep(0.1)
    return False
