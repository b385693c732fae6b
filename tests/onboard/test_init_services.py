"""`flightcheck init` on whole services — the four written for these tests, mathcoach and
examples/quotebot: what it decides for each, that what it writes loads through flightcheck's own
config and suite loaders, that it never overwrites without --force, and that a file flightcheck
would reject is never left behind. No Docker here (test_init_e2e.py runs the written files)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from onboard_support import copy_service, run_cli

from flightcheck import config as config_mod
from flightcheck.onboard import InitError, inspect, write
from flightcheck.onboard.smokegen import REPLY
from flightcheck.smoke.suite import load_suite


def _init(name: str, tmp_path: Path) -> tuple[Path, dict[str, Any], dict[str, Any], str]:
    """Copy a service, run `flightcheck init` on it; (dir, toml, suite, stdout)."""
    svc = copy_service(name, tmp_path)
    proc = run_cli(["init", str(svc)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    toml = tomllib.loads((svc / "flightcheck.toml").read_text())
    suite = yaml.safe_load((svc / "smoke.yaml").read_text())
    # Valid by construction: exactly what `flightcheck ci` will load.
    loaded = config_mod.load(svc / "flightcheck.toml", environ={})
    assert load_suite(loaded.config.resolve(loaded.config.smoke.suite)).cases
    return svc, toml, suite, proc.stdout


def _checks(case: dict[str, Any]) -> list[dict[str, Any]]:
    return case["expect"].get("json", [])


def test_askdesk_fastapi_with_health_and_pydantic_models(tmp_path: Path) -> None:
    _, toml, suite, out = _init("askdesk", tmp_path)
    svc = toml["service"]
    assert (svc["name"], svc["port"], svc["import_check"]) == ("askdesk", 8080, ["service.main"])
    assert svc["command"][:2] == ["python", "-c"] and '"service.main:app"' in svc["command"][2]
    assert toml["health"]["startup"]["path"] == toml["health"]["liveness"]["path"] == "/health"
    assert toml["health"]["ai_path"] == ""
    assert toml["environments"]["dev"] == {"model": "gpt-4o-mini-2024-07-18", "temperature": 0.3}
    scripted, unscripted = suite["cases"]
    assert scripted["request"] == {"method": "POST", "path": "/v1/answer",
                                   "json": {"question": "What is the capital of France?"}}
    assert scripted["expect"]["schema"]["required"] == ["answer", "model"]
    assert {"path": "answer", "equals": REPLY} in _checks(scripted)
    fallback = next(c for c in _checks(scripted) if "regex" in c)
    assert not re.search(fallback["regex"], "Sorry, I cannot answer that right now. Please try again later.")
    assert unscripted["external"] is True
    assert "port           8080: the service listens on $PORT (Dockerfile:21)" in out
    assert "no 5xx answer to provider errors is visible" in out
    assert "no .dockerignore" not in out


def test_haiku_flask_without_health_route_and_a_hard_coded_port(tmp_path: Path) -> None:
    _, toml, suite, out = _init("haiku", tmp_path)
    assert toml["service"]["port"] == 5000
    assert toml["health"]["startup"]["path"] == toml["health"]["liveness"]["path"] == "/"
    assert "the port 5000 is hard-coded (app.py:49)" in out
    assert 'port=int(os.environ.get("PORT", "5000"))' in out
    assert "no health route: the probes use GET /, which answers without the model" in out
    assert '@app.get("/healthz")' in out and 'def healthz(): return {"status": "ok"}' in out
    assert "no .dockerignore: flightcheck-report/, .flightcheck/, .venv and .git become part of " \
           "the build context" in out
    assert "werkzeug.serving" in toml["service"]["command"][2]  # a process-runtime start that reads $PORT
    scripted, _, outage = suite["cases"]
    assert scripted["request"]["json"] == {"topic": "fractions"}
    assert {"path": "haiku", "equals": REPLY} in _checks(scripted)
    assert scripted["expect"]["schema"] == {"type": "object", "required": ["topic", "haiku"]}
    assert outage["expect"]["status"] == 502


def test_translator_raises_at_import_without_its_key(tmp_path: Path) -> None:
    _, toml, suite, out = _init("translator", tmp_path)
    assert toml["service"]["env"] == {"TRANSLATE_MODEL": "placeholder"}
    text = (tmp_path / "translator" / "flightcheck.toml").read_text()
    assert re.search(r'TRANSLATE_MODEL = "placeholder"\s+# init: placeholder — read at import with no '
                     r"default \(main.py:12\)", text)
    # OPENAI_API_KEY is required too, but the fake-model run provides it: no placeholder that
    # would look like a real key.
    assert "OPENAI_API_KEY" not in toml["service"]["env"]
    assert "OPENAI_API_KEY: required at import; the fake-model run provides it" in out
    # The build stage imports it with the service's environment: placeholder and fake key.
    assert toml["service"]["import_check"] == ["main"]
    assert {"path": "translation", "equals": REPLY} in _checks(suite["cases"][0])
    assert suite["cases"][2]["expect"]["status"] == 503


def test_chatproxy_starlette_over_httpx_with_its_own_base_url_variable(tmp_path: Path) -> None:
    _, toml, suite, out = _init("chatproxy", tmp_path)
    assert toml["service"]["port"] == 8000
    assert 'CMD ["sh", "-c", "exec uvicorn chat:app --host 0.0.0.0 --port ${PORT:-8000}"]' in out
    assert toml["service"]["import_check"] == ["chat"]
    assert "[service].port is set to it, so Cloud Run's $PORT matches only while the container port stays 8000" in out
    assert toml["smoke"]["fake_model_port"] == 8929
    assert suite["env"] == {"fake": {"LLM_API_BASE": "http://127.0.0.1:8929/v1"}}
    assert toml["service"]["env"] == {"LLM_API_KEY": "flightcheck-fake-model-key"}
    assert toml["health"]["startup"]["path"] == "/ping"
    assert "base URL from $LLM_API_BASE (chat.py:14, default https://api.openai.com/v1)" in out
    scripted = suite["cases"][0]
    assert scripted["request"]["json"] == {"message": "What is the capital of France?"}
    assert {"path": "reply", "equals": REPLY} in _checks(scripted)


def test_mathcoach_the_reference_service(tmp_path: Path) -> None:
    _, toml, suite, out = _init("mathcoach", tmp_path)
    reference = tomllib.loads((Path(__file__).resolve().parents[2] / "flightcheck.toml").read_text())
    for key in ("name", "port", "command", "pythonpath", "import_check"):
        assert toml["service"][key] == reference["service"][key], key
    for probe in ("startup", "liveness"):
        assert toml["health"][probe]["path"] == reference["health"][probe]["path"]
    assert toml["health"]["ai_path"] == "/health/ai"
    assert suite["env"]["fake"] == {"AI_PROVIDER": "openai"}
    assert "$AI_PROVIDER picks the provider" in out
    assert "POST /v1/evaluate does not reach the model: no case" in out
    paths = {c["request"]["path"] for c in suite["cases"]}
    assert paths == {"/v1/questions"}
    assert suite["cases"][0]["expect"]["schema"]["required"] == ["question", "provider", "model", "attempts", "usage"]


def test_quotebot(tmp_path: Path) -> None:
    _, toml, suite, out = _init("quotebot", tmp_path)
    assert (toml["health"]["startup"]["path"], toml["health"]["liveness"]["path"]) == ("/ready", "/healthz")
    assert toml["service"]["command"] == ["python", "-m", "app"]
    assert toml["service"]["import_check"] == ["app", "app.main"]
    assert toml["environments"]["prod"] == {"model": "gpt-4o-mini-2024-07-18", "temperature": 0.2,
                                            "max_output_tokens": 200}
    assert {"path": "summary", "equals": REPLY} in _checks(suite["cases"][0])
    assert suite["cases"][2]["expect"]["status"] == [502, 504]
    assert "could not decide" in out


# --- the command's contract ------------------------------------------------------------------


def test_never_overwrites_without_force(tmp_path: Path) -> None:
    svc = copy_service("chatproxy", tmp_path)
    (svc / "smoke.yaml").write_text("# mine\n")
    proc = run_cli(["init", str(svc)], cwd=tmp_path)
    assert proc.returncode == 2
    assert "smoke.yaml already exists" in proc.stderr and "--force" in proc.stderr
    assert "found" not in proc.stdout  # refused before any work
    assert (svc / "smoke.yaml").read_text() == "# mine\n"
    assert not (svc / "flightcheck.toml").exists()
    forced = run_cli(["init", str(svc), "--force"], cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert "cases:" in (svc / "smoke.yaml").read_text()


def test_the_first_run_is_offered(tmp_path: Path) -> None:
    svc = copy_service("chatproxy", tmp_path)
    proc = run_cli(["init", "chatproxy"], cwd=tmp_path)  # stdin is not a terminal: no prompt
    assert proc.returncode == 0
    assert re.search(r"next: flightcheck ci --config chatproxy/flightcheck.toml( --until ai-smoke)?\n",
                     proc.stdout)
    here = run_cli(["init", "--force"], cwd=svc)
    assert re.search(r"next: flightcheck ci( --until ai-smoke)?\n", here.stdout)


def test_a_directory_that_does_not_exist(tmp_path: Path) -> None:
    proc = run_cli(["init", str(tmp_path / "nope")], cwd=tmp_path)
    assert proc.returncode == 2
    assert "is not a directory" in proc.stderr and "Traceback" not in proc.stderr


def test_a_rejected_file_is_rolled_back(tmp_path: Path) -> None:
    svc = copy_service("askdesk", tmp_path)
    plan = inspect(svc)
    bad = plan.toml_text.replace("port = 8080", "port = 0")
    with pytest.raises(InitError, match="rejects"):
        write(svc, bad, plan.suite_text, force=False)
    assert not (svc / "flightcheck.toml").exists() and not (svc / "smoke.yaml").exists()
    (svc / "flightcheck.toml").write_text("# the user's own\n")
    with pytest.raises(InitError):
        write(svc, bad, plan.suite_text, force=True)
    assert (svc / "flightcheck.toml").read_text() == "# the user's own\n"
    assert not (svc / "smoke.yaml").exists()
    broken_suite = plan.suite_text.replace("status: 200", "statuss: 200", 1)
    with pytest.raises(InitError, match="smoke suite"):
        write(svc, plan.toml_text, broken_suite, force=True)
    assert (svc / "flightcheck.toml").read_text() == "# the user's own\n"


def test_nothing_of_the_service_runs(tmp_path: Path) -> None:
    svc = copy_service("translator", tmp_path)
    marker = tmp_path / "executed"
    (svc / "main.py").write_text(f"open({str(marker)!r}, 'w').close()\n" + (svc / "main.py").read_text())
    plan = inspect(svc)
    assert plan.suite["cases"] and not marker.exists()


def test_a_directory_with_nothing_to_read(tmp_path: Path) -> None:
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "broken.py").write_text("def f(:\n")
    proc = run_cli(["init", "svc"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for text in ("no Python source found", "not read (syntax errors, or not UTF-8): broken.py",
                 "no Dockerfile", "no routes found", "no model provider call found",
                 "smoke.yaml only checks that the service answers"):
        assert text in proc.stdout, text
    loaded = config_mod.load(tmp_path / "svc" / "flightcheck.toml", environ={})
    assert loaded.config.service.name == "svc"


def test_the_prompt_on_a_terminal(tmp_path: Path) -> None:
    """On a terminal init asks before the first run; 'n' leaves the command to paste."""
    import os
    import pty
    import subprocess

    from onboard_support import clean_env, flightcheck_argv

    copy_service("chatproxy", tmp_path)
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([*flightcheck_argv(), "init", "chatproxy"], cwd=tmp_path, env=clean_env(),
                                stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        os.write(master, b"n\n")
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode == 0, err
    assert "run the first check now (flightcheck ci --config chatproxy/flightcheck.toml" in out
    assert "next: flightcheck ci --config chatproxy/flightcheck.toml" in out
    assert not (tmp_path / "flightcheck-report").exists()


def test_a_provider_the_fake_model_server_does_not_speak(tmp_path: Path) -> None:
    from onboard_support import tree

    svc = tree(tmp_path / "claude", {
        "Dockerfile": 'FROM python:3.11-slim\nCOPY . /app\nWORKDIR /app\nCMD ["python", "-m", "bot"]\n',
        "bot/__init__.py": "",
        "bot/__main__.py": """
            import os
            import uvicorn
            uvicorn.run("bot.web:app", host="0.0.0.0", port=int(os.environ.get("PORT", "8080")))
        """,
        "bot/web.py": """
            from anthropic import Anthropic
            from fastapi import FastAPI
            client = Anthropic()
            app = FastAPI()

            @app.get("/healthz")
            def healthz():
                return {"ok": True}

            @app.post("/ask")
            def ask(q: str):
                msg = client.messages.create(model="claude-3-5-haiku-20241022", max_tokens=100,
                                             messages=[{"role": "user", "content": q}])
                return {"answer": msg.content[0].text}
        """,
    })
    plan = inspect(svc)
    notes = " ".join(n.what for n in plan.undecided)
    assert "speaks the anthropic API, which flightcheck's fake model server does not" in notes
    env = next(t for t in plan.tables if t.name == "service.env")
    assert [(e.key, e.value) for e in env.entries] == [("ANTHROPIC_API_KEY", "flightcheck-fake-model-key")]
    case = plan.suite["cases"][0]
    assert case["request"] == {"method": "POST", "path": "/ask", "query": {"q": "What is the capital of France?"}}
    assert {"path": "answer", "equals": REPLY} in case["expect"]["json"]
