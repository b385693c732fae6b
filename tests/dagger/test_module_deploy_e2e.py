"""The module's ``deploy`` run end to end through the harness against a running local Cloud Run,
with the verdicts of ``flightcheck deploy`` run directly (docker runtime) on the same cases.

The harness stands where the Dagger engine would (tests/dagger/dagger_harness); no Dagger engine
has run this. What runs for real: the module's code in the SDK's own runtime, ``docker_build`` of
the service, ``Container.withRegistryAuth`` + ``publish`` to the local registry (127.0.0.1:5000),
``flightcheck deploy --target local --image REGISTRY/NAME@sha256:…`` in the checker, which
reaches the local Cloud Run (started here with ``flightcheck emulator start``) through a
``Host.service`` bound as ``cloudrun`` — the API and every URL it hands out — and the rollout's
revisions as containers pulled by that digest.

Each runtime deploys to a service of its own, the same cases in the same order (successive
deploys build on each other, as on Cloud Run): the healthy reference service (first deploy:
promoted to 100%), a build that errors on 30% of requests (passes its tag-URL check with a
small suite, rolled back at the first canary step) and one that crashes at start (never gets
traffic).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dagger_harness import FunctionFailed, Harness
from e2e_support import REPO, Verdict, clean_env, slug, verdict_of_report, verdict_of_summary
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import run_v2

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(2700)]

PARENT = "projects/local/locations/europe-west1"
REGISTRY_PASSWORD = "fc-registry-pw-7Q2xLr0aZk93mWvB"  # what env:FC_REGISTRY_PASSWORD holds
SMALL_SUITE = "tests/fixtures/deploy/small-suite.yaml"  # see the file: FAULT_ERROR_RATE passes it


@dataclass(frozen=True)
class DeployCase:
    name: str
    env: dict[str, str]
    small_suite: bool = False
    status: str = ""  # the rollout's end as the direct run reports it
    verdict: str = ""  # the deploy row both runtimes must give


CASES = [
    DeployCase("healthy reference service", {}, status="promoted", verdict="exit 0; deploy pass"),
    DeployCase("errors on 30% of requests", {"FAULT_ERROR_RATE": "0.3"}, small_suite=True,
               status="rolled_back", verdict="exit 1; deploy fail (deploy.rolled_back)"),
    DeployCase("crash at start", {"FAULT_CRASH_ON_START": "1"}, status="failed",
               verdict="exit 1; deploy fail (deploy.failed)"),
]
RUNS = ("direct", "dagger")
CALL = ("deploy --source=CASE --target=local --cloud-run=tcp://localhost:PORT "
        "--api-endpoint=http://cloudrun:PORT --registry-password=env:FC_REGISTRY_PASSWORD")


def render_table(cells: dict[str, dict[str, str]]) -> str:
    """The table in docs/dagger.md: each run's exit code and deploy verdict, per case."""
    lines = ["| case (`[service.env]` fault) | rollout | dagger (harness) | `flightcheck deploy` "
             "(docker) |", "|---|---|---|---|"]
    for c in CASES:
        lines.append(f"| {c.name} | {c.status} | {cells[c.name]['dagger']} | "
                     f"{cells[c.name]['direct']} |")
    return "\n".join(lines)


EXPECTED_TABLE = render_table({c.name: dict.fromkeys(RUNS, c.verdict) for c in CASES})
__doc__ = (__doc__ or "") + "\n" + EXPECTED_TABLE + "\n"


def make_source(case: DeployCase, run: str, root: Path) -> Path:
    """The case's --source / --config: the reference service, deployed as ``fcd-RUN``, with fast
    canary steps (a step is judged once the candidate answered 10 times) and its fault."""
    src = root / f"{run}-{slug(case.name)}"
    (src / "src").mkdir(parents=True)
    import shutil

    shutil.copytree(REPO / "src" / "mathcoach", src / "src" / "mathcoach",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("Dockerfile", ".dockerignore", "smoke.yaml"):
        shutil.copy2(REPO / name, src / name)
    toml = (REPO / "flightcheck.toml").read_text(encoding="utf-8")
    edits = [("[deploy]\n", f'[deploy]\nservice = "fcd-{run}"\n'),
             ("step_duration_s = 5 ", "step_duration_s = 0 "),
             ("request_rate = 40 ", "request_rate = 200 "),
             ("min_requests = 20 ", "min_requests = 10 "),
             ("[deploy.canary]\n", "[deploy.canary]\nmax_step_s = 60\n")]
    if case.small_suite:
        (src / "small-suite.yaml").write_bytes((REPO / SMALL_SUITE).read_bytes())
        edits.append(('suite = "smoke.yaml"', 'suite = "small-suite.yaml"'))
    for old, new in edits:
        assert old in toml, old
        toml = toml.replace(old, new, 1)
    if case.env:
        toml += "\n[service.env]\n" + "".join(f'{k} = "{v}"\n' for k, v in case.env.items())
    (src / "flightcheck.toml").write_text(toml, encoding="utf-8")
    return src


@dataclass
class CloudRun:
    port: int
    api: str
    state: Path
    services: run_v2.ServicesClient

    def service(self, name: str) -> run_v2.Service:
        return self.services.get_service(name=f"{PARENT}/services/{name}")

    def split(self, name: str) -> list[tuple[str, int]]:
        """The service's traffic; [] while it does not exist."""
        from google.api_core.exceptions import NotFound

        try:
            return [(t.revision, t.percent) for t in self.service(name).traffic if t.percent]
        except NotFound:
            return []


def _emulator(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flightcheck.cli", "emulator", *args],
                          capture_output=True, text=True, timeout=300, env=clean_env(),
                          check=False)


@pytest.fixture(scope="module")
def cloud_run(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudRun]:
    """The local Cloud Run on 127.0.0.1, started and stopped with its CLI."""
    from mathcoach_support import find_free_port

    from flightcheck.cloudrun import local

    del docker_client
    state = tmp_path_factory.mktemp("deploy-emulator")
    port = find_free_port()
    started = _emulator("start", "--state-dir", str(state), "--runtime", "docker",
                        "--port", str(port))
    assert started.returncode == 0, started.stderr
    api = started.stdout.strip()
    assert api == f"http://127.0.0.1:{port}"
    services = run_v2.ServicesClient(credentials=AnonymousCredentials(), transport="rest",
                                     client_options=ClientOptions(api_endpoint=api))
    try:
        yield CloudRun(port, api, state, services)
    finally:
        stopped = _emulator("stop", "--state-dir", str(state))
        assert stopped.returncode == 0, stopped.stderr
        assert local.containers(state) == [], "emulator stop left containers behind"


@dataclass
class Deployed:
    verdict: Verdict
    output: str  # direct: stderr; dagger: what `dagger call` prints
    split: list[tuple[str, int]]  # the service's traffic afterwards
    details: dict[str, Any] | None = None  # direct: the deploy stage's details


def _deploy_row(v: Verdict) -> str:
    return f"exit {v.exit_code}; deploy {v.row('deploy')}"


def run_direct(cloud_run: CloudRun, case: DeployCase, root: Path) -> Deployed:
    src = make_source(case, "direct", root)
    report_dir = root / f"report-direct-{slug(case.name)}"
    done = subprocess.run(
        [sys.executable, "-m", "flightcheck.cli", "deploy", "--api-endpoint", cloud_run.api,
         "--report-dir", str(report_dir), "--config", str(src / "flightcheck.toml")],
        cwd=src, env=clean_env({"PYTHONUNBUFFERED": "1"}), capture_output=True, text=True,
        timeout=600, check=False)
    file = report_dir / "flightcheck-report.json"
    assert file.is_file(), f"no report (exit {done.returncode}):\n{done.stderr[-3000:]}"
    report = json.loads(file.read_text())
    stage = next(s for s in report["stages"] if s["name"] == "deploy")
    return Deployed(verdict_of_report(report, done.returncode), done.stderr,
                    cloud_run.split("fcd-direct"), stage["details"])


def run_dagger(harness: Harness, cloud_run: CloudRun, case: DeployCase, root: Path) -> Deployed:
    """``dagger call deploy --source=CASE --target=local --cloud-run=tcp://localhost:PORT
    --api-endpoint=http://cloudrun:PORT --registry-password=env:FC_REGISTRY_PASSWORD``."""
    src = make_source(case, "dagger", root)
    args = dict(source=src, target="local", api_endpoint=f"http://cloudrun:{cloud_run.port}",
                cloud_run=harness.host_service(cloud_run.port),
                registry_password=harness.secret_from_env("FC_REGISTRY_PASSWORD"))
    try:
        out = harness.call("deploy", **args)
        verdict = verdict_of_summary(out, 0)
    except FunctionFailed as failed:
        out = failed.message
        verdict = verdict_of_summary(out, 1)
    return Deployed(verdict, out, cloud_run.split("fcd-dagger"))


@pytest.fixture(scope="module")
def deploys(harness: Harness, cloud_run: CloudRun, tmp_path_factory: pytest.TempPathFactory,
            ) -> dict[tuple[str, str], tuple[Deployed, list[str]]]:
    """Every case deployed by both runs, in order; with the secret sightings of the engine."""
    root = tmp_path_factory.mktemp("deploy-cases")
    harness.engine.host_env["FC_REGISTRY_PASSWORD"] = REGISTRY_PASSWORD
    out: dict[tuple[str, str], tuple[Deployed, list[str]]] = {}
    for case in CASES:
        out[(case.name, "direct")] = (run_direct(cloud_run, case, root), [])
        before = len(harness.engine.secret_leaks)
        out[(case.name, "dagger")] = (run_dagger(harness, cloud_run, case, root),
                                      harness.engine.secret_leaks[before:])
    return out


def test_deploy_verdicts_match_the_direct_run_on_the_docker_runtime(
    deploys: dict[tuple[str, str], tuple[Deployed, list[str]]],
) -> None:
    rows = {(c.name, r): _deploy_row(deploys[(c.name, r)][0].verdict) for c in CASES for r in RUNS}
    print("\n" + render_table({c.name: {r: rows[(c.name, r)] for r in RUNS} for c in CASES}))
    for case in CASES:
        direct, _ = deploys[(case.name, "direct")]
        dagger, _ = deploys[(case.name, "dagger")]
        assert direct.details is not None and direct.details["status"] == case.status, (
            case.name, direct.output[-2000:])
        assert rows[(case.name, "direct")] == case.verdict, direct.output[-2000:]
        assert rows[(case.name, "dagger")] == case.verdict, dagger.output[-3000:]
        assert dagger.verdict.stages["deploy"] == direct.verdict.stages["deploy"]


def test_the_healthy_service_is_promoted_to_100_percent_by_digest_from_the_published_image(
    deploys: dict[tuple[str, str], tuple[Deployed, list[str]]], cloud_run: CloudRun,
) -> None:
    dagger, _ = deploys[("healthy reference service", "dagger")]
    direct, _ = deploys[("healthy reference service", "direct")]
    assert direct.details is not None
    (revision, percent), = dagger.split
    assert percent == 100 and revision.startswith("fcd-dagger-")
    assert f"{revision} promoted" in dagger.output  # the summary names what it promoted
    assert direct.split == [(direct.details["revision"], 100)]
    # The revision runs the image `publish` pushed, by digest; its name carries that digest.
    image = cloud_run.service("fcd-dagger").template.containers[0].image
    assert image.startswith("127.0.0.1:5000/fcd-dagger@sha256:")
    assert revision.split("-")[2] == image.split("@sha256:")[1][:7]
    assert direct.details["image"].startswith("127.0.0.1:5000/fcd-direct@sha256:")


def test_faulty_builds_never_replace_the_healthy_revision(
    deploys: dict[tuple[str, str], tuple[Deployed, list[str]]],
) -> None:
    for run in RUNS:
        healthy = deploys[("healthy reference service", run)][0].split
        for name in ("errors on 30% of requests", "crash at start"):
            assert deploys[(name, run)][0].split == healthy, (name, run)
    dagger = deploys[("errors on 30% of requests", "dagger")][0].output
    assert "rolled back: error rate" in dagger and "at 10%" in dagger
    crashed = deploys[("crash at start", "dagger")][0].output
    assert "did not become ready" in crashed
    assert "Traceback" not in dagger + crashed


def test_the_registry_password_appears_in_no_output(
    deploys: dict[tuple[str, str], tuple[Deployed, list[str]]], harness: Harness,
) -> None:
    for case in CASES:
        assert deploys[(case.name, "dagger")][1] == [], case.name  # not even in raw output
    outputs = {
        **{f"{n} {r}": d.output for (n, r), (d, _) in deploys.items()},
        "engine errors": "\n".join(harness.errors),
        "module runtime output": "\n".join(r[2] for r in harness.runs),
        "exec arguments": repr(harness.engine.exec_log),
    }
    leaked = [where for where, text in outputs.items()
              if REGISTRY_PASSWORD in text or REGISTRY_PASSWORD[6:22] in text]
    assert leaked == []


def test_the_docs_show_the_table_this_test_asserts() -> None:
    docs = (REPO / "docs" / "dagger.md").read_text(encoding="utf-8")
    assert EXPECTED_TABLE in docs and CALL in docs
