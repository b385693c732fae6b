"""The rule catalog: every code flightcheck lint can report, with its category, default
severity, a one-line why and an example fix (``flightcheck lint --explain CODE``).

Codes are flightcheck's own (FC1xx syntax … FC8xx dockerfile). Rules that ruff or hadolint
already implement well are run by those tools and reported under the FC code listed here;
``upstream`` names the original codes, which their own suppression comments also silence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Category = Literal[
    "syntax",
    "import",
    "ai-dependency",
    "secret",
    "async-blocking",
    "ai-timeout",
    "ai-error-handling",
    "ai-model-pin",
    "dockerfile",
    "cloudrun",
    "type",
]
CATEGORIES: tuple[Category, ...] = get_args(Category)
SeverityName = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Rule:
    code: str
    name: str
    category: Category
    severity: SeverityName
    why: str  # one line: what goes wrong in production
    fix: str  # one line: what to do
    example_bad: str
    example_good: str
    upstream: tuple[str, ...] = ()  # ruff/hadolint codes this rule is built on
    checked_by: str = ""  # when not what ``upstream`` implies

    @property
    def engine(self) -> str:
        if self.checked_by:
            return self.checked_by
        if any(u.startswith("DL") for u in self.upstream):
            return "hadolint, or flightcheck's builtin stand-in where hadolint is unavailable"
        return "ruff" if self.upstream else "flightcheck"


def healthcheck_fix(port: int, path: str) -> str:
    """FC804's fix for the service's port and liveness path (the catalog shows the defaults)."""
    return (f"Add one: `HEALTHCHECK CMD python -c \"import urllib.request as u; "
            f"u.urlopen('http://127.0.0.1:{port}{path}', timeout=2)\"`, or `HEALTHCHECK NONE` "
            "to opt out explicitly.")


_RULES: tuple[Rule, ...] = (
    Rule(
        "FC101",
        "syntax-error",
        "syntax",
        "error",
        "Python's compiler rejects the file, so the service dies on import before it serves "
        "anything (indentation, `await`/`return` outside a function, `yield from` in async code…).",
        "Fix the code at the reported position; `python -m py_compile FILE` shows the same error.",
        "async def handler():\n    yield from other()",
        "async def handler():\n    async for item in other():\n        yield item",
    ),
    Rule(
        "FC102",
        "syntax-newer-than-target-python",
        "syntax",
        "error",
        "The service's Python (the final `FROM python:X.Y` of its Dockerfile, else the lowest "
        "`requires-python`) does not have this syntax — PEP 695 `type`, 3.12 f-string quoting, "
        "`except*` before 3.11, `match` before 3.10 — so the container dies on import although "
        "a newer host compiles it.",
        "Write it for the service's Python, or move the base image and requires-python to a "
        "version that has it (e.g. `FROM python:3.12-slim`).",
        "# Dockerfile: FROM python:3.11-slim\ntype UserId = int",
        "# Dockerfile: FROM python:3.11-slim\nUserId: TypeAlias = int",
        checked_by="ruff (its target-version syntax errors), with the target from the service's "
        "Dockerfile or pyproject.toml",
    ),
    Rule(
        "FC201",
        "unresolved-import",
        "import",
        "error",
        "The import is neither in the standard library, nor in the scanned tree, nor provided by "
        "a declared dependency, so a fresh image fails with ModuleNotFoundError at startup.",
        "Declare the distribution in requirements*.txt or pyproject [project.dependencies] "
        "(e.g. `pyyaml` for `import yaml`), or guard an optional import with try/except ImportError.",
        "import yaml  # pyyaml is not in requirements.txt",
        "# requirements.txt\npyyaml==6.0.2",
    ),
    Rule(
        "FC211",
        "unpinned-ai-sdk",
        "ai-dependency",
        "warning",
        "A provider SDK (openai, anthropic, google-genai, langchain*, litellm, …) is installed "
        "without a pin: the next build takes whatever release is newest, and these SDKs change "
        "their API between versions (openai 1.0 removed `openai.ChatCompletion`).",
        "Pin it (`openai==1.55.3`) or bound it below the next major (`openai>=1.55,<2`), or "
        "install from a lock file (uv.lock, poetry.lock).",
        "# requirements.txt\nopenai",
        "# requirements.txt\nopenai==1.55.3",
        checked_by="flightcheck: requirements*.txt, pyproject.toml dependencies and the "
        "Dockerfile's pip install lines",
    ),
    Rule(
        "FC212",
        "removed-provider-api",
        "ai-dependency",
        "error",
        "The code calls a provider API that the declared SDK version no longer has — "
        "`openai.ChatCompletion.create`, `openai.Completion`, `openai.error` with openai 1.x — "
        "so it raises when called (APIRemovedInV1, ModuleNotFoundError).",
        "Move to the client API of the version you install (`OpenAI().chat.completions.create`, "
        "`openai.APIError`), or pin the old SDK (`openai<1`) knowingly.",
        "openai.ChatCompletion.create(model=M, messages=msgs)",
        "OpenAI(timeout=30).chat.completions.create(model=M, messages=msgs)",
        checked_by="flightcheck: the calls in the code against the versions the declarations "
        "allow",
    ),
    Rule(
        "FC213",
        "deprecated-provider-sdk",
        "ai-dependency",
        "warning",
        "The code uses a provider SDK at its end of life: google-generativeai (support ended Nov "
        "2025) and the Vertex AI SDK's `vertexai.generative_models` (deprecated June 2025, removed "
        "after June 2026) get no fixes and no new models, and unpinned installs stop providing "
        "the module.",
        "Move to Google's Gen AI SDK: `from google import genai; client = genai.Client(...)`.",
        "import google.generativeai as genai\ngenai.GenerativeModel(M).generate_content(q)",
        "from google import genai\ngenai.Client().models.generate_content(model=M, contents=q)",
    ),
    Rule(
        "FC301",
        "provider-api-key",
        "secret",
        "error",
        "A live credential (OpenAI, Anthropic, Google, Hugging Face, GitHub, Slack, Stripe, Groq) "
        "in the source tree leaks with every copy of the repository and every image layer.",
        "Revoke the key, then read it from the environment or a secret manager.",
        'client = OpenAI(api_key="sk-proj-…")',
        'client = OpenAI(api_key=os.environ["OPENAI_API_KEY"], timeout=30)',
    ),
    Rule(
        "FC302",
        "aws-credential",
        "secret",
        "error",
        "An AWS access key id or secret access key in the source grants account access to anyone "
        "who can read the repository or the image.",
        "Deactivate the key in IAM; use an instance/workload role or environment variables.",
        'AWS_SECRET_ACCESS_KEY = "wJalr…"',
        'AWS_SECRET_ACCESS_KEY = os.environ["AWS_SECRET_ACCESS_KEY"]',
    ),
    Rule(
        "FC303",
        "private-key",
        "secret",
        "error",
        "A private key block committed to the tree is readable by everyone with the repository "
        "or the image.",
        "Rotate the key pair; mount the key at run time (secret volume, secret manager).",
        'KEY = """-----BEGIN RSA PRIVATE KEY-----\\nMIIEow…"""',
        'KEY = Path(os.environ["TLS_KEY_FILE"]).read_text()',
    ),
    Rule(
        "FC304",
        "hardcoded-secret",
        "secret",
        "error",
        "A high-entropy value is assigned to a credential-named variable, argument, dict key or "
        "os.environ.get(...) default: a hard-coded secret that ends up in git and images.",
        "Read it from the environment without a real default; keep test values obviously fake.",
        'os.environ.get("SERVICE_TOKEN", "9fQ2vX7LkP3mZ8rT1wY6")',
        'os.environ["SERVICE_TOKEN"]',
    ),
    Rule(
        "FC401",
        "blocking-http-in-async",
        "async-blocking",
        "error",
        "A blocking HTTP call (requests, urllib.request.urlopen, httpx module functions) inside "
        "`async def` stalls the event loop: every other request waits for this one.",
        "Use an async client (`httpx.AsyncClient`) and `await` it, or `await anyio.to_thread.run_sync(...)`.",
        "async def ask():\n    return requests.post(URL, json=body, timeout=30)",
        "async def ask():\n    async with httpx.AsyncClient(timeout=30) as c:\n"
        "        return await c.post(URL, json=body)",
        ("ASYNC210",),
    ),
    Rule(
        "FC402",
        "sync-httpx-client-in-async",
        "async-blocking",
        "error",
        "A synchronous `httpx.Client` used inside `async def` blocks the event loop for the whole "
        "round trip.",
        "Use `httpx.AsyncClient` and `await` its methods.",
        "async def ask(client: httpx.Client):\n    return client.get(URL)",
        "async def ask(client: httpx.AsyncClient):\n    return await client.get(URL)",
        ("ASYNC212",),
    ),
    Rule(
        "FC403",
        "sleep-in-async",
        "async-blocking",
        "error",
        "`time.sleep` inside `async def` freezes the event loop, and with it every request.",
        "Use `await asyncio.sleep(...)` (or `anyio.sleep`).",
        "async def retry():\n    time.sleep(1)",
        "async def retry():\n    await asyncio.sleep(1)",
        ("ASYNC251",),
    ),
    Rule(
        "FC404",
        "sync-llm-call-in-async",
        "async-blocking",
        "error",
        "A synchronous LLM SDK call (OpenAI/Anthropic client, google-genai `client.models…`) "
        "inside `async def` blocks the event loop for the seconds the model takes to answer.",
        "Use the async client (`AsyncOpenAI`, `AsyncAnthropic`, `client.aio.models…`) and `await` it.",
        "async def ask(q):\n    return client.chat.completions.create(model=M, messages=q)",
        "async def ask(q):\n    return await aclient.chat.completions.create(model=M, messages=q)",
    ),
    Rule(
        "FC405",
        "blocking-subprocess-in-async",
        "async-blocking",
        "warning",
        "subprocess/os process calls inside `async def` block the event loop until the child exits.",
        "Use `asyncio.create_subprocess_exec` or `anyio.run_process`.",
        'async def render():\n    subprocess.run(["convert", src, dst])',
        'async def render():\n    await anyio.run_process(["convert", src, dst])',
        ("ASYNC220", "ASYNC221", "ASYNC222"),
    ),
    Rule(
        "FC406",
        "blocking-call-through-helper",
        "async-blocking",
        "error",
        "`async def` calls one of the project's own synchronous functions that (directly or up to "
        "three calls deeper) makes a blocking HTTP/LLM call, sleeps or runs a subprocess: the "
        "event loop stalls exactly as if the call were written inline.",
        "Make the helper async (`httpx.AsyncClient`, the async LLM client) and `await` it, or "
        "run it in a thread: `await asyncio.to_thread(fetch_quote, symbol)`.",
        "def fetch_quote(s):\n    return requests.get(URL, params={\"s\": s}, timeout=10).json()\n"
        "async def quote(s):\n    return fetch_quote(s)",
        "async def quote(s):\n    return await asyncio.to_thread(fetch_quote, s)",
        checked_by="flightcheck: a call graph of the project's functions across modules",
    ),
    Rule(
        "FC501",
        "llm-client-without-timeout",
        "ai-timeout",
        "warning",
        "LLM SDK clients default to very long (OpenAI/Anthropic: 10 min) or no timeouts, so one "
        "stuck upstream call pins a worker far past Cloud Run's request timeout.",
        "Pass an explicit timeout: `OpenAI(timeout=30)`, `Anthropic(timeout=30)`, "
        "`genai.Client(http_options=types.HttpOptions(timeout=30_000))` (milliseconds).",
        "client = AsyncOpenAI()",
        "client = AsyncOpenAI(timeout=30, max_retries=2)",
    ),
    Rule(
        "FC502",
        "http-call-without-timeout",
        "ai-timeout",
        "error",
        "requests and urllib wait forever by default (and httpx with `timeout=None`): one "
        "unresponsive upstream hangs the request, then the worker.",
        "Pass `timeout=` (seconds) on every call, e.g. `requests.post(url, json=b, timeout=30)`.",
        "requests.post(URL, json=body)",
        "requests.post(URL, json=body, timeout=30)",
        ("S113",),
    ),
    Rule(
        "FC503",
        "httpx-implicit-timeout",
        "ai-timeout",
        "warning",
        "httpx silently applies a 5-second default timeout, shorter than most LLM completions: "
        "calls fail with ReadTimeout under real load.",
        "Set the timeout you mean: `httpx.AsyncClient(timeout=httpx.Timeout(60, connect=5))`.",
        "httpx.AsyncClient(base_url=URL)",
        "httpx.AsyncClient(base_url=URL, timeout=httpx.Timeout(60, connect=5))",
    ),
    Rule(
        "FC601",
        "llm-call-without-error-handling",
        "ai-error-handling",
        "warning",
        "LLM APIs fail routinely (rate limits, overload, timeouts); an unguarded call turns each "
        "provider hiccup into an unhandled 500 for your users.",
        "Wrap the call in try/except for the SDK's errors (e.g. `openai.APIError`) and answer "
        "with a clear 502/503, or retry with a decorator such as tenacity's `@retry`.",
        "resp = await client.messages.create(model=M, messages=msgs, max_tokens=512)",
        "try:\n    resp = await client.messages.create(model=M, messages=msgs, max_tokens=512)\n"
        "except anthropic.APIError as exc:\n    raise HTTPException(502, str(exc)) from exc",
    ),
    Rule(
        "FC701",
        "floating-model-alias",
        "ai-model-pin",
        "warning",
        "A floating model alias (`*-latest`, `gpt-4o`, `gemini-1.5-pro`, …) silently changes "
        "behaviour when the provider moves it, so dev, CI and prod stop being comparable.",
        "Pin a dated/versioned model id, e.g. `gpt-4o-2024-08-06`, `claude-3-5-sonnet-20241022`, "
        "`gemini-1.5-pro-002`.",
        'MODEL = "claude-3-5-sonnet-latest"',
        'MODEL = "claude-3-5-sonnet-20241022"',
    ),
    Rule(
        "FC801",
        "unpinned-base-image",
        "dockerfile",
        "warning",
        "A base image without a tag or with `latest` changes under you: builds stop being "
        "reproducible and break on the next upstream release.",
        "Pin a tag (`python:3.11-slim`), ideally with a digest (`python:3.11-slim@sha256:…`).",
        "FROM python",
        "FROM python:3.11-slim",
        ("DL3006", "DL3007"),
    ),
    Rule(
        "FC802",
        "runs-as-root",
        "dockerfile",
        "warning",
        "The final stage runs as root, so any code-execution bug in the service owns the whole "
        "container.",
        "Create an unprivileged user and switch to it at the end: "
        "`RUN useradd --uid 10001 app` then `USER 10001`.",
        'FROM python:3.11-slim\nCMD ["python", "-m", "app"]',
        'FROM python:3.11-slim\nRUN useradd --uid 10001 app\nUSER 10001\nCMD ["python", "-m", "app"]',
        ("DL3002",),
        "flightcheck: the final stage's effective user, following stages it is built FROM "
        "(hadolint only sees an explicit USER root); hadolint's DL3002 pragma is honoured",
    ),
    Rule(
        "FC803",
        "shell-form-cmd",
        "dockerfile",
        "warning",
        "Shell-form CMD/ENTRYPOINT runs under /bin/sh, which does not forward SIGTERM: the "
        "service never shuts down gracefully and is killed after the grace period.",
        'Use exec (JSON) form: `CMD ["python", "-m", "app"]`.',
        "CMD python -m app",
        'CMD ["python", "-m", "app"]',
        ("DL3025",),
    ),
    Rule(
        "FC804",
        "no-healthcheck",
        "dockerfile",
        "warning",
        "Without a HEALTHCHECK, docker and compose report a wedged service as healthy "
        "(Cloud Run uses its own probes; configure those too).",
        healthcheck_fix(8080, "/health"),
        'CMD ["python", "-m", "app"]',
        'HEALTHCHECK --interval=30s --timeout=3s CMD ["python", "/app/healthcheck.py"]\n'
        'CMD ["python", "-m", "app"]',
    ),
    Rule(
        "FC805",
        "pip-cache-in-image",
        "dockerfile",
        "warning",
        "`pip install` without `--no-cache-dir` leaves pip's download cache in the layer: a "
        "bigger image, slower pulls and slower cold starts.",
        "Add `--no-cache-dir` (or `ENV PIP_NO_CACHE_DIR=1`, or a `--mount=type=cache` for pip).",
        "RUN pip install -r requirements.txt",
        "RUN pip install --no-cache-dir -r requirements.txt",
        ("DL3042",),
    ),
    Rule(
        "FC806",
        "unignored-build-context",
        "dockerfile",
        "warning",
        "`COPY .` takes the whole build context into the image, and this one holds `.env`, "
        "`.git`, a `.venv`, `__pycache__` or `.flightcheck` (the local Cloud Run's keys and "
        "state) that no .dockerignore excludes: secrets and history ship in a layer, and every "
        "change to them rebuilds it.",
        "Add a .dockerignore beside the Dockerfile: `.git`, `.venv`, `**/__pycache__`, `.env*`, "
        "`.flightcheck` (keep `!.env.example` if you need it).",
        "COPY . /app   # context: .env, .git, app/__pycache__, no .dockerignore",
        "# .dockerignore\n.git\n.venv\n**/__pycache__\n.env*\n.flightcheck",
        checked_by="flightcheck: the Dockerfile's COPY/ADD of the context against the context "
        "and its .dockerignore",
    ),
)

_CONTRACT = ("flightcheck: the service's Dockerfile command (ENTRYPOINT + CMD, ENV) with the "
             "server's defaults, its `uvicorn.run`/`app.run` call, and FastAPI/Flask routes")
_CLOUDRUN_RULES: tuple[Rule, ...] = (
    Rule(
        "FC821",
        "ignores-port",
        "cloudrun",
        "error",
        "Cloud Run sends requests to the port in `$PORT` (the configured container port); a "
        "server listening on another, hard-coded port (`--port 8000`, `uvicorn.run(port=8000)`, "
        "uvicorn's own default 8000) — or handed the literal text `$PORT` by an exec-form CMD — "
        "never receives a request and the revision fails to start.",
        "Listen on `$PORT`: `CMD exec uvicorn app.main:app --host 0.0.0.0 --port ${PORT:-8080}`, "
        "or `uvicorn.run(app, host=\"0.0.0.0\", port=int(os.environ.get(\"PORT\", 8080)))`.",
        'CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000"]',
        "CMD exec uvicorn app.main:app --host 0.0.0.0 --port ${PORT:-8080}",
        checked_by=_CONTRACT,
    ),
    Rule(
        "FC822",
        "binds-loopback",
        "cloudrun",
        "error",
        "The server binds 127.0.0.1/localhost (uvicorn's, hypercorn's and Flask's default): "
        "inside a container only the container itself can connect, so Cloud Run's requests and "
        "probes never arrive.",
        "Bind all interfaces: `--host 0.0.0.0` (uvicorn), `-b 0.0.0.0:$PORT` (gunicorn, "
        "hypercorn), `app.run(host=\"0.0.0.0\")`.",
        'CMD ["uvicorn", "app.main:app", "--port", "8080"]',
        'CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8080"]',
        checked_by=_CONTRACT,
    ),
    Rule(
        "FC823",
        "no-route-at-probe-path",
        "cloudrun",
        "error",
        "The configured startup/liveness probe path has no route in the service's FastAPI/Flask "
        "app: the probe gets 404, the revision never becomes ready, and flightcheck's "
        "health-poll fails the same way.",
        "Add the route (`@app.get(\"/health/startup\")`), or point `[health.startup].path` / "
        "`[health.liveness].path` in flightcheck.toml at the one the service has.",
        '# flightcheck.toml: [health.startup] path = "/health/startup"\n@app.get("/healthz")\n'
        "def health(): ...",
        '# flightcheck.toml: [health.startup] path = "/healthz"\n@app.get("/healthz")\n'
        "def health(): ...",
        checked_by=_CONTRACT,
    ),
)
_TY = ("ty (Astral's type checker) restricted to this rule, on the project's own functions "
       "and modules")
_TY_DEPS = (_TY + "; after the build, on calls into the packages the image installed (the "
            "build stage)")
_TYPE_RULES: tuple[Rule, ...] = (
    Rule(
        "FC901",
        "too-many-positional-arguments",
        "type",
        "error",
        "The call passes more positional arguments than the function takes (the project's own, "
        "or, checked in the build stage, one of the packages the image installed): it raises "
        "TypeError every time it runs, whatever the input.",
        "Pass what the signature takes (check the definition the message points to), or change "
        "the signature and every caller together.",
        "def greet(name, *, loud=False): ...\ngreet(user, True)",
        "def greet(name, *, loud=False): ...\ngreet(user, loud=True)",
        ("too-many-positional-arguments",),
        _TY_DEPS,
    ),
    Rule(
        "FC902",
        "unknown-keyword-argument",
        "type",
        "error",
        "The call passes a keyword the function does not have (or one argument twice) — the "
        "project's own, or, checked in the build stage, the installed version of a dependency "
        "(`max_token=` for openai's `max_tokens`): TypeError every time it runs.",
        "Use the parameter's real name (a rename that missed a caller is the usual cause).",
        "def ask(prompt, max_tokens=256): ...\nask(q, max_token=512)",
        "def ask(prompt, max_tokens=256): ...\nask(q, max_tokens=512)",
        ("unknown-argument", "parameter-already-assigned"),
        _TY_DEPS,
    ),
    Rule(
        "FC903",
        "missing-argument",
        "type",
        "error",
        "A required argument is missing (a project function's, or, in the build stage, an "
        "installed dependency's): TypeError on every call. A real service called "
        "`run_agent(message)` on `def run_agent(user_id, message, metadata)`, and every request "
        "got the generic error text.",
        "Pass every required argument, or give the parameter a default.",
        "def run_agent(user_id, message, metadata): ...\nrun_agent(message)",
        "def run_agent(user_id, message, metadata): ...\nrun_agent(user.id, message, {})",
        ("missing-argument",),
        _TY_DEPS,
    ),
    Rule(
        "FC904",
        "not-callable",
        "type",
        "error",
        "The code calls a plain value (a number, a string, None, a list or dict): TypeError "
        "every time the line runs.",
        "Call the function, not the value it returned or the constant beside it.",
        "TIMEOUT = 30\nclient.get(url, timeout=TIMEOUT())",
        "TIMEOUT = 30\nclient.get(url, timeout=TIMEOUT)",
        ("not-callable",),
        _TY,
    ),
    Rule(
        "FC905",
        "missing-module-attribute",
        "type",
        "error",
        "The project's module has no such name (a typo, or a function renamed or moved): "
        "AttributeError every time the line runs.",
        "Use the name the module defines (or add it there).",
        "from app import agent\nagent.run_agnet(user_id, message, {})",
        "from app import agent\nagent.run_agent(user_id, message, {})",
        ("missing-attribute",),
        _TY,
    ),
)
_RULES = _RULES + _CLOUDRUN_RULES + _TYPE_RULES

RULES: dict[str, Rule] = {r.code: r for r in _RULES}
# Not applied to test files (tests/, test_*.py, conftest.py): tests talk to fakes with fake
# values on purpose. Syntax, imports (as warnings), credentials and async-blocking still are.
TEST_EXEMPT: frozenset[str] = frozenset(
    {r.code for r in _RULES
     if r.category in ("ai-timeout", "ai-error-handling", "ai-model-pin", "type")}
    | {"FC304", "FC406"}  # a test's own event loop blocking on a helper harms no one
)
UPSTREAM: dict[str, str] = {u: r.code for r in _RULES for u in r.upstream}


def codes_for(selector: str) -> set[str]:
    """The codes a config entry names: a code (FC401), an upstream code (ASYNC210), a
    category (``secret``) or a code prefix (``FC4``). Empty when it names nothing."""
    key = selector.strip()
    if key in RULES:
        return {key}
    if key in UPSTREAM:
        return {UPSTREAM[key]}
    if key in CATEGORIES:
        return {r.code for r in _RULES if r.category == key}
    if key.upper().startswith("FC") and len(key) >= 3:
        return {c for c in RULES if c.startswith(key.upper())}
    return set()


def explain(code: str) -> str:
    """The rule's text for ``flightcheck lint --explain CODE`` (codes or upstream codes)."""
    key = code.strip().upper()
    rule = RULES.get(key) or RULES.get(UPSTREAM.get(key) or UPSTREAM.get(code.strip(), ""))
    if rule is None:
        from flightcheck.errors import UsageError

        raise UsageError(
            f"unknown lint rule {code!r}",
            fix=f"use one of: {', '.join(RULES)}",
            repro="flightcheck lint --explain FC101",
        )
    bad = "\n".join("    " + line for line in rule.example_bad.splitlines())
    good = "\n".join("    " + line for line in rule.example_good.splitlines())
    lines = [
        f"{rule.code} {rule.name} [{rule.category}, {rule.severity}]",
        "",
        f"Why: {rule.why}",
        f"Fix: {rule.fix}",
        "",
        "Flagged:",
        bad,
        "Instead:",
        good,
        "",
        f"Checked by: {rule.engine}"
        + (f" ({', '.join(rule.upstream)})" if rule.upstream else ""),
        f"Disable: flightcheck.toml [lint] disable = [\"{rule.code}\"]",
        f"Suppress one line: append `# flightcheck: ignore[{rule.code}]` (or `# noqa: {rule.code}`)"
        + (
            "; in a Dockerfile put it on the line above the instruction"
            if rule.category == "dockerfile"
            else ""
        ),
    ]
    return "\n".join(lines)


def rules_markdown() -> str:
    """The "# Rules" part of docs/lint.md, generated from this catalog (a test keeps the two
    identical: ``python -m flightcheck.lint.rules > section`` after changing a rule)."""
    out = ["# Rules", ""]
    for category in CATEGORIES:
        out += [f"## {category}", ""]
        for rule in (r for r in _RULES if r.category == category):
            above = " on the line above the instruction" if rule.category == "dockerfile" else ""
            engine = rule.engine + (f" ({', '.join(rule.upstream)})" if rule.upstream else "")
            out += [
                f"### {rule.code} {rule.name} — {rule.severity}", "",
                f"**Why:** {rule.why}", "",
                f"**Fix:** {rule.fix}", "",
                f"**Checked by:** {engine}. Disable: `disable = [\"{rule.code}\"]`; one line: "
                f"`# flightcheck: ignore[{rule.code}]`{above}.", "",
                "```", "# flagged", rule.example_bad, "# instead", rule.example_good, "```", "",
            ]
    return "\n".join(out).rstrip("\n") + "\n"


if __name__ == "__main__":
    print(rules_markdown(), end="")
