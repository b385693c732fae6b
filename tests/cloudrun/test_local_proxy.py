"""The traffic-splitting proxy against real HTTP upstreams on 127.0.0.1 (no Docker needed)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from flightcheck.cloudrun.local.metrics import VIA_SERVICE, VIA_TAG, Metrics
from flightcheck.cloudrun.local.proxy import Listener, Proxy, Route, Upstream

pytestmark = pytest.mark.anyio
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
KEY = "projects/p/locations/l/services/s/revisions/"


def test_route_weights_and_draws() -> None:
    route = Route.of([("a", 90), ("b", 0), ("c", 10)])
    assert route.names == ("a", "c")  # 0% targets are never drawn
    assert route.as_weights() == [("a", 90), ("c", 10)]
    draws = Counter(route.pick() for _ in range(5000))
    assert 350 <= draws["c"] <= 650, draws  # mean 500, sd ≈ 21
    assert Route.of([]).pick() is None
    assert Route.of([("only", 100)]).pick() == "only"


async def _pieces(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:  # an async body: httpx sends it with Transfer-Encoding: chunked
        yield part


async def _head(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes]]:
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw[:-4].split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower()] = v.strip()
    return lines[0], headers


async def _body(reader: asyncio.StreamReader, headers: dict[bytes, bytes]) -> bytes:
    n = int(headers.get(b"content-length", b"0"))
    return await reader.readexactly(n) if n else b""


def _ok(body: bytes, extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n%s\r\n%s"
            % (len(body), extra, body))


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers every request with its method, path, body and the headers it received."""
    try:
        while True:
            start, headers = await _head(reader)
            body = await _body(reader, headers)
            seen = b";".join(sorted(k + b"=" + v for k, v in headers.items()))
            writer.write(_ok(start + b"|" + body + b"|" + seen,
                             b"x-flightcheck-revision: forged\r\nconnection: keep-alive\r\n"))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
        writer.close()


@pytest.fixture
async def servers() -> AsyncIterator[Callable[[Handler], Awaitable[int]]]:
    started: list[asyncio.Server] = []

    async def start(handler: Handler) -> int:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        started.append(server)
        return server.sockets[0].getsockname()[1]

    yield start
    for server in started:
        server.close()


async def _listener(*upstreams: tuple[str, int, float], timeout_s: float = 5.0,
                    via: int = VIA_SERVICE) -> tuple[Listener, Metrics]:
    proxy = Proxy()
    metrics = Metrics()
    for name, port, _ in upstreams:
        proxy.add_upstream(Upstream(KEY + name, "127.0.0.1", port, timeout_s))
    listener = proxy.listener("projects/p/locations/l/services/s", metrics, via)
    listener.route = Route.of([(KEY + name, pct) for name, _, pct in upstreams])
    await listener.start(0)
    return listener, metrics


async def test_relays_requests_and_names_the_revision(servers: Callable[..., Awaitable[int]]
                                                      ) -> None:
    port = await servers(echo)
    listener, metrics = await _listener(("s-001", port, 100))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{listener.port}",
                                     trust_env=False) as client:
            resp = await client.post("/v1/x?q=1", content=b"hello",
                                     headers={"connection": "keep-alive", "x-custom": "1"})
            chunked = await client.post("/c", content=_pieces(b"a" * 10, b"b" * 5))
            head = await client.head("/h")
    finally:
        await listener.stop()
    assert resp.status_code == 200
    assert resp.headers["x-flightcheck-revision"] == "s-001"  # the upstream's forgery replaced
    start, body, seen = resp.content.split(b"|")
    assert start == b"POST /v1/x?q=1 HTTP/1.1" and body == b"hello"
    assert b"x-custom=1" in seen and b"x-forwarded-for=127.0.0.1" in seen
    assert b"connection=" not in seen  # hop-by-hop headers stay on their hop
    assert chunked.content.split(b"|")[1] == b"a" * 10 + b"b" * 5  # de-chunked, Content-Length
    assert head.status_code == 200 and head.content == b""
    summary = metrics.summary()["s-001"]
    assert summary["requests"] == 3 and summary["status_codes"] == {"200": 3}


def _stream(release: asyncio.Event) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                                 Awaitable[None]]:
    """An upstream that sends a chunked head and a first chunk, the rest once released."""

    async def stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"4\r\nlast\r\n0\r\n\r\n")
        await writer.drain()

    return stream


async def test_streams_chunked_responses_without_buffering(
        servers: Callable[..., Awaitable[int]]) -> None:
    release = asyncio.Event()
    listener, metrics = await _listener(("s-001", await servers(_stream(release)), 100))
    try:
        async with httpx.AsyncClient(trust_env=False) as client, client.stream(
                "GET", f"http://127.0.0.1:{listener.port}/sse") as resp:
            chunks = resp.aiter_raw()
            first = await asyncio.wait_for(chunks.__anext__(), 5)  # before the upstream finished
            assert first == b"first"
            seen_by_client = time.time()
            await asyncio.sleep(0.05)
            release.set()
            rest = b"".join([piece async for piece in chunks])
    finally:
        await listener.stop()
    assert rest == b"last"
    # Timed when its status was known, not when the relay ended: a window read once the client
    # has a response never counts it (the rollout reads the proxy's metrics "since" a step
    # began, right after the step before got its last answers).
    assert metrics.summary()["s-001"]["requests"] == 1
    assert metrics.summary(since=seen_by_client)["s-001"]["requests"] == 0


def test_records_out_of_order_keep_windows_exact() -> None:
    # A slow stream is recorded after faster answers that came back later.
    series = Metrics().series("r1")
    series.add(200, 5.0, VIA_SERVICE, at=100.0)
    series.add(200, 5.0, VIA_SERVICE, at=102.0)
    series.add(503, 900.0, VIA_SERVICE, at=101.0)  # its status was known at 101
    assert list(series.ts) == [100.0, 101.0, 102.0]
    assert list(series.status) == [200, 503, 200]
    assert series.summary(since=100.5)["status_codes"] == {"503": 1, "200": 1}
    assert series.summary(since=101.5)["status_codes"] == {"200": 1}


async def test_a_pooled_connection_the_instance_closed_is_retried(
        servers: Callable[..., Awaitable[int]]) -> None:
    accepted = 0

    async def one_shot(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await _head(reader)
        writer.write(_ok(b"ok"))  # keep-alive advertised, then closed: a stale pooled connection
        await writer.drain()
        writer.close()

    listener, metrics = await _listener(("s-001", await servers(one_shot), 100))
    try:
        async with httpx.AsyncClient(trust_env=False) as client:
            for _ in range(5):
                resp = await client.get(f"http://127.0.0.1:{listener.port}/")
                assert resp.status_code == 200 and resp.content == b"ok"
                await asyncio.sleep(0.02)
    finally:
        await listener.stop()
    assert accepted == 5
    assert metrics.summary()["s-001"]["status_codes"] == {"200": 5}


async def test_failures_are_answered_and_recorded(servers: Callable[..., Awaitable[int]]
                                                  ) -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _head(reader)
        await asyncio.sleep(5)

    async def hangup(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _head(reader)
        writer.close()

    slow_l, slow_m = await _listener(("s-slow", await servers(slow), 100), timeout_s=0.3)
    hang_l, hang_m = await _listener(("s-hang", await servers(hangup), 100))
    gone_l, gone_m = await _listener(("s-gone", 1, 100))  # nothing listens on port 1
    empty_l, _ = await _listener()
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
            slow_r = await client.get(f"http://127.0.0.1:{slow_l.port}/")
            hang_r = await client.get(f"http://127.0.0.1:{hang_l.port}/")
            gone_r = await client.get(f"http://127.0.0.1:{gone_l.port}/")
            empty_r = await client.get(f"http://127.0.0.1:{empty_l.port}/")
            bad = await _raw(empty_l.port, b"NONSENSE\r\n\r\n")
    finally:
        for listener in (slow_l, hang_l, gone_l, empty_l):
            await listener.stop()
    assert slow_r.status_code == 504 and "request timeout of 0.3 s" in slow_r.text
    assert slow_r.headers["x-flightcheck-revision"] == "s-slow"
    assert hang_r.status_code == 502 and "closed the connection" in hang_r.text
    assert gone_r.status_code == 503 and "not reachable" in gone_r.text
    assert empty_r.status_code == 503 and "no revision of service s" in empty_r.text
    assert bad.startswith(b"HTTP/1.1 400")
    assert slow_m.summary()["s-slow"]["status_codes"] == {"504": 1}
    assert hang_m.summary()["s-hang"]["errors_5xx"] == 1
    assert gone_m.summary()["s-gone"]["error_rate"] == 1.0


async def test_a_stream_cut_by_the_request_timeout_ends_the_connection_not_a_504_in_it(
        servers: Callable[..., Awaitable[int]]) -> None:
    # An LLM stream longer than the request timeout: its caller already has the 200 and part
    # of the body, so the only honest end is a cut connection (as on Cloud Run), never a 504
    # response written into the middle of the stream on a connection kept open.
    never = asyncio.Event()
    listener, metrics = await _listener(("s-001", await servers(_stream(never)), 100),
                                        timeout_s=0.3)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(b"GET /sse HTTP/1.1\r\nhost: x\r\n\r\n")
        got = await asyncio.wait_for(reader.read(), 5)  # to EOF: the proxy closed
        writer.close()
    finally:
        await listener.stop()
    assert got.startswith(b"HTTP/1.1 200") and b"first" in got
    assert b"504" not in got and b"request timeout" not in got
    assert metrics.summary()["s-001"]["status_codes"] == {"504": 1}


async def _raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    out = await reader.read(65536)
    writer.close()
    return out


def test_metrics_windows_and_percentiles() -> None:
    metrics = Metrics()
    series = metrics.series("r1")
    for ms in range(1, 101):
        series.add(200 if ms <= 90 else 503, float(ms), VIA_SERVICE)
    cut = time.time()
    time.sleep(0.01)
    series.add(200, 1000.0, VIA_TAG)
    every = metrics.summary()["r1"]
    assert every["requests"] == 101 and every["errors_5xx"] == 10
    assert every["p50_ms"] == 51.0 and every["p99_ms"] == 100.0
    assert metrics.summary(via=VIA_SERVICE)["r1"]["p99_ms"] == 99.0
    late = metrics.summary(since=cut)["r1"]
    assert late["requests"] == 1 and late["p50_ms"] == 1000.0 and late["error_rate"] == 0
