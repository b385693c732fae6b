"""Cloud Run's container contract, checked statically (FC821-FC823).

Cloud Run sends requests to the port in ``$PORT`` (the configured container port, 8080 by
default) on the container's external interface, and probes the configured HTTP paths. The
service's command is read from its Dockerfile (the final stage's ENTRYPOINT + CMD, ENV
included), the server's defaults are applied (uvicorn and hypercorn bind 127.0.0.1:8000, Flask
127.0.0.1:5000, ``fastapi run`` 0.0.0.0:8000, gunicorn ``0.0.0.0:$PORT``), and for
``python app.py`` / ``python -m app`` the ``uvicorn.run(...)``/``app.run(...)`` call of that
module is read. Routes of FastAPI/Flask apps are collected from decorators,
``add_api_route``/``add_url_rule`` and ``include_router``/``register_blueprint`` with their
prefixes; anything not statically certain (a mount, a computed path or prefix, a router from
elsewhere, a start script) makes the check say nothing rather than guess. FastAPI's own routes
(``/openapi.json``, ``/docs``, ``/docs/oauth2-redirect``, ``/redoc``, as the constructor sets
them) are served too. Without a config file declaring the probe paths, routes are not judged
(:attr:`Contract.unjudged_routes` says where the engine should note it).
"""

from __future__ import annotations

import ast
import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from flightcheck.lint import dockerfile
from flightcheck.lint.pyscan import dotted_name, keyword_arg
from flightcheck.lint.target import Service
from flightcheck.lint.textscan import Raw

_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_WRAPPERS = frozenset(
    {"exec", "opentelemetry-instrument", "ddtrace-run", "dumb-init", "tini", "--", "run",
     "uv", "poetry", "pipenv", "pdm", "hatch", "newrelic-admin", "run-program", "doppler"}
)
_SERVERS = frozenset({"uvicorn", "gunicorn", "hypercorn", "fastapi", "flask"})
_PORT_REF = re.compile(r"^\$\{?PORT(?::?-[^}]*)?\}?$")
_METHOD_DECORATORS = frozenset(
    {"get", "post", "put", "patch", "delete", "head", "options", "api_route", "route",
     "websocket", "trace"}
)
_APP_CLASSES = frozenset({"fastapi.FastAPI", "flask.Flask", "quart.Quart"})
_ROUTER_CLASSES = frozenset({"fastapi.APIRouter", "flask.Blueprint", "fastapi.routing.APIRouter",
                             "quart.Blueprint"})


@dataclass
class _Command:
    words: list[str]
    shell: bool  # shell form (or sh -c): $PORT is expanded
    line: int
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Contract:
    """Inputs: the project's Python files by module name and by path."""

    root: Path
    service: Service
    dockerfile_rel: str
    instructions: list[dockerfile.Instruction]
    modules: dict[str, str]  # dotted module name → rel
    rels: set[str]
    read: Callable[[str], str | None]
    findings: dict[str, list[Raw]] = field(default_factory=dict)
    # An app whose routes were known but not judged: no config file declares the probe paths.
    unjudged_routes: str | None = None

    def check(self) -> dict[str, list[Raw]]:
        cmd = _command(self.instructions)
        if cmd is None:
            return {}
        words = _strip_wrappers(cmd.words)
        if not words:
            return {}
        exe = Path(words[0]).name
        args = words[1:]
        if re.fullmatch(r"python(\d+(\.\d+)?)?", exe):
            if args[:1] == ["-m"] and len(args) >= 2:
                if args[1] in _SERVERS:
                    self._server(args[1], args[2:], cmd)
                else:
                    self._python_entry(self._module_rel(args[1], main=True), cmd)
            elif args and args[0].endswith(".py"):
                self._python_entry(self._path_rel(args[0]), cmd)
        elif exe in _SERVERS:
            self._server(exe, args, cmd)
        return self.findings

    # -- the server's command line --

    def _server(self, server: str, args: list[str], cmd: _Command) -> None:
        opts, positional = _options(args)
        env = cmd.env
        host: str | None
        port: str | None
        if server == "uvicorn":
            if "--uds" in opts or "--fd" in opts:
                return
            host = opts.get("--host") or env.get("UVICORN_HOST") or "127.0.0.1"
            port = opts.get("--port") or env.get("UVICORN_PORT") or "8000"
            app = positional[0] if positional else None
        elif server == "hypercorn":
            bind = opts.get("--bind") or opts.get("-b") or "127.0.0.1:8000"
            host, _, port = bind.rpartition(":")
            app = positional[0] if positional else None
        elif server == "gunicorn":
            if "-c" in opts or "--config" in opts or "GUNICORN_CMD_ARGS" in env:
                return  # settings live elsewhere
            bind = opts.get("--bind") or opts.get("-b")
            if bind is None:
                host, port = "0.0.0.0", None  # gunicorn reads PORT itself: 0.0.0.0:$PORT
            else:
                host, _, port = bind.rpartition(":")
                host = host or "0.0.0.0"
            app = positional[-1] if positional else None
        elif server == "fastapi":
            if positional[:1] not in (["run"], ["dev"]):
                return
            default_host = "0.0.0.0" if positional[0] == "run" else "127.0.0.1"
            host = opts.get("--host") or default_host
            port = opts.get("--port") or "8000"
            app = None
            target = positional[1] if len(positional) > 1 else None
            if target is not None:
                rel = self._path_rel(target)
                if rel is not None:
                    name = opts.get("--app") or "app"
                    self._routes(rel, name, _lines(self.read(rel)))
        elif server == "flask":
            if positional[:1] != ["run"]:
                return
            host = opts.get("--host") or opts.get("-h") or env.get("FLASK_RUN_HOST") or "127.0.0.1"
            port = opts.get("--port") or opts.get("-p") or env.get("FLASK_RUN_PORT") or "5000"
            app = opts.get("--app") or env.get("FLASK_APP")
        else:
            return
        self._judge(host, port, cmd.shell, self.dockerfile_rel, cmd.line, server)
        if app and ":" in app and server != "fastapi":
            module, _, attr = app.partition(":")
            rel = self._module_rel(module)
            if rel is not None and re.fullmatch(r"\w+", attr):
                self._routes(rel, attr, _lines(self.read(rel)))

    def _judge(self, host: str | None, port: str | None, shell: bool, rel: str, line: int,
               what: str) -> None:
        want = self.service.port
        if port is not None:
            if _PORT_REF.match(port):
                if not shell:
                    self._add(rel, Raw("FC821", line, 1, f"{what} gets the literal text {port!r}: "
                                       "an exec-form CMD does not expand variables; use "
                                       "`sh -c` or read PORT in the code"))
            elif port.isdigit() and int(port) != want:
                self._add(rel, Raw("FC821", line, 1, f"{what} listens on port {port}, but Cloud "
                                   f"Run sends requests to $PORT ({want}, [service].port in "
                                   f"{self.service.settings_from})"))
        if host is not None and host.strip("[]") in _LOOPBACK:
            self._add(rel, Raw("FC822", line, 1, f"{what} binds {host}: inside the container "
                               "only the container itself can reach it, Cloud Run cannot"))

    # -- python app.py / python -m app --

    def _python_entry(self, rel: str | None, cmd: _Command) -> None:
        if rel is None:
            return
        text = self.read(rel)
        tree = _parse(text)
        if tree is None:
            return
        aliases = _aliases(tree)
        apps = _app_variables(tree, aliases)
        consts = _int_constants(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            q = _qual(node.func, aliases)
            if q == "uvicorn.run":
                server, host_default, port_default = "uvicorn.run()", "127.0.0.1", "8000"
                app_arg = node.args[0] if node.args else None
            elif (isinstance(node.func, ast.Attribute) and node.func.attr == "run"
                  and isinstance(node.func.value, ast.Name)
                  and apps.get(node.func.value.id) in ("flask.Flask", "quart.Quart")):
                server, host_default, port_default = f"{node.func.value.id}.run()", "127.0.0.1", "5000"
                app_arg = node.func.value
            else:
                continue
            if len(node.args) > 1 or any(k.arg is None for k in node.keywords):
                continue  # host/port passed positionally or through **kwargs: unknown
            host = _value(keyword_arg(node, "host"), consts, host_default)
            port = _value(keyword_arg(node, "port"), consts, port_default)
            self._judge(host, port, True, rel, node.lineno, server)
            if isinstance(app_arg, ast.Name):
                self._routes(rel, app_arg.id, tree)
            elif isinstance(app_arg, ast.Constant) and isinstance(app_arg.value, str):
                module, _, attr = app_arg.value.partition(":")
                target = self._module_rel(module)
                if target is not None and attr:
                    self._routes(target, attr, _lines(self.read(target)))

    # -- routes --

    def _routes(self, rel: str, name: str, tree: ast.Module | None, hops: int = 3) -> None:
        if tree is None:
            return
        aliases = _aliases(tree)
        apps = _app_variables(tree, aliases)
        if name not in apps:
            # ``from app.main import app`` in a thin entry module: follow it
            origin = aliases.get(name)
            if origin and hops:
                module, _, attr = origin.rpartition(".")
                target = self._module_rel(module)
                if target is not None:
                    self._routes(target, attr, _lines(self.read(target)), hops - 1)
            return
        collector = _Routes(self, rel, tree, aliases)
        paths = collector.collect(name, "")
        if paths is None:
            return  # something not statically certain: say nothing
        if not self.service.probes_declared:
            self.unjudged_routes = rel
            return
        line = collector.defined.get(name, 1)
        for probe in dict.fromkeys(self.service.probes):
            if not any(_matches(p, probe) for p in paths):
                self._add(rel, Raw(
                    "FC823", line, 1,
                    f"no route answers GET {probe}, the probe path of [health] in "
                    f"{self.service.settings_from}: Cloud Run's probe gets 404 and the revision "
                    "never becomes ready"))

    # -- plumbing --

    def _module_rel(self, module: str, *, main: bool = False) -> str | None:
        if main and f"{module}.__main__" in self.modules:
            return self.modules[f"{module}.__main__"]
        return self.modules.get(module)

    def _path_rel(self, path: str) -> str | None:
        parts = [p for p in Path(path).parts if p not in ("/", ".")]
        for i in range(len(parts)):
            rel = "/".join(parts[i:])
            if rel in self.rels:
                return rel
        return None

    def _add(self, rel: str, raw: Raw) -> None:
        found = self.findings.setdefault(rel, [])
        if raw not in found:
            found.append(raw)


class _Routes:
    """Route paths registered on an app or router variable, prefixes applied."""

    def __init__(self, contract: Contract, rel: str, tree: ast.Module,
                 aliases: dict[str, str]) -> None:
        self.c = contract
        self.rel = rel
        self.tree = tree
        self.aliases = aliases
        self.defined: dict[str, int] = {}
        self.vars = _app_variables(tree, aliases, self.defined)

    def collect(self, name: str, prefix: str, depth: int = 4) -> list[str] | None:
        if depth == 0:
            return None
        own = self._constructor_prefix(name)
        if own is None:
            return None
        prefix += own
        paths: list[str] = []
        if self.vars.get(name) == "fastapi.FastAPI":
            builtin = self._fastapi_builtin(name)
            if builtin is None:
                return None
            paths += builtin
        for node in ast.walk(self.tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for dec in node.decorator_list:
                    if _on(dec, name) and isinstance(dec, ast.Call):
                        method = dec.func.attr  # type: ignore[attr-defined]
                        if method in _METHOD_DECORATORS:
                            path = _str_arg(dec)
                            if path is None:
                                return None
                            if method not in ("websocket", "post", "put", "patch", "delete"):
                                paths.append(prefix + path)
            elif isinstance(node, ast.Call) and _on(node.func, name):
                attr = node.func.attr  # type: ignore[union-attr]
                if attr in ("add_api_route", "add_url_rule", "add_route"):
                    path = _str_arg(node)
                    if path is None:
                        return None
                    paths.append(prefix + path)
                elif attr in ("include_router", "register_blueprint"):
                    sub = self._include(node, prefix, depth)
                    if sub is None:
                        return None
                    paths += sub
                elif attr in ("mount", "host"):
                    return None
        return paths

    def _constructor_prefix(self, name: str) -> str | None:
        for node in ast.walk(self.tree):
            if (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and isinstance(node.targets[0], ast.Name) and node.targets[0].id == name
                    and isinstance(node.value, ast.Call)):
                kw = keyword_arg(node.value, "prefix") or keyword_arg(node.value, "url_prefix")
                if kw is None:
                    return ""
                return kw.value if isinstance(kw, ast.Constant) and isinstance(kw.value, str) else None
        return ""

    def _fastapi_builtin(self, name: str) -> list[str] | None:
        """The routes FastAPI adds itself (``FastAPI.setup``): the OpenAPI document, and with
        it the Swagger UI (and its OAuth2 redirect) and ReDoc, at the constructor's URLs. A URL
        chosen by a condition counts with every value it may take; one computed otherwise makes
        the app's routes unknown (None)."""
        call: ast.Call | None = None
        for node in self.tree.body:
            if (isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Call)
                    and any(isinstance(t, ast.Name) and t.id == name
                            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]))):
                call = node.value
        if call is None or any(k.arg is None for k in call.keywords):
            return None  # **settings: the URLs are not known
        urls: dict[str, list[str]] = {}
        for kw, default in _FASTAPI_BUILTIN:
            expr = keyword_arg(call, kw)
            values = [default] if expr is None else _url_values(expr)
            if values is None:
                return None
            urls[kw] = values
        if not urls["openapi_url"]:
            return []  # openapi_url=None turns off the docs pages as well
        if not urls["docs_url"]:
            urls["swagger_ui_oauth2_redirect_url"] = []  # part of the Swagger UI
        return [u for values in urls.values() for u in values]

    def _include(self, call: ast.Call, prefix: str, depth: int) -> list[str] | None:
        if not call.args:
            return None
        kw = keyword_arg(call, "prefix") or keyword_arg(call, "url_prefix")
        extra = ""
        if kw is not None:
            if not (isinstance(kw, ast.Constant) and isinstance(kw.value, str)):
                return None
            extra = kw.value
        router = call.args[0]
        if isinstance(router, ast.Name) and router.id in self.vars:
            return self.collect(router.id, prefix + extra, depth - 1)
        dotted = dotted_name(router)
        if dotted is None:
            return None
        head, _, rest = dotted.partition(".")
        origin = self.aliases.get(head)
        if origin is None:
            return None
        full = f"{origin}.{rest}" if rest else origin
        module, _, attr = full.rpartition(".")
        rel = self.c._module_rel(module)  # pyright: ignore[reportPrivateUsage]
        tree = _lines(self.c.read(rel)) if rel is not None else None
        if rel is None or tree is None:
            return None  # a router from a library: its routes are not known here
        return _Routes(self.c, rel, tree, _aliases(tree)).collect(attr, prefix + extra, depth - 1)


_FASTAPI_BUILTIN = (("openapi_url", "/openapi.json"), ("docs_url", "/docs"),
                    ("redoc_url", "/redoc"),
                    ("swagger_ui_oauth2_redirect_url", "/docs/oauth2-redirect"))


def _url_values(expr: ast.expr) -> list[str] | None:
    """The URLs a constructor argument may be: ``"/docs"``, ``None`` (off), or either branch
    of ``"/docs" if debug else None``; None when computed otherwise."""
    if isinstance(expr, ast.Constant) and (expr.value is None or isinstance(expr.value, str)):
        return [expr.value] if expr.value else []
    if isinstance(expr, ast.IfExp):
        body, orelse = _url_values(expr.body), _url_values(expr.orelse)
        return None if body is None or orelse is None else body + orelse
    return None


# --- helpers --------------------------------------------------------------------------------


def _command(instructions: list[dockerfile.Instruction]) -> _Command | None:
    """The final stage's ENTRYPOINT + CMD (inherited through ``FROM stage``) and its ENV."""
    stages, _ = dockerfile.stages(instructions)
    if not stages:
        return None
    by_alias = {s.alias.lower(): s for s in stages if s.alias}
    chain = [stages[-1]]
    while chain[-1].image.lower() in by_alias and by_alias[chain[-1].image.lower()] not in chain:
        chain.append(by_alias[chain[-1].image.lower()])
    entry: dockerfile.Instruction | None = None
    cmd: dockerfile.Instruction | None = None
    env: dict[str, str] = {}
    for stage in reversed(chain):  # base first: later stages override
        for ins in stage.instructions:
            if ins.keyword == "ENTRYPOINT":
                entry, cmd = ins, None  # ENTRYPOINT resets an inherited CMD
            elif ins.keyword == "CMD":
                cmd = ins
            elif ins.keyword == "ENV":
                env.update(_env(ins.args))
    words: list[str] = []
    shell = False
    line = 0
    for ins in (entry, cmd):
        if ins is None:
            continue
        line = ins.line
        parsed, is_shell = _words(ins.args)
        if parsed is None:
            return None
        words += parsed
        shell = shell or is_shell
    if not words:
        return None
    if words[0] in ("sh", "/bin/sh", "bash", "/bin/bash") and "-c" in words[:3]:
        script = words[words.index("-c") + 1] if len(words) > words.index("-c") + 1 else ""
        parsed, _ = _words(script)
        if parsed is None:
            return None
        words, shell = parsed, True
    return _Command(words, shell, line, env)


def _words(args: str) -> tuple[list[str] | None, bool]:
    text = args.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            return None, False
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return [str(v) for v in value], False
        return None, False
    if any(c in text for c in ("&&", "||", ";", "|", "`", "$(")):
        return None, True  # a pipeline: not one command we can judge
    try:
        return shlex.split(text), True
    except ValueError:
        return None, True


def _env(args: str) -> dict[str, str]:
    try:
        words = shlex.split(args)
    except ValueError:
        return {}
    if len(words) == 2 and "=" not in words[0]:
        return {words[0]: words[1]}  # legacy ENV KEY value
    return dict(w.split("=", 1) for w in words if "=" in w)


def _strip_wrappers(words: list[str]) -> list[str]:
    i = 0
    while i < len(words) and (Path(words[i]).name in _WRAPPERS or words[i].startswith("-")):
        i += 1
    return words[i:]


def _options(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """``--host 0.0.0.0 --port=8080 app:app`` → options and positional words."""
    opts: dict[str, str] = {}
    positional: list[str] = []
    i = 0
    while i < len(args):
        word = args[i]
        if word.startswith("-"):
            name, eq, value = word.partition("=")
            if eq:
                opts[name] = value
            elif i + 1 < len(args) and not args[i + 1].startswith("-"):
                opts[name] = args[i + 1]
                i += 1
            else:
                opts[name] = ""
        else:
            positional.append(word)
        i += 1
    return opts, positional


def _parse(text: str | None) -> ast.Module | None:
    if text is None:
        return None
    try:
        return ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


_lines = _parse


def _aliases(tree: ast.Module) -> dict[str, str]:
    out: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Import):
            for a in node.names:
                out[a.asname or a.name.partition(".")[0]] = a.name if a.asname else a.name.partition(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                out[a.asname or a.name] = f"{node.module}.{a.name}"
    return out


def _qual(expr: ast.expr, aliases: dict[str, str]) -> str | None:
    dotted = dotted_name(expr)
    if dotted is None:
        return None
    head, _, rest = dotted.partition(".")
    base = aliases.get(head)
    if base is None:
        return None
    return f"{base}.{rest}" if rest else base


def _app_variables(tree: ast.Module, aliases: dict[str, str],
                   lines: dict[str, int] | None = None) -> dict[str, str]:
    """Module-level ``name = FastAPI(...)``/``Flask(...)``/routers: name → class."""
    out: dict[str, str] = {}
    for node in tree.body:
        if (isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Call)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            q = _qual(node.value.func, aliases)
            if q in _APP_CLASSES or q in _ROUTER_CLASSES:
                for t in targets:
                    if isinstance(t, ast.Name):
                        out[t.id] = q
                        if lines is not None:
                            lines[t.id] = node.lineno
    return out


def _int_constants(tree: ast.Module) -> dict[str, str]:
    out: dict[str, str] = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, (int, str))):
            out[node.targets[0].id] = str(node.value.value)
    return out


def _value(expr: ast.expr | None, consts: dict[str, str], default: str) -> str | None:
    """A literal (or a module constant) as text; the server's default when absent; None when
    computed (``int(os.environ["PORT"])`` is exactly what Cloud Run wants)."""
    if expr is None:
        return default
    if isinstance(expr, ast.Constant) and isinstance(expr.value, (int, str)):
        return str(expr.value)
    if isinstance(expr, ast.Name) and expr.id in consts:
        return consts[expr.id]
    return None


def _on(expr: ast.expr, name: str) -> bool:
    """``name.something`` or ``name.something(...)``."""
    func = expr.func if isinstance(expr, ast.Call) else expr
    return (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
            and func.value.id == name)


def _str_arg(call: ast.Call) -> str | None:
    arg = call.args[0] if call.args else keyword_arg(call, "path") or keyword_arg(call, "rule")
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    return None


def _matches(route: str, probe: str) -> bool:
    """FastAPI ``{x}``/``{x:path}`` and Flask ``<x>``/``<path:x>`` parameters; a trailing
    slash differs only by a redirect, which a probe follows as success (3xx)."""
    r = route.rstrip("/") or "/"
    p = probe.rstrip("/") or "/"
    pattern = ""
    for piece in re.split(r"(\{[^}]*\}|<[^>]*>)", r):
        if piece.startswith("{") or piece.startswith("<"):
            pattern += ".*" if ":path" in piece or "path:" in piece else "[^/]+"
        else:
            pattern += re.escape(piece)
    return re.fullmatch(pattern, p) is not None
