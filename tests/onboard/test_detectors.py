"""Each of init's detectors on small sources written for the case: what it must find, and the
near miss it must not."""

from __future__ import annotations

from pathlib import Path

import pytest
from onboard_support import project, tree

from flightcheck.onboard import dockerfile, envreads, launch, providers, routes, smokegen
from flightcheck.onboard.project import Project, SourceFile
from flightcheck.onboard.providers import Providers

# --- Dockerfile facts -------------------------------------------------------------------------


def test_dockerfile_final_stage_facts(tmp_path: Path) -> None:
    tree(tmp_path, {"Dockerfile": """
        ARG PY=3.12
        FROM python:${PY}-slim AS build
        COPY requirements.txt /tmp/
        RUN pip install --no-cache-dir --prefix=/install -r /tmp/requirements.txt
        FROM python:${PY}-slim
        ENV PORT=9000 \\
            APP_ENV=prod
        WORKDIR /srv
        WORKDIR app
        COPY --from=build /install /usr/local
        COPY src/ ./
        EXPOSE 9000/tcp
        USER 1000
        HEALTHCHECK CMD curl -f http://localhost:9000/healthz
        ENTRYPOINT ["python"]
        CMD ["-m", "svc"]
    """})
    facts = dockerfile.read(tmp_path)
    assert facts is not None
    assert (facts.base_image, facts.python) == ("python:3.12-slim", "3.12")
    assert facts.env == {"PORT": "9000", "APP_ENV": "prod"}
    assert facts.workdir == "/srv/app"
    assert facts.expose == [9000]
    assert facts.argv == ["python", "-m", "svc"] and not facts.shell_form
    assert facts.copies == [("src/", "/srv/app/./")]  # COPY --from is not the service's source
    assert facts.installs == ["pip install --no-cache-dir --prefix=/install -r /tmp/requirements.txt"]
    assert facts.requirement_files == ["/tmp/requirements.txt"]
    assert facts.user == "1000" and facts.healthcheck


def test_dockerfile_shell_form_and_absence(tmp_path: Path) -> None:
    tree(tmp_path, {"Dockerfile": "FROM python:3.11-slim\nCMD uvicorn main:app --port $PORT\n"})
    facts = dockerfile.read(tmp_path)
    assert facts is not None and facts.shell_form
    assert facts.argv == ["/bin/sh", "-c", "uvicorn main:app --port $PORT"]
    assert dockerfile.read(tmp_path, "Nope.Dockerfile") is None


# --- launch command and port ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "kind", "target", "literal", "env", "default", "host"),
    [
        (["python", "-m", "app"], "python-module", None, None, None, None, None),
        (["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000"], "uvicorn",
         "api.main:app", 8000, None, None, "0.0.0.0"),
        (["uvicorn", "main:app"], "uvicorn", "main:app", 8000, None, None, "127.0.0.1"),
        (["sh", "-c", "exec uvicorn svc.main:app --host 0.0.0.0 --port ${PORT:-8080}"], "uvicorn",
         "svc.main:app", None, "PORT", 8080, "0.0.0.0"),
        (["/bin/sh", "-c", "python migrate.py && exec gunicorn -k uvicorn.workers.UvicornWorker "
          "-b 0.0.0.0:$PORT svc:create_app()"], "gunicorn", "svc:create_app", None, "PORT", None, "0.0.0.0"),
        (["gunicorn", "wsgi:app"], "gunicorn", "wsgi:app", None, "PORT", 8000, "0.0.0.0"),
        (["flask", "--app", "web", "run"], "flask", "web:app", 5000, None, None, "127.0.0.1"),
        (["python", "-m", "uvicorn", "m:app", "--port=7000", "--host=0.0.0.0"], "uvicorn", "m:app",
         7000, None, None, "0.0.0.0"),
    ],
)
def test_container_commands(argv: list[str], kind: str, target: str | None, literal: int | None,
                            env: str | None, default: int | None, host: str | None) -> None:
    got = launch.from_command(argv, {})
    assert (got.kind, got.target, got.port.literal, got.port.env, got.port.default, got.host) == (
        kind, target, literal, env, default, host)


def test_django_runserver_and_a_loopback_bind() -> None:
    got = launch.from_command(["python", "manage.py", "runserver", "0.0.0.0:8000"], {})
    assert (got.kind, got.port.literal, got.host) == ("django-runserver", 8000, "0.0.0.0")
    assert launch.binds_locally(launch.from_command(["uvicorn", "m:app"], {}))
    assert not launch.binds_locally(got)


def _entry(p: Project, rel: str) -> SourceFile:
    f = p.file(rel)
    assert f is not None
    return f


def test_python_entry_reads_port_and_host_from_the_environment(tmp_path: Path) -> None:
    p = project(tmp_path, {
        "app/__init__.py": "",
        "app/__main__.py": """
            import os
            import uvicorn

            def main():
                port = int(os.environ.get("PORT", "8080"))
                uvicorn.run("app.main:app", host=os.environ.get("HOST", "0.0.0.0"), port=port)

            if __name__ == "__main__":
                main()
        """,
        "app/main.py": "from fastapi import FastAPI\napp = FastAPI()\n",
    })
    got = launch.from_command(["python", "-m", "app"], {})
    launch.from_source(p, got, _entry(p, "app/__main__.py"), envreads.all_reads(p))
    assert got.target == "app.main:app"
    assert (got.port.env, got.port.default, got.host_env) == ("PORT", 8080, True)
    assert launch.listen_port(got, None) == 8080


def test_flask_run_with_a_hard_coded_port_and_a_handler_run_that_is_not_a_server(tmp_path: Path) -> None:
    p = project(tmp_path, {"app.py": """
        from flask import Flask
        app = Flask(__name__)

        @app.post("/ask")
        def ask():
            return {"answer": agent.run("question")}

        if __name__ == "__main__":
            app.run(host="0.0.0.0", port=5000)
    """})
    got = launch.from_command(["python", "app.py"], {})
    launch.from_source(p, got, _entry(p, "app.py"), [])
    assert (got.port.literal, got.host, got.target) == (5000, "0.0.0.0", "app:app")
    assert got.port.where == "app.py:9"


def test_a_factory_imported_from_another_module(tmp_path: Path) -> None:
    p = project(tmp_path, {
        "src/svc/__init__.py": "",
        "src/svc/__main__.py": """
            import uvicorn
            from svc.settings import Settings
            from svc.web import create_app

            settings = Settings.from_env()
            uvicorn.run(create_app(settings), host=settings.host, port=settings.port)
        """,
        "src/svc/settings.py": """
            class Settings:
                @classmethod
                def from_env(cls, env):
                    return cls(host=env.get("HOST", "0.0.0.0"), port=int(env.get("PORT", "8080")))
        """,
        "src/svc/web.py": "def create_app(s):\n    ...\n",
    })
    got = launch.from_command(["python", "-m", "svc"], {})
    entry = _entry(p, "src/svc/__main__.py")
    launch.from_source(p, got, entry, envreads.all_reads(p))
    assert (got.target, got.factory) == ("svc.web:create_app", True)
    assert (got.port.env, got.port.default, got.host_env) == ("PORT", 8080, True)
    assert entry.module == "svc.__main__" and entry.root == "src"


# --- framework and routes ---------------------------------------------------------------------


def _routes(p: Project) -> routes.Web:
    return routes.detect(p, p.files)


def test_fastapi_routes_with_router_prefixes_models_and_returned_keys(tmp_path: Path) -> None:
    p = project(tmp_path, {
        "api/__init__.py": "",
        "api/models.py": """
            from pydantic import BaseModel, Field
            class Ask(BaseModel):
                question: str = Field(min_length=3)
                top_k: int = 3
            class Answer(BaseModel):
                answer: str
        """,
        "api/routes.py": """
            from fastapi import APIRouter
            from api.models import Answer, Ask
            router = APIRouter(prefix="/chat")

            def _body(text):
                return {"text": text, "tokens": 3}

            @router.post("/ask", response_model=Answer)
            async def ask(body: Ask):
                ...

            @router.post("/echo")
            async def echo(body: Ask):
                if body.top_k > 5:
                    return {"text": "many", "tokens": 0, "extra": 1}
                return _body(body.question)

            @router.get("/items/{item_id}")
            def item(item_id: int, verbose: bool = False):
                return {"id": item_id}
        """,
        "api/main.py": """
            from fastapi import FastAPI
            from api.routes import router
            app = FastAPI(title="Q&A Service")
            app.include_router(router, prefix="/v1")

            @app.api_route("/health", methods=["GET", "HEAD"])
            def health():
                return {"ok": True}
        """,
    })
    web = _routes(p)
    assert "fastapi" in web.frameworks
    assert [(a.framework, a.target, a.title) for a in web.apps] == [("fastapi", "api.main:app", "Q&A Service")]
    assert {str(r) for r in web.routes} == {"POST /v1/chat/ask", "POST /v1/chat/echo",
                                            "GET /v1/chat/items/{item_id}", "GET /health", "HEAD /health"}
    ask = web.get("POST", "/v1/chat/ask")
    assert ask is not None and (ask.body_model, ask.response_model) == ("Ask", "Answer")
    echo = web.get("POST", "/v1/chat/echo")
    assert echo is not None and echo.returned_keys == ["text", "tokens"]  # keys every return has
    item = web.get("GET", "/v1/chat/items/{item_id}")
    assert item is not None and item.path_params == ["item_id"]
    models = routes.pydantic_models(p)
    assert routes.query_params(item, models) == [("verbose", False, "bool")]


def test_flask_blueprints_and_bodies_read_from_the_request(tmp_path: Path) -> None:
    p = project(tmp_path, {"web.py": """
        from flask import Blueprint, Flask, jsonify, request
        bp = Blueprint("api", __name__, url_prefix="/api")

        @bp.route("/summarise", methods=["POST"])
        def summarise():
            data = request.get_json(force=True) or {}
            text = data["text"]
            n = int(data.get("sentences", 2))
            return jsonify(summary=text[:n], sentences=n), 200

        def status():
            return jsonify({"status": "ok"})

        def create_app():
            app = Flask(__name__)
            app.register_blueprint(bp)
            app.add_url_rule("/status", "status", status)
            return app
    """})
    web = _routes(p)
    assert [(a.framework, a.var, a.factory) for a in web.apps] == [("flask", "create_app", True)]
    assert {str(r) for r in web.routes} == {"POST /api/summarise", "GET /status"}
    route = web.get("POST", "/api/summarise")
    assert route is not None
    assert route.body_keys == [("text", True, "str"), ("sentences", False, "int")]
    assert route.returned_keys == ["summary", "sentences"]


def test_starlette_tables_plain_asgi_wsgi_and_django(tmp_path: Path) -> None:
    p = project(tmp_path, {
        "star.py": """
            from starlette.applications import Starlette
            from starlette.routing import Mount, Route
            async def home(request): ...
            async def gen(request): ...
            routes = [Route("/", home), Mount("/api", routes=[Route("/gen", gen, methods=["POST"])])]
            app = Starlette(routes=routes)
        """,
        "raw.py": """
            async def app(scope, receive, send):
                path = scope["path"]
                if path == "/healthz":
                    ...
                elif path == "/v1/complete" and scope["method"] == "POST":
                    ...
        """,
        "legacy.py": """
            def application(environ, start_response):
                if environ.get("PATH_INFO") == "/ping":
                    ...
        """,
        "site/urls.py": """
            from django.urls import include, path
            from site import views
            urlpatterns = [path("health/", views.health), path("admin/", include("x"))]
        """,
        "site/views.py": "def health(request): ...\n",
    })
    web = _routes(p)
    assert {str(r) for r in web.routes} == {"GET /", "POST /api/gen", "GET /healthz", "POST /v1/complete",
                                            "GET /ping", "GET /health/"}
    assert {"starlette", "asgi", "wsgi", "django"} <= set(web.frameworks)
    assert {(a.framework, a.var) for a in web.apps} >= {("starlette", "app"), ("asgi", "app"),
                                                         ("wsgi", "application")}


# --- environment read at import --------------------------------------------------------------


def test_reads_at_import_and_later(tmp_path: Path) -> None:
    p = project(tmp_path, {
        "settings.py": """
            import os
            from pydantic_settings import BaseSettings, SettingsConfigDict

            class Settings(BaseSettings):
                model_config = SettingsConfigDict(env_prefix="APP_")
                db_url: str
                model: str = "gpt-4o-mini-2024-07-18"
                workers: int

            REGION = os.environ["REGION"]
            TIMEOUT = float(os.getenv("TIMEOUT_S", "10"))
            TOKEN = os.getenv("SERVICE_TOKEN")
            if not TOKEN:
                raise RuntimeError("SERVICE_TOKEN is required")
            DEBUG = os.environ.get("DEBUG") or "0"
            settings = Settings()

            def handler():
                return os.environ["LATE_VAR"]

            if __name__ == "__main__":
                print(os.environ["ONLY_AS_SCRIPT"])
        """,
    })
    f = p.file("settings.py")
    assert f is not None
    needs = envreads.at_import(p, f)
    by = {r.name: r for r in needs.reads}
    assert set(by) == {"REGION", "TIMEOUT_S", "SERVICE_TOKEN", "DEBUG", "APP_DB_URL", "APP_MODEL", "APP_WORKERS"}
    assert {n for n, r in by.items() if r.required} == {"REGION", "SERVICE_TOKEN", "APP_DB_URL", "APP_WORKERS"}
    assert (by["TIMEOUT_S"].default, by["TIMEOUT_S"].kind) == ("10", "float")
    assert by["DEBUG"].default == "0" and by["APP_WORKERS"].kind == "int"
    everywhere = {r.name for r in envreads.all_reads(p)}
    assert {"LATE_VAR", "ONLY_AS_SCRIPT"} <= everywhere


def test_a_client_built_at_import_needs_its_key(tmp_path: Path) -> None:
    p = project(tmp_path, {
        "a.py": "from openai import OpenAI\nclient = OpenAI()\n",
        "b.py": "from openai import OpenAI\nclient = OpenAI(api_key='x')\n",
        "c.py": "from openai import OpenAI\ndef get():\n    return OpenAI()\n",
    })
    assert [c for c, _ in envreads.at_import(p, p.file("a.py")).clients] == ["OpenAI"]  # type: ignore[arg-type]
    assert envreads.at_import(p, p.file("b.py")).clients == []  # type: ignore[arg-type]
    assert envreads.at_import(p, p.file("c.py")).clients == []  # type: ignore[arg-type]


# --- providers and base URLs ----------------------------------------------------------------


def _providers(p: Project) -> Providers:
    return providers.detect(p, p.files, envreads.all_reads(p))


def test_where_each_client_takes_its_base_url(tmp_path: Path) -> None:
    p = project(tmp_path, {
        "sdk.py": """
            import os
            from anthropic import Anthropic
            from google import genai
            from openai import AsyncOpenAI, OpenAI
            a = OpenAI()
            b = OpenAI(base_url="https://llm.internal.example/v1")
            c = AsyncOpenAI(base_url=os.getenv("MY_LLM_URL", "https://api.openai.com/v1"), api_key=os.environ["MY_LLM_KEY"])
            d = Anthropic()
            e = genai.Client()
        """,
    })
    uses = {u.where: u for u in _providers(p).uses}
    a, b, c, d, e = (uses[f"sdk.py:{n}"] for n in (5, 6, 7, 8, 9))
    assert (a.base.source, a.base.var, a.fake_reachable) == ("sdk-env", "OPENAI_BASE_URL", True)
    assert (b.base.source, b.base.url, b.fake_reachable) == ("hard-coded", "https://llm.internal.example/v1", False)
    assert (c.base.source, c.base.var, c.base.default, c.key_var) == (
        "env", "MY_LLM_URL", "https://api.openai.com/v1", "MY_LLM_KEY")
    assert c.fake_reachable
    assert (d.api, d.fake_reachable) == ("anthropic", False)
    assert (e.api, e.base.var, e.fake_reachable) == ("gemini", "GOOGLE_GEMINI_BASE_URL", True)


def test_http_calls_to_provider_urls_and_which_functions_reach_the_model(tmp_path: Path) -> None:
    p = project(tmp_path, {
        "settings.py": 'import os\nBASE = os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1")\n',
        "llm.py": """
            import httpx
            import requests
            from settings import BASE

            class Client:
                def __init__(self, settings):
                    self._http = httpx.AsyncClient(base_url=settings.openai_base_url)

                async def complete(self, prompt):
                    return await self._http.post("chat/completions", json={"response_format": {"type": "json_object"}})

            def legacy(prompt):
                return requests.post("https://api.openai.com/v1/chat/completions", json={})

            def sms(client):
                return client.messages.create(body="hi")  # Twilio, not Anthropic
        """,
        "web.py": """
            from llm import Client
            def helper(c, q):
                return c.complete(q)
            def handler(c):
                data = {"x": 1}
                return helper(c, data.get("x"))
            def unrelated():
                return {}.get("complete")
        """,
    })
    prov = _providers(p)
    hard = next(u for u in prov.uses if u.where == "llm.py:13")
    assert (hard.sdk, hard.base.source, hard.fake_reachable) == ("http", "hard-coded", False)
    rel = next(u for u in prov.uses if u.where == "llm.py:10")
    assert (rel.base.source, rel.base.var) == ("env", "OPENAI_BASE_URL")  # settings.openai_base_url
    assert all(c.api != "anthropic" for c in prov.calls)
    assert next(c for c in prov.calls if c.where == "llm.py:10").json_mode
    fn = {f.name: f for f in p.all_functions()}
    assert prov.reaches_model(fn["handler"]) == (
        "helper() → complete() → self._http.post() at llm.py:10")
    assert prov.reaches_model(fn["unrelated"]) is None
    assert prov.reaches_model(fn["sms"]) is None


def test_the_provider_switch(tmp_path: Path) -> None:
    p = project(tmp_path, {"cfg.py": """
        import os
        PROVIDER = os.environ.get("LLM_PROVIDER", "mock")
        def make():
            if PROVIDER == "openai":
                ...
            elif PROVIDER == "anthropic":
                ...
    """})
    sw = _providers(p).switch
    assert sw is not None and (sw.var, sw.default) == ("LLM_PROVIDER", "mock")
    assert set(sw.values) == {"openai", "anthropic"}


# --- smoke-case generation -------------------------------------------------------------------


def test_samples_follow_types_and_constraints(tmp_path: Path) -> None:
    p = project(tmp_path, {"m.py": """
        from enum import Enum
        from typing import Literal, Optional
        from pydantic import BaseModel, Field
        class Mode(str, Enum):
            FAST = "fast"
            SLOW = "slow"
        class Inner(BaseModel):
            k: int = Field(ge=5)
        class Req(BaseModel):
            prompt: str = Field(..., min_length=40, max_length=60)
            kind: Literal["a", "b"]
            mode: Mode
            inner: Inner
            tags: list[str] = Field(min_length=2)
            maybe: Optional[str] = None
            ratio: float = Field(gt=0)
    """})
    models, enums = routes.pydantic_models(p), routes.enums(p)
    fields = {f.name: f for f in models["Req"].fields}
    values = {n: smokegen.sample(n, f.annotation, f.constraints, models, enums) for n, f in fields.items()
              if f.required}
    assert 40 <= len(values["prompt"]) <= 60
    assert values["kind"] == "a" and values["mode"] == "fast" and values["inner"] == {"k": 5}
    assert values["tags"] == ["example", "example"] and values["ratio"] == 0.5
    assert "maybe" not in values


def test_a_pattern_no_sample_fits_is_undecided(tmp_path: Path) -> None:
    p = project(tmp_path, {"m.py": """
        from pydantic import BaseModel, Field
        class Req(BaseModel):
            code: str = Field(pattern=r"^[A-Z]{3}-\\d{4}$")
    """})
    models = routes.pydantic_models(p)
    field = models["Req"].fields[0]
    with pytest.raises(smokegen.Undecided, match="pattern"):
        smokegen.sample("code", field.annotation, field.constraints, models, {})


_SERVICE = {
    "svc.py": """
        import openai
        from fastapi import FastAPI, HTTPException
        from openai import AsyncOpenAI
        from pydantic import BaseModel

        FALLBACK = "Sorry, something went wrong on our side."
        app = FastAPI()
        client = AsyncOpenAI(api_key="x")

        class In(BaseModel):
            question: str

        async def ask(q):
            resp = await client.chat.completions.create(model="m", messages=[])
            words = (resp.choices[0].message.content or "").strip()
            return words, resp.usage

        @app.post("/v1/ask")
        async def ask_route(body: In):
            try:
                text, usage = await ask(body.question)
            except openai.APIStatusError:
                raise HTTPException(502, "provider failed")
            except Exception:
                return {"answer": FALLBACK, "note": None}
            if DEBUG:
                text = f"{text} [debug]"
            return {"answer": text, "note": f"model said: {text}", "meta": {"echo": text}}

        @app.post("/v1/quiz")
        async def quiz(body: In):
            import json
            resp = await client.chat.completions.create(model="m", messages=[], response_format={"type": "json_object"})
            item = json.loads(resp.choices[0].message.content)
            return {"q": item["question"], "a": item.get("answer")}
    """,
}


def _case_parts(tmp_path: Path, path: str) -> smokegen.RouteCases:
    p = project(tmp_path, _SERVICE)
    web = _routes(p)
    route = web.get("POST", path)
    assert route is not None
    return smokegen.cases_for(p, route, _providers(p), routes.pydantic_models(p), routes.enums(p))


def test_where_the_model_words_end_up_and_the_fallback_text(tmp_path: Path) -> None:
    rc = _case_parts(tmp_path, "/v1/ask")
    scripted, unscripted, outage = rc.cases
    checks = scripted["expect"]["json"]
    assert {"path": "answer", "equals": smokegen.REPLY} in checks
    assert {"path": "note", "contains": smokegen.REPLY} in checks
    assert {"path": "meta.echo", "equals": smokegen.REPLY} in checks
    negative = next(c for c in checks if "regex" in c)
    import re
    assert negative["path"] == "answer"
    assert re.search(negative["regex"], "a real answer")
    assert not re.search(negative["regex"], "Sorry, something went wrong on our side.")
    assert scripted["model"] == {"replies": [{"content": smokegen.REPLY}], "after": "last"}
    assert scripted["request"] == {"method": "POST", "path": "/v1/ask",
                                   "json": {"question": "What is the capital of France?"}}
    assert unscripted["external"] is True and "model" not in unscripted
    assert outage["expect"] == {"status": 502}
    assert outage["model"]["replies"][0]["status"] == 503


def test_a_json_reply_is_scripted_with_the_keys_the_code_reads(tmp_path: Path) -> None:
    rc = _case_parts(tmp_path, "/v1/quiz")
    scripted = rc.cases[0]
    assert scripted["model"]["replies"] == [{"json": {"question": "example", "answer": "example"}}]
    assert any("placeholder values" in n for n in rc.notes)
    assert any("no 5xx answer" in n for n in rc.notes)


def test_langchain_and_litellm(tmp_path: Path) -> None:
    p = project(tmp_path, {
        "chain.py": """
            from langchain_openai import ChatOpenAI
            llm = ChatOpenAI(model="gpt-4o-mini-2024-07-18", base_url="https://proxy.example/v1")
            def answer(q):
                return llm.invoke(q).content
        """,
        "lite.py": """
            import litellm
            def answer(q):
                r = litellm.completion(model="gpt-4o-mini", messages=[{"role": "user", "content": q}])
                return r.choices[0].message.content
        """,
    })
    prov = _providers(p)
    assert {"langchain-openai", "litellm"} <= set(prov.sdks)
    use = next(u for u in prov.uses if u.sdk == "langchain-openai")
    assert (use.base.source, use.base.url, use.fake_reachable) == ("hard-coded", "https://proxy.example/v1", False)
    assert sorted(c.api for c in prov.calls) == ["langchain", "litellm"]
