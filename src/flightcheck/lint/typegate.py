"""The type gate: calls that fail at run time whatever the input, found by ty.

ty (Astral's type checker, a binary from PyPI) runs in a subprocess restricted to five rules
— wrong positional count, unknown keyword, missing argument, calling a non-callable, a module
attribute that does not exist — over the project's own (non-test) files. It runs with an empty
Python environment, so third-party imports are unknown to it and only the project's own code
is judged (the dependencies' real signatures live in the built image, which lint does not
have). Diagnostics are kept only where the callee is the project's own: a call whose
signature is declared in the project, a member missing from a project module, a plain value
(a number, a string, None) being called.

Why ty and not pyrefly: on the same fixtures both find the same defects; on the CPython
standard library copy of ``bench/bench_lint.py`` ty 0.0.108 took 4.8 s and 9.0 CPU-s, pyrefly
1.5.0 5.8 s and 11.0 CPU-s, in the same run (docs/lint.md, Speed).
"""

from __future__ import annotations

import ast
import re
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from flightcheck.lint.textscan import Raw

BATCH = 250  # files per ty process (memory; see TypeGate)
# ty rule → flightcheck code
TY_RULES: dict[str, str] = {
    "too-many-positional-arguments": "FC901",
    "unknown-argument": "FC902",
    "parameter-already-assigned": "FC902",
    "missing-argument": "FC903",
    "not-callable": "FC904",
    "missing-attribute": "FC905",
}
_HEAD = re.compile(r"^(error|warning)\[([\w-]+)\]: (.*)$")
_ARROW = re.compile(r"^\s*-->\s+(.+?):(\d+):(\d+)\s*$")
# None is left out: a module global initialised to None and set later reads as None to ty.
_PLAIN_VALUE = re.compile(
    r"Object of type `(?:Literal\[.*\]|int|str|float|bytes|bool|complex|"
    r"(?:list|dict|tuple|set|frozenset)(?:\[.*\])?)` is not callable"
)
_MODULE_MEMBER = re.compile(r"Module `([\w.]+)` has no member `(\w+)`")
_CALLEE = re.compile(r"(?:function|method|constructor) `([\w.]+)`")
# Module-level code that can add names ty does not see.
_DYNAMIC_MODULE = ("__getattr__", "globals()", "sys.modules", "exec(", "setattr(", "import *")



@dataclass
class Diagnostic:
    rule: str
    message: str
    file: str
    line: int
    col: int
    related: list[tuple[str, int]]  # (file, line) of "declared here" notes


class TypeGate:
    """ty over ``files`` (absolute paths), started now, collected later.

    Large trees are checked in batches of :data:`BATCH` files, one after the other in a
    thread: ty's memory grows with the files it checks at once (the whole CPython library in
    one go: ~330 MiB), and the batches keep the scan's peak below ruff's at ~15% more CPU.
    """

    def __init__(self, binary: str, root: Path, files: dict[str, str], modules: dict[str, str],
                 python: str) -> None:
        self.root = root
        self._rel = files  # absolute path → rel
        self._modules = modules  # dotted module name → rel (the project's modules)
        self._texts: dict[str, str] = {}
        self._trees: dict[str, ast.Module | None] = {}
        self._shown: dict[str, str | None] = {}  # a path as ty prints it → rel
        self._call_nodes: dict[str, list[ast.Call] | None] = {}
        self._tmp = tempfile.TemporaryDirectory(prefix="flightcheck-ty-")
        env = Path(self._tmp.name) / "env"
        (env / "lib" / f"python{python}" / "site-packages").mkdir(parents=True)
        (env / "pyvenv.cfg").write_text(f"home = /nonexistent\nversion = {python}\n")
        config = Path(self._tmp.name) / "ty.toml"
        config.write_text("")  # the project's own [tool.ty] must not turn rules back on
        rules = [arg for rule in TY_RULES for arg in ("--error", rule)]
        self._base = [binary, "check", "--project", str(root), "--config-file", str(config),
                      "--python", str(env), "--python-version", python, "--ignore", "all",
                      *rules, "--output-format", "full", "--color", "never", "--no-progress",
                      "--exit-zero", "--"]
        paths = sorted(files)  # neighbours share imports: batch them together
        self._batches = [paths[i:i + BATCH] for i in range(0, len(paths), BATCH)]
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopped = False
        self._output: list[str] = []
        self._error: str | None = None
        self._thread = threading.Thread(target=self._run, name="flightcheck-ty", daemon=True)
        self._start(self._batches[0])  # fail fast (OSError) when ty cannot start
        self._thread.start()

    def _start(self, batch: list[str]) -> subprocess.Popen[bytes] | None:
        with self._lock:  # kill() holds it too: nothing starts after a kill
            if self._stopped:
                return None
            self._proc = subprocess.Popen([*self._base, *batch], stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL, cwd=self.root)
            return self._proc

    def _run(self) -> None:
        for i, batch in enumerate(self._batches):
            try:
                proc = self._proc if i == 0 else self._start(batch)
                if proc is None:
                    return
                out, _ = proc.communicate()
            except OSError as exc:
                self._error = str(exc)
                return
            if proc.returncode != 0:
                self._error = self._error or f"ty exited {proc.returncode}"
                return
            self._output.append(out.decode("utf-8", "replace"))

    def results(self, timeout: float = 900) -> dict[str, list[Raw]]:
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.kill()
            raise RuntimeError(f"ty did not finish within {timeout:.0f} s")
        self.kill()
        if self._error is not None:
            raise RuntimeError(self._error)
        found: dict[str, list[Raw]] = {}
        for diag in parse_output("\n".join(self._output)):
            rel = self._project_rel(diag.file)
            code = TY_RULES.get(diag.rule)
            if rel is None or code is None or not self._own(diag):
                continue
            found.setdefault(rel, []).append(
                Raw(code, diag.line, diag.col, f"{diag.message} (ty {diag.rule})")
            )
        return found

    def _own(self, diag: Diagnostic) -> bool:
        """Only what fails for certain, in the project's own code."""
        if diag.rule == "not-callable":
            return _PLAIN_VALUE.search(diag.message) is not None
        if diag.rule == "missing-attribute":
            m = _MODULE_MEMBER.search(diag.message)
            if m is None or m.group(1) not in self._modules:
                return False  # attributes of objects: too much inference to be certain
            source = self._text(self._modules[m.group(1)])
            if not source or any(marker in source for marker in _DYNAMIC_MODULE):
                return False
            # the name written anywhere in the module (an __all__ entry, a class attribute that
            # an enum exports, a star import's list): something defines it at run time
            return re.search(rf"\b{re.escape(m.group(2))}\b", source) is None
        # a call: the signature ty checked against must be declared in the project, and be
        # what runs (not a stub, a method a subclass may override, a rebinding ty misses)
        own = [(f, line) for f, line in diag.related if self._project_rel(f) is not None]
        if not own or "__new__" in diag.message:
            return False
        if self._on_self(diag.file, diag.line, diag.col):
            return False  # a subclass may override the method with another signature
        file, line = own[0]
        if self._stub(file, line):
            return False
        callee = _CALLEE.search(diag.message)
        if callee is not None:
            name = re.escape(callee.group(1).rpartition(".")[2])
            rebound = rf"\b{name}\s*=\s*(?:staticmethod|classmethod)\("
            if re.search(rebound, self._text(file)):
                return False
            # a name bound more than once where it is called (a def and an import of another
            # `main`): which one runs is flow-dependent, and the checker may pick the wrong one
            bindings = rf"^\s*(?:async\s+)?def\s+{name}\b|^\s*(?:from\s+\S+\s+)?import\s.*\b{name}\b"
            if len(re.findall(bindings, self._text(diag.file), re.M)) > 1:
                return False
        return True

    def _project_rel(self, shown: str) -> str | None:
        """The project file ty names (relative to the root), or None: one resolve per file,
        not per diagnostic (ty reports thousands on a large tree)."""
        if shown not in self._shown:
            self._shown[shown] = self._rel.get(str((self.root / shown).resolve()))
        return self._shown[shown]

    def _text(self, rel: str) -> str:
        if rel not in self._texts:
            try:
                self._texts[rel] = (self.root / rel).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                self._texts[rel] = ""
        return self._texts[rel]

    def _tree(self, rel: str) -> ast.Module | None:
        if rel not in self._trees:
            try:
                self._trees[rel] = ast.parse(self._text(rel))
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                self._trees[rel] = None
        return self._trees[rel]

    def _calls(self, rel: str) -> list[ast.Call] | None:
        """The file's calls, collected once (several diagnostics may point into one file)."""
        if rel not in self._call_nodes:
            tree = self._tree(rel)
            self._call_nodes[rel] = (None if tree is None else
                                     [n for n in ast.walk(tree) if isinstance(n, ast.Call)])
        return self._call_nodes[rel]

    def _on_self(self, rel: str, line: int, col: int) -> bool:
        """Whether the innermost call around (line, col) is ``self.m(...)``/``cls.m``/``super()``."""
        calls = self._calls(rel)
        if calls is None:
            return True  # cannot tell: stay silent
        best: ast.Call | None = None
        for node in calls:
            if (node.end_lineno is not None
                    and (node.lineno, node.col_offset) <= (line, col - 1)
                    and (line, col - 1) <= (node.end_lineno, node.end_col_offset or 0)):
                if best is None or (node.lineno, node.col_offset) >= (best.lineno, best.col_offset):
                    best = node
        if best is None or not isinstance(best.func, ast.Attribute):
            return False
        owner = best.func.value
        return (isinstance(owner, ast.Name) and owner.id in ("self", "cls")) or (
            isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name)
            and owner.func.id == "super")

    def _stub(self, rel: str, line: int) -> bool:
        """A declaration without a body (a Protocol's, an ABC's, an overload): what runs is
        defined elsewhere."""
        tree = self._tree(rel)
        if tree is None:
            return True  # cannot tell: stay silent
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.lineno == line:
                return is_declaration_only(node)
        return False

    def kill(self) -> None:
        with self._lock:
            self._stopped = True
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        self._thread.join(10)
        self._tmp.cleanup()


def parse_output(text: str) -> list[Diagnostic]:
    """ty's full output: a header line, its location, then notes with their own locations."""
    out: list[Diagnostic] = []
    current: Diagnostic | None = None
    for line in text.splitlines():
        head = _HEAD.match(line)
        if head:
            current = Diagnostic(head.group(2), head.group(3), "", 0, 0, [])
            out.append(current)
            continue
        arrow = _ARROW.match(line)
        if arrow and current is not None:
            if not current.file:
                current.file, current.line, current.col = (
                    arrow.group(1), int(arrow.group(2)), int(arrow.group(3)))
            else:
                current.related.append((arrow.group(1), int(arrow.group(2))))
    return [d for d in out if d.file]


def decorator_names(node: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    """``{"overload", "staticmethod"}`` for ``@typing.overload @staticmethod``."""
    return {ast.unparse(d).rpartition(".")[2] for d in node.decorator_list}


def is_declaration_only(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """An abstract method, an overload, or a body of only a docstring and ``...``/``pass``/
    ``raise NotImplementedError``: what runs is defined elsewhere."""
    if decorator_names(node) & {"abstractmethod", "overload"}:
        return True
    body = node.body
    if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)):
        body = body[1:]  # the docstring
    return not body or all(is_empty_statement(stmt) for stmt in body)


def is_empty_statement(stmt: ast.stmt) -> bool:
    """``...``, ``pass`` or ``raise NotImplementedError``."""
    if isinstance(stmt, ast.Pass):
        return True
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
        return stmt.value.value is Ellipsis
    if isinstance(stmt, ast.Raise) and stmt.exc is not None:
        exc = stmt.exc.func if isinstance(stmt.exc, ast.Call) else stmt.exc
        return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"
    return False
