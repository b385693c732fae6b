"""A private local service's invoker for tests (tests/cloudrun, tests/e2e): the local Cloud
Run's services are private unless bound to allUsers, as on Google's."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import httpx


class InvokerAuth(httpx.Auth):
    """A private local service's invoker, as the deploy stage is one: an ID token minted through
    google-auth with the local Cloud Run's deployer key (or ``key_file``), for the URL called."""

    def __init__(self, state_dir: Path | None = None, *, key_file: Path | None = None) -> None:
        from flightcheck.cloudrun.idtoken import IdTokens
        from flightcheck.cloudrun.local.identity import DEPLOYER_KEY_FILE

        assert state_dir is not None or key_file is not None
        key = key_file or (state_dir / DEPLOYER_KEY_FILE if state_dir else None)
        self.tokens = IdTokens(key_file=key, redact=lambda _t: None)

    def sync_auth_flow(self, request: httpx.Request
                       ) -> Generator[httpx.Request, httpx.Response, None]:
        url = request.url
        request.headers["Authorization"] = "Bearer " + self.tokens.token(
            f"{url.scheme}://{url.host}:{url.port}")
        yield request
