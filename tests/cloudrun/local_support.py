"""Helpers for the local Cloud Run tests: the mathcoach image pushed by digest, clients, templates.

Imported by tests/cloudrun/test_local_*.py (never a conftest: several exist)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
from config_support import REPO_CONFIG
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import run_v2
from invoker_support import InvokerAuth
from mathcoach_support import REPO

from flightcheck.cloudrun import images, local, spec
from flightcheck.cloudrun.client import Connection, RunV2
from flightcheck.config import load

PARENT = "projects/fc-test/locations/europe-west1"
FAKE_MODEL_PORT = 8929


def push_mathcoach(repository: str = "fctest-local/mathcoach") -> str:
    """Build the reference image with flightcheck's docker runtime (the build stage's way: cached
    by content), tag and push it to the local registry; its ``REGISTRY/REPO@sha256:…``."""
    from flightcheck.runtimes.docker import DockerRuntime

    runtime = DockerRuntime(name="mathcoach")
    image = anyio.run(runtime.build, REPO, "Dockerfile")
    return push(runtime.client, image.ref, repository)


@contextlib.contextmanager
def rollout_api(state: Path, service: str) -> Iterator[RunV2]:
    """The local Cloud Run (state in ``state``) through flightcheck's own client, aimed at
    ``service``; stopped afterwards, leaving no container."""
    endpoint = local.ensure_running(state, runtime="docker")
    region = load(REPO_CONFIG, environ={}).config.deploy.region
    try:
        yield RunV2(spec.Target("local", region, service), Connection(endpoint, anonymous=True))
    finally:
        local.stop(state)
        assert local.containers(state) == []


def push_with_flightcheck(repository: str, tag: str) -> str:
    """The reference image built by the docker runtime and pushed by flightcheck's own
    ``images.push`` (what the deploy stage does); its ``REGISTRY/REPO@sha256:…``."""
    from flightcheck.runtimes.docker import DockerRuntime

    runtime = DockerRuntime(name="mathcoach")
    built = anyio.run(runtime.build, REPO, "Dockerfile")
    pushed = anyio.run(lambda: images.push(runtime.client, built.ref,
                                           f"{images.local_registry()}/{repository}", tag=tag))
    return pushed.ref


def push(client: Any, image_ref: str, repository: str, tag: str = "test") -> str:
    try:
        httpx.get(f"http://{local.registry()}/v2/", timeout=3, trust_env=False)
    except httpx.TransportError:
        import pytest

        pytest.skip(f"no registry answers at {local.registry()}: run scripts/provision.sh "
                    "(it starts Debian's docker-registry there)")
    target = f"{local.registry()}/{repository}"
    client.images.get(image_ref).tag(target, tag=tag)
    digest = ""
    for event in client.images.push(target, tag=tag, stream=True, decode=True):
        if "error" in event:
            raise AssertionError(f"push of {target}:{tag} failed: {event['error']}")
        digest = (event.get("aux") or {}).get("Digest", digest)
    assert digest.startswith("sha256:"), "the registry gave no digest"
    with contextlib.suppress(Exception):
        client.images.remove(f"{target}:{tag}")  # the digest reference is what deploys use
    return f"{target}@{digest}"


# A minimal HTTP server revision (stdlib only): answers every request with a small JSON.
STATIC_SERVER = r"""
import asyncio, os
BODY = b'{"status":"ok"}'
RESP = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
        % (len(BODY), BODY))
class Serve(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buf = transport, b""
    def data_received(self, data):
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            _, self.buf = self.buf.split(b"\r\n\r\n", 1)
            self.transport.write(RESP)
async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Serve, os.environ.get("HOST", "0.0.0.0"),
                                      int(os.environ.get("PORT", "8080")))
    await server.serve_forever()
asyncio.run(main())
"""
STATIC_DOCKERFILE = """\
FROM python:3.11-slim
COPY static_server.py /srv/static_server.py
USER 10001
CMD ["python", "/srv/static_server.py"]
"""




def push_static(work: Path, repository: str, label: str = "") -> str:
    """Build an image of STATIC_SERVER in ``work`` (``label`` makes it unique) and push it."""
    from flightcheck.runtimes.docker import DockerRuntime

    (work / "static_server.py").write_text(STATIC_SERVER)
    (work / "Dockerfile").write_text(STATIC_DOCKERFILE + (f'LABEL fc.test="{label}"\n'
                                                          if label else ""))
    runtime = DockerRuntime(name="fctest-static")
    image = anyio.run(runtime.build, work, "Dockerfile")
    return push(runtime.client, image.ref, repository)


@dataclass
class Clients:
    api: str
    services: run_v2.ServicesClient
    revisions: run_v2.RevisionsClient

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, self.api + path, timeout=30, trust_env=False, **kwargs)


def clients(api: str) -> Clients:
    """The official client, REST transport, plain-HTTP endpoint, anonymous credentials."""
    opts = ClientOptions(api_endpoint=api)
    creds = AnonymousCredentials()
    return Clients(api, run_v2.ServicesClient(credentials=creds, transport="rest",
                                              client_options=opts),
                   run_v2.RevisionsClient(credentials=creds, transport="rest",
                                          client_options=opts))


def template(image: str, revision: str, *, env: Mapping[str, str] | None = None,
             memory: str = "512Mi", startup_path: str = "/health/startup",
             threshold: int = 60, fake_model: bool = True) -> run_v2.RevisionTemplate:
    """A mathcoach revision as the rollout would send it (fake model beside it)."""
    all_env = dict(env or {})
    annotations: dict[str, str] = {}
    if fake_model:
        annotations["run.flightcheck.dev/fake-model-port"] = str(FAKE_MODEL_PORT)
        all_env.setdefault("OPENAI_BASE_URL", f"http://127.0.0.1:{FAKE_MODEL_PORT}/v1")
        all_env.setdefault("OPENAI_API_KEY", "fc-placeholder-key")
        all_env.setdefault("AI_PROVIDER", "openai")
    return run_v2.RevisionTemplate(
        revision=revision,
        annotations=annotations,
        containers=[run_v2.Container(
            image=image,
            env=[run_v2.EnvVar(name=k, value=v) for k, v in all_env.items()],
            ports=[run_v2.ContainerPort(container_port=8080)],
            resources=run_v2.ResourceRequirements(limits={"memory": memory, "cpu": "1"}),
            startup_probe=run_v2.Probe(http_get=run_v2.HTTPGetAction(path=startup_path),
                                       period_seconds=1, timeout_seconds=1,
                                       failure_threshold=threshold),
        )],
    )


def by_revision(*targets: tuple[str, int, str]) -> list[run_v2.TrafficTarget]:
    return [run_v2.TrafficTarget(type_=run_v2.TrafficTargetAllocationType.
                                 TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION,
                                 revision=rev, percent=pct, tag=tag)
            for rev, pct, tag in targets]


def tag_uri(svc: run_v2.Service, tag: str) -> str:
    for status in svc.traffic_statuses:
        if status.tag == tag:
            return status.uri
    raise AssertionError(f"no traffic status with tag {tag}: {svc.traffic_statuses}")


@contextlib.contextmanager
def emulator(state_dir: Path, runtime: str = "docker") -> Iterator[Clients]:
    """A background emulator for a test module; stopped (and checked clean) afterwards."""
    api = local.ensure_running(state_dir, runtime=runtime)
    _STATES.append(Path(state_dir))
    try:
        yield clients(api)
    finally:
        local.stop(state_dir)


def source_template(revision: str, *, env: Mapping[str, str] | None = None,
                    **kwargs: Any) -> run_v2.RevisionTemplate:
    """A mathcoach revision for the process runtime (no Docker): run from this checkout."""
    tmpl = template("mathcoach:source", revision, env=env, fake_model=False, **kwargs)
    tmpl.annotations["run.flightcheck.dev/source"] = str(REPO / "src")
    tmpl.containers[0].command = ["python", "-m", "mathcoach"]
    return tmpl


def error_status(exc: Exception) -> str:
    """The canonical status in Google's error body (the REST client maps by HTTP code only:
    409 is Conflict whether ABORTED or ALREADY_EXISTS, 400 is BadRequest, 403 Forbidden)."""
    response = getattr(exc, "response", None)
    assert response is not None, exc
    return response.json()["error"]["status"]


def state_of(api: str) -> Path:
    """The state directory of the local Cloud Run answering at ``api``."""
    return Path(httpx.get(api + "/flightcheck/v1/status", timeout=10,
                          trust_env=False).json()["state_dir"])


_STATES: list[Path] = []


def deployer_auth() -> InvokerAuth:
    """The deployer's ID token for the local Cloud Run ``emulator()`` started last: services
    made through the API without an allUsers binding are private, as on Google's."""
    assert _STATES, "no emulator() started"
    return InvokerAuth(_STATES[-1])
