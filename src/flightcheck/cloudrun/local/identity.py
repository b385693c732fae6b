"""Identity for the local Cloud Run: Google's token endpoint and invoker IAM, on 127.0.0.1.

A private Cloud Run service (no ``roles/run.invoker`` for ``allUsers``) answers only requests
that carry ``Authorization: Bearer <ID token>``: a Google-signed OIDC token whose audience is
the service's URL and whose ``email`` is an invoker. To test flightcheck's side of that for
real, the local Cloud Run is also the issuer:

- service-account keys (``POST /v1/projects/P/serviceAccounts/EMAIL/keys``, IAM's shape: the
  key file base64 in ``privateKeyData``) whose ``token_uri`` is this server's ``/token``;
- ``/token`` speaks Google's wire protocol for ID tokens: the JWT-bearer grant
  (``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer``) with an assertion signed by the
  service account's key carrying ``target_audience``, answered ``{"id_token": …}`` signed
  RS256 by the local issuer key — so google-auth's own ``IDTokenCredentials`` path runs
  unchanged against it;
- ``/oauth2/v1/certs`` publishes the issuer's public keys (as Google's certs URL does);
- the proxy checks each request to a private service: signature against those keys, audience,
  expiry, issuer (401 when any fails or no token came), then the invoker binding (403).

The emulator makes one service account of its own, the deployer
(``flightcheck-deployer@local.iam.gserviceaccount.com``), with a project-level invoker grant
like a project owner's, and writes its key to ``<state dir>/deployer-key.json``: the local
target's identity when ``GOOGLE_APPLICATION_CREDENTIALS`` names no key.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from google.auth import crypt, jwt

DEPLOYER = "flightcheck-deployer@local.iam.gserviceaccount.com"
DEPLOYER_KEY_FILE = "deployer-key.json"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_LIFETIME_S = 3600  # Google's ID tokens last an hour
_ASSERTION_MAX_S = 3600
_CACHE_MAX = 256


class Rejected(Exception):
    """A token that does not pass: ``status`` 401 (not a valid token) or 403 (not an invoker)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _new_key() -> tuple[str, str]:
    """(private key PEM in PKCS#8, public key PEM) of a fresh RSA 2048 key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


class Identity:
    """The issuer, the service-account keys it knows, and token verification."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "identity"
        self.state_dir = state_dir
        self.token_uri = ""
        self.issuer = ""
        self._issuer_kid = ""
        self._signer: crypt.RSASigner | None = None
        self._issuer_public = ""
        self.keys: dict[str, dict[str, str]] = {}  # key id → {"email", "public"}
        self._verified: dict[str, dict[str, Any]] = {}  # token → claims (checked signature)

    # --- state ---------------------------------------------------------------------------------

    def load(self) -> None:
        """The issuer key and the known service-account keys (made on first use)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        issuer = self.dir / "issuer.json"
        try:
            data = json.loads(issuer.read_text())
        except (OSError, ValueError):
            private, public = _new_key()
            data = {"kid": secrets.token_hex(20), "private": private, "public": public}
            _write_private(issuer, json.dumps(data))
        self._issuer_kid = str(data["kid"])
        self._issuer_public = str(data["public"])
        self._signer = crypt.RSASigner.from_string(str(data["private"]), self._issuer_kid)
        try:
            self.keys = json.loads((self.dir / "keys.json").read_text())
        except (OSError, ValueError):
            self.keys = {}

    def _save_keys(self) -> None:
        _write_private(self.dir / "keys.json", json.dumps(self.keys, indent=1))

    def serve_at(self, api: str) -> None:
        """The API's URL is known: the token endpoint and the issuer live there; the deployer's
        key file is (re)written to point at it."""
        self.issuer = api.rstrip("/")
        self.token_uri = self.issuer + "/token"
        path = self.state_dir / DEPLOYER_KEY_FILE
        try:
            info = json.loads(path.read_text())
            if info.get("private_key_id") not in self.keys:
                raise ValueError("a key this issuer does not know")
        except (OSError, ValueError):
            info = self.create_key(DEPLOYER)
        info["token_uri"] = self.token_uri
        _write_private(path, json.dumps(info, indent=1))

    def deployer_key(self) -> dict[str, str]:
        """The deployer's key file, as written to ``<state dir>/deployer-key.json``."""
        return dict(json.loads((self.state_dir / DEPLOYER_KEY_FILE).read_text()))

    def create_key(self, email: str) -> dict[str, str]:
        """A new key for ``email`` in Google's service-account key file format."""
        private, public = _new_key()
        kid = secrets.token_hex(20)
        self.keys[kid] = {"email": email, "public": public}
        self._save_keys()
        return {
            "type": "service_account", "project_id": email.partition("@")[2].split(".")[0],
            "private_key_id": kid, "private_key": private, "client_email": email,
            "client_id": str(int.from_bytes(kid.encode()[:8], "big")),
            "token_uri": self.token_uri,
        }

    def certs(self) -> dict[str, str]:
        """The issuer's public keys by key id (Google's ``oauth2/v1/certs`` shape)."""
        return {self._issuer_kid: self._issuer_public}

    # --- the token endpoint ------------------------------------------------------------------

    def token(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """Google's token endpoint for the JWT-bearer grant with ``target_audience``."""
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        if form.get("grant_type") != JWT_BEARER:
            return 400, {"error": "unsupported_grant_type",
                         "error_description": "only the JWT-bearer grant is served here"}
        assertion = form.get("assertion", "")
        try:
            header = jwt.decode_header(assertion)
            known = self.keys.get(str(header.get("kid", "")))
            if known is None:
                raise ValueError("the assertion's key id is not a key of any service account")
            # google-auth signs for Google's token endpoint whatever its token_uri says
            claims = jwt.decode(assertion, certs={str(header["kid"]): known["public"]},
                                audience=[self.token_uri, GOOGLE_TOKEN_URI])
        except (ValueError, KeyError) as exc:
            return 400, {"error": "invalid_grant", "error_description": f"Invalid JWT: {exc}"}
        email = known["email"]
        if claims.get("iss") != email:
            return 400, {"error": "invalid_grant",
                         "error_description": "Invalid JWT: iss is not the key's service account"}
        if int(claims.get("exp", 0)) - int(claims.get("iat", 0)) > _ASSERTION_MAX_S:
            return 400, {"error": "invalid_grant",
                         "error_description": "Invalid JWT: Token must be a short-lived token "
                         "(60 minutes) and in a reasonable timeframe."}
        audience = claims.get("target_audience")
        if not isinstance(audience, str) or not audience:
            return 400, {"error": "invalid_request",
                         "error_description": "this endpoint mints ID tokens: the assertion "
                         "needs a target_audience claim"}
        return 200, {"id_token": self.mint(email, audience)}

    def mint(self, email: str, audience: str, *, lifetime_s: int = TOKEN_LIFETIME_S,
             issued_at: int | None = None) -> str:
        assert self._signer is not None, "load() first"
        now = int(time.time()) if issued_at is None else issued_at
        payload = {"iss": self.issuer, "aud": audience, "azp": email, "sub": email,
                   "email": email, "email_verified": True, "iat": now, "exp": now + lifetime_s}
        return jwt.encode(self._signer, payload).decode()

    # --- the proxy's check -----------------------------------------------------------------------

    def verify(self, authorization: bytes | None, ports: set[int]) -> dict[str, Any]:
        """The claims of a valid bearer ID token for a URL on one of ``ports`` (the service's
        and the listener's: the local URLs are ``http://HOST:PORT`` under whatever name the
        API is reached by); Rejected(401) otherwise."""
        if not authorization or not authorization[:7].lower() == b"bearer ":
            raise Rejected(401, "no bearer ID token: a private service needs "
                           "`Authorization: Bearer <ID token>`")
        token = authorization[7:].strip().decode("latin-1")
        claims = self._verified.get(token)
        if claims is None:
            try:
                claims = jwt.decode(token, certs=self.certs(), verify=True)
            except (ValueError, KeyError) as exc:
                raise Rejected(401, f"the ID token is not valid: {_first_line(exc)}") from None
            if len(self._verified) >= _CACHE_MAX:
                self._verified.clear()
            self._verified[token] = claims
        elif int(claims.get("exp", 0)) < time.time():
            raise Rejected(401, "the ID token is not valid: it has expired")
        if claims.get("iss") != self.issuer:
            raise Rejected(401, "the ID token is not valid: not issued by this Cloud Run's "
                           "issuer")
        audience = claims.get("aud")
        try:
            port = urlsplit(str(audience)).port if isinstance(audience, str) else None
        except ValueError:
            port = None
        if port not in ports:
            raise Rejected(401, f"the ID token is not valid: its audience {audience!r} is not "
                           "this service's URL")
        return claims


def _first_line(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    # google-auth quotes the token's times, never the token: still keep it short.
    return text[:200]


def key_file_payload(info: dict[str, str]) -> dict[str, str]:
    """IAM's ``serviceAccounts.keys.create`` answer for ``info``."""
    raw = json.dumps(info).encode()
    return {"name": f"projects/-/serviceAccounts/{info['client_email']}/keys/"
                    f"{info['private_key_id']}",
            "privateKeyType": "TYPE_GOOGLE_CREDENTIALS_FILE",
            "keyAlgorithm": "KEY_ALG_RSA_2048",
            "privateKeyData": base64.b64encode(raw).decode()}
