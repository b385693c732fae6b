"""The HTTP side: where the Python SDK connects (``DAGGER_SESSION_PORT``, ``DAGGER_SESSION_TOKEN``),
``POST /query`` with basic auth (token as user name), as the engine's session API serves it.

The server runs its own event loop in a thread; the test talks to it over HTTP like any client.
A request whose client goes away is cancelled (``Service.up`` ends that way: the CLI's Ctrl-C).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import graphql
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .api import Ctx, Session

if TYPE_CHECKING:
    from .module import Harness

R = TypeVar("R")


class Server:
    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.sessions: dict[str, Session] = {}
        self.loop = asyncio.new_event_loop()
        app = Starlette(routes=[Route("/query", self._query, methods=["POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                lifespan="off", loop="asyncio", timeout_keep_alive=600)
        self._uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="dagger-harness", daemon=True)
        self.port = 0

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        ready = self.run(self._wait_started())
        self.port = ready

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        await self._uvicorn.serve()

    async def _wait_started(self) -> int:
        for _ in range(3000):  # uvicorn sets .started once it listens
            if self._uvicorn.started:
                break
            await asyncio.sleep(0.02)
        sockets = [s for server in self._uvicorn.servers for s in server.sockets]
        return sockets[0].getsockname()[1]

    def run(self, coro: Coroutine[Any, Any, R], timeout: float | None = None) -> R:
        """Run ``coro`` on the server's loop from the test's thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self._uvicorn.should_exit = True
        self._thread.join(timeout=30)

    # --- requests -------------------------------------------------------------------------------

    def session(self, token: str) -> Session | None:
        return self.sessions.get(token)

    async def _query(self, request: Request) -> Response:
        session = self._auth(request.headers.get("authorization", ""))
        if session is None:
            return JSONResponse({"message": "unauthorized: unknown session token"},
                                status_code=401)
        body = await request.json()
        ctx = Ctx(engine=self.harness.engine, session=session, harness=self.harness)
        work = asyncio.ensure_future(graphql.graphql(
            session.schema, body.get("query", ""), variable_values=body.get("variables"),
            operation_name=body.get("operationName"), context_value=ctx))
        gone = asyncio.ensure_future(_disconnected(request.receive))
        done, _ = await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        if work not in done:
            work.cancel()
            with contextlib.suppress(BaseException):
                await work
            return Response(status_code=499)
        gone.cancel()
        result = work.result()
        for error in result.errors or ():
            self.harness.errors.append(error.message)
        return JSONResponse(result.formatted)

    def _auth(self, header: str) -> Session | None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user = base64.b64decode(value).decode().split(":", 1)[0]
        except ValueError:
            return None
        return self.sessions.get(user)


async def _disconnected(receive: Callable[[], Coroutine[Any, Any, Any]]) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
