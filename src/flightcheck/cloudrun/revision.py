"""A deployed revision seen through the ``Running`` protocol, so the pipeline's own health-poll
and ai-smoke stages check it on its tag URL exactly as they check a local container.

Like the ``attached`` runtime it starts nothing: the endpoint is the revision's tag URL, its
exit status is its Ready condition as Cloud Run reports it, its logs come from the API's side
(the local Cloud Run's log endpoint; Cloud Logging's URL on Google's), and the fake model server
beside it (local target, fake mode) is the one the local Cloud Run started with the revision.
"""

from __future__ import annotations

import time

import httpx
from google.cloud import run_v2

from flightcheck.cloudrun.client import CloudRun, CloudRunError
from flightcheck.cloudrun.rollout import condition_reason
from flightcheck.runtimes.base import Exit

_STATUS_CACHE_S = 1.0  # health-poll asks every 50 ms; the API need not hear it that often


class RevisionRunning:
    """One revision, reached at ``endpoint`` (its tag URL)."""

    def __init__(self, api: CloudRun, revision: str, endpoint: str, *, memory_limit: int,
                 sidecar_endpoint: str | None = None, auth: httpx.Auth | None = None) -> None:
        self.api = api
        self.revision = revision
        self.endpoint = endpoint.rstrip("/")
        self.memory_limit = memory_limit
        self.sidecar_endpoint = sidecar_endpoint
        self.auth = auth  # the ID token a private service wants (runtimes.base.request_auth)
        self.started_at = time.time()  # the poll's window starts now: the revision is ready
        self._checked = 0.0
        self._exit: Exit | None = None

    async def status(self) -> Exit | None:
        if self._exit is not None or time.monotonic() - self._checked < _STATUS_CACHE_S:
            return self._exit
        self._checked = time.monotonic()
        try:
            revision = await self.api.get_revision(self.revision)
        except CloudRunError:
            return None  # cannot tell: the probes will say
        if revision is None:
            self._exit = Exit("exited", None, f"revision {self.revision} was deleted")
            return self._exit
        ready = next((c for c in revision.conditions if c.type_ == "Ready"), None)
        if ready is not None and ready.state == run_v2.Condition.State.CONDITION_FAILED:
            why = condition_reason(ready)
            self._exit = Exit("exited", None, f"{why}: {ready.message}" if why else ready.message)
        return self._exit

    async def peak_memory(self) -> int | None:
        return None  # Cloud Run reports memory in Cloud Monitoring, not per request

    async def logs(self, tail: int = 50) -> str:
        try:
            return await self.api.revision_logs(self.revision, tail)
        except CloudRunError as exc:
            return f"(logs unavailable: {exc.what})"

    async def stop(self) -> None:
        """Nothing to stop: the revision belongs to the service."""
