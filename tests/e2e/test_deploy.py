"""`flightcheck deploy` end to end on the local target: the real CLI (a subprocess), the real
google-cloud-run client (REST transport, http:// endpoint, anonymous credentials) against the
local Cloud Run, revisions as real containers pulled by digest from the local registry, traffic
through its proxy. Step durations are 0 (a step is judged once the candidate has answered
``min_requests`` times), so a rollout takes seconds.

The tests share one local Cloud Run per module and build on each other like real deploys do;
scenarios that leave a service in a bad state use a service of their own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import run_v2
from invoker_support import InvokerAuth

from flightcheck.cloudrun import local, spec
from flightcheck.report import json_schema

REPO = Path(__file__).resolve().parents[2]
PARENT = "projects/local/locations/europe-west1"
FAST = {
    "FLIGHTCHECK__DEPLOY__CANARY__STEP_DURATION_S": "0",
    "FLIGHTCHECK__DEPLOY__CANARY__REQUEST_RATE": "200",
    "FLIGHTCHECK__DEPLOY__CANARY__MIN_REQUESTS": "10",
    "FLIGHTCHECK__DEPLOY__CANARY__MAX_STEP_S": "60",
    # A developer's own baseline in the checkout must not change a verdict (tests that want
    # one pass their own).
    "FLIGHTCHECK__QUALITY__BASELINE": "/nonexistent/flightcheck-e2e-baseline.json",
    "PYTHONUNBUFFERED": "1",
}
# Inside the project (paths outside it are refused): see the file for why it is small.
SMALL_SUITE = "tests/fixtures/deploy/small-suite.yaml"

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@dataclass
class Deployed:
    rc: int
    err: str
    stage: dict[str, Any]
    report: dict[str, Any]
    report_path: Path

    @property
    def details(self) -> dict[str, Any]:
        return self.stage["details"]


class Api:
    """The test's own view of the local Cloud Run, through the official client."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        opts = ClientOptions(api_endpoint=endpoint)
        self.services = run_v2.ServicesClient(credentials=AnonymousCredentials(),
                                              transport="rest", client_options=opts)

    def service(self, name: str) -> run_v2.Service:
        return self.services.get_service(name=f"{PARENT}/services/{name}")

    def revisions(self, name: str) -> list[str]:
        revisions = run_v2.RevisionsClient(credentials=AnonymousCredentials(), transport="rest",
                                           client_options=ClientOptions(api_endpoint=self.endpoint))
        return sorted(r.name.rpartition("/")[2]
                      for r in revisions.list_revisions(parent=f"{PARENT}/services/{name}"))

    def split(self, name: str) -> list[tuple[str, int]]:
        return [(t.revision, t.percent) for t in self.service(name).traffic if t.percent]

    def admin(self, path: str, body: dict[str, Any]) -> None:
        resp = httpx.post(self.endpoint + path, json=body, timeout=10, trust_env=False)
        assert resp.status_code == 200, resp.text


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    state = tmp_path_factory.mktemp("emulator")
    endpoint = local.ensure_running(state, runtime="docker")
    _AUTH.append(InvokerAuth(state))
    try:
        yield Api(endpoint)
    finally:
        local.stop(state)
        assert local.containers(state) == [], "the local Cloud Run left containers behind"


@pytest.fixture(scope="module")
def small_suite() -> str:
    assert (REPO / SMALL_SUITE).is_file()
    return SMALL_SUITE


def _env(service: str, **extra: str) -> dict[str, str]:
    return {**os.environ, **FAST, "FLIGHTCHECK__DEPLOY__SERVICE": service, **extra}


def deploy(api: Api, tmp_path: Path, service: str, *args: str, timeout: float = 280,
           **env: str) -> Deployed:
    report_dir = tmp_path / f"report-{time.monotonic_ns()}"
    proc = subprocess.run(
        [sys.executable, "-m", "flightcheck.cli", "deploy", "--api-endpoint", api.endpoint,
         "--report-dir", str(report_dir), *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
        env=_env(service, **env))
    file = report_dir / "flightcheck-report.json"
    assert file.is_file(), f"no report (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    report = json.loads(file.read_text())
    jsonschema.validate(report, json_schema())
    stage = next(s for s in report["stages"] if s["name"] == "deploy")
    return Deployed(proc.returncode, proc.stderr, stage, report, report_dir)


_AUTH: list[InvokerAuth] = []


def served_by(url: str, n: int = 30) -> dict[str, int]:
    """Send ``n`` real requests through ``url`` (the services are private: as the deployer);
    count answers per revision, failures apart."""
    counts: dict[str, int] = {}
    with httpx.Client(trust_env=False, timeout=20, auth=_AUTH[-1]) as client:
        for _ in range(n):
            resp = client.post(url + "/v1/evaluate", json={"expression": "2+2"})
            key = resp.headers.get("x-flightcheck-revision", "?") if resp.status_code == 200 \
                else f"failed {resp.status_code}"
            counts[key] = counts.get(key, 0) + 1
    return counts


@pytest.fixture(scope="module")
def stable(api: Api, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The shared service after a first deploy: its serving revision."""
    first = deploy(api, tmp_path_factory.mktemp("first"), "fc-e2e")
    assert first.rc == 0, first.err
    return str(first.details["revision"])


# --- the happy path -----------------------------------------------------------------------------


def test_first_deploy_serves_the_new_revision_by_digest(api: Api, stable: str) -> None:
    svc = api.service("fc-e2e")
    assert api.split("fc-e2e") == [(stable, 100)]
    image = svc.template.containers[0].image
    assert image.startswith("127.0.0.1:5000/fc-e2e@sha256:") and len(image.split("@")[1]) == 71
    assert dict(svc.labels)["managed-by"] == "flightcheck"
    assert spec.LOCK_ANNOTATION not in svc.annotations
    assert served_by(svc.uri, 10) == {stable: 10}


def test_a_good_second_deploy_is_promoted_through_every_step(
    api: Api, stable: str, tmp_path: Path
) -> None:
    run = deploy(api, tmp_path, "fc-e2e")
    assert run.rc == 0, run.err
    d = run.details
    assert d["status"] == "promoted" and d["rolled_back"] is False
    assert d["rollback_point"] == [{"revision": stable, "percent": 100, "tag": ""}]
    assert [(s["percent"], s["verdict"]) for s in d["steps"]] == [
        (10, "pass"), (50, "pass"), (100, "pass")]
    first = d["steps"][0]["metrics"]
    assert first[d["revision"]]["requests"] >= 10 and first[stable]["requests"] > 0
    assert first[d["revision"]]["error_rate"] == 0 and first[d["revision"]]["quality"] == 1.0
    assert d["steps"][0]["proxy"]["revisions"][d["revision"]]["requests"] >= 10
    assert d["image"].startswith("127.0.0.1:5000/fc-e2e@sha256:")
    assert d["tag_url"] and d["url"] and d["validation"]["ai-smoke"]["status"] == "pass"
    assert api.split("fc-e2e") == [(d["revision"], 100)]
    assert served_by(d["url"], 10) == {d["revision"]: 10}
    assert d["parity"]["status"] == "pass"  # the gate ran, and the healthy config passed it
    assert set(d["parity"]["tables"]) == {"dev vs prod", "prod declared vs to deploy"}
    events = [e["to"] for e in d["events"]]
    assert events == ["rollback point recorded", "creating candidate", "validating",
                      "progressing", "progressing", "progressing", "promoting", "promoted"]
    assert "progressing → progressing: step 2/3" in run.err  # every transition, with reasons


def test_rollback_command_moves_traffic_back_and_forth(api: Api, stable: str, tmp_path: Path
                                                       ) -> None:
    now = api.split("fc-e2e")[0][0]
    previous = json.loads(api.service("fc-e2e").annotations[spec.PREVIOUS_ANNOTATION])
    back = _cli("rollback", "--api-endpoint", api.endpoint, env=_env("fc-e2e"))
    assert back.returncode == 0, back.stderr
    assert api.split("fc-e2e") == [(previous[0]["revision"], 100)]
    assert f"→ {previous[0]['revision']} 100%" in back.stdout
    forth = _cli("rollback", "--api-endpoint", api.endpoint, "--to", now, env=_env("fc-e2e"))
    assert forth.returncode == 0, forth.stderr
    assert api.split("fc-e2e") == [(now, 100)]
    missing = _cli("rollback", "--api-endpoint", api.endpoint, "--to", "fc-e2e-nope",
                   env=_env("fc-e2e"))
    assert missing.returncode == 1 and "fc-e2e-nope cannot take traffic" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_ci_runs_every_gate_then_deploys_as_make_ci_does(api: Api, stable: str, tmp_path: Path
                                                          ) -> None:
    """`flightcheck ci` on the reference config (deploy enabled, target local) on Docker."""
    report_dir = tmp_path / "ci"
    proc = subprocess.run(
        [sys.executable, "-m", "flightcheck.cli", "ci", "--runtime", "docker", "--report-dir",
         str(report_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=400, check=False,
        env=_env("fc-e2e", FLIGHTCHECK__DEPLOY__API_ENDPOINT=api.endpoint))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((report_dir / "flightcheck-report.json").read_text())
    jsonschema.validate(report, json_schema())
    statuses = {s["name"]: s["status"] for s in report["stages"]}
    assert list(statuses) == ["lint", "build", "run-with-memory-limit", "health-poll",
                              "ai-smoke", "deploy"]
    assert set(statuses.values()) <= {"pass", "warn"} and statuses["deploy"] == "pass"
    deployed = report["stages"][-1]["details"]
    assert api.split("fc-e2e") == [(deployed["revision"], 100)]
    assert "deploy" in (report_dir / "summary.md").read_text()


# --- the lessons as gates ------------------------------------------------------------------------


def test_a_parity_mismatch_fails_the_deploy_before_anything_is_pushed_or_created(
    api: Api, stable: str, tmp_path: Path
) -> None:
    before = (api.split("fc-e2e"), api.revisions("fc-e2e"), api.service("fc-e2e").etag)
    declared = deploy(api, tmp_path, "fc-e2e",
                      FLIGHTCHECK__ENVIRONMENTS__prod__TEMPERATURE="0.9")
    assert declared.rc == 1, declared.err
    assert declared.stage["status"] == "fail"
    # The declared environments disagree, and so the dev values this deploy would give the
    # revision do not match prod's.
    assert declared.stage["summary"] == (
        "parity gate failed, nothing deployed: 2 mismatch(es): dev vs prod (temperature); "
        "prod declared vs to deploy (temperature)")
    finding, to_deploy = declared.stage["findings"]
    assert finding["code"] == to_deploy["code"] == "parity.temperature"
    assert "dev=0.2, prod=0.9" in finding["message"] and "randomness" in finding["message"]
    assert "[environments.*]" in finding["fix"]
    assert "declared prod=0.9, to deploy='0.2'" in to_deploy["message"]
    row = next(r for r in declared.details["parity"]["tables"]["dev vs prod"]
               if r["parameter"] == "temperature")
    assert row["values"] == {"dev": 0.2, "prod": 0.9} and not row["same"]
    assert "image" not in declared.details and "revision_env" not in declared.details
    # The env the revision would get, overridden on the command line: caught the same way.
    overridden = deploy(api, tmp_path, "fc-e2e", "--service-env", "AI_TEMPERATURE=0.9")
    assert overridden.rc == 1
    assert "prod declared vs to deploy (temperature)" in overridden.stage["summary"]
    assert (api.split("fc-e2e"), api.revisions("fc-e2e"), api.service("fc-e2e").etag) == before


def test_parity_reads_the_env_of_the_deployed_revision(api: Api, stable: str, tmp_path: Path
                                                       ) -> None:
    secret = "Zq8" + os.urandom(12).hex()  # a signing secret, and a value from a secret file
    env_file = tmp_path / "secrets.env"
    env_file.write_text("PLAIN_LOOKING_FROM_FILE=quiet-value\n")
    run = deploy(api, tmp_path, "fc-e2e", "--service-env", f"APP_SIGNING_SECRET={secret}",
                 "--service-env-file", str(env_file))
    assert run.rc == 0, run.err
    shown = run.details["revision_env"]
    given = {e.name: e.value for e in api.service("fc-e2e").template.containers[0].env}
    assert set(shown) == set(given)  # every variable the revision got, by name
    assert given["APP_SIGNING_SECRET"] == secret and shown["APP_SIGNING_SECRET"] == "***"
    assert shown["PLAIN_LOOKING_FROM_FILE"] == "***" and shown["OPENAI_API_KEY"] == "***"
    assert {k: shown[k] for k in ("AI_MODEL", "AI_TEMPERATURE", "MAX_OUTPUT_TOKENS")} == {
        "AI_MODEL": "fake-math-1", "AI_TEMPERATURE": "0.2", "MAX_OUTPUT_TOKENS": "512"}
    assert {k: v for k, v in shown.items() if v != "***"} == {
        k: v for k, v in given.items() if shown[k] != "***"}
    text = json.dumps(run.report) + run.err
    for part in (secret, secret[:6], secret[-6:], "quiet-value"):
        assert part not in text  # not even in part

    same = _cli("parity", "--report-dir", str(run.report_path), "--format", "json",
                env=_env("fc-e2e"))
    assert same.returncode == 0, same.stdout + same.stderr
    lesson = json.loads(same.stdout)
    assert lesson["details"]["deployed"] == {"model": "fake-math-1", "temperature": "0.2",
                                             "top_k": "40", "top_p": "0.95",
                                             "max_output_tokens": "512"}
    assert "prod declared vs deployed" in lesson["details"]["tables"]
    # The declared values moved on after the deploy: the deployed revision no longer matches.
    moved = _cli("parity", "--report-dir", str(run.report_path),
                 env=_env("fc-e2e", FLIGHTCHECK__ENVIRONMENTS__dev__TEMPERATURE="0.5",
                          FLIGHTCHECK__ENVIRONMENTS__prod__TEMPERATURE="0.5"))
    assert moved.returncode == 1, moved.stdout
    assert "prod declared vs deployed (temperature)" in moved.stdout and "0.2" in moved.stdout


# --- bad candidates -------------------------------------------------------------------------------


def test_an_erroring_candidate_is_rolled_back_at_the_first_step_with_its_reason(
    api: Api, stable: str, small_suite: str, tmp_path: Path
) -> None:
    before = api.split("fc-e2e")
    run = deploy(api, tmp_path, "fc-e2e", "--service-env", "FAULT_ERROR_RATE=0.3",
                 FLIGHTCHECK__SMOKE__SUITE=small_suite)
    assert run.rc == 1, run.err
    d = run.details
    assert d["status"] == "rolled_back" and d["rolled_back"] is True
    assert d["validation"]["ai-smoke"]["status"] == "pass"  # it got through its tag URL check
    (step,) = d["steps"]
    assert step["percent"] == 10 and step["verdict"] == "fail"
    assert step["reason"].startswith("error rate ") and "> 0.01 at 10%" in step["reason"]
    assert d["reason"].startswith(step["reason"])
    assert "rolled back: error rate" in run.stage["summary"]
    assert step["metrics"][d["revision"]]["errors"] > 0
    assert api.split("fc-e2e") == before
    after = served_by(d["url"], 40)
    assert after == {before[0][0]: 40}, "0 failed requests after the rollback"
    assert run.stage["measurements"]


def test_a_candidate_that_crashes_at_start_never_gets_traffic(
    api: Api, stable: str, tmp_path: Path
) -> None:
    before = api.split("fc-e2e")
    run = deploy(api, tmp_path, "fc-e2e", "--service-env", "FAULT_CRASH_ON_START=1")
    assert run.rc == 1
    d = run.details
    assert d["status"] == "failed" and not d["steps"]
    assert "did not become ready" in d["reason"]
    (ready,) = [c for c in d["conditions"] if c["type"] == "Ready"]
    assert ready["state"] == "CONDITION_FAILED" and ready["reason"]
    assert "startup_crash" in d["logs_tail"]
    assert "startup_crash" in run.err  # the last log lines are printed, too
    assert api.split("fc-e2e") == before
    tagged = [t for t in api.service("fc-e2e").traffic if t.tag == "candidate"]
    assert tagged == []


def test_degraded_answers_are_stopped_by_the_quality_gate(
    api: Api, stable: str, tmp_path: Path
) -> None:
    before = api.split("fc-e2e")
    run = deploy(api, tmp_path, "fc-e2e", "--service-env", "FAULT_DEGRADE_ANSWERS=1")
    assert run.rc == 1
    d = run.details
    assert d["status"] == "failed" and not d["steps"]
    assert "failed validation on its tag URL" in d["reason"] and "ai-smoke" in d["reason"]
    assert d["validation"]["ai-smoke"]["measurements"]["quality_score"] < 0.9
    assert any("evaluate 2+2" in f for f in d["validation"]["ai-smoke"]["findings"])
    assert api.split("fc-e2e") == before


def test_token_inflation_is_stopped_by_cost(api: Api, stable: str, tmp_path: Path) -> None:
    before = api.split("fc-e2e")
    run = deploy(api, tmp_path, "fc-e2e", "--service-env", "FAULT_TOKEN_MULTIPLIER=2.5")
    assert run.rc == 1
    d = run.details
    assert d["status"] == "rolled_back"
    assert d["steps"][-1]["reason"].startswith("cost per request $")
    assert "> 2 × $" in d["reason"] and "at 10%" in d["reason"]
    (step,) = d["steps"]
    # Judged on every canary case from both sides, whichever answers the split sent where.
    cand, point = step["metrics"][d["revision"]], step["metrics"][before[0][0]]
    assert cand["ai_requests"] >= 1 and point["ai_requests"] >= 1
    assert cand["cost_per_request_usd"] > 2 * point["cost_per_request_usd"]
    assert api.split("fc-e2e") == before


def test_an_unhealthy_rollback_point_is_left_alone_and_reported(
    api: Api, small_suite: str, tmp_path: Path
) -> None:
    first = deploy(api, tmp_path, "fc-bad-point", FLIGHTCHECK__SMOKE__SUITE=small_suite)
    assert first.rc == 0, first.err
    # Someone deploys a bad revision by hand (no flightcheck, no checks).
    svc = api.service("fc-bad-point")
    svc.template.revision = "fc-bad-point-by-hand"
    svc.template.containers[0].env.append(run_v2.EnvVar(name="FAULT_ERROR_RATE", value="0.5"))
    del svc.traffic[:]
    svc.traffic.append(run_v2.TrafficTarget(
        type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION,
        revision="fc-bad-point-by-hand", percent=100))
    api.services.update_service(service=svc).result(timeout=120)
    run = deploy(api, tmp_path, "fc-bad-point", "--service-env", "FAULT_ERROR_RATE=0.3",
                 FLIGHTCHECK__SMOKE__SUITE=small_suite)
    assert run.rc == 1
    d = run.details
    assert d["status"] == "halted" and d["rolled_back"] is False
    assert "rollback point is unhealthy too (fc-bad-point-by-hand: error rate" in d["reason"]
    assert "a person must act" in d["reason"]
    # Judged on min_requests of its own answers, not the one or two it had given when the
    # candidate's first error crossed (which called it healthy now and then).
    assert d["steps"][0]["metrics"]["fc-bad-point-by-hand"]["requests"] >= 10
    assert api.split("fc-bad-point") == [("fc-bad-point-by-hand", 90), (d["revision"], 10)]
    assert spec.LOCK_ANNOTATION not in api.service("fc-bad-point").annotations


# --- the API's errors -------------------------------------------------------------------------------


def test_transient_api_errors_are_retried_and_permanent_ones_fail_fast(
    api: Api, stable: str, tmp_path: Path
) -> None:
    api.admin("/flightcheck/v1/faults", {"status": 503, "count": 2})
    api.admin("/flightcheck/v1/faults", {"status": 429, "count": 1})
    run = deploy(api, tmp_path, "fc-e2e")
    assert run.rc == 0, run.err
    assert run.err.count("retrying with backoff") >= 3
    before = api.split("fc-e2e")
    api.admin("/flightcheck/v1/faults", {"status": 400, "count": 1, "method": "PATCH"})
    started = time.monotonic()
    bad = deploy(api, tmp_path, "fc-e2e")
    assert bad.rc == 1
    assert "Cloud Run refused the new revision" in bad.details["reason"]
    assert "HTTP 400" in bad.details["reason"]
    assert time.monotonic() - started < 60 and "retrying" not in bad.err
    assert api.split("fc-e2e") == before


def test_iam_for_allow_unauthenticated_and_a_clear_403(api: Api, stable: str, tmp_path: Path
                                                        ) -> None:
    before = api.split("fc-e2e")
    api.admin("/flightcheck/v1/permissions", {"deny": ["run.services.setIamPolicy"]})
    try:
        run = deploy(api, tmp_path, "fc-e2e",
                     FLIGHTCHECK__DEPLOY__ALLOW_UNAUTHENTICATED="true")
    finally:
        api.admin("/flightcheck/v1/permissions", {"deny": []})
    assert run.rc == 1
    assert "run.services.setIamPolicy" in run.details["reason"]
    assert "roles/run.admin" in run.details["reason"]
    assert api.split("fc-e2e") == before
    ok = deploy(api, tmp_path, "fc-e2e", FLIGHTCHECK__DEPLOY__ALLOW_UNAUTHENTICATED="true")
    assert ok.rc == 0, ok.err
    policy = api.services.get_iam_policy(request={"resource": f"{PARENT}/services/fc-e2e"})
    assert [(b.role, list(b.members)) for b in policy.bindings] == [
        ("roles/run.invoker", ["allUsers"])]


# --- interruption and concurrency -------------------------------------------------------------------


def test_ctrl_c_mid_rollout_restores_the_split_and_a_second_deploy_is_refused(
    api: Api, stable: str, tmp_path: Path
) -> None:
    before = api.split("fc-e2e")
    report_dir = tmp_path / "slow"
    proc = subprocess.Popen(
        [sys.executable, "-m", "flightcheck.cli", "deploy", "--api-endpoint", api.endpoint,
         "--report-dir", str(report_dir)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env=_env("fc-e2e", FLIGHTCHECK__DEPLOY__CANARY__STEP_DURATION_S="300",
                 FLIGHTCHECK__DEPLOY__CANARY__MAX_STEP_S="600"))
    try:
        deadline = time.monotonic() + 200
        while len(api.split("fc-e2e")) < 2:  # the candidate got its 10%
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        split = api.split("fc-e2e")
        assert [p for _, p in split] == [90, 10]
        second = _cli("deploy", "--api-endpoint", api.endpoint, "--report-dir",
                      str(tmp_path / "second"), env=_env("fc-e2e"))
        assert second.returncode == 1
        assert "another deploy of fc-e2e is in progress" in second.stderr
        assert api.split("fc-e2e") == split  # the refused deploy touched nothing
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted: traffic is back on" in err
    assert api.split("fc-e2e") == before
    svc = api.service("fc-e2e")
    assert spec.LOCK_ANNOTATION not in svc.annotations
    assert [t.tag for t in svc.traffic if t.tag] == []


# --- dry run and validation ---------------------------------------------------------------------------


def _cli(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flightcheck.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False,
                          env=env or {**os.environ})


def test_dry_run_prints_the_service_and_a_diff_and_changes_nothing(api: Api, stable: str) -> None:
    etag = api.service("fc-e2e").etag
    out = _cli("deploy", "--dry-run", "--api-endpoint", api.endpoint,
               env=_env("fc-e2e", FLIGHTCHECK__DEPLOY__MEMORY="2Gi"))
    assert out.returncode == 0, out.stderr
    import yaml

    doc = yaml.safe_load(out.stdout)
    container = doc["template"]["containers"][0]
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "2Gi"}
    assert container["resources"]["cpuIdle"] is True
    assert container["startupProbe"]["httpGet"]["path"] == "/health/startup"
    assert "-        memory: 1Gi" in out.stderr and "+        memory: 2Gi" in out.stderr
    assert "# serving now: fc-e2e-" in out.stderr
    as_json = _cli("deploy", "--dry-run", "--format", "json", "--api-endpoint", api.endpoint,
                   env=_env("fc-e2e"))
    assert as_json.returncode == 0
    assert json.loads(as_json.stdout)["template"]["containers"][0]["ports"] == [
        {"name": "http1", "containerPort": 8080}]
    assert api.service("fc-e2e").etag == etag  # nothing changed


def test_dry_run_without_a_running_local_cloud_run_starts_nothing(tmp_path: Path) -> None:
    out = _cli("deploy", "--dry-run", "--config", str(REPO / "flightcheck.toml"),
               env={**os.environ}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "the local Cloud Run is not running, so nothing is deployed" in out.stderr
    assert not (tmp_path / ".flightcheck").exists()


@pytest.mark.parametrize(
    ("toml", "words"),
    [
        ("[health.startup]\npath = \"/health/startup\"\nperiod_s = 10\ntimeout_s = 30\n",
         "use timeout_s = 10"),
        ("[health.startup]\npath = \"/health/startup\"\nperiod_s = 10\ntimeout_s = 10\n"
         "failure_threshold = 60\n", "use failure_threshold = 24"),
        ("[deploy]\ntimeout_s = 7200\n", "deploy.timeout_s"),
        ('[deploy]\nenv = {PORT = "9000"}\n', "deploy.env.PORT"),
    ],
)
def test_every_validation_error_stops_before_any_api_call(
    tmp_path: Path, toml: str, words: str
) -> None:
    config = tmp_path / "flightcheck.toml"  # a project of its own: paths stay inside it
    config.write_text('[service]\nname = "fc-invalid"\n' + toml)
    (tmp_path / "Dockerfile").write_text("FROM python:3.11-slim\n")
    for args in (("deploy", "--dry-run"), ("deploy", "--api-endpoint", "http://127.0.0.1:9")):
        out = _cli(*args, "--config", str(config), "--report-dir", str(tmp_path / "r"),
                   cwd=tmp_path)
        text = out.stdout + out.stderr
        assert words in text, text
        assert "Traceback" not in text and out.returncode == 2
        assert not (tmp_path / "r").exists()  # stopped before building or deploying anything


def test_the_real_google_api_only_with_credentials() -> None:
    if not (os.environ.get("GOOGLE_APPLICATION_CREDENTIALS") and
            os.environ.get("FLIGHTCHECK_TEST_GCP_PROJECT")):
        pytest.skip("no Google credentials here (GOOGLE_APPLICATION_CREDENTIALS and "
                    "FLIGHTCHECK_TEST_GCP_PROJECT unset): the Cloud Run target's request sequence "
                    "is tested against the local Cloud Run instead")
    project = os.environ["FLIGHTCHECK_TEST_GCP_PROJECT"]
    out = _cli("deploy", "--dry-run", "--target", "cloudrun",
               env={**os.environ, "FLIGHTCHECK__DEPLOY__PROJECT": project})
    assert out.returncode == 0, out.stderr
