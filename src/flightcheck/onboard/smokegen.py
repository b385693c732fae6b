"""First smoke cases for the routes that reach the model.

For each such route: a request built from its body model (or the keys the handler reads), a
scripted fake-model reply, and assertions on the status, the response shape (pydantic model
or returned dict keys) and — where the code shows which field carries the model's words —
the reply itself, plus an assertion that the answer is not the service's own fallback text.
An unscripted case that also runs against a real provider, and a provider-outage case when
the code maps provider errors to a 5xx, complete it. What cannot be decided is said, not
guessed.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any

from flightcheck.onboard.project import (
    Func,
    Project,
    const_str,
    dotted,
    kwarg,
    last_name,
    string_value,
    walk_scope,
)
from flightcheck.onboard.providers import Providers, closure
from flightcheck.onboard.routes import (
    Model,
    Route,
    query_params,
    response_payload,
    success_returns,
)

REPLY = "This is the scripted reply from flightcheck's fake model."
OUTAGE = {"status": 503, "error": "the model is overloaded (scripted outage)"}

_TEXT_SAMPLES: list[tuple[tuple[str, ...], str]] = [
    (("text", "content", "document", "article", "body", "passage", "context"),
     "Ada Lovelace published the first computer program in 1843, for Babbage's Analytical Engine."),
    (("question", "query", "q", "prompt", "message", "msg", "input", "ask", "instruction",
      "instructions", "request", "user_message", "user_input"), "What is the capital of France?"),
    (("topic", "subject", "theme", "category", "keyword"), "fractions"),
    (("language", "lang", "locale", "target_language", "source_language"), "en"),
    (("tone", "style", "mood"), "friendly"),
    (("name", "user", "username", "author"), "Ada"),
    (("email",), "ada@example.com"),
    (("url", "link", "uri"), "https://example.com/"),
    (("model",), "gpt-4o-mini-2024-07-18"),
]
_CONTENT = re.compile(
    r"(\.message\.content\b|\['message'\]\['content'\]|\.output_text\b|\.content\[0\]\.text\b"
    r"|\['content'\]\[0\]\['text'\]|\.choices\[0\]\.text\b|\['candidates'\]\[0\]\['content'\])"
)
_SCHEMA_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean",
                 "list": "array", "List": "array", "tuple": "array", "set": "array",
                 "dict": "object", "Dict": "object", "datetime": "string", "date": "string",
                 "UUID": "string", "EmailStr": "string", "HttpUrl": "string", "AnyUrl": "string"}


class Undecided(Exception):
    """A value init cannot choose from the source."""


@dataclass
class RouteCases:
    route: Route
    cases: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be decided for this route
    reply_field: str | None = None


# --- samples -------------------------------------------------------------------------------


def _annotation_parts(ann: ast.expr | None) -> tuple[str, list[ast.expr], bool]:
    """(base name, type arguments, optional?) of an annotation."""
    if ann is None:
        return "", [], False
    if isinstance(ann, ast.BinOp) and isinstance(ann.op, ast.BitOr):
        parts = [ann.left, ann.right]
        non_none = [p for p in parts if not (isinstance(p, ast.Constant) and p.value is None)]
        base, args, _ = _annotation_parts(non_none[0]) if non_none else ("", [], False)
        return base, args, len(non_none) < len(parts)
    if isinstance(ann, ast.Constant) and isinstance(ann.value, str):
        try:
            return _annotation_parts(ast.parse(ann.value, mode="eval").body)
        except SyntaxError:
            return "", [], False
    if isinstance(ann, ast.Subscript):
        base = dotted(ann.value).split(".")[-1]
        inner = ann.slice
        args = list(inner.elts) if isinstance(inner, ast.Tuple) else [inner]
        if base == "Optional":
            b, a, _ = _annotation_parts(args[0])
            return b, a, True
        if base == "Annotated":
            return _annotation_parts(args[0])
        if base == "Union":
            non_none = [a for a in args if not (isinstance(a, ast.Constant) and a.value is None)]
            b, a, _ = _annotation_parts(non_none[0]) if non_none else ("", [], False)
            return b, a, len(non_none) < len(args)
        return base, args, False
    return dotted(ann).split(".")[-1], [], False


def _fit_string(value: str, constraints: dict[str, Any]) -> str:
    lo, hi = constraints.get("min_length"), constraints.get("max_length")
    if isinstance(lo, int) and len(value) < lo:
        value = (value + " ") * (lo // max(1, len(value)) + 1)
        value = value[: max(lo, 1)]
    if isinstance(hi, int) and len(value) > hi:
        value = value[:hi].rstrip() or value[:hi]
    pattern = constraints.get("pattern") or constraints.get("regex")
    if isinstance(pattern, str):
        for candidate in (value, "example", "Example", "a", "1", "example-1", "abc"):
            if re.search(pattern, candidate):
                return candidate
        raise Undecided(f"no sample value matches pattern {pattern!r}")
    return value


def _text_sample(name: str) -> str:
    lowered = name.lower()
    for names, sample in _TEXT_SAMPLES:
        if lowered in names or any(lowered.endswith("_" + n) for n in names):
            return sample
    return "example"


def sample(name: str, ann: ast.expr | None, constraints: dict[str, Any], models: dict[str, Model],
           enums: dict[str, list[Any]], depth: int = 0) -> Any:
    """A JSON value valid for a field of this name, type and constraints."""
    if "example" in constraints:
        return constraints["example"]
    base, args, _ = _annotation_parts(ann)
    if base == "Literal" and args:
        first = args[0]
        if isinstance(first, ast.Constant):
            return first.value
    if base in enums:
        return enums[base][0]
    if base in models and depth < 4:
        return {f.name: sample(f.name, f.annotation, f.constraints, models, enums, depth + 1)
                for f in models[base].fields if f.required}
    if base in ("int", "conint"):
        lo = constraints.get("ge", constraints.get("gt"))
        if isinstance(lo, int):
            return lo + (1 if "gt" in constraints and "ge" not in constraints else 0)
        hi = constraints.get("le", constraints.get("lt"))
        return 1 if not isinstance(hi, int) or hi >= 1 else hi - 1
    if base in ("float", "confloat"):
        lo = constraints.get("ge", constraints.get("gt"))
        return float(lo) + (0.5 if "gt" in constraints else 0.0) if isinstance(lo, int | float) else 0.5
    if base == "bool":
        return True
    if base in ("list", "List", "Sequence", "tuple", "set", "conlist"):
        item = sample(name.rstrip("s"), args[0] if args else None, {}, models, enums, depth + 1)
        count = constraints.get("min_length") or 1
        return [item] * (count if isinstance(count, int) else 1)
    if base in ("dict", "Dict", "Mapping"):
        return {}
    if base in ("str", "constr", "", "Any", "EmailStr", "HttpUrl", "AnyUrl", "SecretStr"):
        text = "ada@example.com" if base == "EmailStr" else "https://example.com/" if base in (
            "HttpUrl", "AnyUrl") else _text_sample(name)
        return _fit_string(text, constraints)
    raise Undecided(f"field {name!r} has type {base} that init cannot make a sample of")


def _schema(ann: ast.expr | None, models: dict[str, Model], depth: int = 0) -> dict[str, Any]:
    base, args, optional = _annotation_parts(ann)
    if optional or not base:
        return {}
    if base == "Literal":
        values = [a.value for a in args if isinstance(a, ast.Constant)]
        return {"enum": values} if values else {}
    if base in models and depth < 3:
        return model_schema(models[base], models, depth + 1)
    kind = _SCHEMA_TYPES.get(base)
    return {"type": kind} if kind else {}


def model_schema(model: Model, models: dict[str, Model], depth: int = 0) -> dict[str, Any]:
    """A JSON schema of a pydantic model's serialised form: required fields and their types."""
    props = {f.name: _schema(f.annotation, models, depth) for f in model.fields}
    required = [f.name for f in model.fields if f.required]
    schema: dict[str, Any] = {"type": "object"}
    if required:
        schema["required"] = required
    if any(props.values()):
        schema["properties"] = {k: v for k, v in props.items() if v}
    return schema


# --- what the route takes ---------------------------------------------------------------------


def request_for(route: Route, models: dict[str, Model], enums: dict[str, list[Any]]) -> dict[str, Any]:
    """The ``request`` of a case. Raises Undecided when the body is not visible."""
    path = route.path
    for param in route.path_params:
        path = re.sub(r"\{" + param + r"(?::[^}]*)?\}|<(?:\w+:)?" + param + ">", "1", path)
    request: dict[str, Any] = {"method": route.method, "path": path}
    query = {k: sample(k, ast.Name(kind), {}, models, enums) for k, required, kind in
             query_params(route, models) if required}
    if query:
        request["query"] = query
    if route.body_model:
        model = models[route.body_model]
        request["json"] = {f.name: sample(f.name, f.annotation, f.constraints, models, enums)
                           for f in model.fields if f.required}
    elif route.body_keys:
        body = {}
        for key, _required, kind in route.body_keys:
            body[key] = sample(key, ast.Name(kind), {}, models, enums)
        request["json"] = body
    elif route.method in ("POST", "PUT", "PATCH") and _reads_raw_body(route.handler):
        raise Undecided("the handler reads the request body in a way init cannot follow")
    return request


def _reads_raw_body(fn: Func | None) -> bool:
    if fn is None:
        return False
    text = ast.unparse(fn.node)
    return bool(re.search(r"request\.(json|get_json|body|data|form|stream)\b|receive\(", text))


# --- what the model is asked for, and where its words end up ----------------------------------


def reply_format(project: Project, route: Route, providers: Providers) -> tuple[str, list[str]]:
    """("text", []), ("json", keys read from the parsed reply) or ("json", []) when unknown."""
    funcs = closure(project, route.handler) if route.handler else []
    ids = {id(f.node) for f in funcs}
    json_mode = any(c.json_mode for c in providers.calls if c.func is not None and id(c.func.node) in ids)
    keys: list[str] = []
    for fn in funcs:
        holders: set[str] = set()
        for node in walk_scope(fn.node):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and (
                    dotted(node.value.func).endswith("json.loads") or last_name(node.value) == "model_validate_json"):
                arg = ast.unparse(node.value)
                if _CONTENT.search(arg) or "content" in arg or "text" in arg:
                    json_mode = True
                    holders.update(t.id for t in node.targets if isinstance(t, ast.Name))
        for node in walk_scope(fn.node):
            key = None
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in holders:
                key = const_str(node.slice)
            elif isinstance(node, ast.Call) and last_name(node) == "get" and isinstance(node.func, ast.Attribute) \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in holders and node.args:
                key = const_str(node.args[0])
            if key and key not in keys:
                keys.append(key)
    return ("json", keys) if json_mode else ("text", [])


def _content_vars(project: Project, fn: Func, providers: Providers, depth: int = 3) -> dict[str, str]:
    """Variables of ``fn`` that hold the model's words: name → "equals" or "contains"."""
    held: dict[str, str] = {}
    ai_results: set[str] = set()
    assigns = sorted((n for n in walk_scope(fn.node) if isinstance(n, ast.Assign)), key=lambda n: n.lineno)
    conditional = {id(n) for branch in walk_scope(fn.node) if isinstance(branch, ast.If)
                   for n in ast.walk(branch) if isinstance(n, ast.Assign)}
    for node in assigns:
        value = node.value.value if isinstance(node.value, ast.Await) else node.value
        targets = node.targets[0]
        if id(node) in conditional and isinstance(targets, ast.Name) and targets.id in held and any(
                isinstance(n, ast.Name) and n.id == targets.id for n in ast.walk(value)):
            continue  # `if debug: text = f"{text} …"` — the usual path keeps the plain words
        if isinstance(value, ast.Call) and any(c.where == fn.file.where(value) for c in providers.calls):
            ai_results.update(t.id for t in ast.walk(targets) if isinstance(t, ast.Name))
            continue
        mode = _content_mode(value, held, ai_results)
        if mode is None and isinstance(value, ast.Call) and depth > 0:
            returned = _returns_content(project, value, providers, depth - 1)
            if returned is not None:
                index, mode = returned
                if isinstance(targets, ast.Tuple) and index is not None and index < len(targets.elts):
                    target = targets.elts[index]
                    if isinstance(target, ast.Name):
                        held[target.id] = mode
                    continue
                if index is not None:
                    mode = None
        if mode is not None and isinstance(targets, ast.Name):
            held[targets.id] = mode
        elif isinstance(targets, ast.Name) and targets.id in held and mode is None:
            del held[targets.id]  # reassigned to something else
    return held


def _content_mode(expr: ast.expr, held: dict[str, str], ai_results: set[str]) -> str | None:
    """"equals" when ``expr`` is the model's words (maybe stripped), "contains" when it
    embeds them, None otherwise."""
    if isinstance(expr, ast.Await):
        expr = expr.value
    text = ast.unparse(expr)
    core = expr
    # x.strip(), (x or "").strip(), str(x)
    while True:
        if isinstance(core, ast.IfExp):  # x.content if x.choices else ""
            core = core.body
        elif isinstance(core, ast.Call) and isinstance(core.func, ast.Attribute) and core.func.attr in ("strip", "rstrip", "lstrip") and not core.args:
            core = core.func.value
        elif isinstance(core, ast.Call) and isinstance(core.func, ast.Name) and core.func.id == "str" and core.args:
            core = core.args[0]
        elif isinstance(core, ast.BoolOp) and isinstance(core.op, ast.Or) and len(core.values) == 2 and \
                isinstance(core.values[1], ast.Constant) and core.values[1].value == "":
            core = core.values[0]
        else:
            break
    core_text = ast.unparse(core)
    if isinstance(core, ast.Name) and core.id in held:
        return held[core.id]
    if _CONTENT.search(core_text) and re.search(r"(content|text)\]?$", core_text.replace("'", "")):
        return "equals"
    if isinstance(core, ast.Attribute) and core.attr in ("text", "content", "output_text") and \
            isinstance(core.value, ast.Name) and core.value.id in ai_results:
        return "equals"
    if isinstance(core, ast.JoinedStr | ast.BinOp):
        names = {n.id for n in ast.walk(core) if isinstance(n, ast.Name)}
        if names & set(held) or _CONTENT.search(text):
            return "contains"
    return None


def _returns_content(project: Project, call: ast.Call, providers: Providers, depth: int) -> tuple[int | None, str] | None:
    """Whether a project function returns the model's words: (tuple index or None, mode)."""
    for fn in project.functions(last_name(call)):
        held = _content_vars(project, fn, providers, depth)
        for ret in success_returns(fn.node):
            value = ret.value
            assert value is not None
            if isinstance(value, ast.Tuple):
                for i, elt in enumerate(value.elts):
                    mode = _content_mode(elt, held, set())
                    if mode:
                        return i, mode
            else:
                mode = _content_mode(value, held, set())
                if mode:
                    return None, mode
    return None


def reply_fields(project: Project, route: Route, providers: Providers) -> list[tuple[str, str]]:
    """(JSON path, mode) of the response fields that carry the model's words."""
    fn = route.handler
    if fn is None:
        return []
    out: list[tuple[str, str]] = []
    todo: list[tuple[Func, int]] = [(fn, 3)]
    while todo:
        current, depth = todo.pop()
        held = _content_vars(project, current, providers)
        for ret in success_returns(current.node):
            assert ret.value is not None
            body, status = response_payload(ret.value)
            if status is not None and not 200 <= status < 300:
                continue
            if isinstance(body, ast.Await):
                body = body.value
            for path, value in _payload_items(body):
                mode = _content_mode(value, held, set())
                if mode and (path, mode) not in out:
                    out.append((path, mode))
            if isinstance(body, ast.Call) and depth > 0:
                for callee in project.functions(last_name(body)):
                    todo.append((callee, depth - 1))
    return out


def _payload_items(body: ast.expr | None, prefix: str = "") -> list[tuple[str, ast.expr]]:
    """(path, value expression) of a dict literal or a model constructor's keywords."""
    items: list[tuple[str, ast.expr]] = []
    if isinstance(body, ast.Dict):
        for k, v in zip(body.keys, body.values, strict=True):
            key = const_str(k)
            if key is None:
                continue
            path = f"{prefix}{key}"
            items.append((path, v))
            items.extend(_payload_items(v, path + "."))
    elif isinstance(body, ast.Call) and body.keywords and body.func is not None and last_name(body)[:1].isupper():
        for k in body.keywords:
            if k.arg:
                items.append((f"{prefix}{k.arg}", k.value))
                items.extend(_payload_items(k.value, f"{prefix}{k.arg}."))
    return items


def fallback_texts(project: Project, route: Route) -> list[tuple[str, str]]:
    """(path, text) of what the handler answers with a 2xx when something fails: its own
    generic error text (``except Exception: return {"answer": "Sorry, …"}``)."""
    fn = route.handler
    if fn is None:
        return []
    out: list[tuple[str, str]] = []
    for handler in (n for n in ast.walk(fn.node) if isinstance(n, ast.ExceptHandler)):
        for ret in (n for n in ast.walk(handler) if isinstance(n, ast.Return) and n.value is not None):
            assert ret.value is not None
            body, status = response_payload(ret.value)
            if status is not None and not 200 <= status < 300:
                continue
            for path, value in _payload_items(body):
                text = string_value(value, fn.file)
                if text and "{" in text:
                    text = text.split("{", 1)[0]
                if text and len(text.strip()) >= 8 and (path, text) not in out:
                    out.append((path, text))
    return out


def outage_statuses(project: Project, route: Route) -> list[int]:
    """5xx statuses the route's code answers from ``except`` blocks (provider errors mapped)."""
    statuses: list[int] = []
    for fn in closure(project, route.handler) if route.handler else []:
        for handler in (n for n in ast.walk(fn.node) if isinstance(n, ast.ExceptHandler)):
            for node in ast.walk(handler):
                code = None
                if isinstance(node, ast.Call) and last_name(node) in ("HTTPException", "abort", "HTTPError",
                                                                      "JSONResponse", "Response", "jsonify"):
                    expr = kwarg(node, "status_code") or kwarg(node, "status") or kwarg(node, "code")
                    if expr is None and node.args and last_name(node) in ("HTTPException", "abort", "HTTPError"):
                        expr = node.args[0]
                    if expr is None and len(node.args) > 1 and last_name(node) in ("JSONResponse", "Response"):
                        expr = node.args[1]
                    if isinstance(expr, ast.Constant) and isinstance(expr.value, int):
                        code = expr.value
                elif isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple) and len(node.value.elts) > 1:
                    second = node.value.elts[1]
                    if isinstance(second, ast.Constant) and isinstance(second.value, int):
                        code = second.value
                if code is not None and 500 <= code < 600 and code not in statuses:
                    statuses.append(code)
    return sorted(statuses)


def response_schema(route: Route, models: dict[str, Model]) -> dict[str, Any] | None:
    if route.response_model and route.response_model in models:
        return model_schema(models[route.response_model], models)
    if route.returned_keys:
        return {"type": "object", "required": list(route.returned_keys)}
    return None


# --- the cases --------------------------------------------------------------------------------


def _negated(text: str) -> str:
    """A regex that matches any value that does not contain ``text``."""
    escaped = re.sub(r"([.^$*+?{}\[\]\\|()])", r"\\\1", text.strip())  # readable: spaces stay
    return "^(?![\\s\\S]*" + escaped + ")"


def cases_for(project: Project, route: Route, providers: Providers, models: dict[str, Model],
              enums: dict[str, list[Any]]) -> RouteCases:
    out = RouteCases(route)
    label = f"{route.method} {route.path}"
    try:
        request = request_for(route, models, enums)
    except Undecided as exc:
        out.notes.append(f"{label}: no case written — {exc}; write one by hand (docs/smoke.md)")
        return out
    if route.path_params:
        out.notes.append(f"{label}: path parameters {', '.join(route.path_params)} set to 1; check "
                         "that the case addresses something that exists")
    schema = response_schema(route, models)
    expect: dict[str, Any] = {"status": 200}
    if schema:
        expect["schema"] = schema
    else:
        out.notes.append(f"{label}: the response shape is not visible in the code; the cases "
                         "check the status only")
    kind, keys = reply_format(project, route, providers)
    fields = reply_fields(project, route, providers) if kind == "text" else []
    fallbacks = fallback_texts(project, route)
    scripted: dict[str, Any] | None = None
    if kind == "text":
        checks: list[dict[str, Any]] = []
        for path, mode in fields:
            checks.append({"path": path, mode: REPLY})
        if fields:
            out.reply_field = fields[0][0]
        else:
            out.notes.append(f"{label}: which response field carries the model's reply is not "
                             "visible; the scripted case checks status and shape only")
        for path, text in fallbacks:
            checks.append({"path": path, "regex": _negated(text)})
        scripted = {
            "name": f"{label} answers with the model's reply",
            "model": {"replies": [{"content": REPLY}], "after": "last"},
            "request": request,
            "expect": {**expect, **({"json": checks} if checks else {})},
        }
    elif keys:
        reply = {k: "example" for k in keys}
        checks = [{"path": p, "regex": _negated(t)} for p, t in fallbacks]
        scripted = {
            "name": f"{label} answers from a scripted JSON reply",
            "model": {"replies": [{"json": reply}], "after": "last"},
            "request": request,
            "expect": {**expect, **({"json": checks} if checks else {})},
        }
        out.notes.append(f"{label}: the model is asked for JSON with keys {', '.join(keys)}; the "
                         "scripted reply uses placeholder values — make them realistic")
    else:
        out.notes.append(f"{label}: the model is asked for JSON whose keys are not visible; the "
                         "case uses the fake model's default reply (no script)")
    if scripted is not None:
        out.cases.append(scripted)
    negated = [{"path": p, "regex": _negated(t)} for p, t in fallbacks]
    unscripted: dict[str, Any] = {
        "name": f"{label} with an unscripted reply",
        "external": True,
        "request": request,
        "expect": {**expect, **({"json": negated} if negated else {})},
    }
    out.cases.append(unscripted)
    statuses = outage_statuses(project, route)
    if statuses:
        shown = " or ".join(str(s) for s in statuses)
        out.cases.append({
            "name": f"{label}: a provider outage is a clear {shown}",
            "model": {"replies": [dict(OUTAGE)], "after": "last"},
            "request": request,
            "expect": {"status": statuses[0] if len(statuses) == 1 else statuses},
        })
    else:
        out.notes.append(f"{label}: no 5xx answer to provider errors is visible; no outage case")
    return out
