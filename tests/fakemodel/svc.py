"""A small stdlib-only AI service for health-poll and ai-smoke tests.

It behaves like the services flightcheck checks: /health, /health/startup, /health/ai, and
AI endpoints that call an OpenAI-compatible provider at $OPENAI_BASE_URL. Faults come from env:

SVC_PORT                port (required)
SVC_BIND_DELAY_S        sleep before listening (connection refused meanwhile)
SVC_READY_DELAY_S       /health/startup answers 503 this long after listening
SVC_NEVER_READY=1       /health/startup always 503
SVC_STARTUP_HANG=1      /health/startup never answers
SVC_DIE_AFTER_S         exit with code 3 this long after listening
SVC_LIVENESS_FAIL=1     /health answers 500
SVC_DEGRADE=1           /v1/add answers wrong sums
SVC_TOKEN_MULT          multiply the usage it reports
SVC_HANG_AI=1           /v1/ask never answers
SVC_ERROR_AI=1          /v1/ask answers 500
SVC_LOG_KEY=1           log the provider key at startup (a leak flightcheck must redact)

/v1/ask_raw returns the model's text as the whole response body (so malformed model output
becomes a malformed response).

It logs JSON lines, including {"event": "startup_complete", "ts": <epoch>} when ready.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ENV = os.environ
BOOT = time.time()


def log(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, "ts": time.time(), **fields}) + "\n")
    sys.stdout.flush()


def flag(name: str) -> bool:
    return ENV.get(name, "") == "1"


def seconds(name: str) -> float:
    return float(ENV.get(name, "0") or 0)


class State:
    listening_at = 0.0
    ready = False


def provider_chat(messages: list[dict[str, str]], json_mode: bool = False) -> dict[str, Any]:
    """POST to the OpenAI-compatible provider. Raises RuntimeError('unreachable...'/'HTTP ...')."""
    base = ENV.get("OPENAI_BASE_URL", "https://api.openai.com/v1").rstrip("/")
    body: dict[str, Any] = {"model": ENV.get("AI_MODEL", "gpt-4o-mini"), "messages": messages,
                            "temperature": float(ENV.get("AI_TEMPERATURE", "0.2")),
                            "max_tokens": int(ENV.get("MAX_OUTPUT_TOKENS", "256"))}
    if json_mode:
        body["response_format"] = {"type": "json_object"}
    req = urllib.request.Request(
        base + "/chat/completions", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json",
                 "Authorization": "Bearer " + ENV.get("OPENAI_API_KEY", "")},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"provider error: HTTP {exc.code}") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        raise RuntimeError(f"provider unreachable: {exc}") from None
    try:
        return json.loads(raw)
    except ValueError:
        raise RuntimeError("provider returned a malformed body") from None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log("http", msg=format % args)

    def send_json(self, status: int, data: Any) -> None:
        payload = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def body(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"null")

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/health":
            if flag("SVC_LIVENESS_FAIL"):
                self.send_json(500, {"status": "broken"})
            else:
                self.send_json(200, {"status": "ok"})
        elif self.path == "/health/startup":
            if flag("SVC_STARTUP_HANG"):
                time.sleep(3600)
            if State.ready:
                self.send_json(200, {"status": "ready"})
            else:
                self.send_json(503, {"status": "loading"})
        elif self.path == "/health/ai":
            started = time.time()
            try:
                provider_chat([{"role": "user", "content": "ping"}])
            except RuntimeError as exc:
                self.send_json(503, {"status": "degraded", "provider": {"status": "error",
                                                                        "error": str(exc)}})
                return
            self.send_json(200, {"status": "ok", "provider": {
                "status": "ok", "latency_ms": round((time.time() - started) * 1000, 1)}})
        elif self.path == "/v1/hang":
            time.sleep(3600)
        else:
            self.send_json(404, {"detail": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        if self.path == "/v1/add":
            data = self.body()
            total = data["a"] + data["b"] + (1 if flag("SVC_DEGRADE") else 0)
            self.send_json(200, {"sum": total, "text": f"{data['a']} + {data['b']} = {total}"})
        elif self.path in ("/v1/ask", "/v1/ask_json", "/v1/ask_raw"):
            if flag("SVC_HANG_AI"):
                time.sleep(3600)
            if flag("SVC_ERROR_AI"):
                self.send_json(500, {"detail": "internal error"})
                return
            data = self.body() or {}
            json_mode = self.path == "/v1/ask_json"
            try:
                reply = provider_chat([{"role": "user", "content": str(data.get("question"))}],
                                      json_mode)
            except RuntimeError as exc:
                self.send_json(502, {"detail": str(exc)})
                return
            content = reply["choices"][0]["message"]["content"]
            if self.path == "/v1/ask_raw":
                payload = content.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            mult = float(ENV.get("SVC_TOKEN_MULT", "1") or 1)
            usage = {k: int(v * mult) for k, v in reply.get("usage", {}).items()}
            if json_mode:
                try:
                    content = json.loads(content)
                except ValueError:
                    self.send_json(502, {"detail": "provider returned malformed output"})
                    return
            self.send_json(200, {"answer": content, "model": reply.get("model"), "usage": usage})
        else:
            self.send_json(404, {"detail": "not found"})


def main() -> None:
    time.sleep(seconds("SVC_BIND_DELAY_S"))
    server = ThreadingHTTPServer(("127.0.0.1", int(ENV["SVC_PORT"])), Handler)
    server.daemon_threads = True
    State.listening_at = time.time()
    log("listening", port=int(ENV["SVC_PORT"]))
    if flag("SVC_LOG_KEY"):
        log("config", openai_api_key=ENV.get("OPENAI_API_KEY"))

    def lifecycle() -> None:
        if not flag("SVC_NEVER_READY"):
            time.sleep(seconds("SVC_READY_DELAY_S"))
            State.ready = True
            log("startup_complete")
        die = seconds("SVC_DIE_AFTER_S")
        if die:
            time.sleep(max(0.0, State.listening_at + die - time.time()))
            log("dying", code=3)
            os._exit(3)

    threading.Thread(target=lifecycle, daemon=True).start()
    server.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    main()
