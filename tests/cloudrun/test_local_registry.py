"""The local registry (Debian's docker-registry on 127.0.0.1:5000): images go in by push and
come back by digest — the emulator pulls a revision's image it does not have."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.api_core import exceptions
from google.cloud import run_v2
from local_support import PARENT, Clients, deployer_auth, emulator, push_static, template

from flightcheck.cloudrun import local

pytestmark = [pytest.mark.docker, pytest.mark.slow]
OP_TIMEOUT = 180


@pytest.fixture(scope="module")
def emu(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clients]:
    state = tmp_path_factory.mktemp("emulator")
    with emulator(state) as clients:
        yield clients
    assert local.containers(state) == []


def test_an_image_only_in_the_registry_is_pulled_by_digest(emu: Clients, docker_client: Any,
                                                            tmp_path: Path) -> None:
    unique = secrets.token_hex(6)
    ref = push_static(tmp_path, "fctest-local/static", label=unique)
    digest = ref.split("@", 1)[1]
    manifest = httpx.get(f"http://{local.registry()}/v2/fctest-local/static/manifests/{digest}",
                         headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
                         trust_env=False)
    assert manifest.status_code == 200 and manifest.headers["docker-content-digest"] == digest
    (image,) = docker_client.images.list(filters={"label": f"fc.test={unique}"})
    docker_client.images.remove(image.id, force=True)  # ours alone: its label is unique
    with pytest.raises(Exception, match="No such image|not found"):
        docker_client.images.get(ref)

    tmpl = template(ref, "pulled-a", fake_model=False, startup_path="/health")
    svc = emu.services.create_service(parent=PARENT, service_id="pulled",
                                      service=run_v2.Service(template=tmpl)).result(timeout=OP_TIMEOUT)
    resp = httpx.get(svc.uri + "/health", timeout=10, trust_env=False, auth=deployer_auth())
    assert resp.status_code == 200 and resp.headers["x-flightcheck-revision"] == "pulled-a"
    pulled = docker_client.images.get(ref)
    assert pulled.labels.get("fc.test") == unique
    emu.services.delete_service(name=svc.name).result(timeout=OP_TIMEOUT)
    docker_client.images.remove(pulled.id, force=True)


def test_an_image_missing_from_the_registry_fails_the_revision(emu: Clients) -> None:
    ref = f"{local.registry()}/fctest-local/static@sha256:{'0' * 64}"
    with pytest.raises(exceptions.FailedPrecondition, match="not found"):
        emu.services.create_service(
            parent=PARENT, service_id="missing",
            service=run_v2.Service(template=template(ref, "missing-a", fake_model=False))
        ).result(timeout=OP_TIMEOUT)
    rev = emu.revisions.get_revision(name=f"{PARENT}/services/missing/revisions/missing-a")
    ready = next(c for c in rev.conditions if c.type_ == "Ready")
    assert ready.reason == run_v2.Condition.CommonReason.CONTAINER_MISSING
    svc = emu.services.get_service(name=f"{PARENT}/services/missing")
    assert not svc.latest_ready_revision
    assert httpx.get(svc.uri, timeout=10, trust_env=False,
                     auth=deployer_auth()).status_code == 503  # nothing serves
