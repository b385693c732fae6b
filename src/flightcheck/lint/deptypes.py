"""The type gate against the built image's dependencies (FC901–FC903, in the build stage).

lint's type gate runs before the image exists and judges calls into the project's own code.
Once the image is built it holds the pinned versions of the service's dependencies: ty runs
again over the project's own non-test files with that environment, and a diagnostic is kept
only when the callee is declared in the installed packages and the call fails whatever the
input — an unknown keyword, too many positional arguments, a missing argument. Argument
*types* are never judged: a ``list[dict]`` where the SDK declares TypedDicts works at run time.

Overloaded callees (the openai SDK's ``create``) make ty say only "no overload matches", which
may be a type mismatch; those calls are judged against the implementation's own parameters in
the installed source (the ``def`` without ``@overload``), which is what runs.
"""

from __future__ import annotations

import ast
import contextlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import anyio

from flightcheck.lint.cache import cache_dir, write_atomically
from flightcheck.lint.typegate import decorator_names, is_declaration_only, parse_output

# ty rule → flightcheck code; no-matching-overload is re-judged (see module docstring)
RULES: dict[str, str] = {
    "too-many-positional-arguments": "FC901",
    "unknown-argument": "FC902",
    "parameter-already-assigned": "FC902",
    "missing-argument": "FC903",
    "no-matching-overload": "",
}
_DIST_INFO = re.compile(r"^(.+?)-([^-]+)\.dist-info$")


@dataclass(frozen=True)
class DependencyCall:
    """A call into an installed dependency that fails whatever the input."""

    rel: str
    line: int
    col: int
    code: str
    message: str


_KEEP = 32  # cached results kept (one per image and code state)


def cached(key: str) -> list[DependencyCall] | None:
    """The calls a check with this key found, or None when there is no such record.

    The key (build.py) names everything the verdict depends on — the image by content, ty's
    identity, the project's files by content, the codes — so a rebuilt-from-cache image with
    unchanged code skips the check (1.7 s on a service with the openai SDK, mostly copying the
    packages out of the image)."""
    try:
        data = json.loads((cache_dir() / "dependency-calls" / f"{key}.json").read_text())
        return [DependencyCall(**c) for c in data["calls"]]
    except (OSError, ValueError, TypeError, KeyError):
        return None


def remember(key: str, calls: list[DependencyCall]) -> None:
    """Record a finished check (best effort: an unwritable cache only costs the next run)."""
    folder = cache_dir() / "dependency-calls"
    with contextlib.suppress(OSError):
        write_atomically(folder / f"{key}.json",
                         json.dumps({"calls": [asdict(c) for c in calls]}).encode())
        records = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in records[_KEEP:]:
            old.unlink(missing_ok=True)


async def check(binary: str, root: Path, files: dict[str, str], python: Path, version: str,
                sites: list[Path], *, timeout_s: float = 300) -> list[DependencyCall]:
    """ty over ``files`` (absolute path → path relative to ``root``) with the environment at
    ``python`` (a venv directory or an interpreter) whose packages live in ``sites``.

    Raises RuntimeError when ty fails or times out (the caller reports "not checked").
    """
    if not files:
        return []
    rules = [arg for rule in RULES for arg in ("--error", rule)]
    argv = [binary, "check", "--project", str(root), "--python", str(python),
            "--python-version", version, "--ignore", "all", *rules, "--output-format", "full",
            "--color", "never", "--no-progress", "--exit-zero", "--", *sorted(files)]
    try:
        with anyio.fail_after(timeout_s):
            done = await anyio.run_process(argv, cwd=root, check=False)
    except TimeoutError:
        raise RuntimeError(f"ty did not finish within {timeout_s:g} s") from None
    except OSError as exc:
        raise RuntimeError(f"ty could not start: {exc}") from None
    if done.returncode != 0:
        raise RuntimeError(f"ty exited {done.returncode}: "
                           f"{done.stderr.decode('utf-8', 'replace').strip()[-300:]}")
    return _Judge(root, files, sites).judge(done.stdout.decode("utf-8", "replace"))


class _Judge:
    def __init__(self, root: Path, files: dict[str, str], sites: list[Path]) -> None:
        self.root = root
        self.files = files
        self.sites = [s.resolve() for s in sites]
        self._trees: dict[Path, ast.Module | None] = {}
        self._dists: dict[tuple[Path, str], str] = {}

    def judge(self, output: str) -> list[DependencyCall]:
        found: list[DependencyCall] = []
        for diag in parse_output(output):
            rel = self.files.get(str((self.root / diag.file).resolve()))
            if rel is None or diag.rule not in RULES:
                continue
            declared = [(p, line) for p, line in ((self._site_path(f), n) for f, n in diag.related)
                        if p is not None]
            if not declared:
                continue  # the callee is the project's own (lint's gate) or unknown
            path, line = declared[0]
            if diag.rule == "no-matching-overload":
                call = self._call_at(self.root / rel, diag.line, diag.col)
                verdict = None if call is None else self._against_implementation(call, path, line)
                if verdict is not None:
                    code, what = verdict
                    found.append(DependencyCall(rel, diag.line, diag.col, code,
                                                f"{what} in the image's {self._distribution(path)}"))
                continue
            if self._stub(path, line):
                continue  # a declaration only (.pyi, Protocol, ABC): what runs may differ
            found.append(DependencyCall(
                rel, diag.line, diag.col, RULES[diag.rule],
                f"{diag.message} (the image's {self._distribution(path)}; ty {diag.rule})"))
        return found

    def _site_path(self, shown: str) -> Path | None:
        path = Path(shown)
        path = (path if path.is_absolute() else self.root / path).resolve()
        return path if any(path.is_relative_to(s) for s in self.sites) else None

    def _distribution(self, path: Path) -> str:
        """``openai 3.57.0`` for a file of the openai package, from its dist-info."""
        site = next(s for s in self.sites if path.is_relative_to(s))
        top = path.relative_to(site).parts[0].removesuffix(".py")
        if (site, top) not in self._dists:
            self._dists[(site, top)] = self._find_distribution(site, top)
        return self._dists[(site, top)]

    @staticmethod
    def _find_distribution(site: Path, top: str) -> str:
        for info in site.glob("*.dist-info"):
            m = _DIST_INFO.match(info.name)
            if m is None:
                continue
            tops = {_norm(m.group(1))}
            try:
                tops |= {_norm(t) for t in (info / "top_level.txt").read_text().split()}
            except OSError:
                pass
            if _norm(top) in tops:
                return f"{m.group(1)} {m.group(2)}"
        return top

    def _tree(self, path: Path) -> ast.Module | None:
        if path not in self._trees:
            try:
                self._trees[path] = ast.parse(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, SyntaxError, ValueError, RecursionError):
                self._trees[path] = None
        return self._trees[path]

    def _call_at(self, path: Path, line: int, col: int) -> ast.Call | None:
        tree = self._tree(path)
        if tree is None:
            return None
        return next((n for n in ast.walk(tree) if isinstance(n, ast.Call)
                     and (n.lineno, n.col_offset + 1) == (line, col)), None)

    def _siblings(self, path: Path, line: int) -> tuple[ast.FunctionDef | ast.AsyncFunctionDef,
                                                        list[ast.stmt], str | None] | None:
        """The innermost ``def`` whose lines (decorators included) hold ``line`` — ty points at
        a decorator, the ``def`` or a parameter — with the body it is in and its class."""
        tree = self._tree(path)
        if tree is None:
            return None
        best: tuple[int, ast.FunctionDef | ast.AsyncFunctionDef, list[ast.stmt], str | None] | None = None
        for parent in ast.walk(tree):
            body = getattr(parent, "body", None)
            if not isinstance(body, list):
                continue
            for node in body:  # pyright: ignore[reportUnknownVariableType]
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                if start <= line <= (node.end_lineno or node.lineno) and (best is None or start > best[0]):
                    owner = parent.name if isinstance(parent, ast.ClassDef) else None
                    best = (start, node, body, owner)  # pyright: ignore[reportUnknownArgumentType]
        return None if best is None else best[1:]

    def _stub(self, path: Path, line: int) -> bool:
        if path.suffix == ".pyi":
            return True
        found = self._siblings(path, line)
        if found is None:
            return True  # cannot tell: stay silent
        return is_declaration_only(found[0])

    def _against_implementation(self, call: ast.Call, path: Path,
                                line: int) -> tuple[str, str] | None:
        """An overloaded callee: the call bound to the implementation's parameters."""
        found = self._siblings(path, line)
        if found is None or path.suffix == ".pyi":
            return None
        node, body, owner = found
        impls = [n for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                 and n.name == node.name and "overload" not in decorator_names(n)]
        if len(impls) != 1:
            return None
        impl = impls[0]
        name = f"{owner}.{impl.name}()" if owner else f"{impl.name}()"
        args = impl.args
        positional = [*args.posonlyargs, *args.args]
        if owner and "staticmethod" not in decorator_names(impl) and positional:
            positional = positional[1:]  # self or cls
        keywords = {a.arg for a in [*args.args, *args.kwonlyargs]} - {a.arg for a in args.posonlyargs}
        given = [k.arg for k in call.keywords if k.arg is not None]
        unknown = [k for k in given if k not in keywords]
        if unknown and args.kwarg is None:
            return "FC902", f"`{unknown[0]}` is not a parameter of {name}"
        splat = any(isinstance(a, ast.Starred) for a in call.args) or any(
            k.arg is None for k in call.keywords)
        if splat:
            return None
        if len(call.args) > len(positional) and args.vararg is None:
            return "FC901", (f"{name} takes {len(positional)} positional argument(s), "
                             f"{len(call.args)} given")
        filled = {a.arg for a in positional[:len(call.args)]} | set(given)
        required = [a.arg for a in positional[:len(positional) - len(args.defaults)]]
        required += [a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)
                     if d is None]
        missing = [r for r in required if r not in filled]
        if missing:
            return "FC903", f"{name} is called without its required argument `{missing[0]}`"
        return None  # every overload rejects the argument types: not judged


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


