"""FC821-FC823: Cloud Run's container contract — listen on $PORT, on all interfaces, and answer
the configured probe paths — read from the Dockerfile and the app's code."""

from __future__ import annotations

from pathlib import Path

import pytest
from lint_support import hits, write

from flightcheck.config import LintConfig
from flightcheck.lint import LintReport, lint_paths
from flightcheck.lint.target import Service

FASTAPI_APP = """
    from fastapi import APIRouter, FastAPI

    from app import probes

    app = FastAPI(title="svc")
    api = APIRouter(prefix="/v1")


    @api.post("/ask")
    async def ask() -> dict:
        return {}


    @app.get("/health")
    def health() -> dict:
        return {"ok": True}


    app.include_router(api)
    app.include_router(probes.router, prefix="/health")
"""
PROBES = """
    from fastapi import APIRouter

    router = APIRouter()


    @router.get("/startup")
    def startup() -> dict:
        return {"ready": True}
"""


def _lint(root: Path, files: dict[str, str], *, port: int = 8080,
          probes: tuple[str, ...] = ("/health/startup", "/health"),
          declared: bool = True) -> LintReport:
    write(root, {"app/__init__.py": "", "app/probes.py": PROBES, **files})
    (root / "requirements.txt").write_text("fastapi==0.115.0\nuvicorn==0.30.6\nflask==3.0.3\n")
    service = Service(dockerfile=root / "Dockerfile", port=port, probes=probes,
                      settings_from="the test's config", probes_declared=declared)
    return lint_paths(root, [root], LintConfig(exclude=[], disable=["dockerfile", "FC6", "FC5"]),
                      service=service)


def test_hard_coded_port_and_loopback_in_the_dockerfile(tmp_path: Path) -> None:
    report = _lint(tmp_path, {"app/main.py": FASTAPI_APP, "Dockerfile": """
        FROM python:3.11-slim
        ENV PYTHONUNBUFFERED=1
        CMD ["uvicorn", "app.main:app", "--port", "8000"]
    """})
    assert hits(report, "FC8") == {("Dockerfile", 3, "FC821"), ("Dockerfile", 3, "FC822")}
    messages = " ".join(f.message for f in report.findings)
    assert "port 8000" in messages and "$PORT (8080, [service].port in the test's config)" in messages
    assert "127.0.0.1" in messages


def test_exec_form_does_not_expand_port(tmp_path: Path) -> None:
    report = _lint(tmp_path, {"app/main.py": FASTAPI_APP, "Dockerfile": """
        FROM python:3.11-slim
        ENTRYPOINT ["uvicorn", "app.main:app"]
        CMD ["--host", "0.0.0.0", "--port", "$PORT"]
    """})
    assert hits(report, "FC8") == {("Dockerfile", 3, "FC821")}
    assert "literal text '$PORT'" in report.findings[0].message


def test_python_entry_point_with_uvicorn_run_and_flask(tmp_path: Path) -> None:
    report = _lint(tmp_path, {"app/main.py": FASTAPI_APP, "serve.py": """
        import uvicorn
        from app.main import app

        if __name__ == "__main__":
            uvicorn.run(app, port=8000)
    """, "Dockerfile": """
        FROM python:3.11-slim
        CMD ["python", "/srv/serve.py"]
    """})
    assert hits(report, "FC8") == {("serve.py", 5, "FC821"), ("serve.py", 5, "FC822")}
    flask = tmp_path / "flask_svc"
    report = _lint(flask, {"web.py": """
        from flask import Flask

        web = Flask(__name__)


        @web.route("/")
        def index():
            return "ok"

        web.run()
    """, "Dockerfile": 'FROM python:3.11-slim\nCMD ["python", "web.py"]\n'})
    assert hits(report, "FC8") == {("web.py", 10, "FC821"), ("web.py", 10, "FC822"),
                                   ("web.py", 3, "FC823")}


def test_no_route_at_the_configured_probe_path(tmp_path: Path) -> None:
    app = FASTAPI_APP.replace('prefix="/health"', 'prefix="/ready"')
    report = _lint(tmp_path, {"app/main.py": app, "Dockerfile": """
        FROM python:3.11-slim
        CMD exec uvicorn app.main:app --host 0.0.0.0 --port ${PORT:-8080}
    """})
    assert hits(report, "FC8") == {("app/main.py", 5, "FC823")}
    (finding,) = [f for f in report.findings if f.code == "FC823"]
    assert "GET /health/startup" in finding.message and "the test's config" in finding.message


def test_near_misses_stay_silent(tmp_path: Path) -> None:
    cases: dict[str, dict[str, str]] = {
        # $PORT through a shell, all interfaces, both probes answered (one through a router)
        "shell": {"Dockerfile": "FROM python:3.11-slim\n"
                  "CMD exec uvicorn app.main:app --host 0.0.0.0 --port ${PORT:-8080}\n"},
        # a hard-coded port that is the configured one (see port=8000 below)
        "same-port": {"Dockerfile": 'FROM python:3.11-slim\nCMD ["uvicorn", "app.main:app", '
                      '"--host", "0.0.0.0", "--port", "8000"]\n'},
        # gunicorn binds 0.0.0.0:$PORT by itself
        "gunicorn": {"Dockerfile": 'FROM python:3.11-slim\nCMD ["gunicorn", "-k", '
                     '"uvicorn.workers.UvicornWorker", "app.main:app"]\n'},
        # a start script: not statically known
        "script": {"Dockerfile": 'FROM python:3.11-slim\nCMD ["./start.sh"]\n'},
        # uvicorn.run for local development, while the image runs the CLI properly
        "dev-run": {"Dockerfile": "FROM python:3.11-slim\nENV UVICORN_HOST=0.0.0.0\n"
                    "CMD uvicorn app.main:app --port $PORT\n",
                    "app/dev.py": "import uvicorn\nuvicorn.run('app.main:app', port=8000)\n"},
        # python entry reading PORT
        "python-env": {"Dockerfile": 'FROM python:3.11-slim\nCMD ["python", "-m", "app"]\n',
                       "app/__main__.py": "import os\nimport uvicorn\n"
                       "uvicorn.run('app.main:app', host='0.0.0.0', "
                       "port=int(os.environ.get('PORT', '8080')))\n"},
    }
    for name, files in cases.items():
        report = _lint(tmp_path / name, {"app/main.py": FASTAPI_APP, **files},
                       port=8000 if name == "same-port" else 8080)
        assert hits(report, "FC8") == set(), name
    # a mounted sub-app may serve the probe: not certain, so silent
    mounted = FASTAPI_APP.replace('prefix="/health"', 'prefix="/x"') + "\napp.mount('/health', object())\n"
    report = _lint(tmp_path / "mounted", {"app/main.py": mounted, **cases["shell"]})
    assert hits(report, "FC8") == set()


def test_lint_command_judges_the_service_it_is_pointed_at(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    # a repository whose flightcheck.toml describes one service, holding another one (with its
    # own Dockerfile) in a subdirectory: `flightcheck lint other/` judges the other one
    from flightcheck.lint.command import lint_command

    write(tmp_path, {
        "flightcheck.toml": '[service]\nname = "main"\nport = 9000\n'
                            '[health.startup]\npath = "/ready"\n',
        "requirements.txt": "fastapi==0.115.0\nuvicorn==0.30.6\n",
        "Dockerfile": "FROM python:3.11-slim\nCMD exec uvicorn app:app --host 0.0.0.0 --port $PORT\n",
        "app.py": "from fastapi import FastAPI\napp = FastAPI()\n@app.get('/ready')\n"
                  "def ready():\n    return {}\n@app.get('/health')\ndef health():\n    return {}\n",
        "other/Dockerfile": 'FROM python:3.11-slim\nCMD ["uvicorn", "chat:app", "--host", '
                            '"0.0.0.0", "--port", "9000"]\n',
        "other/chat.py": "from fastapi import FastAPI\napp = FastAPI()\n@app.get('/health')\n"
                         "def health():\n    return {}\n",
    })
    config = tmp_path / "flightcheck.toml"
    assert lint_command(tmp_path, "json", None, None, config, False, True) == 0
    assert "FC82" not in capsys.readouterr().out  # port 9000 and /ready as configured
    assert lint_command(tmp_path / "other", "json", None, None, config, False, True) == 1
    captured = capsys.readouterr()
    # judged with the defaults (port 8080), not the top service's settings; no config file
    # declares its probe paths, so its routes are not judged — and the run says so
    assert '"FC821"' in captured.out and "flightcheck's defaults" in captured.out
    assert '"FC823"' not in captured.out
    assert "FC823 (a route at the probe path) not checked" in captured.err
    assert "for the app in chat.py" in captured.err


SHELL_CMD = {"Dockerfile": "FROM python:3.11-slim\n"
             "CMD exec uvicorn app.main:app --host 0.0.0.0 --port ${PORT:-8080}\n"}


@pytest.mark.parametrize(("constructor", "probe", "served"), [
    ("FastAPI()", "/openapi.json", True),
    ("FastAPI()", "/docs", True),
    ("FastAPI()", "/redoc", True),
    ("FastAPI()", "/docs/oauth2-redirect", True),
    ("FastAPI(docs_url='/api/docs')", "/api/docs", True),
    ("FastAPI(docs_url='/api/docs')", "/docs", False),  # moved: /docs is a 404 now
    ("FastAPI(docs_url=None)", "/docs", False),
    ("FastAPI(docs_url=None)", "/docs/oauth2-redirect", False),  # part of the Swagger UI
    ("FastAPI(openapi_url=None)", "/redoc", False),  # no schema: no docs pages at all
    ("FastAPI(redoc_url='/redoc' if DEBUG else None)", "/redoc", True),  # may be served
])
def test_fastapi_builtin_routes_count_as_served(tmp_path: Path, constructor: str, probe: str,
                                                served: bool) -> None:
    app = (f"from fastapi import FastAPI\nDEBUG = True\napp = {constructor}\n"
           "@app.get('/health')\ndef health() -> dict:\n    return {}\n")
    report = _lint(tmp_path, {"app/main.py": app, **SHELL_CMD}, probes=(probe, "/health"))
    assert hits(report, "FC8") == (set() if served else {("app/main.py", 3, "FC823")})


def test_computed_fastapi_docs_url_makes_routes_unknown(tmp_path: Path) -> None:
    app = ("import os\nfrom fastapi import FastAPI\napp = FastAPI(docs_url=os.environ['DOCS'])\n"
           "@app.get('/health')\ndef health() -> dict:\n    return {}\n")
    report = _lint(tmp_path, {"app/main.py": app, **SHELL_CMD}, probes=("/docs", "/health"))
    assert hits(report, "FC8") == set()  # it may be /docs: say nothing rather than guess


def test_probe_routes_not_judged_without_a_config_file(tmp_path: Path) -> None:
    app = FASTAPI_APP.replace('prefix="/health"', 'prefix="/ready"')  # no /health/startup
    judged = _lint(tmp_path / "declared", {"app/main.py": app, **SHELL_CMD})
    assert hits(judged, "FC8") == {("app/main.py", 5, "FC823")}
    assert not any("FC823" in n for n in judged.notes)
    # the same service with no flightcheck.toml: the default paths are a guess, so no FC823 —
    # and a note says the check did not run (it did not pass)
    report = _lint(tmp_path / "defaults", {"app/main.py": app, **SHELL_CMD}, declared=False)
    assert hits(report, "FC8") == set()
    (note,) = [n for n in report.notes if "FC823" in n]
    assert "not checked" in note and "app/main.py" in note
    # without a Dockerfile command naming an app there is nothing to judge: no note either
    quiet = _lint(tmp_path / "script", {"app/main.py": app,
                                        "Dockerfile": 'FROM python:3.11-slim\nCMD ["./start.sh"]\n'},
                  declared=False)
    assert not any("FC823" in n for n in quiet.notes)


def test_service_from_config_declares_probes_only_with_a_file(tmp_path: Path) -> None:
    from flightcheck.config import Config
    from flightcheck.lint.target import service_from_config

    cfg = Config.model_validate({"service": {"name": "svc", "source": str(tmp_path)}})
    assert service_from_config(cfg, from_file=True).probes_declared
    assert not service_from_config(cfg, from_file=False).probes_declared
