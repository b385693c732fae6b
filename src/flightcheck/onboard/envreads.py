"""Which environment variables the service reads, and which of them it needs at import.

A read is ``os.environ["X"]``, ``os.environ.get("X", d)``, ``os.getenv("X", d)``, a ``.get``
on a mapping named like an environment (``env.get("X")``), any call that passes such a mapping
and an upper-case name (``_get(env, "PORT", 8080, …)``), and the fields of a pydantic
``BaseSettings`` class. A read *at import* happens in module-level code (class bodies included,
``if __name__ == "__main__"`` excluded) or in a project function that module-level code calls.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, replace

from flightcheck.onboard.project import (
    Project,
    SourceFile,
    call_name,
    const_str,
    dotted,
    last_name,
    module_assignments,
    string_value,
)

_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
_ENV_MAPPING = re.compile(r"(^|\.)(environ|env|environment)$", re.I)


@dataclass
class EnvRead:
    """One read of an environment variable."""

    name: str
    where: str  # file:line
    default: str | None  # the default as text, when there is one
    has_default: bool
    required: bool  # fails without it: environ[...], a missing-value raise, a required field
    at_import: bool = False
    kind: str = "str"  # str | int | float | bool | url (for a placeholder that parses)
    via: str = "os.environ"


def _literal_text(expr: ast.expr | None, file: SourceFile) -> str | None:
    if expr is None:
        return None
    if isinstance(expr, ast.Constant) and expr.value is not None and not isinstance(expr.value, bytes):
        value = expr.value
        return str(value).lower() if isinstance(value, bool) else str(value)
    return string_value(expr, file)


def _is_env_mapping(expr: ast.AST) -> bool:
    return bool(_ENV_MAPPING.search(dotted(expr)))


def _kind(parent: ast.AST | None, name: str) -> str:
    if isinstance(parent, ast.Call) and isinstance(parent.func, ast.Name):
        if parent.func.id in ("int", "float", "bool"):
            return parent.func.id
    if re.search(r"(URL|URI|BASE|ENDPOINT|HOST_URL)$", name):
        return "url"
    return "str"


def reads_in(file: SourceFile, nodes: list[ast.AST] | None = None) -> list[EnvRead]:
    """Every environment read in ``nodes`` (default: the whole file); fresh copies, callers
    mark them."""
    found: list[tuple[ast.AST, EnvRead]] | None = file.memo.get("env_reads")
    if found is None:
        found = [(node, read) for node in file.nodes
                 if (read := _read(node, file, file.parents)) is not None]
        file.memo["env_reads"] = found
    wanted = set(nodes) if nodes is not None else None
    return [replace(read) for node, read in found if wanted is None or node in wanted]


def _read(node: ast.AST, file: SourceFile, parents: dict[ast.AST, ast.AST]) -> EnvRead | None:
    parent = parents.get(node)
    if isinstance(node, ast.Subscript) and _is_env_mapping(node.value):
        name = const_str(node.slice)
        if name and _ENV_NAME.match(name) and not isinstance(node.ctx, ast.Store | ast.Del):
            return EnvRead(name, file.where(node), None, False, True, kind=_kind(parent, name))
        return None
    if not isinstance(node, ast.Call):
        return None
    cname = call_name(node)
    if cname.endswith("getenv") or (last_name(node) == "get" and isinstance(node.func, ast.Attribute)
                                    and _is_env_mapping(node.func.value)):
        name = const_str(node.args[0]) if node.args else None
        if not name or not _ENV_NAME.match(name):
            return None
        default_expr = node.args[1] if len(node.args) > 1 else next(
            (k.value for k in node.keywords if k.arg == "default"), None)
        # `env.get("X") or "d"` supplies a default too.
        if default_expr is None and isinstance(parent, ast.BoolOp) and isinstance(parent.op, ast.Or):
            if parent.values[0] is node and len(parent.values) > 1:
                default_expr = parent.values[-1]
        has_default = default_expr is not None and not (
            isinstance(default_expr, ast.Constant) and default_expr.value is None)
        kind_parent = parents.get(parent) if isinstance(parent, ast.BoolOp) else parent
        return EnvRead(name, file.where(node), _literal_text(default_expr, file) if has_default else None,
                       has_default, False, kind=_kind(kind_parent, name), via=cname)
    # A helper that takes the environment and a name: _get(env, "PORT", 8080, parse)
    if any(_is_env_mapping(a) for a in node.args):
        for i, arg in enumerate(node.args):
            name = const_str(arg)
            if name and _ENV_NAME.match(name) and ("_" in name or name in ("PORT", "HOST")):
                default_expr = node.args[i + 1] if len(node.args) > i + 1 else None
                has_default = default_expr is not None and not (
                    isinstance(default_expr, ast.Constant) and default_expr.value is None)
                return EnvRead(name, file.where(node), _literal_text(default_expr, file) if has_default else None,
                               has_default, False, kind=_kind(parent, name), via=cname)
    return None


# --- pydantic settings ---------------------------------------------------------------------


def settings_fields(project: Project, file: SourceFile, cls: ast.ClassDef) -> list[EnvRead]:
    """The environment variables a pydantic ``BaseSettings`` class reads, one per field."""
    prefix = ""
    for stmt in cls.body:
        # model_config = SettingsConfigDict(env_prefix="APP_") / class Config: env_prefix = "APP_"
        if isinstance(stmt, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "model_config" for t in stmt.targets):
            if isinstance(stmt.value, ast.Call):
                prefix = const_str(next((k.value for k in stmt.value.keywords
                                         if k.arg == "env_prefix"), None)) or prefix
            elif isinstance(stmt.value, ast.Dict):
                for k, v in zip(stmt.value.keys, stmt.value.values, strict=True):
                    if const_str(k) == "env_prefix":
                        prefix = const_str(v) or prefix
        if isinstance(stmt, ast.ClassDef) and stmt.name == "Config":
            for inner in stmt.body:
                if isinstance(inner, ast.Assign) and any(
                        isinstance(t, ast.Name) and t.id == "env_prefix" for t in inner.targets):
                    prefix = const_str(inner.value) or prefix
    out: list[EnvRead] = []
    for stmt in cls.body:
        if not isinstance(stmt, ast.AnnAssign) or not isinstance(stmt.target, ast.Name):
            continue
        field = stmt.target.id
        if field.startswith("_") or field == "model_config":
            continue
        value = stmt.value
        alias = None
        has_default = value is not None
        if isinstance(value, ast.Call) and last_name(value) == "Field":
            alias = const_str(next((k.value for k in value.keywords
                                    if k.arg in ("alias", "validation_alias")), None))
            has_default = bool(value.args and not (isinstance(value.args[0], ast.Constant)
                                                    and value.args[0].value is Ellipsis)) or any(
                k.arg in ("default", "default_factory") for k in value.keywords)
            value = value.args[0] if value.args else next(
                (k.value for k in value.keywords if k.arg == "default"), None)
        name = (alias or prefix + field).upper()
        kind = {"int": "int", "float": "float", "bool": "bool"}.get(dotted(stmt.annotation), "str")
        if kind == "str" and re.search(r"(URL|URI|BASE|ENDPOINT)$", name):
            kind = "url"
        out.append(EnvRead(name, file.where(stmt), _literal_text(value, file) if has_default else None,
                           has_default, not has_default, kind=kind, via=f"{cls.name}(BaseSettings)"))
    return out


def settings_classes(project: Project, files: list[SourceFile] | None = None) -> list[tuple[SourceFile, ast.ClassDef]]:
    out = []
    for f in files if files is not None else project.files:
        for node in f.nodes:
            if isinstance(node, ast.ClassDef) and any(
                    dotted(b).endswith("BaseSettings") for b in node.bases):
                out.append((f, node))
    return out


# --- what the whole project reads -----------------------------------------------------------


def all_reads(project: Project, files: list[SourceFile] | None = None) -> list[EnvRead]:
    """Every read in ``files`` (default: the project), settings classes included."""
    files = files if files is not None else project.files
    out: list[EnvRead] = []
    for f in files:
        out.extend(reads_in(f))
    for f, cls in settings_classes(project, files):
        out.extend(settings_fields(project, f, cls))
    return out


def _module_level_nodes(file: SourceFile) -> tuple[list[ast.AST], list[ast.Call]]:
    """Nodes that run when the module is imported, and the calls among them."""
    nodes: list[ast.AST] = []
    for stmt in file.tree.body:
        if _is_main_guard(stmt) or isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if isinstance(stmt, ast.ClassDef):
            for inner in stmt.body:  # class bodies run at import; method bodies do not
                if not isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef):
                    nodes.extend(ast.walk(inner))
            for deco in stmt.decorator_list:
                nodes.extend(ast.walk(deco))
            continue
        nodes.extend(ast.walk(stmt))
    return nodes, [n for n in nodes if isinstance(n, ast.Call)]


def _is_main_guard(stmt: ast.stmt) -> bool:
    if not isinstance(stmt, ast.If) or not isinstance(stmt.test, ast.Compare):
        return False
    names = {dotted(stmt.test.left), *(dotted(c) for c in stmt.test.comparators)}
    return "__name__" in names


@dataclass
class ImportNeeds:
    """What importing one module needs from the environment."""

    reads: list[EnvRead]
    clients: list[tuple[str, str]]  # (constructor, where): provider clients built at import


# Provider client constructors that raise without their key.
KEYED_CLIENTS = {
    "OpenAI": "OPENAI_API_KEY", "AsyncOpenAI": "OPENAI_API_KEY",
    "Anthropic": "ANTHROPIC_API_KEY", "AsyncAnthropic": "ANTHROPIC_API_KEY",
    "ChatOpenAI": "OPENAI_API_KEY", "ChatAnthropic": "ANTHROPIC_API_KEY",
}


def at_import(project: Project, file: SourceFile, depth: int = 2) -> ImportNeeds:
    """Environment reads and keyed clients that run when ``file`` (and the project modules it
    imports) is imported, following module-level calls into project functions."""
    reads: list[EnvRead] = []
    clients: list[tuple[str, str]] = []
    for f in project.closure([file]):
        nodes, calls = _module_level_nodes(f)
        found = reads_in(f, nodes)
        _mark_guarded(f, found)
        for call in calls:
            ctor = last_name(call)
            if ctor in KEYED_CLIENTS and not any(k.arg == "api_key" for k in call.keywords):
                clients.append((ctor, f.where(call)))
            # A settings object built at import reads its required fields then.
            for sf, cls in project.classes(ctor):
                if any(dotted(b).endswith("BaseSettings") for b in cls.bases):
                    found.extend(settings_fields(project, sf, cls))
        found.extend(_called_functions(project, f, calls, depth))
        for r in found:
            r.at_import = True
        reads.extend(found)
    # One entry per variable: required wins.
    merged: dict[str, EnvRead] = {}
    for r in reads:
        prev = merged.get(r.name)
        if prev is None or (r.required and not prev.required):
            merged[r.name] = r
    return ImportNeeds(list(merged.values()), clients)


def _called_functions(project: Project, file: SourceFile, calls: list[ast.Call], depth: int) -> list[EnvRead]:
    if depth <= 0:
        return []
    out: list[EnvRead] = []
    local = {n.name for n in file.tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    for call in calls:
        name = last_name(call)
        if isinstance(call.func, ast.Name) and name in local:
            for fn in project.functions(name):
                if fn.file is file and fn.cls is None:
                    body = list(ast.walk(fn.node))
                    out.extend(reads_in(file, body))
                    inner = [n for n in body if isinstance(n, ast.Call)]
                    out.extend(_called_functions(project, file, inner, depth - 1))
    return out


def _mark_guarded(file: SourceFile, reads: list[EnvRead]) -> None:
    """``X = os.getenv("X")`` followed at module level by ``if not X: raise`` is required."""
    assigned = {}
    for name, value in module_assignments(file).items():
        for node in ast.walk(value):
            for r in reads:
                if r.where == file.where(node) and isinstance(node, ast.Call):
                    assigned[name] = r
    for stmt in file.tree.body:
        if not isinstance(stmt, ast.If) or not any(isinstance(s, ast.Raise) for s in stmt.body):
            continue
        test = stmt.test
        names: set[str] = set()
        for node in ast.walk(test):
            if isinstance(node, ast.Name):
                names.add(node.id)
            literal = const_str(node)
            if literal:
                names.add("env:" + literal)
        for name, r in assigned.items():
            if name in names:
                r.required = True
        for r in reads:
            if "env:" + r.name in names:
                r.required = True
