"""Per rule: what must be found, and the near-misses that must not be (Python sources)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lint_support import hits, keys, lint, private_key, token

# --- syntax -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "line", "needle"),
    [
        ("def f():\n    x = 1\n      y = 2\n", 3, "IndentationError"),
        ("def f():\n\tif x:\n        pass\n\telse: pass\n", 3, "TabError"),
        ("def f():\n    await g()\n", 2, "await"),
        ("return 1\n", 1, "return"),
        ("async def f():\n    yield from g()\n", 2, "yield from"),
        ("for x in y:\n    pass\nbreak\n", 3, "break"),
        ("nonlocal x\n", 1, "nonlocal"),
        ("def f(a, a):\n    pass\n", 1, "duplicate argument"),
        ("x = (1,\n", 1, "SyntaxError"),
        ("print 'py2'\n", 1, "SyntaxError"),
    ],
)
def test_syntax_errors_the_compiler_rejects(tmp_path: Path, source: str, line: int, needle: str) -> None:
    report = lint(tmp_path, {"app.py": source})
    found = [f for f in report.findings if f.code == "FC101"]
    assert [(f.file, f.line, f.category) for f in found] == [("app.py", line, "syntax")]
    assert needle.lower() in found[0].message.lower()


def test_valid_code_and_syntax_warnings_are_not_syntax_errors(tmp_path: Path) -> None:
    report = lint(tmp_path, {
        "ok.py": """
            import re
            PATTERN = re.compile("\\d+")  # invalid escape: a SyntaxWarning, not an error
            async def f():
                async for x in g():
                    yield x
            async def h():
                return [x async for x in g()]
        """,
    })
    assert hits(report, "FC1") == set()


# --- imports ----------------------------------------------------------------------------------


def test_imports_resolve_against_declared_local_and_stdlib(tmp_path: Path) -> None:
    report = lint(tmp_path, {
        "requirements.txt": "pyyaml==6.0\nPillow>=10\n-r more.txt\n# comment\n",
        "more.txt": "google-genai==1.0 ; python_version >= '3.9'\n",
        "pyproject.toml": """
            [project]
            name = "svc"
            dependencies = ["httpx>=0.27", "beautifulsoup4"]
            [project.optional-dependencies]
            cloud = ["google-cloud-run"]
        """,
        "src/svc/__init__.py": "",
        "src/svc/helpers.py": "VALUE = 1\n",
        "src/svc/app.py": """
            from __future__ import annotations
            import os, json
            import yaml
            from PIL import Image
            from google import genai
            from google.genai import types
            from google.cloud import run_v2
            import httpx
            from bs4 import BeautifulSoup
            from svc import helpers
            from . import helpers as h2
            from .helpers import VALUE
            import helpers
        """,
    })
    assert hits(report, "FC2") == set()


def test_undeclared_imports_are_errors_with_the_module_named(tmp_path: Path) -> None:
    report = lint(tmp_path, {
        "requirements.txt": "protobuf\nrequests\n",
        "app.py": """
            import requests
            import numpy as np
            from google import genai
            from google.protobuf import message
            def later():
                import pandas
        """,
    })
    found = {(f.line, f.severity.value) for f in report.findings if f.code == "FC201"}
    assert found == {(2, "error"), (3, "error"), (6, "error")}
    messages = " ".join(f.message for f in report.findings)
    assert "'numpy'" in messages and "'google.genai'" in messages and "'pandas'" in messages


def test_imports_after_a_semicolon_or_a_colon_on_one_line_are_judged(tmp_path: Path) -> None:
    """The text gate read only statements that start a line: these files were never parsed."""
    report = lint(tmp_path, {
        "a.py": "import os; import notinstalled\n",
        "b.py": "import sys\nif sys.argv: import notinstalled2\n",
        "c.py": "x = 1; from nothere import thing\n",
        "d.py": 'HELP = "usage: import os"\nNOTE = "then: import notinstalled3"\n',
    })
    assert hits(report, "FC201") == {("a.py", 1, "FC201"), ("b.py", 2, "FC201"),
                                     ("c.py", 1, "FC201")}
    assert report.parsed == 4  # d.py parsed (a string looked like an import), nothing found


def test_a_test_files_imports_count_at_module_level_only(tmp_path: Path) -> None:
    """Module level breaks the file's collection: a warning. Inside a test (or a block) it
    fails that test, which the test run says itself; modules a test writes at run time
    (`import pkg` after creating pkg/) look unresolved. Same verdict whether or not the file
    is parsed for another rule (the second one holds an LLM call)."""
    body = """
        import pytest
        from helpers import build_pkg

        def test_loads(tmp_path):
            build_pkg(tmp_path)
            import pkg.sub
            from pkg import thing
            assert thing

        if pytest:
            import numpy
    """
    report = lint(tmp_path, {
        "tests/test_plain.py": body,
        "tests/test_llm.py": body + "        client.chat.completions.create(model=MODEL)\n",
        "app.py": "def later():\n    import pandas\n",
    })
    found = {(f.file, f.line, f.severity.value) for f in report.findings if f.code == "FC201"}
    assert found == {
        ("tests/test_plain.py", 1, "warning"), ("tests/test_plain.py", 2, "warning"),
        ("tests/test_llm.py", 1, "warning"), ("tests/test_llm.py", 2, "warning"),
        ("app.py", 2, "error"),  # outside tests, inside a function still counts
    }


def test_a_test_files_one_line_module_level_import_counts(tmp_path: Path) -> None:
    report = lint(tmp_path, {"tests/test_x.py": "import os; import pkg\nif os: import pkg2\n"})
    assert [(f.code, f.line) for f in report.findings] == [("FC201", 1)]


def test_a_test_file_with_only_nested_unresolved_imports_is_not_parsed(tmp_path: Path) -> None:
    report = lint(tmp_path, {"tests/test_x.py": "def test_a():\n    import pkg\n"})
    assert report.findings == [] and report.parsed == 0
    report = lint(tmp_path, {"tests/test_x.py": "import pkg\ndef test_a():\n    pass\n"})
    assert [(f.code, f.line) for f in report.findings] == [("FC201", 1)]


def test_guarded_and_type_checking_imports_are_fine(tmp_path: Path) -> None:
    report = lint(tmp_path, {
        "app.py": """
            from typing import TYPE_CHECKING
            try:
                import ujson as json
            except ImportError:
                import json
            try:
                import orjson
            except (ModuleNotFoundError, AttributeError):
                orjson = None
            if TYPE_CHECKING:
                from numpy.typing import NDArray
            import sys
            if sys.platform == "win32":
                import win32api
            else:
                import uvloop
            if sys.version_info < (3, 11):
                import tomli as tomllib
        """,
    })
    assert hits(report, "FC2") == set()


def test_import_in_a_test_file_is_only_a_warning(tmp_path: Path) -> None:
    report = lint(tmp_path, {"tests/test_x.py": "import hypothesis\n"})
    assert [(f.file, f.severity.value) for f in report.findings] == [("tests/test_x.py", "warning")]


def test_transitive_only_import_is_a_warning_naming_the_carrier(tmp_path: Path) -> None:
    # docker (installed here, a flightcheck dependency) depends on requests.
    report = lint(tmp_path, {"requirements.txt": "docker\n", "app.py": "import requests\n"})
    [finding] = report.findings
    assert finding.severity.value == "warning" and "docker" in finding.message


def test_no_declaration_file_is_said(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("import fastapi\n")
    from flightcheck.config import LintConfig
    from flightcheck.lint import lint_paths

    report = lint_paths(tmp_path, [tmp_path], LintConfig(exclude=[]))
    assert "no requirements*.txt or pyproject.toml" in report.findings[0].message


# --- secrets ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("openai", "FC301"), ("openai_legacy", "FC301"), ("anthropic", "FC301"),
        ("google", "FC301"), ("huggingface", "FC301"), ("github", "FC301"), ("slack", "FC301"),
        ("stripe", "FC301"), ("groq", "FC301"), ("aws_id", "FC302"),
    ],
)
def test_provider_keys_are_found_and_redacted(tmp_path: Path, name: str, code: str) -> None:
    value = keys()[name]
    report = lint(tmp_path, {"app.py": f'client_config = {{"value": "{value}"}}\n'})
    assert hits(report, "FC3") == {("app.py", 1, code)}
    message = report.findings[0].message
    assert value not in message and value[:4] in message and "***" in message


def test_aws_secret_key_private_key_and_generic_secrets(tmp_path: Path) -> None:
    k = keys()
    generic = k["generic"]
    report = lint(tmp_path, {
        "settings.py": f"""
            import os
            AWS_SECRET_ACCESS_KEY = "{k['aws_secret']}"
            SERVICE_TOKEN = os.environ.get("SERVICE_TOKEN", "{generic}")
            DB_PASSWORD: str = "{generic[::-1]}"
            def connect(api_key="{generic[3:] + 'Q7'}"):
                return call(token="{generic[2:] + 'x9Z'}")
            CONFIG = {{"client_secret": "{generic[1:] + 'M4'}"}}
        """,
        "deploy/tls.pem": private_key(),
    })
    assert hits(report, "FC3") == {
        ("settings.py", 2, "FC302"),
        ("settings.py", 3, "FC304"),
        ("settings.py", 4, "FC304"),
        ("settings.py", 5, "FC304"),
        ("settings.py", 6, "FC304"),
        ("settings.py", 7, "FC304"),
        ("deploy/tls.pem", 1, "FC303"),
    }
    assert not hits(report, "FC1")
    assert all(generic not in f.message for f in report.findings)


def test_not_secrets_placeholders_env_reads_digests_uuids_tests(tmp_path: Path) -> None:
    report = lint(tmp_path, {
        "app.py": """
            import os
            OPENAI_API_KEY = os.environ["OPENAI_API_KEY"]
            ANTHROPIC_API_KEY = os.getenv("ANTHROPIC_API_KEY")
            API_KEY_ENV = "OPENAI_API_KEY"
            PLACEHOLDER = "sk-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
            TEMPLATE_KEY = "<YOUR_API_KEY>"
            HINT_TOKEN = "your-key-here"
            DEFAULT_TOKEN = os.environ.get("SERVICE_TOKEN", "changeme-please-1234")
            SECRET_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            API_KEY = "5d41402abc4b2a76b9719d911017c592"
            REQUEST_TOKEN = "123e4567-e89b-12d3-a456-426614174000"
            RELEASE_TOKEN = "9fceb02d0ae598e95dc970b74767f19372d61af8"
            TOKEN_URL = "https://oauth2.googleapis.com/token"
            sort_key = "created_at_desc_2024_v2"
            MAX_TOKENS = 1024
            AWS_EXAMPLE = "AKIAIOSFODNN7EXAMPLE"
            PEM_MARKER = "-----BEGIN RSA PRIVATE KEY-----"
            def parse(text):
                return text.startswith(PEM_MARKER)
        """,
        "tests/test_auth.py": f'client_secret = "{token(24, seed=99)}"\n',
    })
    assert hits(report, "FC3") == set()


def test_secrets_in_env_and_yaml_files(tmp_path: Path) -> None:
    k = keys()
    report = lint(tmp_path, {
        ".env": f"OPENAI_API_KEY={k['openai']}\nSERVICE_TOKEN={k['generic']}\nLOG_LEVEL=info\n",
        "deploy/values.yaml": f"env:\n  api_key: \"{k['generic'][::-1]}\"\n  model: gpt-4o-2024-08-06\n",
        ".env.example": "OPENAI_API_KEY=sk-your-key-here\nSERVICE_TOKEN=<token>\n",
    })
    assert hits(report, "FC3") == {
        (".env", 1, "FC301"), (".env", 2, "FC304"), ("deploy/values.yaml", 2, "FC304"),
    }


# --- async-blocking ---------------------------------------------------------------------------


def test_blocking_calls_inside_async_def(tmp_path: Path) -> None:
    report = lint(tmp_path, {
        "requirements.txt": "requests\nhttpx\nopenai\nanthropic\n",
        "app.py": """
            import subprocess, time, urllib.request
            import requests, httpx
            from openai import OpenAI
            from anthropic import Anthropic
            client = OpenAI(timeout=30)
            claude = Anthropic(timeout=30)
            async def handler(q):
                time.sleep(1)
                r = requests.get("http://x", timeout=5)
                with httpx.Client(timeout=5) as c:
                    c.get("http://x")
                subprocess.run(["ls"])
                try:
                    out = client.chat.completions.create(model="m", messages=q)
                    msg = claude.messages.create(model="m", messages=q, max_tokens=5)
                except Exception:
                    raise
                return out, msg
        """,
    })
    assert hits(report, "FC4") == {
        ("app.py", 8, "FC403"),
        ("app.py", 9, "FC401"),
        ("app.py", 11, "FC402"),
        ("app.py", 12, "FC405"),
        ("app.py", 14, "FC404"),
        ("app.py", 15, "FC404"),
    }


def test_sync_helpers_outside_async_code_and_awaited_clients_are_fine(tmp_path: Path) -> None:
    report = lint(tmp_path, {
        "requirements.txt": "requests\nopenai\ngoogle-genai\nanyio\n",
        "app.py": """
            import asyncio, time
            import anyio.to_thread
            import requests
            from openai import AsyncOpenAI, OpenAI
            from google import genai
            from google.genai import types
            aclient = AsyncOpenAI(timeout=30)
            sync_client = OpenAI(timeout=30)
            gclient = genai.Client(http_options=types.HttpOptions(timeout=30_000))
            def fetch(url):
                time.sleep(0.1)
                return requests.get(url, timeout=5)
            async def handler(q):
                def inner():
                    return requests.get("http://x", timeout=5)
                try:
                    a = await aclient.chat.completions.create(model="m", messages=q)
                    b = await asyncio.to_thread(sync_client.chat.completions.create, model="m", messages=q)
                    c = await anyio.to_thread.run_sync(lambda: sync_client.chat.completions.create(model="m", messages=q))
                    d = await gclient.aio.models.generate_content(model="m", contents=q)
                    e = await asyncio.get_running_loop().run_in_executor(None, fetch, "http://x")
                except Exception:
                    return None
                return a, b, c, d, e, inner
        """,
    })
    assert hits(report, "FC4") == set()


# --- ai-timeout -------------------------------------------------------------------------------


def test_clients_and_calls_without_timeouts(tmp_path: Path) -> None:
    report = lint(tmp_path, {
        "requirements.txt": "requests\nhttpx\nopenai\nanthropic\ngoogle-genai\n",
        "app.py": """
            import urllib.request
            import httpx, requests
            from openai import AsyncOpenAI
            from anthropic import Anthropic
            from google import genai
            oa = AsyncOpenAI()
            an = Anthropic(timeout=None)
            gm = genai.Client()
            def go(url):
                requests.post(url, json={})
                urllib.request.urlopen(url)
                s = requests.Session()
                s.get(url)
                httpx.get(url)
                httpx.post(url, timeout=None)
                with httpx.Client(base_url=url) as c:
                    c.post("/v1/chat")
        """,
    })
    assert hits(report, "FC5") == {
        ("app.py", 6, "FC501"),
        ("app.py", 7, "FC501"),
        ("app.py", 8, "FC501"),
        ("app.py", 10, "FC502"),
        ("app.py", 11, "FC502"),
        ("app.py", 13, "FC502"),
        ("app.py", 14, "FC503"),
        ("app.py", 15, "FC502"),
        ("app.py", 16, "FC503"),
    }


def test_explicit_timeouts_per_call_and_unknowable_configs_are_fine(tmp_path: Path) -> None:
    report = lint(tmp_path, {
        "requirements.txt": "requests\nhttpx\nopenai\ngoogle-genai\n",
        "app.py": """
            import urllib.request
            import httpx, requests
            from openai import OpenAI
            from google import genai
            from google.genai import types
            OPTIONS = types.HttpOptions(timeout=10_000)
            oa = OpenAI()
            g1 = genai.Client(http_options={"timeout": 10_000})
            g2 = genai.Client(http_options=OPTIONS)
            def make(**kw):
                return OpenAI(**kw)
            def go(url, probe_timeout):
                try:
                    oa.chat.completions.create(model="m", messages=[], timeout=20)
                except Exception:
                    pass
                requests.post(url, json={}, timeout=(3, 30))
                urllib.request.urlopen(url, None, 10)
                urllib.request.urlopen(url, timeout=10)
                with requests.Session() as s:
                    s.get(url, timeout=5)
                httpx.get(url, timeout=10)
                with httpx.Client() as c:
                    c.get(url, timeout=probe_timeout)
                shared = httpx.AsyncClient()
                return run_probes(shared)
        """,
    })
    assert hits(report, "FC5") == set()


# --- ai-error-handling ------------------------------------------------------------------------


def test_llm_calls_need_a_handler_in_their_function(tmp_path: Path) -> None:
    report = lint(tmp_path, {
        "requirements.txt": "openai\nanthropic\ntenacity\ngoogle-genai\n",
        "app.py": """
            import openai, anthropic
            from tenacity import retry
            from google import genai
            oa = openai.AsyncOpenAI(timeout=30)
            an = anthropic.AsyncAnthropic(timeout=30)
            gm = genai.Client(http_options={"timeout": 1})
            async def bare(q):
                return await oa.chat.completions.create(model="m", messages=q)
            async def wrong_handler(q):
                try:
                    return await an.messages.create(model="m", messages=q, max_tokens=9)
                except KeyError:
                    return None
            async def outer(q):
                try:
                    async def inner():
                        return await oa.embeddings.create(model="m", input=q)
                    return await inner()
                except openai.APIError:
                    return None
            async def good(q):
                try:
                    return await oa.responses.create(model="m", input=q)
                except (openai.RateLimitError, openai.APIError):
                    return None
            async def bare_except(q):
                try:
                    return await gm.aio.models.generate_content(model="m", contents=q)
                except:  # noqa: E722
                    return None
            @retry
            async def retried(q):
                return await an.messages.create(model="m", messages=q, max_tokens=9)
        """,
    })
    assert hits(report, "FC6") == {("app.py", 8, "FC601"), ("app.py", 11, "FC601"), ("app.py", 17, "FC601")}


def test_same_method_names_without_an_llm_sdk_are_not_llm_calls(tmp_path: Path) -> None:
    report = lint(tmp_path, {
        "requirements.txt": "twilio\n",
        "sms.py": """
            from twilio.rest import Client
            client = Client("sid", "auth")
            def send(body):
                return client.messages.create(body=body, from_="+1", to="+2")
        """,
    })
    assert hits(report, "FC6") == set()


# --- ai-model-pin -----------------------------------------------------------------------------


def test_floating_model_names(tmp_path: Path) -> None:
    report = lint(tmp_path, {
        "requirements.txt": "openai\n",
        "settings.py": """
            import os
            MODEL = "gpt-4o"
            FALLBACK_MODEL = os.getenv("AI_MODEL", "gemini-1.5-pro-latest")
            PINNED_MODEL = "gpt-4o-2024-08-06"
            def ask(client, q, model_name: str = "claude-3-5-sonnet-latest"):
                return client.chat.completions.create(model="o3-mini", messages=q)
            CHOICES = {"model": "mistral-large-latest", "runs_on": "ubuntu-latest"}
            ALIASES = ["claude-3-5-haiku-latest"]
        """,
        ".env": "AI_MODEL=gpt-4o-mini\nOTHER=gpt-4o\n",
        "flightcheck.toml": '[environments.prod]\nmodel = "gemini-2.0-flash"\n[environments.dev]\nmodel = "gemini-2.0-flash-001"\n',
        ".github/ci.yml": "jobs:\n  t:\n    runs-on: ubuntu-latest\n",
    })
    assert hits(report, "FC7") == {
        ("settings.py", 2, "FC701"),
        ("settings.py", 3, "FC701"),
        ("settings.py", 5, "FC701"),
        ("settings.py", 6, "FC701"),
        ("settings.py", 7, "FC701"),
        ("settings.py", 8, "FC701"),
        (".env", 1, "FC701"),
        ("flightcheck.toml", 2, "FC701"),
    }


def test_extra_floating_models_from_config(tmp_path: Path) -> None:
    report = lint(tmp_path, {"app.py": 'MODEL = "acme-chat"\n'}, extra_floating_models=["acme-chat"])
    assert hits(report, "FC7") == {("app.py", 1, "FC701")}


def test_clients_defined_in_another_module(tmp_path: Path) -> None:
    report = lint(tmp_path, {
        "requirements.txt": "openai\nfastapi\n",
        "svc/__init__.py": "",
        "svc/clients.py": """
            from openai import AsyncOpenAI, OpenAI
            sync_client = OpenAI(timeout=30)
            async_client = AsyncOpenAI(timeout=30)
        """,
        "svc/api.py": """
            from svc.clients import async_client, sync_client
            async def blocking(q):
                try:
                    return sync_client.chat.completions.create(model="m", messages=q)
                except Exception:
                    return None
            async def fine(q):
                try:
                    return await async_client.chat.completions.create(model="m", messages=q)
                except Exception:
                    return None
            async def unguarded(q):
                return await async_client.chat.completions.create(model="m", messages=q)
        """,
    })
    assert hits(report, "FC4") | hits(report, "FC6") == {
        ("svc/api.py", 4, "FC404"), ("svc/api.py", 13, "FC601"),
    }
