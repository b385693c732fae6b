"""The openai provider against a tiny real Chat Completions server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from http_support import serving
from mathcoach_support import ServiceProcess

KEY = "sk-test-0123456789abcdefSECRET"


@dataclass
class Reply:
    status: int = 200
    body: bytes | dict[str, Any] | None = None


def chat(content: str, prompt_tokens: int = 50, completion_tokens: int = 20) -> Reply:
    return Reply(
        200,
        {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": "stub-model-2024-01-01",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": content},
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        },
    )


def question(expression: str, answer: str) -> Reply:
    return chat(
        json.dumps({"text": f"What is {expression}?", "expression": expression, "answer": answer})
    )


@dataclass
class StubOpenAI:
    """Answers POST /v1/chat/completions from a script; records every request."""

    url: str = ""
    script: list[Reply] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_reply(self, request: dict[str, Any]) -> Reply:
        with self.lock:
            self.requests.append(request)
            return self.script.pop(0) if self.script else chat('{"status": "ok"}')


def _handler(stub: StubOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("content-length", 0))
            raw = self.rfile.read(length)
            reply = stub.next_reply(
                {"path": self.path, "headers": dict(self.headers), "json": json.loads(raw)}
            )
            if isinstance(reply.body, dict):
                payload = json.dumps(reply.body).encode()
            elif reply.body is None:  # echo the credentials, as some misbehaving proxies do
                payload = f"bad key: {self.headers.get('authorization')}".encode()
            else:
                payload = reply.body
            self.send_response(reply.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return None

    return Handler


@pytest.fixture(scope="module")
def stub() -> Iterator[StubOpenAI]:
    state = StubOpenAI()
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))) as server:
        state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        yield state


@pytest.fixture(scope="module")
def service(
    stub: StubOpenAI, start_mathcoach_module: Callable[..., ServiceProcess]
) -> ServiceProcess:
    return start_mathcoach_module(
        {
            "AI_PROVIDER": "openai",
            "OPENAI_BASE_URL": stub.url,
            "OPENAI_API_KEY": KEY,
            "AI_MODEL": "stub-model-2024-01-01",
            "AI_TEMPERATURE": "0.3",
            "AI_TOP_P": "0.9",
            "MAX_OUTPUT_TOKENS": "300",
            "AI_SEED": "11",
            "AI_TIMEOUT_S": "5",
        }
    )


@pytest.fixture(autouse=True)
def _fresh_script(stub: StubOpenAI) -> None:
    stub.script.clear()
    stub.requests.clear()


def _ask(service: ServiceProcess) -> httpx.Response:
    return httpx.post(
        f"{service.url}/v1/questions",
        json={"topic": "fractions", "difficulty": "easy"},
        timeout=30,
    )


def test_question_round_trip_speaks_chat_completions(
    stub: StubOpenAI, service: ServiceProcess
) -> None:
    stub.script.append(question("1/2 + 1/4", "3/4"))
    response = _ask(service)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["question"]["answer"] == "3/4" and body["attempts"] == 1
    assert body["provider"] == "openai" and body["model"] == "stub-model-2024-01-01"
    assert body["usage"] == {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70}
    (sent,) = stub.requests
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["Authorization"] == f"Bearer {KEY}"
    request = sent["json"]
    assert request["model"] == "stub-model-2024-01-01"
    assert request["temperature"] == 0.3 and request["top_p"] == 0.9
    assert request["max_tokens"] == 300 and request["seed"] == 11
    assert request["response_format"] == {"type": "json_object"}
    assert [m["role"] for m in request["messages"]] == ["system", "user"]
    assert "topic: fractions" in request["messages"][1]["content"]


def test_wrong_answer_is_rejected_then_retried_once(
    stub: StubOpenAI, service: ServiceProcess
) -> None:
    stub.script += [question("1/2 + 1/4", "2/6"), question("1/3 + 1/3", "2/3")]
    response = _ask(service)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["attempts"] == 2 and body["question"]["answer"] == "2/3"
    assert body["usage"]["total_tokens"] == 140
    retry = stub.requests[1]["json"]["messages"]
    assert [m["role"] for m in retry] == ["system", "user", "assistant", "user"]
    assert "2/6" in retry[3]["content"]


def test_wrong_answer_twice_is_502(stub: StubOpenAI, service: ServiceProcess) -> None:
    stub.script += [question("2 + 2", "5"), question("3 * 3", "10")]
    response = _ask(service)
    assert response.status_code == 502
    assert "did not verify after 2 attempts" in response.json()["detail"]
    assert len(stub.requests) == 2


@pytest.mark.parametrize(
    ("reply", "fragment"),
    [
        (Reply(200, b"<html>not json</html>"), "malformed Chat Completions reply"),
        (Reply(200, {"choices": []}), "malformed Chat Completions reply"),
        (chat("Sure! The answer is 3/4."), "malformed output"),
        (chat(json.dumps({"text": "What is 1+1?", "answer": "2"})), "malformed output"),
        (Reply(400, {"error": {"message": "bad model"}}), "HTTP 400"),
    ],
)
def test_malformed_or_failed_reply_is_502(
    stub: StubOpenAI, service: ServiceProcess, reply: Reply, fragment: str
) -> None:
    stub.script.append(reply)
    response = _ask(service)
    assert response.status_code == 502
    assert fragment in response.json()["detail"]
    assert len(stub.requests) == 1  # malformed output is not retried


def test_transient_5xx_is_retried(stub: StubOpenAI, service: ServiceProcess) -> None:
    stub.script += [Reply(503, {"error": "overloaded"}), question("6 / 3", "2")]
    response = _ask(service)
    assert response.status_code == 200, response.text
    assert response.json()["attempts"] == 1 and len(stub.requests) == 2


def test_key_never_leaks_into_errors_or_logs(stub: StubOpenAI, service: ServiceProcess) -> None:
    stub.script.append(Reply(401, None))  # the stub echoes the Authorization header
    response = _ask(service)
    assert response.status_code == 502
    assert "bad key: Bearer ***" in response.json()["detail"]
    assert KEY not in response.text
    assert KEY not in service.log_text()
    assert service.events("provider_error")


def test_health_ai_round_trip(stub: StubOpenAI, service: ServiceProcess) -> None:
    response = httpx.get(f"{service.url}/health/ai", timeout=30)
    assert response.status_code == 200, response.text
    provider = response.json()["dependencies"]["provider"]
    assert provider["status"] == "ok" and provider["latency_ms"] > 0
    assert len(stub.requests) == 1
    stub.script.append(Reply(500, {"error": "down"}))
    stub.script += [Reply(500, {"error": "down"})] * 2
    failing = httpx.get(f"{service.url}/health/ai", timeout=30)
    assert failing.status_code == 503
    body = failing.json()
    assert body["dependencies"]["provider"]["status"] == "fail"
    assert "HTTP 500" in body["dependencies"]["provider"]["error"]
    assert body["dependencies"]["evaluator"]["status"] == "ok"


def test_unreachable_provider_is_502_after_retries(
    start_mathcoach: Callable[..., ServiceProcess], free_port: int
) -> None:
    svc = start_mathcoach(
        {
            "AI_PROVIDER": "openai",
            "OPENAI_API_KEY": KEY,
            "OPENAI_BASE_URL": f"http://127.0.0.1:{free_port}/v1",
        }
    )
    response = _ask(svc)
    assert response.status_code == 502
    assert (
        f"cannot connect to http://127.0.0.1:{free_port}/v1/chat/completions"
        in (response.json()["detail"])
    )
