"""The fake model server as a real process on 127.0.0.1: wire protocols, scripting, usage."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest
from fc_support import free_port, start_fake_model

from flightcheck.fakemodel import FAKE_API_KEY, SERVER_SCRIPT, count_tokens
from flightcheck.smoke.runner import fake_env


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    port = free_port()
    proc = start_fake_model(port)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(5)


@pytest.fixture
def fm(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, trust_env=False, timeout=10) as client:
        client.post("/_fc/reset").raise_for_status()
        yield client


def _chat(fm: httpx.Client, content: str = "hi", **extra: Any) -> httpx.Response:
    return fm.post("/v1/chat/completions", json={
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **extra})


def _script(fm: httpx.Client, *replies: dict[str, Any], after: str = "default") -> None:
    resp = fm.put("/_fc/script", json={"replies": list(replies), "after": after})
    assert resp.status_code == 200, resp.text


# --- the file itself ------------------------------------------------------------------------


def test_server_is_one_stdlib_only_python38_file() -> None:
    tree = ast.parse(SERVER_SCRIPT.read_text(), feature_version=(3, 8))
    imported = {
        (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom)
        else alias.name.split(".")[0]
        for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported - {"__future__"} <= set(sys.stdlib_module_names), imported
    source = SERVER_SCRIPT.read_text()
    # Annotations like dict[str, Any] | None stay strings, so 3.8 never evaluates them.
    assert "from __future__ import annotations" in source
    # Library calls newer than 3.8 that the syntax check cannot see.
    for newer in (".removeprefix(", ".removesuffix(", "zoneinfo", "math.lcm", "functools.cache("):
        assert newer not in source, newer


def test_runs_as_a_plain_process_and_announces_its_port() -> None:
    proc = subprocess.Popen([sys.executable, str(SERVER_SCRIPT), "--port", "0", "--quiet"],
                            stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        assert ready["event"] == "fake_model_ready" and ready["port"] > 0
        resp = httpx.get(f"http://127.0.0.1:{ready['port']}/v1/models", trust_env=False)
        assert resp.json()["object"] == "list"
    finally:
        proc.terminate()
        proc.wait(5)


def test_port_in_use_is_a_clear_error(base: str) -> None:
    port = base.rsplit(":", 1)[1]
    done = subprocess.run([sys.executable, str(SERVER_SCRIPT), "--port", port],
                          capture_output=True, text=True, timeout=10)
    assert done.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in done.stderr


# --- OpenAI Chat Completions ----------------------------------------------------------------


def test_default_reply_is_deterministic_per_request(fm: httpx.Client) -> None:
    a, b, c = _chat(fm, "same"), _chat(fm, "same"), _chat(fm, "different")
    assert a.json() == b.json()
    assert a.json()["choices"][0]["message"]["content"] != c.json()["choices"][0]["message"]["content"]
    body = a.json()
    assert body["object"] == "chat.completion" and body["model"] == "gpt-4o-mini"
    usage = body["usage"]
    content = body["choices"][0]["message"]["content"]
    assert usage["prompt_tokens"] == count_tokens("user: same")
    assert usage["completion_tokens"] == count_tokens(content)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_json_modes_reply_with_valid_json(fm: httpx.Client) -> None:
    plain = _chat(fm, response_format={"type": "json_object"}).json()
    assert set(json.loads(plain["choices"][0]["message"]["content"])) == {
        "text", "expression", "answer"}
    schema = {"type": "object", "required": ["name", "score", "tags"], "properties": {
        "name": {"type": "string"}, "score": {"type": "number"},
        "tags": {"type": "array", "items": {"type": "string"}}}}
    typed = _chat(fm, response_format={"type": "json_schema",
                                       "json_schema": {"name": "x", "schema": schema}}).json()
    jsonschema.validate(json.loads(typed["choices"][0]["message"]["content"]), schema)


def test_max_tokens_cuts_the_reply_like_a_provider(fm: httpx.Client) -> None:
    _script(fm, {"content": "x" * 400})
    body = _chat(fm, max_tokens=10).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert len(body["choices"][0]["message"]["content"]) == 40
    assert body["usage"]["completion_tokens"] == 10


def test_scripted_replies_are_used_in_order_then_the_default(fm: httpx.Client) -> None:
    _script(fm, {"content": "one"}, {"json": {"n": 2}, "times": 2})
    got = [_chat(fm).json()["choices"][0]["message"]["content"] for _ in range(4)]
    assert got[:3] == ["one", '{"n": 2}', '{"n": 2}']
    assert got[3].startswith("[fake-model ")


def test_after_last_repeats_the_last_reply(fm: httpx.Client) -> None:
    _script(fm, {"status": 500, "error": "down"}, after="last")
    assert [_chat(fm).status_code for _ in range(3)] == [500, 500, 500]


def test_injected_errors_use_the_openai_error_format(fm: httpx.Client) -> None:
    _script(fm, {"status": 429, "error": "slow down"}, {"status": 500})
    limited = _chat(fm)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "0"
    assert limited.json() == {"error": {"message": "slow down", "type": "rate_limit_error",
                                        "param": None, "code": 429}}
    failed = _chat(fm)
    assert failed.status_code == 500 and failed.json()["error"]["type"] == "server_error"


def test_injected_latency(fm: httpx.Client) -> None:
    _script(fm, {"content": "late", "delay_ms": 300})
    resp = _chat(fm)
    assert resp.elapsed.total_seconds() >= 0.3
    log = fm.get("/_fc/usage").json()["requests"]
    assert log[-1]["latency_ms"] >= 300


def test_malformed_content_and_body(fm: httpx.Client) -> None:
    _script(fm, {"json": {"text": "What is 1+1?", "answer": "2"}, "malformed": True},
            {"content": "fine", "malformed": "body"})
    content = _chat(fm).json()["choices"][0]["message"]["content"]
    with pytest.raises(ValueError):
        json.loads(content)
    assert content.startswith('{"text"')
    broken = _chat(fm)
    assert broken.status_code == 200
    with pytest.raises(ValueError):
        broken.json()


def test_drop_closes_the_connection_without_an_answer(fm: httpx.Client) -> None:
    _script(fm, {"drop": True})
    with pytest.raises(httpx.RemoteProtocolError):
        _chat(fm)
    assert _chat(fm).status_code == 200  # the server itself is fine


def test_usage_override_reports_inflated_tokens(fm: httpx.Client) -> None:
    _script(fm, {"content": "ok", "usage": {"prompt_tokens": 5, "completion_tokens": 9000}})
    assert _chat(fm).json()["usage"] == {"prompt_tokens": 5, "completion_tokens": 9000,
                                         "total_tokens": 9005}


def test_streaming_sends_chunks_and_usage(fm: httpx.Client) -> None:
    _script(fm, {"content": "a streamed reply that spans chunks"})
    resp = _chat(fm, stream=True, stream_options={"include_usage": True})
    events = [line[6:] for line in resp.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "a streamed reply that spans chunks"
    assert chunks[-1]["usage"]["completion_tokens"] == count_tokens(text)


def test_usage_log_records_model_params_and_tokens(fm: httpx.Client) -> None:
    _chat(fm, "hello", temperature=0.7, top_p=0.9, max_tokens=64, seed=3)
    _script(fm, {"status": 503})
    _chat(fm, "again")
    usage = fm.get("/_fc/usage").json()
    first, second = usage["requests"]
    assert first["model"] == "gpt-4o-mini" and first["endpoint"] == "chat.completions"
    assert first["params"] == {"temperature": 0.7, "top_p": 0.9, "max_tokens": 64, "seed": 3}
    assert second["status"] == 503 and second["total_tokens"] == 0 and second["scripted"]
    assert usage["totals"]["requests"] == 2 and usage["totals"]["errors"] == 1
    assert usage["totals"]["total_tokens"] == first["total_tokens"]
    assert usage["by_model"]["gpt-4o-mini"]["requests"] == 2
    later = fm.get("/_fc/usage", params={"since": first["seq"]}).json()
    assert [r["seq"] for r in later["requests"]] == [second["seq"]]
    fm.post("/_fc/reset")
    assert fm.get("/_fc/usage").json()["totals"]["requests"] == 0


@pytest.mark.parametrize(("script", "message"), [
    ({"replies": [{"contnet": "typo"}]}, "unknown key(s) ['contnet']"),
    ({"replies": [{"status": 99}]}, "replies[0].status must be an HTTP status code"),
    ({"replies": [{"delay_ms": -1}]}, "delay_ms must be a non-negative number"),
    ({"replies": [], "after": "never"}, "'after' must be"),
    ({"replies": [{"malformed": "yes"}]}, "malformed must be true"),
    ("nonsense", "a script is an object"),
])
def test_bad_scripts_are_refused_with_the_reason(fm: httpx.Client, script: object,
                                                 message: str) -> None:
    resp = fm.put("/_fc/script", json=script)
    assert resp.status_code == 400 and message in resp.json()["error"]["message"]


def test_bad_requests_get_provider_style_errors(fm: httpx.Client) -> None:
    resp = fm.post("/v1/chat/completions", content=b"{not json")
    assert resp.status_code == 400 and "not valid JSON" in resp.json()["error"]["message"]
    missing = fm.post("/v1/chat/completions", json={"model": "m"})
    assert missing.status_code == 400 and "messages" in missing.json()["error"]["message"]
    assert fm.post("/v1/nothing", json={}).status_code == 404


# --- embeddings and Gemini ------------------------------------------------------------------


def test_embeddings_are_deterministic_unit_vectors(fm: httpx.Client) -> None:
    body = fm.post("/v1/embeddings", json={"model": "text-embedding-3-small",
                                           "input": ["alpha", "beta"]}).json()
    one, two = (d["embedding"] for d in body["data"])
    assert len(one) == 1536 and one != two
    assert sum(v * v for v in one) == pytest.approx(1.0, abs=1e-3)
    again = fm.post("/v1/embeddings", json={"model": "x", "input": "alpha", "dimensions": 8})
    assert len(again.json()["data"][0]["embedding"]) == 8
    assert body["usage"]["prompt_tokens"] == count_tokens("alpha") + count_tokens("beta")


def test_gemini_generate_content(fm: httpx.Client) -> None:
    req = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}],
           "generationConfig": {"temperature": 0.1, "topK": 20, "maxOutputTokens": 100,
                                "responseMimeType": "application/json"}}
    resp = fm.post("/v1beta/models/gemini-2.0-flash-001:generateContent", json=req).json()
    text = resp["candidates"][0]["content"]["parts"][0]["text"]
    assert json.loads(text)["answer"]
    meta = resp["usageMetadata"]
    assert meta["totalTokenCount"] == meta["promptTokenCount"] + meta["candidatesTokenCount"]
    log = fm.get("/_fc/usage").json()["requests"][-1]
    assert log["model"] == "gemini-2.0-flash-001"
    assert log["params"] == {"temperature": 0.1, "top_k": 20, "max_tokens": 100,
                             "response_format": "application/json"}
    _script(fm, {"status": 503})
    err = fm.post("/v1beta/models/gemini-2.0-flash-001:generateContent", json=req)
    assert err.status_code == 503 and err.json()["error"]["status"] == "UNAVAILABLE"


# --- the official SDKs, configured only by the env flightcheck gives a service ---------------

_SDK_CLIENT = """
import json
import openai
from google import genai
oai = openai.OpenAI()  # OPENAI_BASE_URL and OPENAI_API_KEY from the environment
chat = oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                   temperature=0.3)
stream = oai.chat.completions.create(model="gpt-4o-mini", stream=True,
                                     messages=[{"role": "user", "content": "hi"}])
streamed = "".join((c.choices[0].delta.content or "") for c in stream if c.choices)
emb = oai.embeddings.create(model="text-embedding-3-small", input="hi")
gclient = genai.Client()
gem = gclient.models.generate_content(model="gemini-2.0-flash-001", contents="hi")
print(json.dumps({"chat": chat.choices[0].message.content, "tokens": chat.usage.total_tokens,
                  "streamed": streamed, "dims": len(emb.data[0].embedding),
                  "gemini": gem.text, "gemini_tokens": gem.usage_metadata.total_token_count}))
"""


def test_official_sdks_work_with_only_the_env_flightcheck_sets(fm: httpx.Client) -> None:
    pytest.importorskip("openai")
    pytest.importorskip("google.genai")
    port = int(str(fm.base_url).rstrip("/").rsplit(":", 1)[1])
    env = {k: v for k, v in __import__("os").environ.items()
           if not k.startswith(("OPENAI_", "GEMINI_", "GOOGLE_"))}
    env.update(fake_env(port, None))
    assert env["OPENAI_API_KEY"] == FAKE_API_KEY
    done = subprocess.run([sys.executable, "-c", _SDK_CLIENT], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out["chat"].startswith("[fake-model ") and out["tokens"] > 0
    assert out["streamed"].startswith("[fake-model ")
    assert out["dims"] == 1536 and out["gemini"] and out["gemini_tokens"] > 0
    endpoints = [r["endpoint"] for r in fm.get("/_fc/usage").json()["requests"]]
    assert endpoints == ["chat.completions", "chat.completions", "embeddings", "generateContent"]
