"""The local Cloud Run's run_v2 semantics through the official client, revisions as host
processes (the process runtime: no Docker needed, each revision starts in about a second)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from google.api_core import exceptions
from google.cloud import run_v2
from google.longrunning import operations_pb2
from google.protobuf import field_mask_pb2
from local_support import (
    PARENT,
    Clients,
    by_revision,
    deployer_auth,
    emulator,
    error_status,
    source_template,
)

pytestmark = pytest.mark.slow
OP_TIMEOUT = 120


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clients]:
    with emulator(tmp_path_factory.mktemp("emulator"), runtime="process") as clients:
        yield clients


def _create(emu: Clients, service_id: str, revision: str, **kwargs: object) -> run_v2.Service:
    op = emu.services.create_service(parent=PARENT, service_id=service_id,
                                     service=run_v2.Service(template=source_template(revision),
                                                            **kwargs))
    return op.result(timeout=OP_TIMEOUT)


_HTTP = httpx.Client(timeout=20, trust_env=False)  # one client: building one costs ~50 ms


def _revision_of(url: str) -> str:
    resp = _HTTP.get(url + "/health", auth=deployer_auth())
    assert resp.status_code == 200, resp.text
    return resp.headers["x-flightcheck-revision"]


def test_validate_only_changes_nothing_and_allow_missing_creates(emu: Clients) -> None:
    op = emu.services.create_service(request=run_v2.CreateServiceRequest(
        parent=PARENT, service_id="dry", validate_only=True,
        service=run_v2.Service(template=source_template("dry-a"))))
    assert op.result(timeout=OP_TIMEOUT).template.revision == "dry-a"
    with pytest.raises(exceptions.NotFound):
        emu.services.get_service(name=f"{PARENT}/services/dry")
    svc = emu.services.update_service(request=run_v2.UpdateServiceRequest(
        service=run_v2.Service(name=f"{PARENT}/services/upsert",
                               template=source_template("upsert-a")),
        allow_missing=True)).result(timeout=OP_TIMEOUT)
    assert svc.latest_ready_revision.endswith("/upsert-a") and svc.generation == 1
    with pytest.raises(exceptions.NotFound):
        emu.services.update_service(service=run_v2.Service(
            name=f"{PARENT}/services/absent", template=source_template("absent-a")))


def test_invalid_services_are_refused_before_anything_runs(emu: Clients) -> None:
    cases = {
        "must be prefixed": source_template("other-a"),
        "must not exceed periodSeconds": source_template("bad-a"),
        "not a memory quantity": source_template("bad-b", memory="1GB"),
    }
    cases["must not exceed periodSeconds"].containers[0].startup_probe.timeout_seconds = 30
    cases["must not exceed periodSeconds"].containers[0].startup_probe.period_seconds = 10
    for message, tmpl in cases.items():
        with pytest.raises(exceptions.BadRequest, match=message) as caught:
            emu.services.create_service(parent=PARENT, service_id="bad",
                                        service=run_v2.Service(template=tmpl))
        assert error_status(caught.value) == "INVALID_ARGUMENT"
    with pytest.raises(exceptions.BadRequest, match="sum to 100"):
        emu.services.create_service(parent=PARENT, service_id="bad", service=run_v2.Service(
            template=source_template("bad-c"), traffic=by_revision(("bad-c", 50, ""))))
    with pytest.raises(exceptions.BadRequest, match="Invalid service id"):
        emu.services.create_service(parent=PARENT, service_id="Bad_Name",
                                    service=run_v2.Service(template=source_template("x-a")))
    assert not [s for s in emu.services.list_services(parent=PARENT) if "bad" in s.name]


def test_update_mask_and_generated_revision_names(emu: Clients) -> None:
    svc = _create(emu, "masked", "masked-a", labels={"team": "ai"})
    svc.labels["team"] = "ml"
    svc.template = source_template("masked-ignored", env={"X": "1"})
    masked = emu.services.update_service(request=run_v2.UpdateServiceRequest(
        service=svc, update_mask=field_mask_pb2.FieldMask(paths=["labels"]))
    ).result(timeout=OP_TIMEOUT)
    assert masked.labels["team"] == "ml"
    assert masked.template.revision == "masked-a"  # not in the mask: unchanged, no revision
    assert len(list(emu.revisions.list_revisions(parent=svc.name))) == 1
    masked.template = source_template("", env={"X": "2"})
    generated = emu.services.update_service(service=masked).result(timeout=OP_TIMEOUT)
    short = generated.latest_ready_revision.rsplit("/", 1)[-1]
    assert short.startswith(f"masked-{generated.generation:05d}-")
    assert _revision_of(generated.uri) == short
    generated.template = source_template("masked-a", env={"X": "3"})
    with pytest.raises(exceptions.Conflict, match="different configuration") as caught:
        emu.services.update_service(service=generated)
    assert error_status(caught.value) == "ALREADY_EXISTS"


def test_unknown_revision_in_traffic_is_refused(emu: Clients) -> None:
    svc = emu.services.get_service(name=f"{PARENT}/services/masked")
    svc.traffic = by_revision(("masked-zzz", 100, ""))
    with pytest.raises(exceptions.BadRequest, match="does not exist"):
        emu.services.update_service(service=svc)


def test_operations_can_be_read_listed_and_waited_for(emu: Clients) -> None:
    svc = emu.services.get_service(name=f"{PARENT}/services/masked")
    svc.template = source_template("masked-w", env={"X": "w"})
    op = emu.services.update_service(service=svc)
    name = op.operation.name
    waited = emu.services.wait_operation(request=operations_pb2.WaitOperationRequest(name=name))
    assert waited.done and waited.response.type_url.endswith("google.cloud.run.v2.Service")
    got = emu.services.get_operation(request=operations_pb2.GetOperationRequest(name=name))
    assert got.done
    listed = emu.services.list_operations(request=operations_pb2.ListOperationsRequest(
        name=PARENT))
    assert name in {o.name for o in listed.operations}


def test_idle_revisions_scale_to_zero_and_come_back_with_traffic(emu: Clients) -> None:
    svc = _create(emu, "zero", "zero-a")
    for rev in ("zero-b", "zero-c"):
        svc.template = source_template(rev, env={"REV": rev})
        svc = emu.services.update_service(service=svc).result(timeout=OP_TIMEOUT)
    status = emu.admin("GET", "/flightcheck/v1/status").json()
    running = {i["revision"].rsplit("/", 1)[-1] for i in status["instances"]}
    assert {"zero-c", "zero-b"} <= running and "zero-a" not in running  # a: scaled to zero
    svc.traffic = by_revision(("zero-a", 50, "old"), ("zero-c", 50, ""))
    svc = emu.services.update_service(service=svc).result(timeout=OP_TIMEOUT)
    old = next(s.uri for s in svc.traffic_statuses if s.tag == "old")
    assert _revision_of(old) == "zero-a"
    seen = {_revision_of(svc.uri) for _ in range(40)}
    assert seen == {"zero-a", "zero-c"}


def test_list_services_pages(emu: Clients) -> None:
    pager = emu.services.list_services(request=run_v2.ListServicesRequest(parent=PARENT,
                                                                          page_size=1))
    names = [s.name.rsplit("/", 1)[-1] for s in pager]
    assert {"upsert", "masked", "zero"} <= set(names) and len(names) == len(set(names))


def test_malformed_requests_get_google_shaped_errors(emu: Clients) -> None:
    base = f"/v2/{PARENT}/services"
    cases = [
        ("POST", f"{base}?serviceId=x", {"content": b"{not json"}, 400, "INVALID_ARGUMENT"),
        ("POST", f"{base}?serviceId=x", {"json": {"tmplate": {}}}, 400, "INVALID_ARGUMENT"),
        ("GET", "/v2/nothing/here", {}, 404, "NOT_FOUND"),
        ("PUT", f"{base}/masked", {}, 405, "UNIMPLEMENTED"),
        ("GET", f"{base}/masked/revisions/none", {}, 404, "NOT_FOUND"),
        ("POST", "/flightcheck/v1/faults", {"json": {"status": 999}}, 400, "INVALID_ARGUMENT"),
        ("GET", "/flightcheck/v1/services/none/metrics", {}, 404, "NOT_FOUND"),
        ("GET", "/flightcheck/v1/services/masked/metrics?since=yesterday", {}, 400,
         "INVALID_ARGUMENT"),
    ]
    for method, path, kwargs, code, status in cases:
        resp = emu.admin(method, path, **kwargs)
        assert resp.status_code == code, (method, path, resp.text)
        error = resp.json()["error"]
        assert error["code"] == code and error["status"] == status and error["message"]
    unknown = emu.admin("POST", f"{base}?serviceId=x", json={"tmplate": {}}).json()
    assert "tmplate" in unknown["error"]["message"]


def test_an_instance_failing_its_liveness_probe_is_replaced(emu: Clients) -> None:
    tmpl = source_template("live-a")
    tmpl.containers[0].liveness_probe = run_v2.Probe(
        http_get=run_v2.HTTPGetAction(path="/no-such-liveness-path"), period_seconds=1,
        timeout_seconds=1, failure_threshold=2)
    svc = emu.services.create_service(parent=PARENT, service_id="live", service=run_v2.Service(
        template=tmpl)).result(timeout=OP_TIMEOUT)
    first = emu.admin("GET", "/flightcheck/v1/revisions/live-a").json()["endpoint"]
    deadline = time.monotonic() + 60
    now = first
    while time.monotonic() < deadline and now in (first, None):
        time.sleep(0.25)
        now = emu.admin("GET", "/flightcheck/v1/revisions/live-a").json()["endpoint"]
    assert now not in (first, None), "the instance failing its liveness probe was not replaced"
    emu.services.delete_service(name=svc.name).result(timeout=OP_TIMEOUT)
