"""flightcheck's fake model server: a deterministic stand-in for LLM provider APIs.

One stdlib-only file (Python >= 3.8) because it runs as a sidecar inside the image of the
service under test, whatever that image holds. It speaks:

* OpenAI Chat Completions   POST /v1/chat/completions   (also ``stream: true``, as SSE)
* OpenAI Embeddings         POST /v1/embeddings
* OpenAI model list         GET  /v1/models
* Gemini REST               POST /v1beta/models/{model}:generateContent

and a control API for flightcheck:

* PUT  /_fc/script   the replies for the next model requests, consumed in order:
  ``{"replies": [reply, ...], "after": "default" | "last"}`` (or a bare list). A reply holds
  any of ``content`` (text), ``json`` (any JSON value, sent as the text), ``status`` + ``error``
  (an HTTP error in the provider's format), ``delay_ms``, ``malformed`` (``true``/"content":
  truncated JSON text; "body": a truncated HTTP body), ``drop`` (close the connection without
  answering), ``usage`` ({"prompt_tokens", "completion_tokens"} to report instead of the
  computed ones), ``finish_reason`` and ``times`` (repeat the reply N times). When the replies
  run out, ``after`` decides: the deterministic default reply, or the last reply again.
* GET  /_fc/usage    token totals, per model, and the per-request log (model, sampling
  parameters, tokens, status); ``?since=SEQ`` limits the log to later requests.
* POST /_fc/reset    forget the script and the log.
* GET  /_fc/health   200 once serving.

Unscripted requests get a reply derived from a hash of the request, so the same request
always gets the same answer. Tokens are counted as ceil(characters / 4), at least 1.

Run: ``python server.py --port 8929 [--host 127.0.0.1] [--quiet]`` (``--port 0`` picks a free
port; the first stdout line is ``{"event": "fake_model_ready", "port": N, ...}``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

DEFAULT_PORT = 8929
# The API key flightcheck hands the service in fake mode. Not a secret: it only says "fake".
FAKE_API_KEY = "flightcheck-fake-model-key"
OWNER = "flightcheck-fake"

_REPLY_KEYS = {
    "content",
    "json",
    "status",
    "error",
    "delay_ms",
    "malformed",
    "drop",
    "usage",
    "finish_reason",
    "times",
}
_EMBEDDING_DIMS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
_OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}
_GEMINI_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class ScriptError(ValueError):
    """A control-API script that cannot be used; the message says why."""


def count_tokens(text: str) -> int:
    """The fake tokenizer: ceil(characters / 4), at least 1."""
    return max(1, int(math.ceil(len(text) / 4.0)))


def _validate_reply(index: int, reply: Any) -> dict[str, Any]:
    where = f"replies[{index}]"
    if not isinstance(reply, dict):
        raise ScriptError(f"{where} must be an object, got {type(reply).__name__}")
    unknown = sorted(set(reply) - _REPLY_KEYS)
    if unknown:
        raise ScriptError(
            f"{where}: unknown key(s) {unknown}; known: {sorted(_REPLY_KEYS)}"
        )
    status = reply.get("status")
    if status is not None and (not isinstance(status, int) or not 100 <= status <= 599):
        raise ScriptError(f"{where}.status must be an HTTP status code, got {status!r}")
    if "content" in reply and not isinstance(reply["content"], str):
        raise ScriptError(f"{where}.content must be a string (use 'json' for objects)")
    delay = reply.get("delay_ms", 0)
    if not isinstance(delay, (int, float)) or isinstance(delay, bool) or delay < 0:
        raise ScriptError(f"{where}.delay_ms must be a non-negative number, got {delay!r}")
    malformed = reply.get("malformed", False)
    if malformed not in (False, True, "content", "body"):
        raise ScriptError(f'{where}.malformed must be true, "content" or "body"')
    usage = reply.get("usage")
    if usage is not None:
        if not isinstance(usage, dict) or not all(
            k in ("prompt_tokens", "completion_tokens") and isinstance(v, int) and v >= 0
            for k, v in usage.items()
        ):
            raise ScriptError(
                f"{where}.usage must map prompt_tokens/completion_tokens to counts"
            )
    times = reply.get("times", 1)
    if not isinstance(times, int) or isinstance(times, bool) or times < 1:
        raise ScriptError(f"{where}.times must be a positive integer, got {times!r}")
    return reply


def parse_script(data: Any) -> tuple[list[dict[str, Any]], str]:
    """A control-API script → (replies with ``times`` expanded, after-policy)."""
    if isinstance(data, list):
        data = {"replies": data}
    if not isinstance(data, dict):
        raise ScriptError("a script is an object {\"replies\": [...]} or a list of replies")
    unknown = sorted(set(data) - {"replies", "after"})
    if unknown:
        raise ScriptError(f"unknown script key(s) {unknown}; known: ['after', 'replies']")
    replies = data.get("replies", [])
    if not isinstance(replies, list):
        raise ScriptError("'replies' must be a list")
    after = data.get("after", "default")
    if after not in ("default", "last"):
        raise ScriptError(f"'after' must be \"default\" or \"last\", got {after!r}")
    expanded: list[dict[str, Any]] = []
    for i, reply in enumerate(replies):
        checked = _validate_reply(i, reply)
        expanded.extend([checked] * int(checked.get("times", 1)))
    return expanded, after


class State:
    """Script and usage log, shared by the handler threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._replies: list[dict[str, Any]] = []
        self._after = "default"
        self._last: dict[str, Any] | None = None
        self._log: list[dict[str, Any]] = []
        self._seq = 0

    def set_script(self, replies: list[dict[str, Any]], after: str) -> None:
        with self._lock:
            self._replies = list(replies)
            self._after = after
            self._last = None

    def reset(self) -> None:
        with self._lock:
            self._replies = []
            self._after = "default"
            self._last = None
            self._log = []

    def next_reply(self) -> dict[str, Any] | None:
        """The scripted reply for the next model request, or None for the default."""
        with self._lock:
            if self._replies:
                self._last = self._replies.pop(0)
                return self._last
            if self._after == "last":
                return self._last
            return None

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._seq += 1
            entry["seq"] = self._seq
            self._log.append(entry)

    def usage(self, since: int = 0) -> dict[str, Any]:
        with self._lock:
            log = [dict(e) for e in self._log if e["seq"] > since]
            pending = len(self._replies)
            next_seq = self._seq + 1
        totals = {"requests": 0, "errors": 0, "prompt_tokens": 0, "completion_tokens": 0,
                  "total_tokens": 0}
        by_model: dict[str, dict[str, int]] = {}
        for e in log:
            totals["requests"] += 1
            if e["status"] != 200:
                totals["errors"] += 1
            per = by_model.setdefault(
                e["model"], {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0,
                             "total_tokens": 0}
            )
            per["requests"] += 1
            for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
                totals[key] += e[key]
                per[key] += e[key]
        return {"totals": totals, "by_model": by_model, "requests": log,
                "pending_replies": pending, "next_seq": next_seq}


# --- deterministic content ------------------------------------------------------------------


def _digest(parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _numbers(digest: str) -> tuple[int, int]:
    return int(digest[0:2], 16) % 9 + 1, int(digest[2:4], 16) % 9 + 1


def default_text(digest: str) -> str:
    a, b = _numbers(digest)
    return f"[fake-model {digest[:8]}] {a} + {b} = {a + b}."


def _instance(schema: Any, digest: str, depth: int = 0) -> Any:
    """A small value that satisfies the common subset of a JSON schema."""
    if not isinstance(schema, dict) or depth > 8:
        return None
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return _instance(schema[key][0], digest, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    a, b = _numbers(digest)
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {k: _instance(v, digest, depth + 1) for k, v in props.items()}
    if kind == "array":
        return [_instance(schema.get("items") or {}, digest, depth + 1)] * int(
            schema.get("minItems", 1)
        )
    if kind == "integer":
        return a + b
    if kind == "number":
        return float(a + b)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return f"fake-{digest[:8]}"


def default_json(digest: str, schema: Any = None) -> Any:
    """The unscripted JSON-mode reply: an instance of the requested schema, or a small
    arithmetic item {"text", "expression", "answer"}."""
    if isinstance(schema, dict):
        return _instance(schema, digest)
    a, b = _numbers(digest)
    return {"text": f"What is {a} + {b}?", "expression": f"{a} + {b}", "answer": str(a + b)}


def malformed_text(content: str) -> str:
    """A reply cut off mid-JSON, like a model that ran out of tokens or ignored JSON mode."""
    base = content if content.lstrip().startswith("{") else f'{{"text": {json.dumps(content[:40])}, "answer": '
    return base[: max(1, len(base) // 2)]


def embedding(text: str, dims: int) -> list[float]:
    rng = random.Random(int(_digest(text)[:16], 16))
    vec = [rng.random() * 2.0 - 1.0 for _ in range(dims)]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [round(v / norm, 6) for v in vec]


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else json.dumps(content)


# --- HTTP -------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server_version = "flightcheck-fake-model/1"
    protocol_version = "HTTP/1.1"
    state: State  # set on the subclass made by make_server
    quiet: bool = False

    # stdlib hook names
    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if not self.quiet:
            sys.stderr.write(json.dumps({"event": "fake_model_http", "msg": format % args}) + "\n")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        try:
            body = self._read_body()
            if method == "GET" and path in ("/v1/models", "/models"):
                self._json(200, {"object": "list", "data": [
                    {"id": m, "object": "model", "created": 0, "owned_by": OWNER}
                    for m in ("fake-chat", "fake-math-1", "text-embedding-3-small")
                ]})
            elif method == "GET" and path == "/_fc/health":
                self._json(200, {"status": "ok"})
            elif method == "GET" and path == "/_fc/usage":
                since = parse_qs(url.query).get("since", ["0"])[0]
                self._json(200, self.state.usage(int(since) if since.isdigit() else 0))
            elif method == "POST" and path == "/_fc/reset":
                self.state.reset()
                self._json(200, {"ok": True})
            elif method == "PUT" and path == "/_fc/script":
                replies, after = parse_script(self._parse_json(body))
                self.state.set_script(replies, after)
                self._json(200, {"ok": True, "replies": len(replies), "after": after})
            elif method == "POST" and path in ("/v1/chat/completions", "/chat/completions"):
                self._chat(self._parse_json(body))
            elif method == "POST" and path in ("/v1/embeddings", "/embeddings"):
                self._embeddings(self._parse_json(body))
            elif method == "POST" and ":generateContent" in path and "/models/" in path:
                model = path.split("/models/", 1)[1].split(":", 1)[0]
                self._gemini(model, self._parse_json(body))
            else:
                self._error(404, f"no route for {method} {url.path} on the flightcheck fake model server", gemini=":" in path)
        except ScriptError as exc:
            self._json(400, {"error": {"message": str(exc), "type": "invalid_script"}})
        except _BadRequest as exc:
            self._error(400, str(exc), gemini="generateContent" in path)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # --- request plumbing ---

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    @staticmethod
    def _parse_json(body: bytes) -> Any:
        try:
            return json.loads(body.decode("utf-8") or "null")
        except ValueError as exc:
            raise _BadRequest(f"request body is not valid JSON: {exc}") from None

    def _send(self, status: int, payload: bytes, content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode("utf-8"), headers=headers)

    def _error(self, status: int, message: str, gemini: bool = False) -> None:
        headers = {"Retry-After": "0"} if status == 429 else None
        if gemini:
            body: dict[str, Any] = {"error": {"code": status, "message": message,
                                              "status": _GEMINI_STATUS.get(status, "UNKNOWN")}}
        else:
            body = {"error": {"message": message,
                              "type": _OPENAI_ERROR_TYPES.get(status, "server_error"),
                              "param": None, "code": status}}
        self._json(status, body, headers)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _scripted(self, gemini: bool) -> tuple[dict[str, Any] | None, int | None]:
        """Take the next scripted reply and apply its delay, drop or error.

        Returns (reply, ended): ``ended`` is the status already sent (0: dropped), or None
        when the caller still has to answer.
        """
        reply = self.state.next_reply()
        if reply is None:
            return None, None
        if reply.get("delay_ms"):
            time.sleep(float(reply["delay_ms"]) / 1000.0)
        if reply.get("drop"):
            self._drop()
            return reply, 0
        status = reply.get("status")
        if status is not None and status >= 400:
            self._error(status, str(reply.get("error") or f"injected error {status}"), gemini)
            return reply, status
        return reply, None

    def _content(self, reply: dict[str, Any] | None, digest: str, json_mode: bool,
                 schema: Any) -> str:
        if reply is not None and "content" in reply:
            content = reply["content"]
        elif reply is not None and "json" in reply:
            content = json.dumps(reply["json"])
        elif json_mode or schema is not None:
            content = json.dumps(default_json(digest, schema))
        else:
            content = default_text(digest)
        if reply is not None and reply.get("malformed") in (True, "content"):
            content = malformed_text(content)
        return content

    def _log(self, started: float, endpoint: str, model: str, params: dict[str, Any],
             status: int, prompt: int, completion: int, reply: dict[str, Any] | None) -> None:
        self.state.record({
            "time": time.time(), "endpoint": endpoint, "model": model,
            "params": {k: v for k, v in params.items() if v is not None}, "status": status,
            "prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion, "scripted": reply is not None,
            "latency_ms": round((time.perf_counter() - started) * 1000.0, 3),
        })

    # --- OpenAI chat ---

    def _chat(self, req: Any) -> None:
        started = time.perf_counter()
        if not isinstance(req, dict) or not isinstance(req.get("messages"), list):
            raise _BadRequest("'messages' is a required property (a list of messages)")
        model = str(req.get("model") or "fake-chat")
        max_tokens = req.get("max_completion_tokens", req.get("max_tokens"))
        fmt = req.get("response_format")
        fmt = fmt if isinstance(fmt, dict) else {}
        params = {"temperature": req.get("temperature"), "top_p": req.get("top_p"),
                  "max_tokens": max_tokens, "seed": req.get("seed"),
                  "response_format": fmt.get("type")}
        prompt_text = "\n".join(
            str(m.get("role", "")) + ": " + _message_text(m.get("content"))
            for m in req["messages"] if isinstance(m, dict)
        )
        digest = _digest(["chat", model, req["messages"], params])
        reply, ended = self._scripted(gemini=False)
        prompt_tokens = count_tokens(prompt_text)
        if ended is not None:
            # Providers bill no tokens for a failed request.
            self._log(started, "chat.completions", model, params, ended, 0, 0, reply)
            return
        schema = None
        if fmt.get("type") == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema") or {}
        content = self._content(reply, digest, fmt.get("type") == "json_object", schema)
        content, finish = _truncate(content, max_tokens)
        completion_tokens = count_tokens(content)
        if reply is not None:
            prompt_tokens = reply.get("usage", {}).get("prompt_tokens", prompt_tokens)
            completion_tokens = reply.get("usage", {}).get("completion_tokens", completion_tokens)
            finish = reply.get("finish_reason", finish)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        ident = "chatcmpl-fake-" + digest[:20]
        if reply is not None and reply.get("malformed") == "body":
            payload = json.dumps({"id": ident, "object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}}]})
            self._send(200, payload[: len(payload) // 2].encode("utf-8"))
        elif req.get("stream"):
            self._stream(ident, model, content, finish, usage,
                         bool((req.get("stream_options") or {}).get("include_usage")))
        else:
            self._json(200, {
                "id": ident, "object": "chat.completion", "created": 0, "model": model,
                "system_fingerprint": "fp_flightcheck_fake",
                "choices": [{"index": 0, "finish_reason": finish, "logprobs": None,
                             "message": {"role": "assistant", "content": content}}],
                "usage": usage,
            })
        self._log(started, "chat.completions", model, params, 200, prompt_tokens,
                  completion_tokens, reply)

    def _stream(self, ident: str, model: str, content: str, finish: str,
                usage: dict[str, int], include_usage: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        base = {"id": ident, "object": "chat.completion.chunk", "created": 0, "model": model}
        pieces = [content[i:i + 16] for i in range(0, len(content), 16)] or [""]
        events: list[dict[str, Any]] = [dict(base, choices=[
            {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])]
        events += [dict(base, choices=[{"index": 0, "delta": {"content": p},
                                        "finish_reason": None}]) for p in pieces]
        events.append(dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": finish}]))
        if include_usage:
            events.append(dict(base, choices=[], usage=usage))
        for event in events:
            self.wfile.write((f"data: {json.dumps(event)}\n\n").encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    # --- OpenAI embeddings ---

    def _embeddings(self, req: Any) -> None:
        started = time.perf_counter()
        if not isinstance(req, dict) or "input" not in req:
            raise _BadRequest("'input' is a required property")
        model = str(req.get("model") or "text-embedding-3-small")
        raw = req["input"]
        inputs = [raw] if isinstance(raw, str) or (
            isinstance(raw, list) and raw and isinstance(raw[0], int)) else list(raw or [])
        texts = [x if isinstance(x, str) else json.dumps(x) for x in inputs]
        dims = req.get("dimensions") or _EMBEDDING_DIMS.get(model, 16)
        if not isinstance(dims, int) or dims < 1:
            raise _BadRequest("'dimensions' must be a positive integer")
        prompt_tokens = sum(count_tokens(t) for t in texts)
        params: dict[str, Any] = {"dimensions": req.get("dimensions")}
        reply, ended = self._scripted(gemini=False)
        if ended is not None:
            # Providers bill no tokens for a failed request.
            self._log(started, "embeddings", model, params, ended, 0, 0, reply)
            return
        if reply is not None:
            prompt_tokens = reply.get("usage", {}).get("prompt_tokens", prompt_tokens)
        self._json(200, {
            "object": "list", "model": model,
            "data": [{"object": "embedding", "index": i, "embedding": embedding(t, dims)}
                     for i, t in enumerate(texts)],
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        })
        self._log(started, "embeddings", model, params, 200, prompt_tokens, 0, reply)

    # --- Gemini generateContent ---

    def _gemini(self, model: str, req: Any) -> None:
        started = time.perf_counter()
        if not isinstance(req, dict) or not isinstance(req.get("contents"), list):
            raise _BadRequest("'contents' is required (a list of Content objects)")
        cfg = req.get("generationConfig") or req.get("generation_config") or {}
        params = {"temperature": cfg.get("temperature"), "top_p": cfg.get("topP"),
                  "top_k": cfg.get("topK"), "max_tokens": cfg.get("maxOutputTokens"),
                  "seed": cfg.get("seed"), "response_format": cfg.get("responseMimeType")}
        texts: list[str] = []
        system = req.get("systemInstruction") or req.get("system_instruction")
        for content in ([system] if isinstance(system, dict) else []) + req["contents"]:
            if isinstance(content, dict):
                texts.extend(str(p.get("text", "")) for p in content.get("parts") or []
                             if isinstance(p, dict))
        digest = _digest(["gemini", model, req["contents"], params])
        prompt_tokens = count_tokens("\n".join(texts))
        reply, ended = self._scripted(gemini=True)
        if ended is not None:
            # Providers bill no tokens for a failed request.
            self._log(started, "generateContent", model, params, ended, 0, 0, reply)
            return
        content = self._content(reply, digest, cfg.get("responseMimeType") == "application/json",
                                cfg.get("responseSchema") or cfg.get("responseJsonSchema"))
        content, finish = _truncate(content, params["max_tokens"])
        completion_tokens = count_tokens(content)
        if reply is not None:
            prompt_tokens = reply.get("usage", {}).get("prompt_tokens", prompt_tokens)
            completion_tokens = reply.get("usage", {}).get("completion_tokens", completion_tokens)
        body = {
            "candidates": [{"index": 0, "finishReason": "MAX_TOKENS" if finish == "length"
                            else "STOP", "content": {"role": "model", "parts": [{"text": content}]}}],
            "usageMetadata": {"promptTokenCount": prompt_tokens,
                              "candidatesTokenCount": completion_tokens,
                              "totalTokenCount": prompt_tokens + completion_tokens},
            "modelVersion": model,
        }
        if reply is not None and reply.get("malformed") == "body":
            text = json.dumps(body)
            self._send(200, text[: len(text) // 2].encode("utf-8"))
        else:
            self._json(200, body)
        self._log(started, "generateContent", model, params, 200, prompt_tokens,
                  completion_tokens, reply)


class _BadRequest(ValueError):
    pass


def _truncate(content: str, max_tokens: Any) -> tuple[str, str]:
    """Honour max_tokens the way providers do: cut the text, finish_reason "length"."""
    if isinstance(max_tokens, int) and max_tokens > 0 and count_tokens(content) > max_tokens:
        return content[: max_tokens * 4], "length"
    return content, "stop"


def make_server(host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                quiet: bool = False) -> ThreadingHTTPServer:
    """A ready-to-serve server with fresh state (``port=0`` picks a free port)."""
    handler = type("Handler", (_Handler,), {"state": State(), "quiet": quiet})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="flightcheck fake model server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--quiet", action="store_true", help="no per-request log lines")
    args = parser.parse_args(argv)
    try:
        server = make_server(args.host, args.port, args.quiet)
    except OSError as exc:
        sys.stderr.write(f"fake model server: cannot listen on {args.host}:{args.port}: {exc}\n")
        return 2
    sys.stdout.write(json.dumps({"event": "fake_model_ready", "host": args.host,
                                 "port": server.server_address[1], "ts": time.time()}) + "\n")
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
