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
    "secret",
    "async-blocking",
    "ai-timeout",
    "ai-error-handling",
    "ai-model-pin",
    "dockerfile",
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
        "Add one: `HEALTHCHECK CMD python -c \"import urllib.request as u; "
        "u.urlopen('http://127.0.0.1:8080/health', timeout=2)\"`, or `HEALTHCHECK NONE` "
        "to opt out explicitly.",
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
)

RULES: dict[str, Rule] = {r.code: r for r in _RULES}
# Not applied to test files (tests/, test_*.py, conftest.py): tests talk to fakes with fake
# values on purpose. Syntax, imports (as warnings), credentials and async-blocking still are.
TEST_EXEMPT: frozenset[str] = frozenset(
    {r.code for r in _RULES if r.category in ("ai-timeout", "ai-error-handling", "ai-model-pin")}
    | {"FC304"}
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
    rule = RULES.get(key) or RULES.get(UPSTREAM.get(key, ""))
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
