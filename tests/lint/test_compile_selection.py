"""FC101 is CPython's compiler's verdict, but the compiler reads only the files ruff's parser
flags (a syntax error, or a rule mirroring a compiler error) and those pyscan.compile_gate picks.
These tests hold that selection to CPython's own corpus of invalid code: every snippet the
compiler rejects must be selected. A new ruff that stops flagging something fails here."""

from __future__ import annotations

import ast
import doctest
import json
import sysconfig
import warnings
from pathlib import Path

import pytest
from lint_support import lint

from flightcheck.lint import engine, worker
from flightcheck.lint.engine import RUFF_COMPILE_CODES, _Ruff, find_tool
from flightcheck.lint.pyscan import compile_check, compile_gate

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "lint" / "compile_errors.json"
# CPython's tests of its own syntax: their doctests and string constants hold the invalid code.
_SYNTAX_TESTS = ("test_syntax", "test_grammar", "test_exceptions", "test_fstring", "test_patma",
                 "test_named_expressions", "test_positional_only_arg", "test_unpack_ex",
                 "test_genexps", "test_coroutines", "test_asyncgen", "test_scope",
                 "test_string_literals", "test_compile", "test_future", "test_global",
                 "test_keywordonlyarg", "test_type_comments", "test_opcodes", "test_eof")


def _rejected(text: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            compile(text, "<snippet>", "exec", dont_inherit=True)
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            return True
    return False


def _unselected(tmp_path: Path, snippets: list[str]) -> list[str]:
    """The snippets this Python's compiler rejects that neither ruff nor the gate selects."""
    ruff = find_tool("ruff")
    assert ruff is not None, "ruff is a pinned dependency"
    tasks, texts = [], {}
    for i, text in enumerate(snippets):
        if not _rejected(text):
            continue  # valid on this Python (the fixture was made on 3.11)
        path = tmp_path / f"s{i:05d}.py"
        path.write_text(text, encoding="utf-8")
        tasks.append(worker.Task(str(path), path.name, "python", False))
        texts[path.name] = text
    assert len(tasks) > len(snippets) // 2, "the corpus lost its invalid code"
    run = _Ruff(ruff, tasks, list(RUFF_COMPILE_CODES))
    try:
        run.results()
    finally:
        run.kill()
    return [text for rel, text in texts.items()
            if rel not in run.to_compile and not compile_gate(text)]


def test_every_compiler_error_of_the_fixture_corpus_is_selected(tmp_path: Path) -> None:
    snippets = json.loads(FIXTURE.read_text(encoding="utf-8"))["snippets"]
    assert len(snippets) > 300
    assert _unselected(tmp_path, snippets) == []


def _harvest(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # their invalid escapes are not ours
            tree = ast.parse(text)
    except SyntaxError:
        return []
    found = [node.value for node in ast.walk(tree)
             if isinstance(node, ast.Constant) and isinstance(node.value, str)
             and 1 < len(node.value) < 3000 and "\0" not in node.value]
    docs = [ast.get_docstring(n, clean=False) for n in ast.walk(tree)
            if isinstance(n, ast.Module | ast.FunctionDef | ast.ClassDef)]
    parser = doctest.DocTestParser()
    for doc in [*docs, *found]:
        if doc and ">>>" in doc:
            try:
                found.extend(ex.source for ex in parser.get_examples(doc))
            except ValueError:
                continue
    return found


def test_every_compiler_error_of_cpythons_syntax_tests_is_selected(tmp_path: Path) -> None:
    test_dir = Path(sysconfig.get_paths()["stdlib"]) / "test"
    sources = [test_dir / f"{name}.py" for name in _SYNTAX_TESTS if (test_dir / f"{name}.py").is_file()]
    if len(sources) < 10:
        pytest.skip(f"CPython's test suite is not installed with this Python ({test_dir}); the "
                    "fixture corpus above still runs")
    snippets = sorted({s for src in sources for s in _harvest(src)})
    assert _unselected(tmp_path, snippets) == []


@pytest.mark.parametrize(("source", "message"), [
    # what ruff does not mirror: the gate's cases
    ("def f():\n    x = 1\n    def g():\n        print(x)\n        nonlocal x\n",
     "used prior to nonlocal declaration"),
    ("f(__debug__=1)\n", "cannot assign to __debug__"),
    ("x = [1]\n*x\n", "can't use starred expression here"),
    ("async def f():\n    yield 1\n    return 2\n", "'return' with value in async generator"),
    ("".join("    " * i + f"for x{i} in y:\n" for i in range(21)) + "    " * 21 + "pass\n",
     "too many statically nested blocks"),
    # what ruff's rules flag and the compiler words
    ("def f(x):\n    global x\n", "is parameter and global"),
    ("for x in y:\n    def f():\n        break\n", "'break' outside loop"),
    ("import os\nfrom __future__ import annotations\n", "from __future__ imports must occur"),
])
def test_compiler_errors_are_reported_with_the_compilers_words(tmp_path: Path, source: str,
                                                               message: str) -> None:
    (tmp_path / "app.py").write_text(source)
    report = lint(tmp_path)
    fc101 = [f for f in report.findings if f.code == "FC101"]
    assert len(fc101) == 1 and message in fc101[0].message, [f.message for f in report.findings]


def test_a_file_nothing_flags_is_not_compiled(tmp_path: Path) -> None:
    """The speed half of the design: clean code never reaches the compiler."""
    (tmp_path / "clean.py").write_text("def add(a: int, b: int) -> int:\n    return a + b\n")
    (tmp_path / "scoped.py").write_text(
        "def f():\n    x = 1\n    def g():\n        print(x)\n        nonlocal x\n")
    ruff = find_tool("ruff")
    assert ruff is not None
    tasks = [worker.Task(str(p), p.name, "python", False) for p in sorted(tmp_path.glob("*.py"))]
    run = _Ruff(ruff, tasks, list(RUFF_COMPILE_CODES))
    try:
        run.results()
    finally:
        run.kill()
    assert run.to_compile == set()
    gated = {p.name for p in tmp_path.glob("*.py") if compile_gate(p.read_text())}
    assert gated == {"scoped.py"}
    assert compile_check("scoped.py", (tmp_path / "scoped.py").read_text()) is not None


def test_without_ruff_every_file_is_compiled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "app.py").write_text("def f(x):\n    global x\n")
    real = engine.find_tool
    monkeypatch.setattr(engine, "find_tool", lambda name: None if name == "ruff" else real(name))
    report = lint(tmp_path)  # not gated: only compiling every file finds it
    assert [f.message for f in report.findings if f.code == "FC101"] == [
        "SyntaxError: name 'x' is parameter and global"]


def test_when_ruff_fails_every_file_is_compiled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "app.py").write_text("def f(x):\n    global x\n")

    def broken(self: _Ruff, timeout: float = 600) -> dict[str, list[object]]:
        raise RuntimeError("ruff exited 2")

    monkeypatch.setattr(_Ruff, "results", broken)
    report = lint(tmp_path)
    assert [f.message for f in report.findings if f.code == "FC101"] == [
        "SyntaxError: name 'x' is parameter and global"]
    assert any("ruff failed (ruff exited 2)" in n for n in report.notes)


@pytest.mark.parametrize(("source", "compiled"), [
    ('def f():\n    """Doc.\n\n    * item\n    """\n', False),  # a docstring's bullet
    ("x = [1]\n*x\n", True),
    ('"""Doc\n* a\n"""\n*x\n', True),  # the statement after the docstring
    ('s = "a\\n*b"\n', False),
    ('s = "\\" "\n*x\n', True),  # an escaped quote does not end the string
    ('s = r"""a\\""""""\n* b\n', True),  # nor in a raw one
    ("# nonlocal x\nx = 1\n", False),
    ("def f():\n    x = 1\n    def g():\n        nonlocal x\n        x = 2\n", False),
    ("def f():\n    x = 1\n    def g():\n        print(x)\n        nonlocal x\n", True),
    ("def f():\n    x = 1\n    def g():\n        nonlocal x\n        x: int = 2\n", True),
    # the annotation after a nested def is still in g's scope
    ("def f():\n    x = 1\n    def g():\n        nonlocal x\n        def h():\n"
     "            pass\n        x: int = 2\n", True),
    ("def f():\n    x = 1\n    def g(x): nonlocal x\n", True),
    ("def f():\n    x = 1\n    def g():\n        nonlocal x\n        if (x := 2):\n"
     "            pass\n", False),
    ('def f():\n    """\n    nonlocal x\n    """\n', False),
    ('s = """abc\n* x\n', True),  # unterminated: the compiler is asked
    # inside brackets a line starting with * continues an expression: not compiled
    ("x = (1\n     * 2)\n", False),
    ("f(a,\n  *b)\n", False),
    ("x = [\n    1,\n]\n*x\n", True),  # closed again: a statement
    ('s = "("\n*x\n', True),  # a bracket in a string does not count
    ("# (\n*x\n", True),  # nor in a comment
    ("if x: *a\n", True),
    ("a; *b\n", True),
    ("d = {1: *a}\n", False),  # inside braces: a parser error, ruff's to report
    ("x = a \\\n    * b\n", True),  # a backslash continuation: compiled, harmless
])
def test_the_gate_tells_statements_from_strings(source: str, compiled: bool) -> None:
    assert compile_gate(source) is compiled
