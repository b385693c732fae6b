"""The web framework, its app object and its routes, read from the source.

FastAPI / Flask / Quart / Sanic decorators (``@app.get("/x")``, ``@bp.route("/x",
methods=["POST"])``, routers with prefixes), Starlette ``Route``/``Mount`` tables,
``add_route``/``add_url_rule``, Django ``urlpatterns``, and plain ASGI/WSGI callables that
compare the request path. For each route: the handler, the request body (a pydantic model,
or the keys the handler reads from the JSON body) and the response shape (``response_model``,
the return annotation, or the keys of the dicts it returns).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any

from flightcheck.onboard.project import (
    Func,
    Project,
    SourceFile,
    const_str,
    dotted,
    kwarg,
    last_name,
    string_value,
    walk_scope,
)

_APP_CTORS = {
    "FastAPI": "fastapi", "Flask": "flask", "Starlette": "starlette", "Quart": "quart",
    "Sanic": "sanic", "APIRouter": "fastapi", "Blueprint": "flask", "Router": "starlette",
    "Litestar": "litestar",
}
_ROUTERS = {"APIRouter", "Blueprint", "Router"}
_VERBS = {"get", "post", "put", "delete", "patch", "head", "options"}
_PATH_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}|<(?:\w+:)?(\w+)>")
_FRAMEWORK_IMPORTS = ("fastapi", "flask", "starlette", "django", "quart", "sanic", "litestar",
                      "aiohttp")


@dataclass
class App:
    """The application object a server loads."""

    framework: str
    var: str  # the variable (or the factory function) a server target names
    file: SourceFile
    where: str
    factory: bool = False
    title: str | None = None

    @property
    def target(self) -> str:
        return f"{self.file.module}:{self.var}"

    @property
    def asgi(self) -> bool:
        return self.framework in ("fastapi", "starlette", "quart", "litestar", "asgi", "sanic")


@dataclass
class Route:
    """One route."""

    method: str
    path: str
    where: str
    handler: Func | None = None
    body_model: str | None = None  # pydantic class of the JSON body
    body_keys: list[tuple[str, bool, str]] = field(default_factory=list)  # (key, required, kind)
    response_model: str | None = None
    returned_keys: list[str] | None = None

    def __str__(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def path_params(self) -> list[str]:
        return [a or b for a, b in _PATH_PARAM.findall(self.path)]


@dataclass
class Web:
    """What the framework detector found."""

    frameworks: list[str] = field(default_factory=list)
    apps: list[App] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)

    def get(self, method: str, path: str) -> Route | None:
        return next((r for r in self.routes if r.method == method and r.path == path), None)


# --- pydantic models --------------------------------------------------------------------------


@dataclass
class ModelField:
    name: str
    annotation: ast.expr
    required: bool
    constraints: dict[str, Any]


@dataclass
class Model:
    name: str
    file: SourceFile
    fields: list[ModelField]


def pydantic_models(project: Project) -> dict[str, Model]:
    """Classes deriving from pydantic's BaseModel (directly or through project classes)."""
    classes: dict[str, tuple[SourceFile, ast.ClassDef]] = {}
    for f in project.files:
        for node in f.nodes:
            if isinstance(node, ast.ClassDef):
                classes.setdefault(node.name, (f, node))
    models: dict[str, Model] = {}

    def is_model(name: str, seen: frozenset[str] = frozenset()) -> bool:
        if name in seen or name not in classes:
            return False
        _, cls = classes[name]
        for base in cls.bases:
            b = dotted(base)
            if b.endswith("BaseModel") or b.endswith("RootModel"):
                return True
            if is_model(b.split(".")[-1], seen | {name}):
                return True
        return False

    def fields_of(name: str, seen: frozenset[str] = frozenset()) -> list[ModelField]:
        f, cls = classes[name]
        out: list[ModelField] = []
        for base in cls.bases:
            b = dotted(base).split(".")[-1]
            if b in classes and b not in seen and is_model(b):
                out.extend(fields_of(b, seen | {name}))
        for stmt in cls.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                if stmt.target.id.startswith("_") or dotted(stmt.annotation).endswith("ClassVar"):
                    continue
                required, constraints = _field_info(stmt.value)
                out = [x for x in out if x.name != stmt.target.id]
                out.append(ModelField(stmt.target.id, stmt.annotation, required, constraints))
        return out

    for name, (f, _) in classes.items():
        if is_model(name):
            models[name] = Model(name, f, fields_of(name))
    return models


def _field_info(value: ast.expr | None) -> tuple[bool, dict[str, Any]]:
    if value is None:
        return True, {}
    if isinstance(value, ast.Call) and last_name(value) == "Field":
        constraints: dict[str, Any] = {}
        for k in value.keywords:
            if k.arg and isinstance(k.value, ast.Constant):
                constraints[k.arg] = k.value.value
            elif k.arg == "examples" and isinstance(k.value, ast.List) and k.value.elts:
                first = k.value.elts[0]
                if isinstance(first, ast.Constant):
                    constraints["example"] = first.value
        has_default = "default" in constraints or any(k.arg == "default_factory" for k in value.keywords)
        if value.args:
            first = value.args[0]
            has_default = not (isinstance(first, ast.Constant) and first.value is Ellipsis)
        return not has_default, constraints
    return False, {}


def enums(project: Project) -> dict[str, list[Any]]:
    """Enum classes → their member values, for samples."""
    out: dict[str, list[Any]] = {}
    for f in project.files:
        for node in f.nodes:
            if isinstance(node, ast.ClassDef) and any(dotted(b).endswith("Enum") for b in node.bases):
                values = [s.value.value for s in node.body if isinstance(s, ast.Assign)
                          and isinstance(s.value, ast.Constant)]
                if values:
                    out[node.name] = values
    return out


# --- detection -------------------------------------------------------------------------------


def detect(project: Project, files: list[SourceFile]) -> Web:
    """Frameworks, apps and routes in ``files`` (the service's own modules)."""
    web = Web()
    for f in files:
        for node in f.nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for n in names:
                    top = n.split(".")[0]
                    if top in _FRAMEWORK_IMPORTS and top not in web.frameworks:
                        web.frameworks.append(top)
    prefixes = _router_prefixes(files)
    for f in files:
        _apps(f, web)
        _decorated(project, f, web, prefixes)
        _tables(project, f, web)
        _raw_callables(f, web)
        _django(project, f, web)
    models = pydantic_models(project)
    for route in web.routes:
        _shape(project, route, models)
    # One entry per method and path (a route registered twice is still one route).
    seen: set[tuple[str, str]] = set()
    unique = []
    for r in web.routes:
        if (r.method, r.path) not in seen:
            seen.add((r.method, r.path))
            unique.append(r)
    web.routes = unique
    return web


def _apps(f: SourceFile, web: Web) -> None:
    """``app = FastAPI(...)`` at module level, or inside a factory that returns it."""
    for scope in [f.tree, *[n for n in f.nodes if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]]:
        for node in walk_scope(scope):
            if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)):
                continue
            ctor = last_name(node.value)
            if ctor not in _APP_CTORS or ctor in _ROUTERS:
                continue
            for target in node.targets:
                if not isinstance(target, ast.Name):
                    continue
                title = string_value(kwarg(node.value, "title"), f)
                if scope is f.tree:
                    web.apps.append(App(_APP_CTORS[ctor], target.id, f, f.where(node), title=title))
                elif isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef) and any(
                        isinstance(r, ast.Return) and isinstance(r.value, ast.Name) and r.value.id == target.id
                        for r in walk_scope(scope)):
                    web.apps.append(App(_APP_CTORS[ctor], scope.name, f, f.where(node), factory=True,
                                        title=title))


def _router_prefixes(files: list[SourceFile]) -> dict[str, str]:
    """Router variable → URL prefix (constructor prefix plus include_router/register_blueprint)."""
    own: dict[str, str] = {}
    included: dict[str, str] = {}
    for f in files:
        for node in f.nodes:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and last_name(node.value) in _ROUTERS:
                prefix = string_value(kwarg(node.value, "prefix") or kwarg(node.value, "url_prefix"), f) or ""
                for t in node.targets:
                    if isinstance(t, ast.Name):
                        own[t.id] = prefix
            if isinstance(node, ast.Call) and last_name(node) in ("include_router", "register_blueprint"):
                if node.args:
                    name = dotted(node.args[0]).split(".")[-1]
                    extra = string_value(kwarg(node, "prefix") or kwarg(node, "url_prefix"), f) or ""
                    included[name] = extra
    return {name: included.get(name, "") + own.get(name, "") for name in {*own, *included}}


def _decorated(project: Project, f: SourceFile, web: Web, prefixes: dict[str, str]) -> None:
    for node in f.nodes:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for deco in node.decorator_list:
            if not (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute)):
                continue
            verb = deco.func.attr.lower()
            if verb not in _VERBS | {"route", "api_route"}:
                continue
            receiver = dotted(deco.func.value)
            path = string_value(deco.args[0] if deco.args else kwarg(deco, "path") or kwarg(deco, "rule"), f)
            if path is None or (path and not path.startswith("/")):  # "" is a router's root
                continue
            if verb in _VERBS:
                methods = [verb.upper()]
            else:
                listed = kwarg(deco, "methods")
                methods = [m.upper() for m in (const_str(e) for e in getattr(listed, "elts", [])) if m] or ["GET"]
            prefix = prefixes.get(receiver.split(".")[-1], "")
            handler = next((fn for fn in project.functions(node.name) if fn.node is node), None)
            response = dotted(kwarg(deco, "response_model")) or None
            for method in methods:
                web.routes.append(Route(method, _join(prefix, path), f.where(node), handler,
                                        response_model=response))


def _join(prefix: str, path: str) -> str:
    joined = prefix.rstrip("/") + ("/" + path.lstrip("/") if path else "")
    return joined or "/"


def _tables(project: Project, f: SourceFile, web: Web) -> None:
    """Starlette ``Route``/``Mount``; ``add_route``, ``add_url_rule``, ``add_api_route``."""

    def handler(expr: ast.expr | None) -> Func | None:
        if expr is None:
            return None
        name = dotted(expr).split(".")[-1]
        funcs = project.functions(name)
        return next((fn for fn in funcs if fn.file is f), funcs[0] if funcs else None)

    def methods_of(call: ast.Call, default: list[str]) -> list[str]:
        listed = kwarg(call, "methods")
        found = [m.upper() for m in (const_str(e) for e in getattr(listed, "elts", [])) if m]
        return found or default

    def walk(routes: ast.expr | None, prefix: str) -> None:
        for item in getattr(routes, "elts", []):
            if not isinstance(item, ast.Call):
                continue
            name = last_name(item)
            path = string_value(item.args[0] if item.args else kwarg(item, "path"), f)
            if path is None:
                continue
            if name == "Route":
                endpoint = item.args[1] if len(item.args) > 1 else kwarg(item, "endpoint")
                for m in methods_of(item, ["GET"]):
                    web.routes.append(Route(m, _join(prefix, path), f.where(item), handler(endpoint)))
            elif name == "Mount":
                walk(kwarg(item, "routes") or (item.args[1] if len(item.args) > 1 else None), _join(prefix, path))

    for node in f.nodes:
        if not isinstance(node, ast.Call):
            continue
        name = last_name(node)
        if name in ("Starlette", "Router"):
            walk(kwarg(node, "routes") or (node.args[0] if node.args else None), "")
        elif isinstance(node, ast.Call) and name in ("add_route", "add_url_rule", "add_api_route"):
            path = string_value(node.args[0] if node.args else kwarg(node, "rule") or kwarg(node, "path"), f)
            if path is None:
                continue
            endpoint = kwarg(node, "view_func") or kwarg(node, "endpoint") or (
                node.args[-1] if name == "add_url_rule" and len(node.args) >= 3 else
                node.args[1] if len(node.args) > 1 else None)
            for m in methods_of(node, ["GET"]):
                web.routes.append(Route(m, path, f.where(node), handler(endpoint)))
    # Route lists assigned to a name and passed on later: routes = [Route(...), ...]
    for node in f.tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.List) and any(
                isinstance(e, ast.Call) and last_name(e) in ("Route", "Mount") for e in node.value.elts):
            walk(node.value, "")


def _raw_callables(f: SourceFile, web: Web) -> None:
    """``async def app(scope, receive, send)`` (ASGI) and ``def application(environ,
    start_response)`` (WSGI): routes are the request paths the code compares against."""
    for node in f.tree.body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        params = [a.arg for a in node.args.args]
        if params[-3:] == ["scope", "receive", "send"]:
            kind, path_key, method_key = "asgi", "path", "method"
        elif params[-2:] == ["environ", "start_response"]:
            kind, path_key, method_key = "wsgi", "PATH_INFO", "REQUEST_METHOD"
        else:
            continue
        web.apps.append(App(kind, node.name, f, f.where(node)))
        if kind not in web.frameworks:
            web.frameworks.append(kind)
        path_vars = {path_key}
        for sub in ast.walk(node):
            if isinstance(sub, ast.Assign) and _reads_key(sub.value, path_key):
                path_vars.update(t.id for t in sub.targets if isinstance(t, ast.Name))
        for sub in ast.walk(node):
            if not isinstance(sub, ast.If):
                continue
            paths, methods = [], []
            for cmp in ast.walk(sub.test):
                if not isinstance(cmp, ast.Compare) or not isinstance(cmp.ops[0], ast.Eq | ast.In):
                    continue
                left, right = cmp.left, cmp.comparators[0]
                for a, b in ((left, right), (right, left)):
                    value = const_str(b)
                    if value is None:
                        continue
                    if (isinstance(a, ast.Name) and a.id in path_vars) or _reads_key(a, path_key):
                        paths.append(value)
                    elif _reads_key(a, method_key):
                        methods.append(value.upper())
            for p in paths:
                for m in methods or ["GET"]:
                    web.routes.append(Route(m, p, f.where(sub),
                                            Func(f, node)))


def _reads_key(expr: ast.AST, key: str) -> bool:
    if isinstance(expr, ast.Subscript) and const_str(expr.slice) == key:
        return True
    if isinstance(expr, ast.Call) and last_name(expr) == "get" and expr.args and const_str(expr.args[0]) == key:
        return True
    return False


def _django(project: Project, f: SourceFile, web: Web) -> None:
    for node in f.tree.body:
        if not (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "urlpatterns"
                                                     for t in node.targets)):
            continue
        if "django" not in web.frameworks:
            web.frameworks.append("django")
        for item in getattr(node.value, "elts", []):
            if isinstance(item, ast.Call) and last_name(item) in ("path", "re_path") and item.args:
                path = const_str(item.args[0])
                if path is None or (len(item.args) > 1 and "include" in dotted(item.args[1])):
                    continue
                view = dotted(item.args[1]).split(".")[-1] if len(item.args) > 1 else ""
                funcs = project.functions(view)
                web.routes.append(Route("GET", "/" + path.lstrip("^").rstrip("$"), f.where(item),
                                        funcs[0] if funcs else None))


# --- request and response shapes -------------------------------------------------------------

_JSON_READS = ("get_json", "json")


def _shape(project: Project, route: Route, models: dict[str, Model]) -> None:
    fn = route.handler
    if fn is None:
        return
    for arg in fn.node.args.args + fn.node.args.kwonlyargs:
        name = dotted(arg.annotation).split(".")[-1] if arg.annotation is not None else ""
        if name in models and route.method in ("POST", "PUT", "PATCH", "DELETE"):
            route.body_model = name
    if route.response_model is None and fn.node.returns is not None:
        name = dotted(fn.node.returns).split(".")[-1]
        if name in models:
            route.response_model = name
    if route.response_model:
        route.response_model = route.response_model.split(".")[-1]
    if route.body_model is None:
        route.body_keys = body_keys(fn)
    route.returned_keys = returned_keys(project, fn, models)


def body_keys(fn: Func) -> list[tuple[str, bool, str]]:
    """Keys the handler reads from the JSON body: ``data = request.get_json(); data["k"]``."""
    holders: set[str] = set()
    for node in ast.walk(fn.node):
        if isinstance(node, ast.Assign) and _is_json_body(node.value):
            holders.update(t.id for t in node.targets if isinstance(t, ast.Name))
    keys: dict[str, tuple[bool, str]] = {}
    parents = {c: p for p in ast.walk(fn.node) for c in ast.iter_child_nodes(p)}
    for node in ast.walk(fn.node):
        key, required = None, False
        if isinstance(node, ast.Subscript) and (
                (isinstance(node.value, ast.Name) and node.value.id in holders) or _is_json_body(node.value)):
            key, required = const_str(node.slice), True
        elif isinstance(node, ast.Call) and last_name(node) == "get" and isinstance(node.func, ast.Attribute) and (
                (isinstance(node.func.value, ast.Name) and node.func.value.id in holders)
                or _is_json_body(node.func.value)) and node.args:
            key = const_str(node.args[0])
        if key:
            parent = parents.get(node)
            kind = parent.func.id if isinstance(parent, ast.Call) and isinstance(parent.func, ast.Name) \
                and parent.func.id in ("int", "float", "bool") else "str"
            prev = keys.get(key)
            keys[key] = (required or (prev[0] if prev else False), kind if kind != "str" else (prev[1] if prev else "str"))
    return [(k, r, kind) for k, (r, kind) in keys.items()]


def _is_json_body(expr: ast.AST) -> bool:
    if isinstance(expr, ast.BoolOp) and isinstance(expr.op, ast.Or):  # request.get_json() or {}
        expr = expr.values[0]
    if isinstance(expr, ast.Await):
        expr = expr.value
    if isinstance(expr, ast.Call) and last_name(expr) in _JSON_READS and "request" in dotted(expr.func).lower():
        return True
    if isinstance(expr, ast.Attribute) and expr.attr in ("json", "get_json") and "request" in dotted(expr.value).lower():
        return True
    if isinstance(expr, ast.Call) and dotted(expr.func).endswith("json.loads") and expr.args:
        inner = expr.args[0]
        return "body" in dotted(inner).lower() or "request" in dotted(inner).lower()
    return False


def _in_except(fn: ast.AST) -> set[ast.AST]:
    inside: set[ast.AST] = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.ExceptHandler):
            inside.update(ast.walk(node))
    return inside


def success_returns(fn: ast.AST) -> list[ast.Return]:
    """Returns outside ``except`` blocks (the success path, as far as shape goes)."""
    excluded = _in_except(fn)
    return [n for n in walk_scope(fn) if isinstance(n, ast.Return) and n not in excluded and n.value is not None]


def response_payload(value: ast.expr) -> tuple[ast.expr | None, int | None]:
    """The body expression of a response, and its status when the code sets one."""
    status: int | None = None
    if isinstance(value, ast.Tuple) and value.elts:  # Flask: return body, 502
        if len(value.elts) > 1 and isinstance(value.elts[1], ast.Constant) and isinstance(value.elts[1].value, int):
            status = value.elts[1].value
        value = value.elts[0]
    if isinstance(value, ast.Call) and last_name(value) in ("JSONResponse", "ORJSONResponse", "jsonify",
                                                            "make_response", "json_response", "UJSONResponse"):
        code = kwarg(value, "status_code") or kwarg(value, "status")
        if isinstance(code, ast.Constant) and isinstance(code.value, int):
            status = code.value
        elif len(value.args) > 1 and isinstance(value.args[1], ast.Constant) and isinstance(value.args[1].value, int):
            status = value.args[1].value
        if last_name(value) == "jsonify" and value.keywords and not value.args:
            return ast.Dict(keys=[ast.Constant(k.arg) for k in value.keywords if k.arg],
                            values=[k.value for k in value.keywords if k.arg]), status
        body = value.args[0] if value.args else kwarg(value, "content")
        return body, status
    return value, status


def returned_keys(project: Project, fn: Func, models: dict[str, Model], depth: int = 3) -> list[str] | None:
    """Keys every success-path return of ``fn`` has (None when a return is not visible)."""
    key_sets: list[list[str]] = []
    for ret in success_returns(fn.node):
        assert ret.value is not None
        body, status = response_payload(ret.value)
        if status is not None and not 200 <= status < 300:
            continue
        keys = _keys_of(project, fn, body, models, depth)
        if keys is None:
            return None
        key_sets.append(keys)
    if not key_sets:
        return None
    common = [k for k in key_sets[0] if all(k in ks for ks in key_sets[1:])]
    return common


def _keys_of(project: Project, fn: Func, body: ast.expr | None, models: dict[str, Model], depth: int) -> list[str] | None:
    if isinstance(body, ast.Await):
        body = body.value
    if isinstance(body, ast.Dict):
        return [k for k in (const_str(k) for k in body.keys) if k]
    if isinstance(body, ast.Call):
        name = last_name(body)
        if name in models:
            return [f.name for f in models[name].fields]
        if name == "dict" and body.keywords:
            return [k.arg for k in body.keywords if k.arg]
        if depth > 0:
            callees = [c for c in project.functions(name) if c.node is not fn.node]
            if len(callees) >= 1:
                return returned_keys(project, callees[0], models, depth - 1)
    if isinstance(body, ast.Name):
        for node in walk_scope(fn.node):
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == body.id for t in node.targets):
                keys = _keys_of(project, fn, node.value, models, depth)
                if keys is not None:
                    extra = [const_str(t.slice) for n in walk_scope(fn.node) if isinstance(n, ast.Assign)
                             for t in n.targets if isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name)
                             and t.value.id == body.id]
                    return keys + [k for k in extra if k and k not in keys]
    return None


_SIMPLE = {"str": "str", "int": "int", "float": "float", "bool": "bool"}
_NOT_QUERY = {"Request", "Response", "BackgroundTasks", "WebSocket", "HTTPConnection"}


def query_params(route: Route, models: dict[str, Model]) -> list[tuple[str, bool, str]]:
    """Query parameters: FastAPI handler arguments of simple types that are not path parameters,
    and ``request.args``/``request.query_params`` reads."""
    fn = route.handler
    if fn is None:
        return []
    out: list[tuple[str, bool, str]] = []
    args = fn.node.args
    defaults = [None] * (len(args.args) - len(args.defaults)) + list(args.defaults)
    for arg, default in zip(args.args, defaults, strict=True):
        ann = dotted(arg.annotation).split(".")[-1] if arg.annotation is not None else ""
        if arg.arg in route.path_params or ann in _NOT_QUERY or ann in models or arg.arg == "self":
            continue
        if ann in _SIMPLE and (default is None or not _is_dependency(default)):
            out.append((arg.arg, default is None, _SIMPLE[ann]))
    for node in ast.walk(fn.node):
        target = None
        if isinstance(node, ast.Subscript):
            target = node.value
            key = const_str(node.slice)
            required = True
        elif isinstance(node, ast.Call) and last_name(node) == "get" and isinstance(node.func, ast.Attribute) and node.args:
            target = node.func.value
            key = const_str(node.args[0])
            required = False
        else:
            continue
        if key and dotted(target).endswith(("request.args", "request.query_params", "request.query")):
            if all(k != key for k, _, _ in out):
                out.append((key, required, "str"))
    return out


def _is_dependency(expr: ast.expr) -> bool:
    return isinstance(expr, ast.Call) and last_name(expr) in ("Depends", "Header", "Cookie", "Body", "File", "Form", "Security")
