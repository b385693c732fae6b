"""The traffic-splitting reverse proxy: the service URL and one URL per tag, on 127.0.0.1.

Each listener holds a route: a weighted list of revisions (the service URL: the traffic split;
a tag URL: its one revision). Every request picks a revision by weight, goes to that revision's
instance over a pooled keep-alive connection, and comes back with ``x-flightcheck-revision``
naming who served it; its status and latency are recorded per revision (:mod:`.metrics`), which
is what the rollout's analysis reads. Routes are swapped atomically: a request in flight
finishes on the revision it picked.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from flightcheck.cloudrun.local._http import (
    CRLF,
    HOP_BY_HOP,
    MAX_HEAD,
    BadRequest,
    Request,
    close,
    parse_head,
    read_request,
    response_bytes,
)
from flightcheck.cloudrun.local.metrics import Metrics

REVISION_HEADER = b"x-flightcheck-revision"
_POOL_MAX = 64
_SMALL_BODY = 256 * 1024  # read whole and sent with the head in one write
_NO_BODY_STATUS = frozenset((204, 304))


@dataclass(frozen=True, slots=True)
class Route:
    """Revisions with cumulative weights (percent); ``pick`` is one random draw."""

    names: tuple[str, ...]  # upstream keys (full revision names)
    cumulative: tuple[float, ...]

    @classmethod
    def of(cls, weights: Sequence[tuple[str, float]]) -> Route:
        names: list[str] = []
        cumulative: list[float] = []
        total = 0.0
        for name, weight in weights:
            if weight > 0:
                total += weight
                names.append(name)
                cumulative.append(total)
        return cls(tuple(names), tuple(cumulative))

    def pick(self) -> str | None:
        if not self.names:
            return None
        if len(self.names) == 1:
            return self.names[0]
        i = bisect.bisect_right(self.cumulative, random.random() * self.cumulative[-1])
        return self.names[min(i, len(self.names) - 1)]

    def as_weights(self) -> list[tuple[str, float]]:
        prev = 0.0
        out: list[tuple[str, float]] = []
        for name, cum in zip(self.names, self.cumulative, strict=True):
            out.append((name, cum - prev))
            prev = cum
        return out


def short_name(key: str) -> str:
    """``projects/.../revisions/svc-00001-abc`` → ``svc-00001-abc``."""
    return key.rsplit("/", 1)[-1]


_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Upstream:
    """A running revision instance as the proxy reaches it, with idle keep-alive connections."""

    def __init__(self, key: str, host: str, port: int, timeout_s: float) -> None:
        self.key = key
        self.revision = short_name(key)
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self._idle: list[_Conn] = []
        self.closed = False

    async def acquire(self) -> tuple[_Conn, bool]:
        """A connection, and whether it was reused from the pool (it may be stale then)."""
        while self._idle:
            conn = self._idle.pop()
            if not conn[0].at_eof() and not conn[1].is_closing():
                return conn, True
            conn[1].close()
        conn = await asyncio.open_connection(self.host, self.port, limit=MAX_HEAD)
        return conn, False

    def release(self, conn: _Conn) -> None:
        if self.closed or len(self._idle) >= _POOL_MAX:
            conn[1].close()
        else:
            self._idle.append(conn)

    def close(self) -> None:
        self.closed = True
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


class Listener:
    """One 127.0.0.1 port of a service: its URL (via the split) or a tag's URL."""

    def __init__(self, proxy: Proxy, service: str, metrics: Metrics, via: int, label: str) -> None:
        self.proxy = proxy
        self.service = service
        self.metrics = metrics
        self.via = via
        self.label = label  # "" for the service URL, else the tag
        self.route = Route((), ())
        self.port = 0
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    async def start(self, port: int) -> int:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", port, limit=MAX_HEAD, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._conns):
                writer.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        try:
            while True:
                try:
                    req = await read_request(reader, writer)
                except BadRequest as exc:
                    writer.write(response_bytes(exc.status, exc.message.encode() + b"\n",
                                                content_type=b"text/plain", keep_alive=False))
                    break
                if req is None or not await self._forward(req, reader, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:  # the loop is closing: end this connection quietly
            pass
        finally:
            self._conns.discard(writer)
            await close(writer)

    async def _forward(self, req: Request, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> bool:
        """Relay one request; False when the client connection must close afterwards."""
        started = time.perf_counter()
        gate = self.proxy.gate
        if gate is not None:
            denied = gate(self, req.header(b"authorization"))
            if denied is not None:
                writer.write(_denied(*denied, keep_alive=req.keep_alive))
                await writer.drain()
                return req.keep_alive
        name = self.route.pick()
        if name is None:
            writer.write(_plain(503, f"no revision of {self._what()} is serving traffic",
                                req.keep_alive))
            await writer.drain()
            return req.keep_alive
        upstream = self.proxy.upstreams.get(name)
        short = upstream.revision if upstream is not None else short_name(name)
        series = self.metrics.series(short)
        if upstream is None:
            at = time.time()
            writer.write(_plain(503, f"revision {short} has no running instance", req.keep_alive,
                                short))
            await writer.drain()
            series.add(503, (time.perf_counter() - started) * 1000, self.via, at)
            return req.keep_alive
        answered = _Answered()
        status, keep = await self._exchange(upstream, req, writer, answered)
        series.add(status, (time.perf_counter() - started) * 1000, self.via, answered.at)
        return keep and req.keep_alive

    def _what(self) -> str:
        short = self.service.rsplit("/", 1)[-1]
        return f"service {short}" + (f" (tag {self.label})" if self.label else "")

    async def _exchange(self, up: Upstream, req: Request, writer: asyncio.StreamWriter,
                        answered: _Answered) -> tuple[int, bool]:
        """Send ``req`` to ``up`` and relay the answer: (status recorded, client may stay)."""
        peer = writer.get_extra_info("peername")
        head = [f"{req.method} {req.target} HTTP/1.1".encode()]
        head.extend(k + b": " + v for k, v in req.headers if k not in HOP_BY_HOP)
        head.append(b"x-forwarded-for: " + (peer[0] if peer else "127.0.0.1").encode())
        head.append(b"x-forwarded-proto: http")
        if req.body or req.method in ("POST", "PUT", "PATCH"):
            head.append(b"content-length: %d" % len(req.body))
        data = CRLF.join(head) + b"\r\n\r\n" + req.body
        conn: _Conn | None = None
        try:
            async with asyncio.timeout(up.timeout_s):
                for attempt in (0, 1):
                    try:
                        conn, reused = await up.acquire()
                    except OSError as exc:
                        answered.now()
                        writer.write(_plain(503, f"revision {up.revision} is not reachable: "
                                            f"{exc.strerror or exc}", req.keep_alive, up.revision))
                        await writer.drain()
                        return 503, True
                    try:
                        conn[1].write(data)
                        resp_head = await conn[0].readuntil(b"\r\n\r\n")
                        while resp_head[9:10] == b"1" and resp_head[9:12] != b"101":
                            resp_head = await conn[0].readuntil(b"\r\n\r\n")  # drop 1xx
                        break
                    except (ConnectionError, asyncio.IncompleteReadError):
                        conn[1].close()
                        conn = None
                        if reused and attempt == 0:
                            continue  # a pooled connection the instance had closed: once more
                        answered.now()
                        writer.write(_plain(502, f"revision {up.revision} closed the connection "
                                            "without a response", req.keep_alive, up.revision))
                        await writer.drain()
                        return 502, True
                else:  # pragma: no cover - the loop always breaks or returns
                    return 502, True
                assert conn is not None
                answered.now()
                status, keep_up, client_ok = await self._relay(
                    req, resp_head, conn, writer, up.revision, answered)
                if keep_up:
                    up.release(conn)
                else:
                    conn[1].close()
                conn = None
                return status, client_ok
        except TimeoutError:
            if conn is not None:
                conn[1].close()
            if not answered.head_sent:
                answered.now()
                with contextlib.suppress(ConnectionError):
                    writer.write(_plain(504, f"revision {up.revision} did not answer within its "
                                        f"request timeout of {up.timeout_s:g} s", req.keep_alive,
                                        up.revision))
                    await writer.drain()
                return 504, True
            return 504, False
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError):
            if conn is not None:
                conn[1].close()
            return 502, False

    async def _relay(self, req: Request, resp_head: bytes, conn: _Conn,
                     writer: asyncio.StreamWriter, revision: str,
                     answered: _Answered) -> tuple[int, bool, bool]:
        """Relay one response: (status, upstream reusable, client connection may stay)."""
        start, headers = parse_head(resp_head[:-4])
        try:
            status = int(start[9:12])
        except ValueError:
            raise ValueError("malformed status line") from None
        length: int | None = None
        chunked = False
        up_close = start.startswith(b"HTTP/1.0")
        out = [b"HTTP/1.1" + start[8:]]
        for name, value in headers:
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                up_close = b"close" in value.lower()
                continue
            elif name in (b"keep-alive", REVISION_HEADER):
                continue
            out.append(name + b": " + value)
        out.append(REVISION_HEADER + b": " + revision.encode())
        reader = conn[0]
        no_body = req.method == "HEAD" or status in _NO_BODY_STATUS or status < 200
        framed = no_body or chunked or length is not None
        client_ok = framed
        if not client_ok:
            out.append(b"connection: close")
        head = CRLF.join(out) + b"\r\n\r\n"
        if no_body:
            writer.write(head)
        elif chunked:
            writer.write(head)
            answered.head_sent = True
            while True:
                line = await reader.readuntil(CRLF)
                writer.write(line)
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while True:
                        trailer = await reader.readuntil(CRLF)
                        writer.write(trailer)
                        if trailer == CRLF:
                            break
                    break
                writer.write(await reader.readexactly(size + 2))
                await writer.drain()
        elif length is not None:
            if length <= _SMALL_BODY:
                writer.write(head + (await reader.readexactly(length) if length else b""))
            else:
                writer.write(head)
                answered.head_sent = True
                remaining = length
                while remaining:
                    piece = await reader.read(min(remaining, 1 << 16))
                    if not piece:
                        raise asyncio.IncompleteReadError(b"", remaining)
                    writer.write(piece)
                    remaining -= len(piece)
                    await writer.drain()
        else:  # delimited by the upstream closing the connection
            writer.write(head)
            answered.head_sent = True
            while piece := await reader.read(1 << 16):
                writer.write(piece)
                await writer.drain()
        await writer.drain()
        return status, framed and not up_close, client_ok


class _Answered:
    """How far one response got: when its status was known (before the client is sent any of
    it), and whether the client has its head — after which a timeout can only cut the
    connection, not answer 504."""

    __slots__ = ("at", "head_sent")

    def __init__(self) -> None:
        self.at: float | None = None
        self.head_sent = False

    def now(self) -> None:
        if self.at is None:
            self.at = time.time()


def _plain(status: int, text: str, keep_alive: bool, revision: str | None = None) -> bytes:
    extra = [(REVISION_HEADER, revision.encode())] if revision else None
    return response_bytes(status, text.encode() + b"\n", content_type=b"text/plain; charset=utf-8",
                          keep_alive=keep_alive, extra=extra)


def _denied(status: int, why: str, *, keep_alive: bool) -> bytes:
    """Cloud Run's answer to a caller IAM turned away: no revision saw the request."""
    word = "Unauthorized" if status == 401 else "Forbidden"
    extra = [(b"www-authenticate", b'Bearer error="invalid_token"')] if status == 401 else None
    return response_bytes(status, f"Error: {word}\n{why}\n".encode(),
                          content_type=b"text/plain; charset=utf-8", keep_alive=keep_alive,
                          extra=extra)


# (listener, the request's Authorization header) → None to let it through, or (status, why)
Gate = Callable[["Listener", bytes | None], tuple[int, str] | None]


class Proxy:
    """Every listener of the emulator and the upstream of every running revision."""

    def __init__(self) -> None:
        self.upstreams: dict[str, Upstream] = {}
        self.gate: Gate | None = None  # the invoker check; None lets every request through

    def add_upstream(self, up: Upstream) -> None:
        old = self.upstreams.get(up.key)
        self.upstreams[up.key] = up
        if old is not None and old is not up:
            old.close()

    def remove_upstream(self, key: str) -> None:
        up = self.upstreams.pop(key, None)
        if up is not None:
            up.close()

    def listener(self, service: str, metrics: Metrics, via: int, label: str = "") -> Listener:
        return Listener(self, service, metrics, via, label)
