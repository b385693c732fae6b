"""A small HTTP/1.1 layer over asyncio streams, shared by the API server and the proxy.

Why not a framework: the proxy's budget is a couple of milliseconds and a thousand requests a
second on two cores, shared with the revisions it fronts. A reverse proxy that relays raw
bytes (response bodies are streamed, chunked encoding passes through untouched, so a streaming
LLM answer is not held back) costs tens of microseconds per request here; an ASGI stack plus an
HTTP client costs ten times that. Request bodies are read whole: Cloud Run caps HTTP/1 requests
at 32 MiB, and a buffered body can be resent when a pooled upstream connection turns out closed.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

MAX_HEAD = 64 * 1024
MAX_BODY = 32 * 1024 * 1024  # Cloud Run's request size limit for HTTP/1
CRLF = b"\r\n"
HOP_BY_HOP = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
     b"transfer-encoding", b"upgrade", b"content-length", b"expect")
)
REASONS = {
    200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 413: "Payload Too Large", 429: "Too Many Requests",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}


class BadRequest(Exception):
    """The peer sent something that is not HTTP/1.x we can handle; answer ``status`` and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class Request:
    method: str
    target: str
    version: bytes
    headers: list[tuple[bytes, bytes]]  # names lower-cased
    body: bytes = b""
    keep_alive: bool = True
    _split: Any = field(default=None, repr=False)

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def path(self) -> str:
        if self._split is None:
            self._split = urlsplit(self.target)
        return unquote(self._split.path)

    @property
    def query(self) -> dict[str, list[str]]:
        if self._split is None:
            self._split = urlsplit(self.target)
        return parse_qs(self._split.query, keep_blank_values=True)

    def param(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[-1] if values else default

    def json(self) -> Any:
        if not self.body.strip():
            return {}
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(400, f"the request body is not JSON: {exc}") from None


def parse_head(head: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The start line and the headers (names lower-cased) of a message head."""
    lines = head.split(CRLF)
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            raise BadRequest(400, "malformed header line")
        headers.append((name.strip().lower(), value.strip()))
    return lines[0], headers


async def read_chunked(reader: asyncio.StreamReader, limit: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        size_line = await reader.readuntil(CRLF)
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BadRequest(400, "malformed chunk size") from None
        if size == 0:
            while (await reader.readuntil(CRLF)) != CRLF:  # trailers: dropped
                pass
            return b"".join(parts)
        total += size
        if total > limit:
            raise BadRequest(413, f"request body over {limit} bytes")
        parts.append((await reader.readexactly(size + 2))[:-2])


async def read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                       ) -> Request | None:
    """The next request on a connection; None when the peer closed it between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise BadRequest(400, "connection closed in the middle of a request head") from None
    except asyncio.LimitOverrunError:
        raise BadRequest(431, "request head too large") from None
    start, headers = parse_head(head[:-4])
    parts = start.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    conn = b""
    length: bytes | None = None
    chunked = False
    expect = False
    for name, value in headers:
        if name == b"content-length":
            length = value
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            conn = value.lower()
        elif name == b"expect":
            expect = value.lower() == b"100-continue"
    keep_alive = b"close" not in conn if version == b"HTTP/1.1" else b"keep-alive" in conn
    if expect and (chunked or length not in (None, b"0")):
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    body = b""
    if chunked:
        body = await read_chunked(reader, MAX_BODY)
    elif length is not None:
        try:
            n = int(length)
        except ValueError:
            raise BadRequest(400, "malformed Content-Length") from None
        if n < 0:
            raise BadRequest(400, "malformed Content-Length")
        if n > MAX_BODY:
            raise BadRequest(413, f"request body over {MAX_BODY} bytes")
        if n:
            body = await reader.readexactly(n)
    return Request(method.decode("latin-1"), target.decode("latin-1"), version, headers, body,
                   keep_alive)


def response_bytes(status: int, body: bytes, *, content_type: bytes = b"application/json",
                   keep_alive: bool = True, extra: list[tuple[bytes, bytes]] | None = None
                   ) -> bytes:
    reason = REASONS.get(status, "Unknown").encode()
    lines = [b"HTTP/1.1 %d %s" % (status, reason),
             b"content-type: " + content_type,
             b"content-length: %d" % len(body)]
    if extra:
        lines.extend(name + b": " + value for name, value in extra)
    if not keep_alive:
        lines.append(b"connection: close")
    return CRLF.join(lines) + b"\r\n\r\n" + body


def json_response(status: int, payload: Any, *, keep_alive: bool = True) -> bytes:
    body = json.dumps(payload, indent=2).encode() + b"\n"
    return response_bytes(status, body, keep_alive=keep_alive)


async def close(writer: asyncio.StreamWriter) -> None:
    try:
        writer.close()
        await writer.wait_closed()
    except (OSError, RuntimeError):
        pass
