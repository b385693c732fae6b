"""Images go by digest, never by tag: push the build stage's image, resolve its digest, and
deploy ``REGISTRY/NAME@sha256:…`` — so the revision runs exactly what was checked.

- ``local``: the registry on ``127.0.0.1:5000`` (Debian's ``docker-registry``, started by
  ``scripts/provision.sh``; ``FLIGHTCHECK_LOCAL_REGISTRY`` or ``[deploy].registry`` overrides);
- ``cloudrun``: Artifact Registry, ``REGION-docker.pkg.dev/PROJECT/flightcheck`` by default,
  logged in as ``oauth2accesstoken`` with an access token from google-auth (the token never
  reaches a log, a report or an error).

Pushing talks to the Docker Engine API (the docker SDK), like the docker runtime does.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import httpx

from flightcheck.cloudrun.spec import service_name
from flightcheck.config import Config
from flightcheck.errors import FlightcheckError
from flightcheck.secrets import Redactor

LOCAL_REGISTRY = "127.0.0.1:5000"
REGISTRY_ENV = "FLIGHTCHECK_LOCAL_REGISTRY"
AR_USER = "oauth2accesstoken"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_MANIFESTS = ", ".join((
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
))


class PushFailed(FlightcheckError):
    """The image could not be pushed or its digest not resolved."""


@dataclass(frozen=True)
class Pushed:
    repository: str  # REGISTRY/PATH/NAME
    tag: str
    digest: str  # sha256:…

    @property
    def ref(self) -> str:
        """What the revision runs: by digest."""
        return f"{self.repository}@{self.digest}"


def local_registry(configured: str | None = None) -> str:
    return configured or os.environ.get(REGISTRY_ENV) or LOCAL_REGISTRY


def artifact_registry(region: str, project: str, repository: str = "flightcheck") -> str:
    return f"{region}-docker.pkg.dev/{project}/{repository}"


def repository_for(config: Config) -> str:
    """``REGISTRY/SERVICE`` the built image goes to: ``[deploy].registry``, else the local
    registry (local target) or the project's Artifact Registry repository ``flightcheck``."""
    d = config.deploy
    base = d.registry or (local_registry() if d.target == "local" else
                          artifact_registry(d.region, d.project or ""))
    return f"{base.rstrip('/')}/{service_name(config)}"


def by_digest(ref: str) -> str:
    """``REGISTRY/NAME[:TAG]@sha256:…`` → ``REGISTRY/NAME@sha256:…``; ValueError otherwise."""
    name, at, digest = ref.partition("@")
    if not at or not _DIGEST.fullmatch(digest):
        raise ValueError(f"{ref!r} is not an image by digest (REGISTRY/NAME@sha256:<64 hex>)")
    last = name.rsplit("/", 1)
    if ":" in last[-1]:
        name = name.rpartition(":")[0]
    return f"{name}@{digest}"


def google_token(redactor: Redactor | None = None) -> str:
    """An OAuth access token from Application Default Credentials, for ``docker login`` to
    Artifact Registry as ``oauth2accesstoken``."""
    import google.auth
    import google.auth.transport.requests
    from google.auth.exceptions import DefaultCredentialsError, RefreshError

    try:
        creds, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
        creds.refresh(google.auth.transport.requests.Request())  # type: ignore[no-untyped-call]
    except (DefaultCredentialsError, RefreshError) as exc:
        raise PushFailed(
            "no Google credentials to push to Artifact Registry",
            why=str(exc).splitlines()[0] if str(exc) else "Application Default Credentials "
            "found nothing",
            fix="gcloud auth application-default login, GOOGLE_APPLICATION_CREDENTIALS=key.json, "
            "or Workload Identity Federation in CI (docs/deploy.md)",
        ) from None
    token = str(getattr(creds, "token", "") or "")
    if redactor is not None:
        redactor.add(token)
    return token


def registry_host(repository: str) -> str:
    return repository.split("/", 1)[0]


async def check_registry(repository: str) -> None:
    """A plain-HTTP registry on this machine must answer ``/v2/`` before we push to it."""
    host = registry_host(repository)
    if not host.startswith(("127.", "localhost")):
        return
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=5.0) as client:
            resp = await client.get(f"http://{host}/v2/")
    except httpx.HTTPError as exc:
        raise PushFailed(
            f"no container registry answers at {host}: {type(exc).__name__}",
            why="the local deploy target pushes the built image there and deploys it by digest",
            fix=f"run scripts/provision.sh (it starts Debian's docker-registry on {LOCAL_REGISTRY}),"
            f" or point {REGISTRY_ENV} / [deploy].registry at a registry that runs",
            repro=f"curl -s http://{host}/v2/",
        ) from None
    if resp.status_code not in (200, 401):
        raise PushFailed(f"{host}/v2/ answered HTTP {resp.status_code}: not a registry",
                         fix=f"point {REGISTRY_ENV} at a Docker registry (v2 API)")


def _push(client: Any, source: str, repository: str, tag: str,
          auth: dict[str, str] | None, redact: Callable[[str], str],
          log: Callable[[str], None]) -> str:
    import docker.errors

    try:
        image = client.images.get(source)
    except docker.errors.ImageNotFound:
        raise PushFailed(f"image {source} is not in the Docker engine",
                         fix="run the build stage first (flightcheck deploy builds it)") from None
    image.tag(repository, tag)
    digest = ""
    error = ""
    try:
        for event in client.api.push(repository, tag=tag, stream=True, decode=True,
                                     auth_config=auth):
            if "error" in event:
                error = redact(str(event.get("error")))
            aux = event.get("aux") or {}
            if isinstance(aux, dict) and _DIGEST.fullmatch(str(aux.get("Digest", ""))):
                digest = str(aux["Digest"])
            status = event.get("status")
            if status and event.get("progressDetail") in (None, {}) and "id" not in event:
                log(redact(str(status)))
    except docker.errors.APIError as exc:
        error = redact(str(exc.explanation or exc))
    finally:
        try:  # the registry tag was only the way out; the built image keeps its own tag
            client.images.remove(f"{repository}:{tag}", noprune=True)
        except docker.errors.APIError:
            pass
    if error or not digest:
        raise PushFailed(
            f"pushing {repository}:{tag} failed: {error or 'the engine reported no digest'}",
            why="the image must be in the registry, by digest, before a revision can use it",
            fix="check the registry is reachable and that you may push to it (Artifact "
            "Registry: roles/artifactregistry.writer)",
        )
    return digest


async def push(client: Any, source: str, repository: str, *, tag: str,
               auth: dict[str, str] | None = None, redactor: Redactor | None = None,
               log: Callable[[str], None] | None = None) -> Pushed:
    """Tag ``source`` (a local image) as ``repository:tag``, push it, and return it by digest.
    The digest is confirmed with the registry itself when it is a local plain-HTTP one."""
    redact = redactor or Redactor()
    say = log or (lambda _line: None)
    await check_registry(repository)
    digest = await anyio.to_thread.run_sync(
        lambda: _push(client, source, repository, tag, auth, redact, say))
    await _confirm(repository, digest)
    return Pushed(repository=repository, tag=tag, digest=digest)


async def _confirm(repository: str, digest: str) -> None:
    host, _, path = repository.partition("/")
    if not host.startswith(("127.", "localhost")):
        return
    async with httpx.AsyncClient(trust_env=False, timeout=10.0) as client:
        resp = await client.head(f"http://{host}/v2/{path}/manifests/{digest}",
                                 headers={"Accept": _MANIFESTS})
    if resp.status_code != 200:
        raise PushFailed(f"the registry does not have {repository}@{digest} after the push "
                         f"(HTTP {resp.status_code})",
                         fix=f"look at the registry at {host} (its storage, its log)")


def main(argv: list[str] | None = None) -> int:
    """``python -m flightcheck.cloudrun.images repository|token``: what the Dagger module asks
    the library (it holds no deploy logic itself)."""
    import argparse
    import sys
    from pathlib import Path

    from flightcheck import config as config_mod

    parser = argparse.ArgumentParser(prog="python -m flightcheck.cloudrun.images")
    sub = parser.add_subparsers(dest="command", required=True)
    repo = sub.add_parser("repository", help="print REGISTRY/SERVICE the image is pushed to")
    repo.add_argument("--config", type=Path)
    repo.add_argument("--target", choices=("cloudrun", "local"), default="cloudrun",
                      help="the deploy target whose registry (default: cloudrun)")
    token = sub.add_parser("token", help="write an Artifact Registry access token to a file")
    token.add_argument("--output", type=Path, required=True,
                       help="the file to write it to (never stdout: logs must not show it)")
    args = parser.parse_args(argv)
    try:
        if args.command == "repository":
            loaded = config_mod.load(args.config, overrides={"deploy.target": (args.target,
                                                                               "--target")})
            print(repository_for(loaded.config))
        else:
            args.output.write_text(google_token(), encoding="utf-8")
            args.output.chmod(0o600)
    except FlightcheckError as exc:
        print(exc.render(), file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

