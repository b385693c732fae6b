"""The service's Python sources as parsed trees, indexed the ways the detectors ask for them.

Nothing is imported or executed: every file is read and parsed with :mod:`ast`. Module names
are computed the way Python would import them (a directory is a package when it holds
``__init__.py``; ``src/`` layouts count), plus path-based aliases so namespace packages
(``service/main.py`` with no ``__init__.py``, imported as ``service.main``) resolve too.
"""

from __future__ import annotations

import ast
import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

# Directories that never hold the service's own code.
_SKIP_DIRS = {
    "node_modules", "__pycache__", "build", "dist", "site-packages", "venv", "env",
    "tests", "test", "testing", "fixtures", "docs", "examples", "flightcheck-report",
}
_MAX_FILES = 3000
_MAX_BYTES = 1_000_000


@dataclass
class SourceFile:
    """One parsed ``.py`` file."""

    path: Path
    rel: str  # relative to the service directory, with "/"
    module: str  # dotted name as Python imports it ("app.main")
    root: str  # the sys.path entry it imports from, relative ("." or "src")
    tree: ast.Module
    aliases: tuple[str, ...] = ()
    memo: dict[str, Any] = field(default_factory=dict, repr=False)  # per-file results of detectors

    def where(self, node: ast.AST | None = None) -> str:
        line = getattr(node, "lineno", None)
        return f"{self.rel}:{line}" if line else self.rel

    # Every detector walks the same trees: walk each once.
    @cached_property
    def nodes(self) -> list[ast.AST]:
        return list(ast.walk(self.tree))

    @cached_property
    def parents(self) -> dict[ast.AST, ast.AST]:
        return {child: node for node in self.nodes for child in ast.iter_child_nodes(node)}

    @cached_property
    def imported(self) -> list[str]:
        return _imported(self)

    @cached_property
    def top_imports(self) -> set[str]:
        return {name.split(".")[0] for name in self.imported}

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"


@dataclass
class Func:
    """A function or method anywhere in the project (nested ones included)."""

    file: SourceFile
    node: ast.FunctionDef | ast.AsyncFunctionDef
    cls: str | None = None  # enclosing class, for methods

    @property
    def name(self) -> str:
        return self.node.name

    def where(self) -> str:
        return self.file.where(self.node)


@dataclass
class Project:
    """Every parseable source file under the service directory."""

    root: Path
    files: list[SourceFile] = field(default_factory=list)
    unparsable: list[str] = field(default_factory=list)
    _by_module: dict[str, SourceFile] = field(default_factory=dict)
    _funcs: dict[str, list[Func]] = field(default_factory=dict)
    _classes: dict[str, list[tuple[SourceFile, ast.ClassDef]]] = field(default_factory=dict)

    # --- lookups ------------------------------------------------------------------------

    def module(self, name: str) -> SourceFile | None:
        """The file a dotted module name imports (a package's ``__init__``)."""
        return self._by_module.get(name)

    def file(self, rel: str) -> SourceFile | None:
        return next((f for f in self.files if f.rel == rel), None)

    def functions(self, name: str) -> list[Func]:
        return self._funcs.get(name, [])

    def all_functions(self) -> Iterator[Func]:
        for funcs in self._funcs.values():
            yield from funcs

    def classes(self, name: str) -> list[tuple[SourceFile, ast.ClassDef]]:
        return self._classes.get(name, [])

    def third_party(self, file: SourceFile) -> list[str]:
        """Top-level names of what ``file`` imports that is neither the project nor stdlib."""
        import sys

        out: list[str] = []
        for name in file.imported:
            top = name.split(".")[0]
            if not top or top in sys.stdlib_module_names or self._is_project(top):
                continue
            if top not in out:
                out.append(top)
        return out

    def _is_project(self, top: str) -> bool:
        return any(m == top or m.startswith(top + ".") for m in self._by_module)

    def imports_of(self, file: SourceFile) -> list[SourceFile]:
        """Project files that ``file`` imports (absolute and relative imports)."""
        out: list[SourceFile] = []
        for name in file.imported:
            parts = name.split(".")
            # "from pkg import mod" may name a submodule or an attribute: try both.
            for n in range(len(parts), 0, -1):
                hit = self.module(".".join(parts[:n]))
                if hit is not None:
                    if hit not in out and hit is not file:
                        out.append(hit)
                    break
        return out

    def closure(self, start: Iterable[SourceFile]) -> list[SourceFile]:
        """``start`` and every project file reachable through imports (and their packages)."""
        seen: list[SourceFile] = []
        todo = list(start)
        while todo:
            f = todo.pop()
            if f in seen:
                continue
            seen.append(f)
            todo.extend(self.imports_of(f))
            parts = f.module.split(".")
            for n in range(1, len(parts)):  # importing a.b.c runs a/__init__ and a/b/__init__
                pkg = self.module(".".join(parts[:n]))
                if pkg is not None:
                    todo.append(pkg)
        return seen


def _imported(file: SourceFile) -> list[str]:
    """Dotted names imported anywhere in the file; relative imports made absolute."""
    names: list[str] = []
    package = file.module if file.is_package else file.module.rpartition(".")[0]
    for node in file.nodes:
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".") if package else []
                parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join([*parts, *([base] if base else [])])
            for alias in node.names:
                names.append(f"{base}.{alias.name}" if base else alias.name)
            if base:
                names.append(base)
    return names


def _skip(name: str) -> bool:
    return name.startswith(".") or name in _SKIP_DIRS or name.endswith(".egg-info")


def _module_of(root: Path, path: Path) -> tuple[str, str]:
    """(dotted module name, import root relative to ``root``) as Python would import it."""
    parts = [path.stem] if path.name != "__init__.py" else []
    d = path.parent
    while d != root and (d / "__init__.py").is_file():
        parts.insert(0, d.name)
        d = d.parent
    rel_root = d.relative_to(root).as_posix() if d != root else "."
    return ".".join(parts), rel_root


def load(root: Path) -> Project:
    """Parse every ``.py`` file under ``root`` (tests, virtualenvs and build output skipped)."""
    root = root.resolve()
    project = Project(root=root)
    count = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not _skip(d))
        for name in sorted(filenames):
            if not name.endswith(".py") or count >= _MAX_FILES:
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            try:
                if path.stat().st_size > _MAX_BYTES:
                    continue
                tree = ast.parse(path.read_bytes(), filename=rel)
            except (OSError, SyntaxError, ValueError):
                project.unparsable.append(rel)
                continue
            count += 1
            module, mroot = _module_of(root, path)
            stem = rel[: -len("/__init__.py")] if rel.endswith("/__init__.py") else rel[:-3]
            aliases = {stem.replace("/", ".")}
            if stem.startswith("src/"):
                aliases.add(stem[4:].replace("/", "."))
            aliases.discard(module)
            project.files.append(SourceFile(path, rel, module, mroot, tree, tuple(sorted(aliases))))
    # Package-aware names win over path aliases; shallower files win ties.
    for f in sorted(project.files, key=lambda f: f.rel.count("/")):
        project._by_module.setdefault(f.module, f)
    for f in sorted(project.files, key=lambda f: f.rel.count("/")):
        for alias in f.aliases:
            project._by_module.setdefault(alias, f)
    for f in project.files:
        _index(project, f)
    return project


def _index(project: Project, file: SourceFile) -> None:
    def visit(node: ast.AST, cls: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                project._classes.setdefault(child.name, []).append((file, child))
                visit(child, child.name)
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                project._funcs.setdefault(child.name, []).append(Func(file, child, cls))
                visit(child, None)
            else:
                visit(child, cls)

    visit(file.tree, None)


# --- small AST helpers shared by the detectors ---------------------------------------------


def dotted(expr: ast.AST | None) -> str:
    """``a.b.c`` for Name/Attribute chains (calls and subscripts in between become ``()``/``[]``)."""
    parts: list[str] = []
    node = expr
    while node is not None:
        if isinstance(node, ast.Name):
            parts.append(node.id)
            break
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Call):
            parts.append("()")
            node = node.func
        elif isinstance(node, ast.Subscript):
            parts.append("[]")
            node = node.value
        elif isinstance(node, ast.Await):
            node = node.value
        else:
            break
    return ".".join(reversed(parts)).replace(".()", "()").replace(".[]", "[]")


def call_name(call: ast.Call) -> str:
    return dotted(call.func)


def last_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return ""


def const_str(expr: ast.AST | None) -> str | None:
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return expr.value
    return None


def kwarg(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def module_assignments(file: SourceFile) -> dict[str, ast.expr]:
    """Top-level ``NAME = value`` (and annotated) assignments of a module, last one wins."""
    out: dict[str, ast.expr] = {}
    for stmt in file.tree.body:
        if isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                if isinstance(target, ast.Name):
                    out[target.id] = stmt.value
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value:
            out[stmt.target.id] = stmt.value
    return out


def string_value(expr: ast.AST | None, file: SourceFile | None = None, depth: int = 0) -> str | None:
    """A string the expression always has: literals, module constants, f-strings and ``+``
    of those ({…} kept for the parts that are not constant)."""
    if expr is None or depth > 4:
        return None
    s = const_str(expr)
    if s is not None:
        return s
    if isinstance(expr, ast.Name) and file is not None:
        value = module_assignments(file).get(expr.id)
        return string_value(value, file, depth + 1) if value is not None else None
    if isinstance(expr, ast.JoinedStr):
        out = []
        for part in expr.values:
            if isinstance(part, ast.Constant):
                out.append(str(part.value))
            elif isinstance(part, ast.FormattedValue):
                inner = string_value(part.value, file, depth + 1)
                out.append(inner if inner is not None else "{" + (dotted(part.value) or "…") + "}")
        return "".join(out)
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
        left, right = string_value(expr.left, file, depth + 1), string_value(expr.right, file, depth + 1)
        if left is not None or right is not None:
            return (left if left is not None else "{…}") + (right if right is not None else "{…}")
    return None


def walk_scope(node: ast.AST) -> Iterator[ast.AST]:
    """Nodes of a function or module body, not descending into nested defs or classes."""
    todo = deque(ast.iter_child_nodes(node))
    while todo:
        child = todo.popleft()
        yield child
        if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            todo.extend(ast.iter_child_nodes(child))
