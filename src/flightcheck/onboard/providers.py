"""Which model provider the service calls, where its base URL comes from, and which of the
service's functions reach the model.

A provider is used through an SDK (openai, anthropic, google-genai, google-generativeai,
langchain, litellm) or over plain HTTP to a provider-shaped URL (``…/chat/completions``,
``:generateContent``, ``/v1/messages``). The fake model server can stand in for it when the
service takes the base URL from the environment: the SDK's own variable (``OPENAI_BASE_URL``),
or a variable of the service's own (then the fake run sets that one). A hard-coded URL cannot
be redirected, and init says so.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from flightcheck.onboard.envreads import EnvRead, reads_in
from flightcheck.onboard.project import (
    Func,
    Project,
    SourceFile,
    call_name,
    const_str,
    dotted,
    kwarg,
    last_name,
    string_value,
    walk_scope,
)

# What the fake model server speaks (src/flightcheck/fakemodel/server.py).
FAKE_APIS = ("openai", "gemini")
# The base-URL variables flightcheck's fake mode sets, by wire protocol.
STANDARD_BASE_VARS = {"openai": ("OPENAI_BASE_URL", "OPENAI_API_BASE"), "gemini": ("GOOGLE_GEMINI_BASE_URL",)}
STANDARD_KEY_VARS = ("OPENAI_API_KEY", "GEMINI_API_KEY")

_PROVIDER_HOSTS = {
    "api.openai.com": "openai", "generativelanguage.googleapis.com": "gemini",
    "api.anthropic.com": "anthropic", "api.groq.com": "openai", "api.mistral.ai": "openai",
    "api.together.xyz": "openai", "openrouter.ai": "openai", "api.deepseek.com": "openai",
    "api.fireworks.ai": "openai", "api.perplexity.ai": "openai",
}
_URL_APIS = (
    ("chat/completions", "openai"), ("/completions", "openai"), ("/embeddings", "openai"),
    ("/responses", "openai-responses"), (":generateContent", "gemini"),
    (":streamGenerateContent", "gemini"), ("/v1/messages", "anthropic"), ("/api/chat", "ollama"),
    ("/api/generate", "ollama"),
)
# SDK call suffix → wire protocol.
_SDK_CALLS = (
    ("chat.completions.create", "openai"), ("chat.completions.parse", "openai"),
    ("chat.completions.stream", "openai"), ("completions.create", "openai"),
    ("embeddings.create", "openai"), ("responses.create", "openai-responses"),
    ("responses.parse", "openai-responses"), ("ChatCompletion.create", "openai-legacy"),
    ("ChatCompletion.acreate", "openai-legacy"), ("Completion.create", "openai-legacy"),
    ("messages.create", "anthropic"), ("messages.stream", "anthropic"),
    ("models.generate_content", "gemini"), ("models.generate_content_stream", "gemini"),
    ("generate_content", "gemini"), ("generate_content_async", "gemini"),
    ("litellm.completion", "litellm"), ("litellm.acompletion", "litellm"),
)
# Client constructors: name → (sdk, wire protocol, base-URL keyword(s)).
_CLIENTS = {
    "OpenAI": ("openai", "openai", ("base_url",)),
    "AsyncOpenAI": ("openai", "openai", ("base_url",)),
    "AzureOpenAI": ("openai (Azure)", "azure", ("azure_endpoint", "base_url")),
    "AsyncAzureOpenAI": ("openai (Azure)", "azure", ("azure_endpoint", "base_url")),
    "Anthropic": ("anthropic", "anthropic", ("base_url",)),
    "AsyncAnthropic": ("anthropic", "anthropic", ("base_url",)),
    "Client": ("google-genai", "gemini", ("base_url",)),  # genai.Client, checked by import below
    "ChatOpenAI": ("langchain-openai", "openai", ("base_url", "openai_api_base")),
    "ChatAnthropic": ("langchain-anthropic", "anthropic", ("base_url", "anthropic_api_url")),
    "ChatGoogleGenerativeAI": ("langchain-google-genai", "gemini-grpc", ()),
    "GenerativeModel": ("google-generativeai", "gemini-legacy", ()),
}
_SDK_IMPORTS = {
    "openai": "openai", "anthropic": "anthropic", "google.genai": "google-genai",
    "google.generativeai": "google-generativeai", "litellm": "litellm", "langchain_openai":
    "langchain-openai", "langchain_anthropic": "langchain-anthropic", "langchain": "langchain",
    "langchain_core": "langchain", "langchain_google_genai": "langchain-google-genai",
    "mistralai": "mistralai", "cohere": "cohere", "groq": "groq", "ollama": "ollama",
}
_LANGCHAIN_CALLS = {"invoke", "ainvoke", "predict", "apredict", "stream", "astream", "batch", "abatch"}
# Attribute calls too generic to resolve to a project function by name.
_GENERIC = {"get", "json", "items", "keys", "values", "append", "update", "format", "join", "split",
            "strip", "read", "write", "close", "lower", "upper", "encode", "decode", "pop", "add",
            "copy", "sort", "extend", "replace", "startswith", "endswith", "dumps", "loads"}


@dataclass
class BaseURL:
    """Where a client's base URL comes from."""

    source: str  # sdk-env | env | hard-coded | unknown
    var: str | None = None
    default: str | None = None
    url: str | None = None
    where: str = ""

    def describe(self) -> str:
        if self.source == "sdk-env":
            return f"base URL from {self.var} (the SDK reads it itself)"
        if self.source == "env":
            dflt = f", default {self.default}" if self.default else ""
            return f"base URL from ${self.var} ({self.where}{dflt})"
        if self.source == "hard-coded":
            return f"base URL hard-coded: {self.url} ({self.where})"
        return f"base URL from an expression init cannot follow ({self.where})"


@dataclass
class ProviderUse:
    """One client construction or one provider-shaped HTTP call."""

    sdk: str
    api: str  # wire protocol: openai | gemini | anthropic | openai-responses | …
    where: str
    what: str
    base: BaseURL
    key_var: str | None = None  # a key variable of the service's own (api_key=os.environ[...])

    @property
    def fake_reachable(self) -> bool:
        return self.api in FAKE_APIS and self.base.source in ("sdk-env", "env")


@dataclass
class AICall:
    """A call that goes to the model."""

    func: Func | None
    where: str
    what: str
    api: str
    json_mode: bool = False


@dataclass
class Switch:
    """An environment variable that picks the provider (``AI_PROVIDER=openai``)."""

    var: str
    values: list[str]
    default: str | None
    where: str


@dataclass
class Providers:
    sdks: list[str] = field(default_factory=list)
    uses: list[ProviderUse] = field(default_factory=list)
    calls: list[AICall] = field(default_factory=list)
    # id(function node) → the chain of calls by which it reaches the model, the call site last
    ai: dict[int, list[str]] = field(default_factory=dict)
    switch: Switch | None = None

    def reaches_model(self, fn: Func | None) -> str | None:
        chain = self.ai.get(id(fn.node)) if fn is not None else None
        if not chain:
            return None
        if len(chain) > 5:
            chain = [*chain[:3], "…", *chain[-2:]]
        return " → ".join(chain)


def detect(project: Project, files: list[SourceFile], reads: list[EnvRead]) -> Providers:
    out = Providers()
    for f in files:
        for node in f.nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for n in names:
                    for prefix, sdk in _SDK_IMPORTS.items():
                        if (n == prefix or n.startswith(prefix + ".")) and sdk not in out.sdks:
                            out.sdks.append(sdk)
    funcs = [fn for fn in project.all_functions() if fn.file in files]
    for f in files:
        _clients(f, out, reads)
    for fn in funcs:
        _direct_calls(project, fn, out, reads)
    _propagate(project, funcs, out)
    out.switch = _switch(project, files, reads)
    return out


# --- clients and their base URLs --------------------------------------------------------------


def _clients(f: SourceFile, out: Providers, reads: list[EnvRead]) -> None:
    genai = any(isinstance(n, ast.ImportFrom) and (n.module or "").startswith("google") and
                any(a.name == "genai" for a in n.names) for n in f.nodes)
    for node in f.nodes:
        if not isinstance(node, ast.Call):
            continue
        name = last_name(node)
        if name not in _CLIENTS:
            continue
        # Client and GenerativeModel are generic names: only google's count.
        if name == "Client" and not (genai and dotted(node.func).endswith("genai.Client")):
            continue
        if name == "GenerativeModel" and "google" not in f.top_imports:
            continue
        sdk, api, keywords = _CLIENTS[name]
        base = _client_base(f, node, api, keywords, reads)
        key_expr = kwarg(node, "api_key") or kwarg(node, "openai_api_key")
        key_var = None
        if key_expr is not None:
            key_reads = reads_in(f, list(ast.walk(key_expr)))
            key_var = key_reads[0].name if key_reads else _resolve_env(f, key_expr, reads).var
        out.uses.append(ProviderUse(sdk, api, f.where(node), f"{dotted(node.func)}()", base, key_var))


def _client_base(f: SourceFile, node: ast.Call, api: str, keywords: tuple[str, ...],
                 reads: list[EnvRead]) -> BaseURL:
    expr = next((kwarg(node, k) for k in keywords if kwarg(node, k) is not None), None)
    if expr is None and api == "gemini":  # genai.Client(http_options={"base_url": …})
        opts = kwarg(node, "http_options")
        if isinstance(opts, ast.Dict):
            expr = next((v for k, v in zip(opts.keys, opts.values, strict=True) if const_str(k) == "base_url"), None)
        elif isinstance(opts, ast.Call):
            expr = kwarg(opts, "base_url")
    standard = {"openai": "OPENAI_BASE_URL", "gemini": "GOOGLE_GEMINI_BASE_URL", "anthropic":
                "ANTHROPIC_BASE_URL", "azure": "AZURE_OPENAI_ENDPOINT"}.get(api)
    if expr is None or (isinstance(expr, ast.Constant) and expr.value is None):
        if api in ("gemini-grpc", "gemini-legacy"):
            return BaseURL("unknown", where=f.where(node))
        return BaseURL("sdk-env", var=standard, where=f.where(node))
    return _resolve_env(f, expr, reads)


def _resolve_env(f: SourceFile, expr: ast.expr, reads: list[EnvRead], depth: int = 0) -> BaseURL:
    """An expression → the environment variable (or literal URL) it comes from."""
    where = f.where(expr)
    if depth > 5:
        return BaseURL("unknown", where=where)
    here = reads_in(f, list(ast.walk(expr)))
    if here:
        r = here[0]
        return BaseURL("env", var=r.name, default=r.default, where=r.where)
    literal = string_value(expr, f)
    if literal is not None and "{" not in literal:
        return BaseURL("hard-coded", url=literal, where=where)
    if isinstance(expr, ast.JoinedStr):
        parts = [v.value for v in expr.values if isinstance(v, ast.FormattedValue)]
        if parts:
            return _resolve_env(f, parts[0], reads, depth + 1)
    if isinstance(expr, ast.BinOp):
        left = _resolve_env(f, expr.left, reads, depth + 1)
        return left if left.source != "unknown" else _resolve_env(f, expr.right, reads, depth + 1)
    if isinstance(expr, ast.BoolOp):  # os.getenv("X") or "https://…"
        for v in expr.values:
            got = _resolve_env(f, v, reads, depth + 1)
            if got.source == "env":
                return got
    if isinstance(expr, ast.Call) and expr.args and last_name(expr) in ("str", "rstrip", "strip"):
        return _resolve_env(f, expr.args[0], reads, depth + 1)
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and last_name(expr) in ("rstrip", "strip"):
        return _resolve_env(f, expr.func.value, reads, depth + 1)
    if isinstance(expr, ast.Name):
        value = _assignment(f, expr.id, expr)
        if value is not None:
            return _resolve_env(f, value, reads, depth + 1)
    if isinstance(expr, ast.Attribute):
        if isinstance(expr.value, ast.Name) and expr.value.id == "self":
            value = _self_assignment(f, expr.attr, expr)
            if value is not None:
                return _resolve_env(f, value, reads, depth + 1)
        # settings.openai_base_url ← a read of OPENAI_BASE_URL somewhere in the project
        name = expr.attr.upper()
        match = [r for r in reads if r.name == name or r.name.endswith("_" + name) or name.endswith("_" + r.name)]
        if match:
            r = match[0]
            return BaseURL("env", var=r.name, default=r.default, where=r.where)
    return BaseURL("unknown", where=where)


def _assignment(f: SourceFile, name: str, near: ast.AST) -> ast.expr | None:
    """The value last assigned to ``name`` in the function around ``near``, else the module."""
    scopes: list[ast.AST] = [n for n in f.nodes if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
                             and any(x is near for x in ast.walk(n))]
    for scope in [*reversed(scopes), f.tree]:
        value = None
        for node in walk_scope(scope):
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                value = node.value
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
                value = node.value
        if value is not None:
            return value
    return None


def _self_assignment(f: SourceFile, attr: str, near: ast.AST) -> ast.expr | None:
    for cls in (n for n in f.nodes if isinstance(n, ast.ClassDef)):
        if any(x is near for x in ast.walk(cls)):
            for node in ast.walk(cls):
                if isinstance(node, ast.Assign):
                    for t in node.targets:
                        if isinstance(t, ast.Attribute) and t.attr == attr and dotted(t.value) == "self":
                            return node.value
    return None


# --- calls that reach the model ---------------------------------------------------------------


def _url_api(url: str) -> str | None:
    for host, api in _PROVIDER_HOSTS.items():
        if host in url:
            for pattern, path_api in _URL_APIS:
                if pattern in url:
                    return path_api
            return api
    for pattern, api in _URL_APIS:
        if pattern in url:
            return api
    return None


def _json_mode(call: ast.Call, f: SourceFile) -> bool:
    for k in call.keywords:
        if k.arg == "response_format":
            return True
        if k.arg == "json_mode" and isinstance(k.value, ast.Constant) and k.value.value is True:
            return True
        if k.arg in ("config", "generation_config"):
            text = ast.unparse(k.value)
            if "application/json" in text or "response_schema" in text:
                return True
        if k.arg == "json" and isinstance(k.value, ast.Dict):  # an HTTP body
            if any(const_str(key) == "response_format" for key in k.value.keys):
                return True
    return last_name(call) == "parse"


def _direct_calls(project: Project, fn: Func, out: Providers, reads: list[EnvRead]) -> None:
    f = fn.file
    langchain = any(s.startswith("langchain") for s in _imports(f))
    for node in walk_scope(fn.node):
        if not isinstance(node, ast.Call):
            continue
        name = call_name(node)
        api = next((a for suffix, a in _SDK_CALLS if name.endswith(suffix) and (
            "." in suffix or name == suffix or name.endswith("." + suffix))), None)
        # Twilio, Slack & co. have messages.create too: anthropic only where it is imported.
        if api == "anthropic" and "anthropic" not in _imports(f):
            api = None
        if api == "gemini" and "google" not in _imports(f) and "vertexai" not in _imports(f):
            api = None
        if api is None and last_name(node) in ("completion", "acompletion") and "litellm" in _imports(f):
            api = "litellm"
        if api is None and langchain and last_name(node) in _LANGCHAIN_CALLS and isinstance(node.func, ast.Attribute):
            api = "langchain"
        if api is None and last_name(node) in ("post", "request", "stream") and isinstance(node.func, ast.Attribute):
            url_expr = node.args[1] if last_name(node) in ("request", "stream") and len(node.args) > 1 else (
                node.args[0] if node.args else kwarg(node, "url"))
            url = string_value(url_expr, f) if url_expr is not None else None
            url_api = _url_api(url) if url else None
            if url_api is not None and url_expr is not None:
                api = url_api
                base = _http_base(f, url_expr, node, reads)
                out.uses.append(ProviderUse("http", url_api, f.where(node), f"POST {url}", base))
        if api is not None:
            out.calls.append(AICall(fn, f.where(node), name, api, _json_mode(node, f)))
            out.ai.setdefault(id(fn.node), [f"{name}() at {f.where(node)}"])


def _http_base(f: SourceFile, url_expr: ast.expr, call: ast.Call, reads: list[EnvRead]) -> BaseURL:
    """The base of a provider URL: the URL's own leading part, or the client's ``base_url``."""
    url = string_value(url_expr, f) or ""
    if url.startswith("http"):
        return BaseURL("hard-coded", url=url, where=f.where(url_expr))
    if url.startswith("{") or isinstance(url_expr, ast.BinOp):
        return _resolve_env(f, url_expr, reads)
    # A relative URL: the client was built with base_url=… (in the same file)
    for node in f.nodes:
        if isinstance(node, ast.Call) and last_name(node) in ("Client", "AsyncClient", "Session", "ClientSession"):
            base = kwarg(node, "base_url")
            if base is not None:
                return _resolve_env(f, base, reads)
    return BaseURL("unknown", where=f.where(url_expr))


def _imports(f: SourceFile) -> set[str]:
    return f.top_imports


def called_names(fn: Func) -> list[str]:
    """Names of what ``fn`` calls, as they could resolve to project functions."""
    cache: dict[int, list[str]] = fn.file.memo.setdefault("called_names", {})
    if id(fn.node) not in cache:
        cache[id(fn.node)] = _called_names(fn)
    return cache[id(fn.node)]


def _called_names(fn: Func) -> list[str]:
    names: list[str] = []
    for node in walk_scope(fn.node):
        if isinstance(node, ast.Call):
            name = last_name(node)
            if isinstance(node.func, ast.Attribute) and name in _GENERIC:
                continue
            if name and name not in names:
                names.append(name)
            # functions passed along: run_in_executor(pool, evaluate, …), create_task(f())
            for arg in node.args:
                if isinstance(arg, ast.Name | ast.Attribute):
                    ref = dotted(arg).split(".")[-1]
                    if ref and ref not in names:
                        names.append(ref)
    return names


def _propagate(project: Project, funcs: list[Func], out: Providers) -> None:
    changed = True
    while changed:
        changed = False
        for fn in funcs:
            if id(fn.node) in out.ai:
                continue
            for name in called_names(fn):
                hit = next((c for c in project.functions(name) if id(c.node) in out.ai and c.node is not fn.node), None)
                if hit is not None:
                    out.ai[id(fn.node)] = [f"{hit.name}()", *out.ai[id(hit.node)]]
                    changed = True
                    break


def closure(project: Project, fn: Func, depth: int = 6) -> list[Func]:
    """``fn`` and the project functions it calls, by name, ``depth`` levels deep."""
    seen: list[Func] = [fn]
    frontier = [fn]
    for _ in range(depth):
        nxt: list[Func] = []
        for f in frontier:
            for name in called_names(f):
                for c in project.functions(name):
                    if all(c.node is not s.node for s in seen):
                        seen.append(c)
                        nxt.append(c)
        frontier = nxt
    return seen


# --- the provider switch -------------------------------------------------------------------

_SWITCH_VAR = re.compile(r"^(?:[A-Z0-9]+_)*(?:PROVIDER|LLM_BACKEND|MODEL_BACKEND|LLM_PROVIDER)$")
_PROVIDER_NAMES = {"openai", "gemini", "google", "anthropic", "fake", "mock", "stub", "ollama",
                   "azure", "vertex", "groq", "local", "dummy", "echo", "test"}


def _switch(project: Project, files: list[SourceFile], reads: list[EnvRead]) -> Switch | None:
    """``AI_PROVIDER`` read from the environment and compared against provider names."""
    candidates = [r for r in reads if _SWITCH_VAR.match(r.name)]
    if not candidates:
        return None
    values: list[str] = []
    for f in files:
        for node in f.nodes:
            if isinstance(node, ast.Compare):
                for side in [node.left, *node.comparators]:
                    literal = const_str(side)
                    others = [node.left, *node.comparators]
                    if literal and literal.lower() in _PROVIDER_NAMES and any(
                            "provider" in dotted(o).lower() or "backend" in dotted(o).lower() for o in others):
                        if literal.lower() not in values:
                            values.append(literal.lower())
            elif isinstance(node, ast.Tuple | ast.List) and len(node.elts) >= 2:
                literals = [const_str(e) for e in node.elts]
                if all(x and x.lower() in _PROVIDER_NAMES for x in literals):
                    for x in literals:
                        if x and x.lower() not in values:
                            values.append(x.lower())
    if not values:
        return None
    r = candidates[0]
    return Switch(r.name, values, r.default, r.where)
