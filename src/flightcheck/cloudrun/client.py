"""The Cloud Run API as the rollout uses it: the official ``google-cloud-run`` client (run_v2,
REST transport), wrapped in a small async interface.

One implementation for both targets; only endpoint and credentials differ:

- ``local``: the local Cloud Run's ``http://127.0.0.1:PORT`` with anonymous credentials;
- ``cloudrun``: ``run.googleapis.com`` with Application Default Credentials (``gcloud auth
  application-default login``, a key file in ``GOOGLE_APPLICATION_CREDENTIALS``, or Workload
  Identity Federation's external-account file in CI);
- ``--api-endpoint URL``: any run_v2-compatible server (``http://``: anonymous).

Transient errors (429, 503, UNAVAILABLE, 504) are retried with exponential backoff and logged;
everything else fails at once with the API's own message, as a :class:`CloudRunError`. The
blocking client runs in worker threads so the rollout stays cancellable.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import httpx
from google.api_core import exceptions as gexc
from google.api_core import retry as gretry
from google.api_core.future import polling
from google.cloud import run_v2
from google.iam.v1 import policy_pb2

from flightcheck.cloudrun.spec import Target
from flightcheck.errors import FlightcheckError

T = TypeVar("T")
LogFn = Callable[[str], None]

GOOGLE_ENDPOINT = "run.googleapis.com"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
TRANSIENT = (gexc.TooManyRequests, gexc.ServiceUnavailable, gexc.GatewayTimeout)
RETRY_INITIAL_S = 0.2
RETRY_MAX_S = 5.0
RETRY_TOTAL_S = 60.0
INVOKER = "roles/run.invoker"
ALL_USERS = "allUsers"


class CloudRunError(FlightcheckError):
    """The Cloud Run API refused or failed a call (the message is the API's)."""


class AccessDenied(CloudRunError):
    """The deployer lacks a permission (HTTP 403)."""


class ConcurrentChange(CloudRunError):
    """Someone else changed the service meanwhile (etag mismatch)."""


class CloudRun(Protocol):
    """What the rollout needs from Cloud Run. ``RunV2`` is the real one; unit tests of the
    state machine use an in-process fake of this interface only."""

    target: Target

    async def get_service(self) -> run_v2.Service | None: ...
    async def create_service(self, service: run_v2.Service, *, timeout_s: float) -> run_v2.Service: ...
    async def update_service(self, service: run_v2.Service, *, timeout_s: float) -> run_v2.Service: ...
    async def get_revision(self, name: str) -> run_v2.Revision | None: ...
    async def get_iam_policy(self) -> policy_pb2.Policy: ...
    async def set_iam_policy(self, policy: policy_pb2.Policy) -> policy_pb2.Policy: ...
    async def revision_logs(self, name: str, tail: int = 50) -> str: ...
    async def revision_sidecar(self, name: str) -> str | None: ...
    async def metrics(self, since: float) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class Connection:
    """Where the API is and who we are there."""

    endpoint: str | None  # None: Google's
    anonymous: bool

    @property
    def local(self) -> bool:
        return self.endpoint is not None and self.endpoint.startswith("http://")

    def reach(self, url: str) -> str:
        """A URL the local Cloud Run handed out (``http://127.0.0.1:PORT``), as this side reaches
        it: every URL it serves is on the host of its API, so when that API is reached under
        another name (from a container: ``http://cloudrun:8123``) so are its URLs."""
        if not self.local or self.endpoint is None:
            return url
        host = urlsplit(self.endpoint).hostname or ""
        parts = urlsplit(url)
        if host in _LOOPBACK or parts.scheme != "http" or parts.hostname not in _LOOPBACK:
            return url
        netloc = host + (f":{parts.port}" if parts.port else "")
        return parts._replace(netloc=netloc).geturl()

    def reach_service(self, service: run_v2.Service) -> run_v2.Service:
        """The service with its URLs (``uri``, ``urls``, tag URLs) as this side reaches them."""
        if not self.local or (not service.uri and not service.traffic_statuses):
            return service
        out = run_v2.Service(service)  # a copy: what was read stays as the API said it
        out.uri = self.reach(out.uri) if out.uri else out.uri
        urls = [self.reach(u) for u in out.urls]
        del out.urls[:]
        out.urls.extend(urls)
        for status in out.traffic_statuses:
            if status.uri:
                status.uri = self.reach(status.uri)
        return out


def credentials(conn: Connection) -> Any:
    """Anonymous for a local endpoint, else Application Default Credentials (clear error when
    there are none)."""
    if conn.anonymous:
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials()
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        creds, _ = google.auth.default(scopes=list(SCOPES))
    except DefaultCredentialsError as exc:
        raise CloudRunError(
            "no Google credentials for the Cloud Run API",
            why=str(exc).splitlines()[0] if str(exc) else "Application Default Credentials "
            "found nothing",
            fix="on a laptop: gcloud auth application-default login; with a service-account "
            "key: export GOOGLE_APPLICATION_CREDENTIALS=key.json; in CI: Workload Identity "
            "Federation (docs/deploy.md)",
            repro="flightcheck deploy --target cloudrun --dry-run",
        ) from None
    return creds


def _api_error(what: str, exc: gexc.GoogleAPICallError) -> CloudRunError:
    message = getattr(exc, "message", None) or str(exc)
    code = getattr(exc, "code", None)
    status = f"HTTP {int(code)}" if isinstance(code, int) else type(exc).__name__
    if isinstance(exc, gexc.PermissionDenied | gexc.Forbidden):
        return AccessDenied(f"{what}: permission denied ({status}): {message}",
                            why="the deployer's identity lacks a Cloud Run permission",
                            fix="grant the roles in docs/deploy.md ('IAM roles'), e.g. "
                            "roles/run.admin for IAM policy changes")
    # ABORTED / 409 and 412: an etag mismatch. (FAILED_PRECONDITION is not: Cloud Run uses it
    # for "revision is not ready", among others.)
    if isinstance(exc, gexc.Conflict | gexc.Aborted | gexc.PreconditionFailed):
        return ConcurrentChange(f"{what}: the service changed meanwhile ({status}): {message}",
                                why="another deploy or a person changed it after flightcheck "
                                "read it (etag mismatch)",
                                fix="look at the service's traffic, then deploy again")
    return CloudRunError(f"{what}: {status}: {message}",
                         why="the Cloud Run API refused the request",
                         fix="read the API's message above; it names the field or permission")


class RunV2:
    """The real client: run_v2 ServicesClient + RevisionsClient over REST."""

    def __init__(self, target: Target, conn: Connection, *, log: LogFn | None = None,
                 timeout_s: float = 30.0) -> None:
        from google.api_core.client_options import ClientOptions

        self.target = target
        self.conn = conn
        self._log = log or (lambda _line: None)
        self._timeout = timeout_s
        creds = credentials(conn)
        options = ClientOptions(api_endpoint=conn.endpoint) if conn.endpoint else None
        self._services = run_v2.ServicesClient(credentials=creds, transport="rest",
                                               client_options=options)
        self._revisions = run_v2.RevisionsClient(credentials=creds, transport="rest",
                                                 client_options=options)
        self.retry = gretry.Retry(
            predicate=gretry.if_exception_type(*TRANSIENT),
            initial=RETRY_INITIAL_S, maximum=RETRY_MAX_S, multiplier=2.0,
            timeout=RETRY_TOTAL_S, on_error=self._on_retry,
        )
        self.retries = 0

    def _on_retry(self, exc: Exception) -> None:
        self.retries += 1
        code = getattr(exc, "code", "")
        self._log(f"Cloud Run API answered {int(code) if isinstance(code, int) else code} "
                  f"({type(exc).__name__}): retrying with backoff")

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            # abandon_on_cancel: Ctrl-C must not wait for a blocking HTTP call to finish.
            return await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)
        except gexc.RetryError as exc:
            cause = exc.cause
            if isinstance(cause, gexc.GoogleAPICallError):
                raise _api_error(f"{what} (still failing after retries)", cause) from None
            raise CloudRunError(f"{what}: gave up after retries: {exc}") from None
        except gexc.GoogleAPICallError as exc:
            raise _api_error(what, exc) from None
        except Exception as exc:  # transport: connection refused, DNS, TLS
            raise CloudRunError(
                f"{what}: cannot reach the Cloud Run API at "
                f"{self.conn.endpoint or GOOGLE_ENDPOINT}: {type(exc).__name__}: {exc}",
                fix="is the endpoint right and up? (local target: flightcheck emulator status)",
            ) from None

    def _wait(self, op: Any, timeout_s: float) -> run_v2.Service:
        poll = polling.DEFAULT_POLLING.with_delay(initial=0.05, maximum=0.5, multiplier=1.5)
        return op.result(timeout=timeout_s, retry=self.retry, polling=poll.with_timeout(timeout_s))

    async def get_service(self) -> run_v2.Service | None:
        def get() -> run_v2.Service | None:
            try:
                return self._services.get_service(name=self.target.name, retry=self.retry,
                                                  timeout=self._timeout)
            except gexc.NotFound:
                return None

        found = await self._call(f"get service {self.target.service}", get)
        return self.conn.reach_service(found) if found is not None else None

    async def create_service(self, service: run_v2.Service, *, timeout_s: float) -> run_v2.Service:
        body = run_v2.Service(service)
        body.name = ""

        def create() -> run_v2.Service:
            op = self._services.create_service(parent=self.target.parent, service=body,
                                               service_id=self.target.service,
                                               retry=self.retry, timeout=self._timeout)
            return self._wait(op, timeout_s)

        return self.conn.reach_service(
            await self._call(f"create service {self.target.service}", create))

    async def update_service(self, service: run_v2.Service, *, timeout_s: float) -> run_v2.Service:
        body = run_v2.Service(service)
        body.name = self.target.name

        def update() -> run_v2.Service:
            op = self._services.update_service(service=body, retry=self.retry,
                                               timeout=self._timeout)
            return self._wait(op, timeout_s)

        return self.conn.reach_service(
            await self._call(f"update service {self.target.service}", update))

    async def get_revision(self, name: str) -> run_v2.Revision | None:
        def get() -> run_v2.Revision | None:
            try:
                return self._revisions.get_revision(name=self.target.revision(name),
                                                    retry=self.retry, timeout=self._timeout)
            except gexc.NotFound:
                return None

        return await self._call(f"get revision {name}", get)

    async def get_iam_policy(self) -> policy_pb2.Policy:
        return await self._call("get IAM policy", functools.partial(
            self._services.get_iam_policy, request={"resource": self.target.name},
            retry=self.retry, timeout=self._timeout))

    async def set_iam_policy(self, policy: policy_pb2.Policy) -> policy_pb2.Policy:
        return await self._call("set IAM policy", functools.partial(
            self._services.set_iam_policy,
            request={"resource": self.target.name, "policy": policy},
            retry=self.retry, timeout=self._timeout))

    # --- the local Cloud Run's extras (not run_v2; absent on Google's endpoint) ----------------

    async def _admin(self, path: str, params: dict[str, Any] | None = None) -> httpx.Response | None:
        if not self.conn.local or self.conn.endpoint is None:
            return None
        try:
            async with httpx.AsyncClient(trust_env=False, timeout=10.0) as client:
                resp = await client.get(self.conn.endpoint.rstrip("/") + path, params=params)
        except httpx.HTTPError:
            return None
        return resp if resp.status_code == 200 else None

    async def revision_logs(self, name: str, tail: int = 50) -> str:
        resp = await self._admin(f"/flightcheck/v1/revisions/{name}/logs", {"tail": tail})
        if resp is not None:
            try:
                data = resp.json()
            except ValueError:
                return resp.text
            logs = data.get("logs") if isinstance(data, dict) else None
            return logs if isinstance(logs, str) else resp.text
        revision = await self.get_revision(name)
        uri = revision.log_uri if revision is not None else ""
        return f"(logs: {uri})" if uri else "(no logs available from this endpoint)"

    async def revision_sidecar(self, name: str) -> str | None:
        resp = await self._admin(f"/flightcheck/v1/revisions/{name}")
        if resp is None:
            return None
        try:
            value = resp.json().get("sidecar_endpoint")
        except ValueError:
            return None
        return self.conn.reach(value) if isinstance(value, str) and value else None

    async def metrics(self, since: float) -> dict[str, Any] | None:
        resp = await self._admin(f"/flightcheck/v1/services/{self.target.service}/metrics",
                                 {"since": f"{since:.3f}"})
        if resp is None:
            return None
        try:
            data = resp.json()
        except ValueError:
            return None
        return data if isinstance(data, dict) else None


# --- IAM -------------------------------------------------------------------------------------


def allows_unauthenticated(policy: policy_pb2.Policy) -> bool:
    return any(b.role == INVOKER and ALL_USERS in b.members for b in policy.bindings)


def with_unauthenticated(policy: policy_pb2.Policy, allow: bool) -> policy_pb2.Policy | None:
    """The policy with ``allUsers`` as invoker added or removed; None when it already is so.
    The etag read with the policy stays, so a concurrent change is refused."""
    if allows_unauthenticated(policy) == allow:
        return None
    new = policy_pb2.Policy()
    new.CopyFrom(policy)
    if allow:
        binding = next((b for b in new.bindings if b.role == INVOKER), None)
        if binding is None:
            binding = new.bindings.add(role=INVOKER)
        binding.members.append(ALL_USERS)
    else:
        for binding in new.bindings:
            if binding.role == INVOKER and ALL_USERS in binding.members:
                binding.members.remove(ALL_USERS)
        kept = [b for b in new.bindings if b.members]
        del new.bindings[:]
        new.bindings.extend(kept)
    return new
