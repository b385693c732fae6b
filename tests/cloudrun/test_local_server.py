"""The local Cloud Run through the official google-cloud-run client, with real containers.

One emulator and one pushed mathcoach image serve the whole module; the tests run in file order
and build on each other like successive deploys (a, then b at 0% with a tag, a split, ...).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.api_core import exceptions
from google.cloud import run_v2
from google.iam.v1 import iam_policy_pb2, policy_pb2
from local_support import (
    PARENT,
    Clients,
    by_revision,
    deployer_auth,
    emulator,
    push_mathcoach,
    tag_uri,
    template,
)

from flightcheck.cloudrun import local

pytestmark = [pytest.mark.docker, pytest.mark.slow]
NAME = f"{PARENT}/services/mathcoach"
OP_TIMEOUT = 180


@pytest.fixture(scope="module")
def image(docker_client: Any) -> str:
    return push_mathcoach()


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("emulator")


@pytest.fixture(scope="module")
def emu(image: str, state_dir: Path) -> Iterator[Clients]:
    with emulator(state_dir) as clients:
        yield clients
    assert local.containers(state_dir) == [], "emulator stop left containers behind"


def _served_by(url: str, n: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    with httpx.Client(trust_env=False, timeout=20, auth=deployer_auth()) as http:
        for _ in range(n):
            resp = http.get(url + "/health")
            assert resp.status_code == 200, resp.text
            seen[resp.headers["x-flightcheck-revision"]] += 1
    return seen


def _status(exc: exceptions.GoogleAPICallError) -> str:
    """The canonical status in Google's error body (the REST client maps by HTTP code only:
    409 is Conflict whether ABORTED or ALREADY_EXISTS, 400 is BadRequest, 403 Forbidden)."""
    assert exc.response is not None
    return exc.response.json()["error"]["status"]


def _service(emu: Clients) -> run_v2.Service:
    return emu.services.get_service(name=NAME)


def test_create_runs_a_ready_revision_serving_the_image(emu: Clients, image: str,
                                                          docker_client: Any) -> None:
    op = emu.services.create_service(parent=PARENT, service_id="mathcoach",
                                     service=run_v2.Service(template=template(image, "mathcoach-a")))
    assert not op.done()  # a long-running operation: the revision is still starting
    svc = op.result(timeout=OP_TIMEOUT)
    assert svc.latest_ready_revision == f"{NAME}/revisions/mathcoach-a"
    assert svc.terminal_condition.state == run_v2.Condition.State.CONDITION_SUCCEEDED
    assert svc.uri.startswith("http://127.0.0.1:")
    assert [(s.revision, s.percent) for s in svc.traffic_statuses] == [("mathcoach-a", 100)]
    answer = httpx.post(svc.uri + "/v1/evaluate", json={"expression": "6*7"}, timeout=20,
                        auth=deployer_auth(),
                        trust_env=False)
    assert answer.status_code == 200 and answer.json()["result"] == "42"
    assert answer.headers["x-flightcheck-revision"] == "mathcoach-a"
    # the AI path goes through the fake model beside the revision
    question = httpx.post(svc.uri + "/v1/questions", json={"topic": "arithmetic"}, timeout=20,
                          auth=deployer_auth(),
                          trust_env=False)
    assert question.status_code == 200, question.text

    rev = emu.revisions.get_revision(name=f"{NAME}/revisions/mathcoach-a")
    assert {c.type_: c.state for c in rev.conditions}["Ready"] == \
        run_v2.Condition.State.CONDITION_SUCCEEDED
    info = emu.admin("GET", "/flightcheck/v1/revisions/mathcoach-a").json()
    container = docker_client.containers.get(info["container"])
    env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    assert env["K_SERVICE"] == "mathcoach" and env["K_REVISION"] == "mathcoach-a"
    assert env["K_CONFIGURATION"] == "mathcoach" and env["PORT"] == "8080"
    assert container.attrs["HostConfig"]["Memory"] == 512 * 1024**2
    assert container.image.attrs["RepoDigests"] and image.split("@")[1] in " ".join(
        container.image.attrs["RepoDigests"])


def test_new_revision_at_zero_percent_is_reached_only_by_its_tag(emu: Clients, image: str
                                                                  ) -> None:
    svc = _service(emu)
    svc.template = template(image, "mathcoach-b", env={"EXTRA": "b"})
    svc.traffic = by_revision(("mathcoach-a", 100, ""), ("mathcoach-b", 0, "candidate"))
    svc = emu.services.update_service(service=svc).result(timeout=OP_TIMEOUT)
    assert svc.latest_ready_revision.endswith("/mathcoach-b")
    candidate = tag_uri(svc, "candidate")
    assert candidate != svc.uri
    assert _served_by(candidate, 20) == Counter({"mathcoach-b": 20})
    assert _served_by(svc.uri, 40) == Counter({"mathcoach-a": 40})


def test_traffic_split_is_honoured(emu: Clients) -> None:
    svc = _service(emu)
    svc.traffic = by_revision(("mathcoach-a", 70, ""), ("mathcoach-b", 30, "candidate"))
    generation = svc.generation
    svc = emu.services.update_service(service=svc).result(timeout=OP_TIMEOUT)
    assert svc.generation == generation + 1
    assert len(list(emu.revisions.list_revisions(parent=NAME))) == 2  # traffic: no new revision
    seen = _served_by(svc.uri, 600)
    # 600 draws at p=0.3: mean 180, sd ≈ 11; ±50 is more than 4 sd.
    assert 130 <= seen["mathcoach-b"] <= 230, seen
    assert seen["mathcoach-a"] + seen["mathcoach-b"] == 600


def test_metrics_count_what_the_proxy_served(emu: Clients) -> None:
    since = time.time()
    svc = _service(emu)
    with httpx.Client(trust_env=False, timeout=20, auth=deployer_auth()) as http:
        for _ in range(10):
            http.get(tag_uri(svc, "candidate") + "/health")
        missing = http.get(tag_uri(svc, "candidate") + "/no-such-path")
    assert missing.status_code == 404
    data = emu.admin("GET", f"/flightcheck/v1/services/mathcoach/metrics?since={since}").json()
    b = data["revisions"]["mathcoach-b"]
    assert b["requests"] == 11 and b["status_codes"] == {"200": 10, "404": 1}
    assert b["errors_5xx"] == 0 and b["error_rate"] == 0
    assert 0 < b["p50_ms"] <= b["p95_ms"] <= b["p99_ms"]
    assert data["revisions"]["mathcoach-a"]["requests"] == 0
    tags_only = emu.admin("GET", f"/flightcheck/v1/services/mathcoach/metrics?since={since}"
                                 "&via=service").json()
    assert tags_only["revisions"]["mathcoach-b"]["requests"] == 0


def test_revision_crashing_at_start_fails_with_its_reason_and_gets_no_traffic(
        emu: Clients, image: str) -> None:
    svc = _service(emu)
    before = [(s.revision, s.percent, s.tag) for s in svc.traffic_statuses]
    svc.template = template(image, "mathcoach-crash", env={"FAULT_CRASH_ON_START": "1"})
    svc.traffic = by_revision(("mathcoach-a", 70, ""), ("mathcoach-b", 30, ""),
                              ("mathcoach-crash", 0, "candidate"))
    with pytest.raises(exceptions.FailedPrecondition) as caught:  # the operation's error
        emu.services.update_service(service=svc).result(timeout=OP_TIMEOUT)
    assert "mathcoach-crash" in str(caught.value) and "exited with code" in str(caught.value)
    rev = emu.revisions.get_revision(name=f"{NAME}/revisions/mathcoach-crash")
    ready = next(c for c in rev.conditions if c.type_ == "Ready")
    assert ready.state == run_v2.Condition.State.CONDITION_FAILED
    assert ready.revision_reason == run_v2.Condition.RevisionReason.HEALTH_CHECK_CONTAINER_ERROR
    assert "exited with code" in ready.message
    svc = _service(emu)
    assert svc.terminal_condition.state == run_v2.Condition.State.CONDITION_FAILED
    assert svc.latest_ready_revision.endswith("/mathcoach-b")
    assert [(s.revision, s.percent, s.tag) for s in svc.traffic_statuses] == before
    assert "mathcoach-crash" not in _served_by(svc.uri, 30)
    logs = emu.admin("GET", "/flightcheck/v1/revisions/mathcoach-crash/logs?tail=50").json()
    assert logs["state"] == "failed" and "FAULT_CRASH_ON_START" in logs["logs"]


def test_revision_over_its_memory_limit_fails_as_oom(emu: Clients, image: str) -> None:
    svc = _service(emu)
    svc.template = template(image, "mathcoach-hog", env={"FAULT_STARTUP_ALLOC_MB": "400"},
                            memory="256Mi")
    with pytest.raises(exceptions.GoogleAPICallError, match="Memory limit of 256Mi exceeded"):
        emu.services.update_service(service=svc).result(timeout=OP_TIMEOUT)


def test_stale_etag_is_refused(emu: Clients) -> None:
    svc = _service(emu)
    svc.traffic = by_revision(("mathcoach-a", 70, ""), ("mathcoach-b", 30, "candidate"))
    svc = emu.services.update_service(service=svc).result(timeout=OP_TIMEOUT)
    stale = svc.etag
    svc.annotations["note"] = "first writer"
    fresh = emu.services.update_service(service=svc).result(timeout=OP_TIMEOUT)
    assert fresh.etag != stale
    assert len(list(emu.revisions.list_revisions(parent=NAME))) == 4  # annotations: no revision
    svc.annotations["note"] = "second writer"
    svc.etag = stale
    with pytest.raises(exceptions.Conflict, match="etag") as caught:
        emu.services.update_service(service=svc)
    assert _status(caught.value) == "ABORTED"


def test_errors_map_to_the_client_exceptions(emu: Clients, image: str) -> None:
    with pytest.raises(exceptions.NotFound):
        emu.services.get_service(name=f"{PARENT}/services/nope")
    with pytest.raises(exceptions.Conflict) as conflict:
        emu.services.create_service(parent=PARENT, service_id="mathcoach",
                                    service=run_v2.Service(template=template(image, "mathcoach-z")))
    assert _status(conflict.value) == "ALREADY_EXISTS"
    with pytest.raises(exceptions.BadRequest, match="by digest") as bad:
        emu.services.create_service(parent=PARENT, service_id="tagged", service=run_v2.Service(
            template=template("127.0.0.1:5000/fctest-local/mathcoach:latest", "tagged-a")))
    assert _status(bad.value) == "INVALID_ARGUMENT"
    assert emu.admin("POST", "/flightcheck/v1/faults", json={"status": 429, "count": 1}
                     ).status_code == 200
    with pytest.raises(exceptions.TooManyRequests, match="Quota exceeded"):
        emu.services.get_service(name=NAME, retry=None)
    emu.admin("POST", "/flightcheck/v1/faults", json={"status": 503, "count": 1})
    with pytest.raises(exceptions.ServiceUnavailable):
        emu.services.get_service(name=NAME, retry=None)
    assert emu.services.get_service(name=NAME, retry=None).name == NAME  # the knob ran out


def test_iam_policy_get_set_and_a_caller_without_permission(emu: Clients) -> None:
    policy = emu.services.get_iam_policy(request=iam_policy_pb2.GetIamPolicyRequest(resource=NAME))
    assert not policy.bindings
    policy.bindings.append(policy_pb2.Binding(role="roles/run.invoker", members=["allUsers"]))
    emu.services.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(resource=NAME,
                                                                           policy=policy))
    got = emu.services.get_iam_policy(request=iam_policy_pb2.GetIamPolicyRequest(resource=NAME))
    assert [(b.role, list(b.members)) for b in got.bindings] == [("roles/run.invoker",
                                                                  ["allUsers"])]
    emu.admin("POST", "/flightcheck/v1/permissions", json={"deny": ["run.services.setIamPolicy"]})
    try:
        with pytest.raises(exceptions.Forbidden, match="run.services.setIamPolicy") as denied:
            emu.services.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(
                resource=NAME, policy=got))
        assert _status(denied.value) == "PERMISSION_DENIED"
    finally:
        emu.admin("POST", "/flightcheck/v1/permissions", json={"deny": []})


def test_traffic_back_to_an_old_revision_and_delete_rules(emu: Clients) -> None:
    svc = _service(emu)
    svc.traffic = by_revision(("mathcoach-a", 100, ""))
    svc = emu.services.update_service(service=svc).result(timeout=OP_TIMEOUT)
    assert _served_by(svc.uri, 10) == Counter({"mathcoach-a": 10})
    assert not [s for s in svc.traffic_statuses if s.tag]  # the tag URL is gone
    with pytest.raises(exceptions.BadRequest, match="receiving traffic") as refused:
        emu.revisions.delete_revision(name=f"{NAME}/revisions/mathcoach-a")
    assert _status(refused.value) == "FAILED_PRECONDITION"
    emu.revisions.delete_revision(name=f"{NAME}/revisions/mathcoach-crash").result(
        timeout=OP_TIMEOUT)
    names = {r.name.rsplit("/", 1)[-1] for r in emu.revisions.list_revisions(parent=NAME)}
    assert "mathcoach-crash" not in names and "mathcoach-a" in names


def test_an_instance_that_dies_is_replaced(emu: Clients, docker_client: Any) -> None:
    before = emu.admin("GET", "/flightcheck/v1/revisions/mathcoach-a").json()["container"]
    docker_client.containers.get(before).kill()
    deadline = time.monotonic() + 120
    now = before
    while time.monotonic() < deadline:
        now = emu.admin("GET", "/flightcheck/v1/revisions/mathcoach-a").json()["container"]
        if now and now != before:
            break
        time.sleep(0.2)
    assert now and now != before, "the dead instance was not replaced"
    assert _served_by(_service(emu).uri, 5) == Counter({"mathcoach-a": 5})


def test_delete_service_removes_its_containers(emu: Clients, state_dir: Path) -> None:
    assert local.containers(state_dir)
    emu.services.delete_service(name=NAME).result(timeout=OP_TIMEOUT)
    with pytest.raises(exceptions.NotFound):
        emu.services.get_service(name=NAME)
    assert local.containers(state_dir) == []
