"""Identity tokens for the rollout's own requests to a private Cloud Run service.

A service without ``roles/run.invoker`` for ``allUsers`` answers only requests carrying
``Authorization: Bearer <ID token>``: a Google-signed OIDC token whose audience is the
service's URL (Cloud Run always accepts its ``*.run.app`` URL; it is service-level, so the same
token serves the tag URLs) and whose identity holds ``roles/run.invoker`` (or a role with
``run.routes.invoke``). The tag-URL health-poll and ai-smoke and the canary traffic send one.

Where the token comes from (google-auth's own paths, nothing hand-rolled):

- Google's Cloud Run: ``google.oauth2.id_token.fetch_id_token_credentials`` — a service-account
  key or an ``impersonated_service_account`` file in ``GOOGLE_APPLICATION_CREDENTIALS``, or the
  metadata server (GCE, Cloud Build, Cloud Run jobs). Credentials that cannot mint ID tokens
  (``gcloud auth application-default login`` user credentials, ``external_account`` / Workload
  Identity Federation) fail before the build with what to do instead (impersonation:
  ``gcloud auth application-default login --impersonate-service-account=SA``).
- The local Cloud Run: the service-account key in ``GOOGLE_APPLICATION_CREDENTIALS`` when a
  local Cloud Run issued it (its ``token_uri`` is on loopback), else the emulator's own deployer
  key (``<state dir>/deployer-key.json``) — both through ``IDTokenCredentials`` against the
  emulator's Google-shaped token endpoint.

Tokens are cached per audience and minted again ``REFRESH_MARGIN_S`` before they expire; every
token is given to the run's redactor before it is used, and sent only to the service's own URLs.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread
import httpx

from flightcheck.errors import ConfigError

REFRESH_MARGIN_S = 300.0  # Google's ID tokens last an hour; never send one about to expire
CREDENTIALS_ENV = "GOOGLE_APPLICATION_CREDENTIALS"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class NoIdentity(ConfigError):
    """No credentials that can mint an ID token (exit 2, before anything is built)."""


@dataclass(frozen=True)
class _Cached:
    token: str
    expires: float
    email: str


def local_key_file(state_dir: Path) -> Path:
    """The key the local target mints with: a loopback-issued key in
    ``GOOGLE_APPLICATION_CREDENTIALS``, else the emulator's deployer key."""
    from flightcheck.cloudrun.local.identity import DEPLOYER_KEY_FILE

    given = os.environ.get(CREDENTIALS_ENV)
    if given:
        try:
            info = json.loads(Path(given).read_text())
            host = urlsplit(str(info.get("token_uri", ""))).hostname
        except (OSError, ValueError, AttributeError):
            host = None
        if host in _LOOPBACK:
            return Path(given)
    return state_dir / DEPLOYER_KEY_FILE


class IdTokens:
    """ID tokens per audience for one run. ``key_file``: mint with that service-account key
    (the local target); None: Application Default Credentials as google-auth finds them."""

    def __init__(self, *, key_file: Path | None, redact: Callable[[str], None],
                 repro: str = "flightcheck deploy",
                 refresh_margin_s: float = REFRESH_MARGIN_S) -> None:
        self.key_file = key_file
        self.key_info: dict[str, Any] | None = None  # a key given as its contents (wins)
        self._register = redact
        self.repro = repro
        self.margin = refresh_margin_s
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()
        self.minted = 0
        self.mint_seconds: list[float] = []

    def cached(self, audience: str) -> str | None:
        """A token for ``audience`` that is good for longer than the margin, without minting."""
        hit = self._cache.get(audience)
        if hit is not None and hit.expires - time.time() > self.margin:
            return hit.token
        return None

    def token(self, audience: str) -> str:
        """A token for ``audience``: the cached one, or a new one. Blocking (HTTP)."""
        with self._lock:
            hit = self.cached(audience)
            if hit is not None:
                return hit
            return self._mint(audience).token

    def email(self, audience: str) -> str:
        """Who the tokens for ``audience`` say the caller is (not secret)."""
        self.token(audience)
        return self._cache[audience].email

    def _credentials(self, audience: str) -> Any:
        import google.auth.transport.requests
        from google.oauth2 import id_token, service_account

        if self.key_info is not None:
            return service_account.IDTokenCredentials.from_service_account_info(  # type: ignore[no-untyped-call]
                self.key_info, target_audience=audience)
        if self.key_file is not None:
            return service_account.IDTokenCredentials.from_service_account_file(  # type: ignore[no-untyped-call]
                str(self.key_file), target_audience=audience)
        return id_token.fetch_id_token_credentials(  # type: ignore[no-untyped-call]
            audience, request=google.auth.transport.requests.Request())

    def _mint(self, audience: str) -> _Cached:
        import google.auth.transport.requests
        from google.auth import exceptions, jwt

        started = time.perf_counter()
        try:
            creds = self._credentials(audience)
            creds.refresh(google.auth.transport.requests.Request())
        except FileNotFoundError:
            raise self._error(f"the key file {self.key_file} does not exist",
                              "the local Cloud Run writes its deployer key when it starts"
                              ) from None
        except exceptions.DefaultCredentialsError as exc:
            raise self._error(_first_line(exc), _unsupported_why()) from None
        except (exceptions.RefreshError, exceptions.TransportError, ValueError) as exc:
            raise self._error(f"minting an ID token failed: {_first_line(exc)}",
                              "the credentials were found but the token endpoint refused or "
                              "could not be reached") from None
        token = str(getattr(creds, "token", "") or "")
        self._register(token)  # before anything else can see it
        try:
            claims = jwt.decode(token, verify=False)  # type: ignore[no-untyped-call]
        except ValueError:
            raise self._error("the token endpoint answered something that is not an ID token",
                              "a JWT was expected") from None
        expiry = getattr(creds, "expiry", None)
        expires = float(claims.get("exp") or (expiry.timestamp() if expiry else time.time()))
        entry = _Cached(token, expires, str(claims.get("email") or claims.get("sub") or "?"))
        self._cache[audience] = entry
        self.minted += 1
        self.mint_seconds.append(time.perf_counter() - started)
        return entry

    def _error(self, what: str, why: str) -> NoIdentity:
        source = (f"the service-account key {self.key_file}" if self.key_file
                  else "Application Default Credentials")
        return NoIdentity(
            f"cannot mint an ID token for the private Cloud Run service from {source}: {what}",
            why=f"{why}; the rollout's checks (tag-URL health-poll and ai-smoke, canary traffic) "
                "must reach a private service as an invoker",
            fix="give flightcheck an identity that can mint ID tokens and holds "
                "roles/run.invoker on the service: GOOGLE_APPLICATION_CREDENTIALS=sa-key.json, "
                "`gcloud auth application-default login --impersonate-service-account=SA` "
                "(needs roles/iam.serviceAccountTokenCreator on SA), or the metadata server; or "
                "set [deploy].allow_unauthenticated = true for a public service",
            repro=self.repro)


def _unsupported_why() -> str:
    path = os.environ.get(CREDENTIALS_ENV)
    if path:
        try:
            kind = json.loads(Path(path).read_text()).get("type", "?")
        except (OSError, ValueError, AttributeError):
            kind = "unreadable"
        return (f"{CREDENTIALS_ENV} names a {kind!r} credentials file: only service-account keys "
                "and impersonated service accounts mint ID tokens (user credentials and "
                "external_account/Workload Identity Federation cannot)")
    return (f"{CREDENTIALS_ENV} is not set and no metadata server answers (gcloud user "
            "credentials cannot mint ID tokens)")


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0][:300] if text else type(exc).__name__


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer <ID token for audience>`` on requests to ``urls``' origins only
    (never to the fake model server or anything else a client also talks to)."""

    def __init__(self, tokens: IdTokens, audience: str, urls: Iterable[str]) -> None:
        self.tokens = tokens
        self.audience = audience
        self.origins = {origin(u) for u in urls if u}

    def _ours(self, request: httpx.Request) -> bool:
        return origin(str(request.url)) in self.origins

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response,
                                                                  None]:
        if self._ours(request):
            request.headers["Authorization"] = f"Bearer {self.tokens.token(self.audience)}"
        yield request

    async def async_auth_flow(self, request: httpx.Request
                              ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if self._ours(request):
            token = self.tokens.cached(self.audience) or await anyio.to_thread.run_sync(
                self.tokens.token, self.audience)
            request.headers["Authorization"] = f"Bearer {token}"
        yield request


def denied_reason(status: int, url: str, who: str) -> str:
    """What a 401/403 from Cloud Run's front end means for the rollout (names IAM)."""
    if status == 401:
        return (f"IAM: {url} answered 401 Unauthorized to flightcheck's ID token (identity "
                f"{who}): Cloud Run did not accept the token (audience, signature or expiry)")
    return (f"IAM: {url} answered 403 Forbidden: the identity {who} may not invoke the service "
            "— grant it roles/run.invoker on the service (gcloud run services "
            "add-iam-policy-binding SERVICE --member=serviceAccount:EMAIL "
            "--role=roles/run.invoker)")
