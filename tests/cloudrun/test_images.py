"""Images go by digest: a real push to the local registry (Debian's docker-registry on
127.0.0.1:5000, started by scripts/provision.sh), the digest confirmed by the registry itself."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest
from config_support import REPO_CONFIG

from flightcheck.cloudrun import images
from flightcheck.config import load
from flightcheck.secrets import Redactor

REPO = Path(__file__).resolve().parents[2]


def test_references_by_digest_only() -> None:
    digest = "sha256:" + "0" * 64
    assert images.by_digest(f"r.io/a/b:tag@{digest}") == f"r.io/a/b@{digest}"
    assert images.by_digest(f"127.0.0.1:5000/b@{digest}") == f"127.0.0.1:5000/b@{digest}"
    for bad in ("r.io/a/b:latest", "r.io/a/b@sha256:abc", "r.io/a/b@md5:" + "0" * 64):
        with pytest.raises(ValueError, match="not an image by digest"):
            images.by_digest(bad)


def test_the_repository_of_each_target(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(images.REGISTRY_ENV, raising=False)
    config = load(REPO_CONFIG, environ={}).config
    assert images.repository_for(config) == "127.0.0.1:5000/mathcoach"
    monkeypatch.setenv(images.REGISTRY_ENV, "127.0.0.1:5999")
    assert images.repository_for(config) == "127.0.0.1:5999/mathcoach"
    file = tmp_path / "flightcheck.toml"
    file.write_text('[service]\nname = "api"\n[deploy]\ntarget = "cloudrun"\nproject = "acme"\n'
                    'region = "us-central1"\n')
    assert images.repository_for(load(file, environ={}).config) == (
        "us-central1-docker.pkg.dev/acme/flightcheck/api")


def test_no_registry_is_a_clear_error_before_any_push() -> None:
    with pytest.raises(images.PushFailed) as info:
        anyio.run(images.check_registry, "127.0.0.1:9/nothing")
    assert "no container registry answers at 127.0.0.1:9" in info.value.what
    assert "scripts/provision.sh" in info.value.fix


@pytest.mark.docker
def test_push_to_the_local_registry_resolves_the_digest_the_registry_serves(
    docker_client: object,
) -> None:
    from flightcheck.runtimes.docker import DockerRuntime

    runtime = DockerRuntime(name="mathcoach")
    built = anyio.run(runtime.build, REPO, "Dockerfile")
    repo = f"{images.local_registry()}/fctest-images/mathcoach"
    lines: list[str] = []
    pushed = anyio.run(lambda: images.push(runtime.client, built.ref, repo, tag="t1",
                                           redactor=Redactor(), log=lines.append))
    assert pushed.ref == f"{repo}@{pushed.digest}" and pushed.digest.startswith("sha256:")
    host, _, path = repo.partition("/")
    resp = httpx.head(f"http://{host}/v2/{path}/manifests/t1", trust_env=False, timeout=10,
                      headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    assert resp.status_code == 200 and resp.headers["Docker-Content-Digest"] == pushed.digest
    assert any("digest" in line for line in lines)
    # the registry tag was only the way out: the engine keeps just its own tag
    assert f"{repo}:t1" not in {t for i in runtime.client.images.list() for t in i.tags}
    again = anyio.run(lambda: images.push(runtime.client, built.ref, repo, tag="t2"))
    assert again.digest == pushed.digest  # same image, same digest


@pytest.mark.docker
def test_pushing_an_image_the_engine_does_not_have_fails_clearly(docker_client: object) -> None:
    from flightcheck.runtimes.docker import DockerRuntime

    runtime = DockerRuntime(name="mathcoach")
    with pytest.raises(images.PushFailed, match="is not in the Docker engine"):
        anyio.run(lambda: images.push(runtime.client, "flightcheck/nope:0", "127.0.0.1:5000/x",
                                      tag="t"))
