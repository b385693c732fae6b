"""Private Cloud Run services: the rollout's own requests carry a Google-style ID token.

The local Cloud Run enforces invoker IAM like Google's front end (401 without a valid token for
the service, 403 for a caller without roles/run.invoker) and is the issuer: service-account keys
whose ``token_uri`` is its Google-shaped token endpoint, so google-auth's own
``IDTokenCredentials`` path runs end to end. Real Docker, the real CLI, the real client.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from google.auth import crypt, jwt
from google.iam.v1 import policy_pb2
from local_support import InvokerAuth, emulator, push_static, template
from mathcoach_support import REPO

from flightcheck.cloudrun import local
from flightcheck.cloudrun.idtoken import IdTokens
from flightcheck.cloudrun.local.identity import DEPLOYER_KEY_FILE
from flightcheck.report import json_schema

pytestmark = [pytest.mark.docker]

PARENT = "projects/local/locations/europe-west1"
FAST = {
    "FLIGHTCHECK__DEPLOY__CANARY__STEP_DURATION_S": "0",
    "FLIGHTCHECK__DEPLOY__CANARY__REQUEST_RATE": "200",
    "FLIGHTCHECK__DEPLOY__CANARY__MIN_REQUESTS": "10",
    "FLIGHTCHECK__DEPLOY__CANARY__MAX_STEP_S": "60",
    "FLIGHTCHECK__DEPLOY__CANARY__STEPS": "[50, 100]",
    "FLIGHTCHECK__QUALITY__BASELINE": "/nonexistent/flightcheck-private-baseline.json",
    "FLIGHTCHECK__SMOKE__SUITE": "tests/fixtures/deploy/small-suite.yaml",
    "PYTHONUNBUFFERED": "1",
}
JWT_SHAPED = re.compile(r"eyJ[A-Za-z0-9_-]{8,}")


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    state = tmp_path_factory.mktemp("emulator-private")
    with emulator(state) as clients:
        clients.state = state  # type: ignore[attr-defined]  # pyright: ignore[reportAttributeAccessIssue]
        yield clients
    assert local.containers(state) == []


def _key(emu: Any, email: str, tmp_path: Path) -> Path:
    """A key file for ``email``, made by the local Cloud Run's IAM keys API."""
    resp = emu.admin("POST", f"/v1/projects/local/serviceAccounts/{email}/keys")
    assert resp.status_code == 200, resp.text
    path = tmp_path / f"{email.partition('@')[0]}.json"
    path.write_bytes(base64.b64decode(resp.json()["privateKeyData"]))
    return path


def _bind(emu: Any, service: str, *members: str) -> None:
    resource = f"{PARENT}/services/{service}"
    policy = emu.services.get_iam_policy(request={"resource": resource})
    policy.bindings.append(policy_pb2.Binding(role="roles/run.invoker", members=list(members)))
    emu.services.set_iam_policy(request={"resource": resource, "policy": policy})


# --- the proxy's invoker check, for real ------------------------------------------------------


def test_the_proxy_enforces_invoker_iam_with_verified_id_tokens(emu: Any, tmp_path: Path) -> None:
    from google.cloud import run_v2

    image = push_static(tmp_path, "fctest-private/static")
    svc = emu.services.create_service(parent=PARENT, service_id="priv-static", service=run_v2.Service(
        template=template(image, "priv-static-a", startup_path="/", fake_model=False))).result(
        timeout=120)
    url = svc.uri

    def get(headers: dict[str, str] | None = None, auth: httpx.Auth | None = None) -> int:
        return httpx.get(url + "/", headers=headers, auth=auth, timeout=10,
                         trust_env=False).status_code

    # no IAM binding for allUsers: private, like a new Cloud Run service without --allow-unauth
    assert get() == 401
    assert get({"Authorization": "Bearer not-a-token"}) == 401
    assert get(auth=InvokerAuth(emu.state)) == 200  # the deployer: a project-level invoker
    outsider = _key(emu, "outsider@local.iam.gserviceaccount.com", tmp_path)
    assert get(auth=InvokerAuth(key_file=outsider)) == 403
    _bind(emu, "priv-static", "serviceAccount:outsider@local.iam.gserviceaccount.com")
    assert get(auth=InvokerAuth(key_file=outsider)) == 200

    # tokens the issuer would never accept
    issuer = json.loads((emu.state / "identity" / "issuer.json").read_text())
    signer = crypt.RSASigner.from_string(issuer["private"], issuer["kid"])
    iss = emu.api.rstrip("/")
    now = int(time.time())
    good = {"iss": iss, "aud": url, "email": "outsider@local.iam.gserviceaccount.com",
            "iat": now, "exp": now + 600}

    def bearer(claims: dict[str, Any], s: crypt.RSASigner = signer) -> dict[str, str]:
        return {"Authorization": "Bearer " + jwt.encode(s, claims).decode()}

    assert get(bearer(good)) == 200  # the control: the same shape, valid, passes
    assert get(bearer({**good, "iat": now - 7200, "exp": now - 3600})) == 401  # expired
    assert get(bearer({**good, "aud": "http://127.0.0.1:1"})) == 401  # another audience
    assert get(bearer({**good, "iss": "https://accounts.example"})) == 401  # another issuer
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    forged = crypt.RSASigner.from_string(other, issuer["kid"])  # same key id, wrong key
    assert get(bearer(good, forged)) == 401
    answer = httpx.get(url + "/", timeout=10, trust_env=False)
    assert answer.headers.get("www-authenticate", "").startswith("Bearer")
    assert "x-flightcheck-revision" not in answer.headers  # no revision saw it

    # Canary traffic the front end turns away ends the step with an IAM reason, at once.
    assert _canary_reason(url, None).startswith("IAM: ")
    assert "401 Unauthorized" in _canary_reason(url, None)
    stranger = _key(emu, "canary-stranger@local.iam.gserviceaccount.com", tmp_path)
    denied = _canary_reason(url, IdTokens(key_file=stranger, redact=lambda _t: None))
    assert "403 Forbidden" in denied and "canary-stranger@local" in denied, denied
    assert _canary_reason(url, IdTokens(key_file=outsider, redact=lambda _t: None)) == ""

    _bind(emu, "priv-static", "allUsers")
    assert get() == 200  # public now


def _canary_reason(url: str, tokens: IdTokens | None) -> str:
    """One canary step through ``url`` as ``tokens``' identity: the rollback reason, or "" when
    the thresholds held."""
    import anyio

    from flightcheck.cloudrun.analysis import Analysis
    from flightcheck.cloudrun.idtoken import BearerAuth
    from flightcheck.cloudrun.rollout import StepPlan
    from flightcheck.lessons.rollback import Thresholds, decide
    from flightcheck.smoke.runner import Mode
    from flightcheck.smoke.suite import Case, Defaults, Expect, Request

    def auth(service_url: str, urls: list[str]) -> tuple[httpx.Auth, str] | None:
        if tokens is None:
            return None
        return BearerAuth(tokens, service_url, [service_url, *urls]), tokens.email(service_url)

    analysis = Analysis(
        cases=[Case(name="root", request=Request(path="/"), expect=Expect(), external=False)],
        mode=Mode("fake"),
        defaults=Defaults(), prices={}, request_timeout_s=10, request_rate=50, min_requests=5,
        step_duration_s=0, max_step_s=20, auth=auth)
    plan = StepPlan(index=1, percent=100, candidate="priv-static-a", stable=None,
                    service_url=url, candidate_url=None, stable_url=None)
    seen = anyio.run(analysis.run_step, plan,
                     lambda c, s: decide(c, baseline=s, thresholds=Thresholds()))
    return "; ".join(seen.decision.reasons) if seen.decision.rollback else ""


def test_the_token_endpoint_speaks_googles_jwt_bearer_grant(emu: Any, tmp_path: Path) -> None:
    key = _key(emu, "minter@local.iam.gserviceaccount.com", tmp_path)
    tokens = IdTokens(key_file=key, redact=lambda _t: None)
    started = time.perf_counter()
    token = tokens.token("http://127.0.0.1:4242")
    mint_s = time.perf_counter() - started
    assert tokens.token("http://127.0.0.1:4242") == token and tokens.minted == 1  # cached
    # sent only to the service's own URLs: never to the API, the fake model server, …
    from flightcheck.cloudrun.idtoken import BearerAuth

    auth = BearerAuth(tokens, "http://127.0.0.1:4242", ["http://127.0.0.1:4242/x"])
    elsewhere = httpx.get(emu.api + "/flightcheck/v1/status", auth=auth, trust_env=False,
                          timeout=10)
    assert elsewhere.status_code == 200 and "authorization" not in elsewhere.request.headers
    ours = httpx.Request("GET", "http://127.0.0.1:4242/health")
    assert next(auth.sync_auth_flow(ours)).headers["authorization"] == f"Bearer {token}"
    certs = httpx.get(emu.api + "/oauth2/v1/certs", timeout=10, trust_env=False).json()
    from google.oauth2 import id_token

    claims = id_token.verify_token(  # type: ignore[no-untyped-call]
        token, _Transport(), audience="http://127.0.0.1:4242",  # pyright: ignore[reportArgumentType]
        certs_url=emu.api + "/oauth2/v1/certs")
    assert claims["email"] == "minter@local.iam.gserviceaccount.com" and certs
    assert claims["exp"] - claims["iat"] == 3600
    print(f"ID token minted through google-auth in {mint_s * 1000:.0f} ms")
    # refreshed before expiry: a margin longer than the token's life mints again
    soon = IdTokens(key_file=key, redact=lambda _t: None, refresh_margin_s=4000)
    first = soon.token("http://127.0.0.1:4242")
    time.sleep(1.1)  # a new iat
    assert soon.token("http://127.0.0.1:4242") != first and soon.minted == 2
    # an assertion signed by a key the issuer does not know is refused with Google's error
    other = dict(json.loads(key.read_text()), private_key_id="0" * 40)
    (tmp_path / "unknown.json").write_text(json.dumps(other))
    with pytest.raises(Exception, match="invalid_grant"):
        IdTokens(key_file=tmp_path / "unknown.json", redact=lambda _t: None).token("http://x")


class _Transport:
    """google-auth's Request over httpx, loopback only (verify_token fetches the certs)."""

    def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Any = None,
                 timeout: Any = None, **_kw: Any) -> Any:
        import google.auth.transport.requests
        import requests

        session = requests.Session()
        session.trust_env = False
        return google.auth.transport.requests.Request(session)(url, method, body, headers,
                                                                timeout)


# --- deploys through the CLI ---------------------------------------------------------------------


def _deploy(emu: Any, tmp_path: Path, service: str, **env: str) -> tuple[int, str, dict[str, Any],
                                                                           Path]:
    report_dir = tmp_path / f"report-{time.monotonic_ns()}"
    full = {k: v for k, v in os.environ.items() if k != "GOOGLE_APPLICATION_CREDENTIALS"}
    proc = subprocess.run(
        [sys.executable, "-m", "flightcheck.cli", "deploy", "--api-endpoint", emu.api,
         "--report-dir", str(report_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=400, check=False,
        env={**full, **FAST, "FLIGHTCHECK__DEPLOY__SERVICE": service, **env})
    file = report_dir / "flightcheck-report.json"
    assert file.is_file(), f"no report (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    report = json.loads(file.read_text())
    jsonschema.validate(report, json_schema())
    stage = next(s for s in report["stages"] if s["name"] == "deploy")
    return proc.returncode, proc.stdout + proc.stderr, stage, report_dir


def _split(emu: Any, service: str) -> list[tuple[str, int]]:
    svc = emu.services.get_service(name=f"{PARENT}/services/{service}")
    return [(t.revision, t.percent) for t in svc.traffic if t.percent]


def _no_token_in(text: str, prefix: str, where: str) -> None:
    assert prefix not in text, f"an ID token's prefix is in {where}"
    assert not JWT_SHAPED.search(text), f"something JWT-shaped is in {where}"


def _token_prefix(emu: Any) -> str:
    """The first characters every ID token of this issuer starts with (its JWT header)."""
    return InvokerAuth(emu.state).tokens.token("http://127.0.0.1:1")[:24]


def _files_text(report_dir: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in report_dir.rglob("*") if p.is_file())


def test_a_private_service_is_rolled_out_with_a_service_account_key(
    emu: Any, tmp_path: Path
) -> None:
    # First deploy as the local Cloud Run's deployer (no GOOGLE_APPLICATION_CREDENTIALS).
    rc, out, stage, first_dir = _deploy(emu, tmp_path, "fc-private")
    assert rc == 0, out[-3000:]
    stable = stage["details"]["revision"]
    svc = emu.services.get_service(name=f"{PARENT}/services/fc-private")
    assert httpx.get(svc.uri + "/health", timeout=10, trust_env=False).status_code == 401
    # A CI service account with roles/run.invoker on the service, its key in ADC.
    key = _key(emu, "ci-deployer@local.iam.gserviceaccount.com", tmp_path)
    _bind(emu, "fc-private", "serviceAccount:ci-deployer@local.iam.gserviceaccount.com")
    started = time.perf_counter()
    rc, out, stage, report_dir = _deploy(emu, tmp_path, "fc-private",
                                         GOOGLE_APPLICATION_CREDENTIALS=str(key))
    seconds = time.perf_counter() - started
    assert rc == 0, out[-3000:]
    d = stage["details"]
    assert d["status"] == "promoted" and d["revision"] != stable, d["reason"]
    assert [(s["percent"], s["verdict"]) for s in d["steps"]] == [(50, "pass"), (100, "pass")]
    assert d["validation"]["health-poll"]["status"] == "pass"
    assert d["validation"]["ai-smoke"]["status"] == "pass"
    metrics = d["steps"][0]["metrics"][d["revision"]]
    assert metrics["requests"] >= 10 and metrics["statuses"].get("200", 0) == metrics["requests"]
    assert _split(emu, "fc-private") == [(d["revision"], 100)]
    measured = {m["name"]: m["value"] for m in stage["measurements"]}
    assert measured["id_tokens_minted"] >= 1 and measured["id_token_mint_ms"] > 0
    print(f"private deploy with a service-account key: {seconds:.1f} s, ID token minted in "
          f"{measured['id_token_mint_ms']} ms ({measured['id_tokens_minted']} minted)")
    prefix = _token_prefix(emu)
    for text, where in ((out, "the console"), (_files_text(report_dir), "the report dir"),
                        (_files_text(first_dir), "the first report dir")):
        _no_token_in(text, prefix, where)


def test_a_token_for_a_non_invoker_fails_with_an_iam_reason_and_moves_no_traffic(
    emu: Any, tmp_path: Path
) -> None:
    rc, out, stage, _ = _deploy(emu, tmp_path, "fc-private-2")
    assert rc == 0, out[-3000:]
    before = _split(emu, "fc-private-2")
    key = tmp_path / "stranger.json"  # made the way a user makes one: the emulator's CLI
    made = subprocess.run([sys.executable, "-m", "flightcheck.cli", "emulator", "key",
                           "stranger@local.iam.gserviceaccount.com", "--out", str(key),
                           "--state-dir", str(emu.state)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert made.returncode == 0, made.stderr
    assert key.stat().st_mode & 0o077 == 0 and json.loads(key.read_text())["token_uri"] == \
        emu.api.rstrip("/") + "/token"
    rc, out, stage, report_dir = _deploy(emu, tmp_path, "fc-private-2",
                                         GOOGLE_APPLICATION_CREDENTIALS=str(key))
    assert rc == 1, out[-3000:]
    reason = stage["details"]["reason"]
    assert "IAM" in reason and "403" in reason, reason
    assert "stranger@local.iam.gserviceaccount.com" in reason and "roles/run.invoker" in reason
    assert "never got traffic" in reason
    assert _split(emu, "fc-private-2") == before
    _no_token_in(out, _token_prefix(emu), "the console")
    _no_token_in(_files_text(report_dir), _token_prefix(emu), "the report dir")


# --- Google's target without credentials ------------------------------------------------------------


CONFIG = """[service]
name = "fc-private"
[deploy]
target = "cloudrun"
project = "acme"
allow_unauthenticated = {allow}
"""


def _project(tmp_path: Path, allow: str) -> Path:
    config = tmp_path / "flightcheck.toml"
    config.write_text(CONFIG.format(allow=allow))
    (tmp_path / "Dockerfile").write_text("FROM python:3.11-slim\n")
    return config


def _cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "GOOGLE_APPLICATION_CREDENTIALS"}
    # the metadata server google-auth asks for: a closed loopback port (no traffic leaves)
    base.update(GCE_METADATA_HOST="127.0.0.1:9", GCE_METADATA_IP="127.0.0.1:9", **env)
    return subprocess.run([sys.executable, "-m", "flightcheck.cli", *args], cwd=cwd, env=base,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("creds", ["none", "user", "external"])
def test_without_credentials_that_mint_id_tokens_nothing_is_built_or_pushed(
    tmp_path: Path, creds: str
) -> None:
    config = _project(tmp_path, "false")
    env: dict[str, str] = {}
    if creds == "user":  # gcloud's user credentials cannot mint ID tokens
        user = tmp_path / "adc.json"
        user.write_text(json.dumps({"type": "authorized_user", "client_id": "x",
                                    "client_secret": "y", "refresh_token": "z"}))
        env["GOOGLE_APPLICATION_CREDENTIALS"] = str(user)
    if creds == "external":  # Workload Identity Federation: access tokens only
        wif = tmp_path / "wif.json"
        wif.write_text(json.dumps({
            "type": "external_account", "audience": "//iam.googleapis.com/projects/1/locations/"
            "global/workloadIdentityPools/p/providers/gh", "subject_token_type":
            "urn:ietf:params:oauth:token-type:jwt", "token_url": "https://sts.googleapis.com/v1/"
            "token", "credential_source": {"file": str(tmp_path / "oidc")}}))
        env["GOOGLE_APPLICATION_CREDENTIALS"] = str(wif)
    out = _cli("deploy", "--config", str(config), "--report-dir", str(tmp_path / "r"),
               cwd=tmp_path, **env)
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    assert "cannot mint an ID token for the private Cloud Run service" in text, text
    assert "roles/run.invoker" in text and "impersonate-service-account" in text
    if creds != "none":
        kind = {"user": "authorized_user", "external": "external_account"}[creds]
        assert f"'{kind}' credentials file" in text, text
    assert "Traceback" not in text and "[build]" not in text and "pushing" not in text
    assert not (tmp_path / "r").exists()


def test_dry_run_of_a_private_service_needs_no_id_token(tmp_path: Path) -> None:
    config = _project(tmp_path, "false")
    out = _cli("deploy", "--dry-run", "--config", str(config), cwd=tmp_path)
    # No credentials here: the dry run gets as far as asking Google what is deployed.
    assert "ID token" not in out.stdout + out.stderr
    assert "no Google credentials" in out.stderr, out.stderr


def test_the_local_target_mints_with_a_loopback_issued_key_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flightcheck.cloudrun.idtoken import local_key_file

    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    assert local_key_file(tmp_path) == tmp_path / DEPLOYER_KEY_FILE
    google_key = tmp_path / "google.json"  # a developer's real key: not for the local target
    google_key.write_text(json.dumps({"type": "service_account",
                                      "token_uri": "https://oauth2.googleapis.com/token"}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(google_key))
    assert local_key_file(tmp_path) == tmp_path / DEPLOYER_KEY_FILE
    issued = tmp_path / "issued.json"
    issued.write_text(json.dumps({"type": "service_account",
                                  "token_uri": "http://127.0.0.1:8123/token"}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(issued))
    assert local_key_file(tmp_path) == issued
