"""One Python file, one parse: syntax (the real compiler), imports, secrets, AI patterns.

Runs in worker processes, so it imports only the standard library and the light textscan
module. The cheap path: text checks decide whether a file can match any AST rule; a file
that cannot is only compiled (which is the syntax check). A file that can is parsed once into
an AST, the AST is compiled (the compiler's symbol-table/codegen errors: ``await``/``return``
outside a function, ``yield from`` in async code, …) and walked once by :class:`_Visitor`.
"""

from __future__ import annotations

import ast
import bisect
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from flightcheck.lint.textscan import (
    LineIndex,
    Raw,
    credential_name,
    floating_message,
    is_family_latest,
    is_floating_model,
    looks_random,
    scan_credentials,
    suppressions,
)
from flightcheck.secrets import redact_value

_API_VERSION = re.compile(r"_v\d+(?:p\d+)?(?:alpha|beta)?\d*$")


@dataclass(frozen=True)
class Settings:
    """What every worker needs to know about the whole scan (sent once per worker)."""

    enabled: frozenset[str]
    stdlib: frozenset[str]
    local: frozenset[str]  # top-level module names found in the scanned tree
    declared: frozenset[str]  # import names provided by declared distributions (dotted ok)
    floating: frozenset[str]
    namespaces: frozenset[str] = frozenset()  # strict prefixes of declared dotted names
    # False when ruff's parser reads every file and names the ones CPython's compiler must
    # judge (see compile_gate): the compiler then runs only on those and on the gated ones.
    compile_all: bool = True

    @classmethod
    def build(cls, *, enabled: frozenset[str], stdlib: frozenset[str], local: frozenset[str],
              declared: frozenset[str], floating: frozenset[str],
              compile_all: bool = True) -> Settings:
        spaces = {d.rsplit(".", i)[0] for d in declared for i in range(1, d.count(".") + 1)}
        return cls(enabled, stdlib, local, declared, floating, frozenset(spaces), compile_all)

    def fingerprint(self) -> tuple[tuple[str, ...], ...]:
        """The settings in a stable order (a frozenset's order changes between processes)."""
        return tuple(tuple(sorted(f)) for f in (self.enabled, self.stdlib, self.local,
                                                 self.declared, self.floating, self.namespaces))

    def resolves(self, module: str) -> bool:
        top = module.partition(".")[0]
        if top in self.stdlib or top in self.local or top == "__future__":
            return True
        parts = module.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            # google.cloud.run_v2 comes from google-cloud-run: versioned API modules
            if name in self.declared or _API_VERSION.sub("", name) in self.declared:
                return True
        return False

    def namespace(self, module: str) -> bool:
        """A declared dotted name lives below ``module`` (``google`` for ``google.genai``)."""
        return module in self.namespaces


Call = tuple[str, int, int]
FunctionFacts = tuple[bool, "tuple[str, int] | None", list[Call]]


@dataclass
class FileResult:
    rel: str
    raws: list[Raw] = field(default_factory=list)
    suppress: dict[int, set[str]] = field(default_factory=dict)
    lines: int = 0
    skipped: str | None = None
    # A skip that left the file unchecked (it fails the gate under --strict); False for files
    # with nothing to check (binary data under a config-file name).
    unchecked: bool = True
    parsed: bool = False  # whether the AST path ran (for the benchmark's curiosity)
    compiled: bool = False  # whether CPython's compiler (or its parser) judged the file
    # Cross-module facts for FC404: module-level LLM clients defined here (name → kind), and
    # calls in async code on clients defined elsewhere (subject: the client's dotted name).
    exports: dict[str, str] = field(default_factory=dict)
    pending: list[Raw] = field(default_factory=list)
    # The call graph for FC406: qualname → (is async, first blocking call (label, line) or
    # None, calls [(target, line, col)]); a target is dotted-absolute, or ".name" in this module.
    functions: dict[str, FunctionFacts] = field(default_factory=dict)


# --- cheap text gates ----------------------------------------------------------------------

_IMPORT_WORD = re.compile(r"import[ \t]+([^\n#;]*)")
# `from X ` before an `import` word, at a line's start or after `;`/`:` (`if x: from a import b`)
_FROM_PREFIX = re.compile(r"(?:.*[;:])?[ \t]*from[ \t]+([.\w]+)[ \t]+")
_IMPORT_ITEM = re.compile(r"\s*([\w.]+)(?:\s+as\s+\w+)?\s*")
# Literal-first patterns over lower-cased text: re finds a literal prefix far faster than an
# alternation, and this gate runs on every file.
_SECRET_WORDS = ("key", "token", "secret", "passw", "pwd", "passphrase", "credential")
_SECRET_TAIL = (
    r"[\"']?(?:[ \t]*:[ \t]*[\w\[\]|. ]+)?[ \t]*[=:,][ \t]*[rbu]{0,2}[\"'][^\"'\s]{12,}[\"']"
)
_SECRET_HINTS = tuple((w, re.compile(re.escape(w) + _SECRET_TAIL)) for w in _SECRET_WORDS)
_MODEL_NEEDLES = ("-latest", "gpt-", "gemini", "claude", "o1", "o3", "o4")
_AI_TOPS = frozenset(
    {"openai", "anthropic", "groq", "mistralai", "litellm", "together", "cohere", "vertexai",
     "httpx", "requests"}
)
LLM_MODULES: tuple[str, ...] = (
    "openai", "anthropic", "groq", "mistralai", "litellm", "together", "cohere",
    "google.genai", "google.generativeai", "vertexai",
)
_AI_CODES = frozenset({"FC404", "FC501", "FC502", "FC503", "FC601", "FC212", "FC213"})
_AI_NEEDLES = ("genai", "generativeai", "urlopen", "generate_content", "embed_content")
# urlopen matters to FC502 and FC406 only, and tests are exempt from both
_AI_NEEDLES_TEST = tuple(n for n in _AI_NEEDLES if n != "urlopen")
_ASYNC_DEF_LINE = (re.compile(r"\n[ \t]*async[ \t]+def\b"),)
_LLM_METHOD = re.compile(
    r"\.(?:completions|messages|responses|embeddings)\.(?:create|parse|stream)\b|\.chat\.complete"
)


class _Imports(NamedTuple):
    modules: set[str]  # absolute modules named by import statements
    odd: bool  # some import written too oddly to read without parsing
    top: set[str]  # the same, for statements at column 0 (not in a function, class or block)
    top_odd: bool


def _imported_modules(text: str) -> _Imports:
    """What the import statements name (a superset: lines inside strings count too)."""
    found: set[str] = set()
    top: set[str] = set()
    odd = top_odd = False
    for m in _IMPORT_WORD.finditer(text):
        line_start = text.rfind("\n", 0, m.start()) + 1
        prefix = text[line_start : m.start()]
        at_top = prefix[:1] not in (" ", "\t")
        # a statement starts the line, or follows `;` or a one-line block's `:`
        if not prefix or prefix.isspace() or prefix.rstrip()[-1:] in (";", ":"):
            items = m.group(1).strip()
            if not items or items.endswith(("\\", ",", "(")):
                odd = True
                top_odd = top_odd or at_top
                continue
            for item in items.split(","):
                im = _IMPORT_ITEM.fullmatch(item)
                if im is None:
                    odd = True
                    top_odd = top_odd or at_top
                else:
                    found.add(im.group(1))
                    if at_top:
                        top.add(im.group(1))
        else:
            fm = _FROM_PREFIX.fullmatch(prefix)
            if fm is not None and not fm.group(1).startswith("."):
                found.add(fm.group(1))
                if at_top:
                    top.add(fm.group(1))
    return _Imports(found, odd, top, top_odd)


def _secret_hint(text: str) -> bool:
    low = text.lower()
    return any(word in low and pat.search(low) for word, pat in _SECRET_HINTS)


def _model_gate(floating: frozenset[str]) -> tuple[tuple[str, ...], re.Pattern[str]]:
    names = "|".join(re.escape(n) for n in sorted(floating, key=len, reverse=True))
    extra = tuple(n for n in floating if not any(nd in n for nd in _MODEL_NEEDLES))
    return _MODEL_NEEDLES + extra, re.compile(r"-latest[\"']|[\"'/](?:" + names + r")[\"']")


# --- the per-file entry point ----------------------------------------------------------------


def decode(data: bytes) -> str | None:
    """UTF-8 (BOM ok), else the PEP 263 coding declaration; None when neither decodes."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    head = data[:400].split(b"\n", 2)[:2]
    for line in head:
        m = re.match(rb"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)", line)
        if m:
            try:
                return data.decode(m.group(1).decode("ascii"))
            except (LookupError, UnicodeDecodeError):
                return None
    return None


_COOKIE = re.compile(rb"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)")


def undecodable_python(data: bytes) -> Raw | None:
    """FC101 for bytes CPython refuses before parsing: NUL bytes, an unknown or wrong PEP 263
    encoding, non-UTF-8 without a declaration (what ``python FILE`` reports). None: decodable."""
    nul = data.find(b"\0")
    if nul != -1:
        line, col = _byte_position(data, nul)
        return Raw("FC101", line, col, "SyntaxError: source code cannot contain null bytes")
    cookie: str | None = None
    cookie_line = 1
    for i, head in enumerate(data[:400].split(b"\n", 2)[:2]):
        m = _COOKIE.match(head)
        if m:
            cookie, cookie_line = m.group(1).decode("ascii"), i + 1
            break
        if head.strip() and not head.lstrip().startswith(b"#"):
            break  # the declaration must be on line 1, or line 2 after a comment line
    if cookie is None:
        try:
            data.decode("utf-8-sig")
            return None
        except UnicodeDecodeError as exc:
            line, col = _byte_position(data, exc.start)
            return Raw("FC101", line, col, f"SyntaxError: Non-UTF-8 code starting with "
                       f"'\\x{data[exc.start]:02x}' on line {line}, but no encoding declared "
                       "(PEP 263)")
    try:
        data.decode(cookie)
    except LookupError:
        return Raw("FC101", cookie_line, 1, f"SyntaxError: unknown encoding: {cookie}")
    except UnicodeDecodeError as exc:
        line, col = _byte_position(data, exc.start)
        return Raw("FC101", line, col, f"SyntaxError: (unicode error) {exc}")
    return None


def _byte_position(data: bytes, offset: int) -> tuple[int, int]:
    return data.count(b"\n", 0, offset) + 1, offset - (data.rfind(b"\n", 0, offset) + 1) + 1


def _too_deep(exc: BaseException, text: str) -> Raw:
    """CPython's compiler gives up on deeply nested code (``a+a+…`` × 3000, ``not`` × 100k):
    the service dies on import just the same. The longest line is the likely culprit."""
    lines = text.splitlines() or [""]
    longest = max(range(len(lines)), key=lambda i: len(lines[i]))
    what = str(exc) or "the parser ran out of memory"
    return Raw("FC101", longest + 1, 1, f"{type(exc).__name__}: {what} (nested too deeply for "
               "CPython's compiler)")


class Scanner:
    """Checks Python files with fixed settings; one per worker process."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self._model_needles, self._model_re = _model_gate(settings.floating)
        on = settings.enabled
        self._want_imports = "FC201" in on
        self._want_generic = "FC304" in on
        self._want_cred = bool({"FC301", "FC302", "FC303"} & on)
        self._want_ai = bool(_AI_CODES & on)
        self._want_model = "FC701" in on
        self._want_graph = "FC406" in on

    def scan(self, rel: str, text: str, *, is_test: bool) -> FileResult:
        res = FileResult(rel)
        index = LineIndex(text)
        res.lines = index.lines
        res.suppress = suppressions(text, index)
        if self._want_cred:
            res.raws.extend(
                r._replace(severity="warning") if is_test and r.code == "FC303" else r
                for r in scan_credentials(text, index)
            )

        imported: set[str] = set()
        need_imports = need_ai = need_exprs = False
        if self._want_imports or self._want_ai:
            found = _imported_modules(text)
            imported = found.modules
            # a test's imports count at module level only (see _Visitor._check_import)
            judged, odd = (found.top, found.top_odd) if is_test else (imported, found.odd)
            need_imports = self._want_imports and (
                odd or any(not self.s.resolves(m) or self.s.namespace(m) for m in judged)
            )
        if self._want_ai:
            tops = {m.partition(".")[0] for m in imported}
            need_ai = (
                bool(tops & _AI_TOPS)
                or any(n in text for n in (_AI_NEEDLES_TEST if is_test else _AI_NEEDLES))
                or _LLM_METHOD.search(text) is not None  # a client imported from elsewhere
            )
        # The call graph starts in async code; the modules it calls into are read on demand
        # (callgraph.py), so only files with an ``async def`` pay for it here. Tests are exempt
        # from FC406, FC304 and FC701 (rules.TEST_EXEMPT): a test file does not parse for them
        # (a module that async code calls into is still read on demand, test or not).
        # (in code: pydoc's topics, 755 kB of documentation, shows ``async def`` in strings)
        need_graph = (self._want_graph and not is_test and "async def" in text
                      and _in_code("\n" + text, _ASYNC_DEF_LINE))
        need_exprs = (
            need_ai
            or need_graph
            or (self._want_generic and not is_test and _secret_hint(text))
            or (
                self._want_model
                and not is_test
                and any(n in text for n in self._model_needles)
                and self._model_re.search(text) is not None
            )
        )
        need_ast = need_imports or need_exprs

        judge = self.s.compile_all or compile_gate(text)
        if not need_ast:
            if judge:
                res.compiled = True
                raw = compile_check(rel, text)
                if raw is not None:
                    res.raws.append(raw)
            return res
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarnings are not our findings
            try:
                tree = ast.parse(text, rel)
                res.parsed = True
                if judge:
                    res.compiled = True
                    try:
                        compile(tree, rel, "exec", dont_inherit=True)
                    except SyntaxError as exc:
                        res.raws.append(_syntax(exc))
            except SyntaxError as exc:
                res.compiled = True
                res.raws.append(_syntax(exc))
                return res
            except ValueError as exc:  # null bytes on some versions; decoding caught the rest
                res.compiled = True
                res.raws.append(Raw("FC101", 1, 1, f"SyntaxError: {exc}"))
                return res
            except (MemoryError, RecursionError) as exc:
                res.compiled = True
                res.raws.append(_too_deep(exc, text))
                return res
        try:
            visitor = _Visitor(self.s, is_test=is_test, expressions=need_exprs,
                               graph=need_graph)
            visitor.visit(tree, None)
            visitor.finish()
        except RecursionError:
            res.skipped = "nested too deeply for the AST rules (syntax was checked)"
            return res
        res.exports, res.pending = visitor.exports, visitor.pending
        res.functions = {
            q: (f.is_async, f.blocking, f.calls)
            for q, f in visitor.functions.items()
            if f.calls or f.blocking
        }
        taken = {r.line for r in res.raws if r.code in ("FC301", "FC302")}
        res.raws.extend(
            r for r in visitor.raws
            if r.code in self.s.enabled and not (r.code == "FC304" and r.line in taken)
        )
        return res


def function_facts(settings: Settings, rel: str, text: str) -> dict[str, FunctionFacts]:
    """The call-graph facts of one module, for FC406 (read when async code calls into it)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(text, rel)
        visitor = _Visitor(settings, is_test=False, expressions=True, graph=True)
        visitor.visit(tree, None)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return {}
    return {q: (f.is_async, f.blocking, f.calls) for q, f in visitor.functions.items()
            if f.calls or f.blocking}


def compile_check(rel: str, text: str) -> Raw | None:
    """CPython's compiler on one file: FC101 for what it rejects (parser, symbol table, code
    generation), None when the file compiles."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SyntaxWarnings are not our findings
        try:
            compile(text, rel, "exec", dont_inherit=True)
        except SyntaxError as exc:
            return _syntax(exc)
        except ValueError as exc:  # null bytes on some versions; decoding caught the rest
            return Raw("FC101", 1, 1, f"SyntaxError: {exc}")
        except (MemoryError, RecursionError) as exc:
            return _too_deep(exc, text)
    return None


# What CPython's compiler rejects and ruff (with the engine's RUFF_COMPILE_CODES) does not
# flag, found by running both over CPython's own corpus of invalid code
# (tests/lint/test_compile_selection.py): an annotated or late ``nonlocal``, ``__debug__`` as a
# keyword, a ``*x`` that starts a statement (outside brackets, strings and comments), ``{*x}``
# in an f-string, ``return x`` in an async generator, tabs mixed into
# indentation, format specs nested three deep, 20 nested blocks. A file with one of these goes to the compiler whatever ruff says; a pattern
# here only widens what is compiled, never narrows it.
_NONLOCAL = (re.compile(r"nonlocal\b"),)  # a literal first (fast); where it stands: checked after
_DEBUG_KEYWORD = re.compile(r"__debug__[ \t]*=(?!=)")
_FSTRING_STAR = re.compile(r"[fF][rR]?(?:'|\")[^\n]*?\{\*|[fF][rR]?(?:'\'\'|\"\"\")")
_TAB_INDENT = re.compile(r"^ *\t", re.MULTILINE)
_DEEP_SPEC = re.compile(r"\{[^{}\n]*:\{[^{}\n]*:\{")
_ASYNC_DEF = re.compile(r"async[ \t]+def\b")
_VALUE_START = frozenset(" \t([{'\"")  # what may follow ``return`` before its value
_DEEP_BLOCK = re.compile(r"\n[ \t]{19,}(?:async[ \t]+)?(?:for|while|try|with)\b")
_BLOCK = re.compile(r"\n([ \t]*)(?:async[ \t]+)?(?:for|while|try|with)\b")
_MAX_BLOCKS = 20  # CPython's CO_MAXBLOCKS: loops, try and with statements nested in one scope
# Strings (any prefix: none changes where one ends) and comments, to tell a ``*`` or
# ``nonlocal`` that starts a statement from one in a docstring's bullet list.
_STRING_OR_COMMENT = re.compile(
    r"#[^\n]*"
    r"|'''[^'\\]*(?:(?:\\[\s\S]|'(?!''))[^'\\]*)*'''"
    r'|"""[^"\\]*(?:(?:\\[\s\S]|"(?!""))[^"\\]*)*"""'
    r"|'[^'\\\n]*(?:\\[\s\S][^'\\\n]*)*'"
    r'|"[^"\\\n]*(?:\\[\s\S][^"\\\n]*)*"'
)


def _in_code(text: str, patterns: tuple[re.Pattern[str], ...]) -> bool:
    """Whether a pattern matches with its last character outside strings and comments (an
    unterminated string counts as code: the compiler is asked)."""
    return next(_code_hits(text, patterns), None) is not None


def _code_hits(text: str, patterns: tuple[re.Pattern[str], ...]) -> Iterator[re.Match[str]]:
    """The matches whose last character is outside strings and comments."""
    hits = [m for p in patterns for m in p.finditer(text)]
    if not hits:
        return
    spans = [(m.start(), m.end()) for m in _STRING_OR_COMMENT.finditer(text)]
    starts = [a for a, _ in spans]
    for m in hits:
        pos = m.end() - 1
        i = bisect.bisect_right(starts, pos) - 1
        if i < 0 or pos >= spans[i][1]:
            yield m


# one literal first character each: a character class first is ten times slower to search
_STAR_STARTS = tuple(re.compile(c + r"[ \t]*\*(?![*=])") for c in ("\n", ":", ";"))
_OPENERS = ("(", "[", "{")
_CLOSERS = (")", "]", "}")


def _star_starts(text: str) -> list[int]:
    """Where a ``*`` may start a statement: first on a line, or after ``;`` or ``:``."""
    return sorted(m.start() for p in _STAR_STARTS for m in p.finditer(text))


def _statement_star(text: str) -> bool:
    """A ``*`` that starts a statement (``*a``, ``*a = b``, ``if x: *a``, ``a; *b``): the
    compiler rejects those and ruff's parser does not. Inside brackets a line that starts with
    ``*`` continues an expression (multiplication, an unpacked argument) and a starred
    expression the grammar forbids there is a parser error ruff reports, so only hits at
    bracket depth 0 count, with each string and comment reduced to one character first (their
    bullets and brackets do not count). A backslash continuation still counts (compiled: this
    may only say yes too often)."""
    if not any(p.search(text) for p in _STAR_STARTS):
        return False
    flat = _STRING_OR_COMMENT.sub("_", text)
    depth, at = 0, 0
    for pos in _star_starts(flat):
        part = flat[at:pos]
        depth += sum(part.count(c) for c in _OPENERS) - sum(part.count(c) for c in _CLOSERS)
        at = pos
        if depth <= 0:
            return True
    return False


_NONLOCAL_NAMES = re.compile(r"\s*(\w+(?:[ \t]*,[ \t]*\w+)*)")
_SCOPE = re.compile(r"^([ \t]*)(?:async[ \t]+)?(?:def|class)\b", re.MULTILINE)


def _nonlocal_misuse(text: str) -> bool:
    """A ``nonlocal`` statement whose names appear in its scope before it (used or assigned
    before the declaration) or are annotated after it: the compiler's errors ruff does not
    mirror. Any doubt (no enclosing ``def`` found, a name in a comment or string) says yes."""
    for m in _code_hits(text, _NONLOCAL):
        before = m.start() - 1
        while before >= 0 and text[before] in " \t":
            before -= 1
        if before >= 0 and text[before] not in "\n;:":
            continue  # not where a statement starts: part of a longer word or an expression
        names = _NONLOCAL_NAMES.match(text, m.end())
        line_start = text.rfind("\n", 0, m.start()) + 1
        lead = text[line_start:m.start()]
        scope = _enclosing(text, line_start, len(lead) - len(lead.lstrip(" \t")))
        if names is None or scope is None:
            return True
        words = r"\b(?:" + "|".join(re.split(r"[ \t]*,[ \t]*", names.group(1))) + r")\b"
        if re.compile(words).search(text, scope.end(), m.start()) is not None:
            return True
        # the scope's body: up to the next opener at the scope's indentation or less
        level = len(scope.group(1))
        ender = re.compile(rf"\n[ \t]{{0,{level}}}(?:async[ \t]+)?(?:def|class)\b")
        after = ender.search(text, names.end())
        end = after.start() if after is not None else len(text)
        if re.compile(words + r"[ \t]*:(?!=)").search(text, names.end(), end) is not None:
            return True
    return False


def _enclosing(text: str, line_start: int, indent: int) -> re.Match[str] | None:
    """The ``def``/``class`` that opens the scope of the line at ``line_start``: one on that
    line (``def f(): nonlocal x``), else the nearest above at a lower indentation."""
    pos = line_start
    while True:
        head = _SCOPE.match(text, pos)
        if head is not None and (pos == line_start or len(head.group(1)) < indent):
            return head
        if pos == 0:
            return None
        pos = text.rfind("\n", 0, pos - 1) + 1


def compile_gate(text: str) -> bool:
    """Whether ``text`` goes to CPython's compiler even when ruff flagged nothing.
    Substring tests first: this runs on every file."""
    if "nonlocal" in text and _nonlocal_misuse(text):
        return True
    if "__debug__" in text and _DEBUG_KEYWORD.search(text) is not None:
        return True
    if text.lstrip().startswith("*") or ("*" in text and _statement_star(text)):
        return True
    if "{*" in text and _FSTRING_STAR.search(text) is not None:
        return True
    if "\t" in text and _TAB_INDENT.search(text) is not None:
        return True
    if ":{" in text and _DEEP_SPEC.search(text) is not None:
        return True
    if "yield" in text and "async" in text and _async_generator_returns(text):
        return True
    # 20 nested blocks sit at 20 distinct indentations, the deepest at column 19 or more
    return (_DEEP_BLOCK.search(text) is not None
            and len(set(_BLOCK.findall(text))) >= _MAX_BLOCKS - 1)  # the first may open line 1


def _async_generator_returns(text: str) -> bool:
    """An ``async def`` with both ``yield`` and ``return <value>`` before the next definition
    at its level or above (nested ones count too: this may only say yes too often)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        head = line.lstrip()
        if not head.startswith("async") or not _ASYNC_DEF.match(head):
            continue
        indent = len(line) - len(head)
        yields = returns = False
        for body in lines[i + 1:]:
            stmt = body.lstrip()
            if len(body) - len(stmt) <= indent and stmt.startswith(("def ", "class ", "async ")):
                break
            yields = yields or "yield" in stmt
            returns = returns or (stmt.startswith("return") and stmt[6:7] in _VALUE_START
                                  and stmt[6:].strip() != "")
            if yields and returns:
                return True
    return False


def _syntax(exc: SyntaxError) -> Raw:
    kind = type(exc).__name__
    line = exc.lineno or 1
    col = exc.offset or 1
    return Raw("FC101", line, max(col, 1), f"{kind}: {exc.msg}")


# --- the AST walk ----------------------------------------------------------------------------

_LLM_SYNC = frozenset(
    {"openai.OpenAI", "openai.AzureOpenAI", "anthropic.Anthropic", "anthropic.AnthropicBedrock",
     "anthropic.AnthropicVertex", "groq.Groq"}
)
_LLM_ASYNC = frozenset(
    {"openai.AsyncOpenAI", "openai.AsyncAzureOpenAI", "anthropic.AsyncAnthropic",
     "anthropic.AsyncAnthropicBedrock", "anthropic.AsyncAnthropicVertex", "groq.AsyncGroq"}
)
_GENAI_CLIENT = frozenset({"google.genai.Client", "google.genai.client.Client"})
_HTTPX_CLIENTS = {"httpx.Client": "httpx-sync", "httpx.AsyncClient": "httpx-async"}
_HTTPX_FUNCS = frozenset(
    f"httpx.{m}" for m in ("get", "post", "put", "patch", "delete", "head", "options", "request",
                           "stream")
)
_REQUESTS_SESSION = frozenset({"requests.Session", "requests.session", "requests.sessions.Session"})
_HTTP_METHODS = frozenset(
    {"get", "post", "put", "patch", "delete", "head", "options", "request", "stream", "send"}
)
_URLOPEN = frozenset({"urllib.request.urlopen"})
_LITELLM = {"litellm.completion": "sync", "litellm.acompletion": "async",
            "litellm.embedding": "sync", "litellm.aembedding": "async"}
# Method paths of LLM API calls, as trailing attribute names.
_LLM_SUFFIXES: tuple[tuple[str, ...], ...] = (
    ("completions", "create"), ("completions", "parse"), ("completions", "stream"),
    ("responses", "create"), ("responses", "parse"), ("responses", "stream"),
    ("embeddings", "create"), ("messages", "create"), ("messages", "stream"),
    ("models", "generate_content"), ("models", "generate_content_stream"),
    ("models", "embed_content"), ("chat", "complete"), ("chat", "complete_async"),
    ("chat", "stream_async"), ("ChatCompletion", "create"), ("ChatCompletion", "acreate"),
    ("Completion", "create"), ("Embedding", "create"),
    ("generate_content",), ("generate_content_async",),
)
_API_WORDS = frozenset({"chat", "beta", "aio", "models", "messages", "completions", "responses",
                        "embeddings"})
_IMPORT_ERRORS = frozenset({"ImportError", "ModuleNotFoundError", "Exception", "BaseException"})
# Handlers that catch only these do not guard an API call.
_UNRELATED = frozenset(
    {"KeyError", "ValueError", "TypeError", "IndexError", "AttributeError", "JSONDecodeError",
     "StopIteration", "StopAsyncIteration", "ImportError", "ModuleNotFoundError", "NameError",
     "UnicodeError", "UnicodeDecodeError", "ZeroDivisionError", "AssertionError", "LookupError",
     "ArithmeticError", "NotImplementedError", "ValidationError"}
)
_ENV_GETTERS = frozenset({"os.environ.get", "os.getenv", "os.environ.setdefault", "os.environ.pop"})


_PLATFORM_TESTS = frozenset({"sys.platform", "os.name", "sys.version_info", "platform.system",
                             "sys.implementation"})
# Namespace packages shared by many distributions: the dotted name says which one is missing.
NAMESPACE_ROOTS = frozenset({"google", "azure", "opentelemetry", "jaraco", "zope", "backports"})
_GENAI_METHODS = frozenset({"generate_content", "generate_content_stream", "embed_content"})

Mode = str  # "sync" | "async" | "" (decide by the receiver)


# openai 0.x module-level API objects; in openai>=1 they raise APIRemovedInV1 when used.
_OPENAI_V0 = frozenset(
    {"ChatCompletion", "Completion", "Embedding", "Edit", "Image", "Moderation", "Audio",
     "FineTune", "FineTuningJob", "Engine", "File", "Model", "Customer", "Deployment",
     "ErrorObject"}
)
_DEPRECATED_SDKS: tuple[tuple[str, str], ...] = (
    ("google.generativeai", "the google-generativeai SDK is deprecated and its support ended "
     "(Nov 2025): no fixes, no new models; Google's SDK is google-genai (`from google import "
     "genai`)"),
    ("vertexai.generative_models", "the Vertex AI SDK's generative module is deprecated (June "
     "2025) and removed from google-cloud-aiplatform releases after June 2026: an unpinned "
     "install stops importing it; use google-genai"),
    ("vertexai.preview.generative_models", "the Vertex AI SDK's generative module is deprecated "
     "(June 2025) and removed after June 2026; use google-genai"),
)

# Calls that block the calling thread (FC406 follows them through the project's functions).
_BLOCKING = frozenset(
    {f"requests.{m}" for m in ("get", "post", "put", "patch", "delete", "head", "options",
                               "request")}
    | _HTTPX_FUNCS
    | _URLOPEN
    | {"time.sleep", "subprocess.run", "subprocess.call", "subprocess.check_call",
       "subprocess.check_output", "os.system", "litellm.completion", "litellm.embedding"}
)
_BLOCKING_KINDS = frozenset({"requests-session", "httpx-sync", "llm-sync"})


@dataclass
class _Function:
    is_async: bool
    blocking: tuple[str, int] | None = None
    calls: list[Call] = field(default_factory=list)


@dataclass
class _Frame:
    is_async: bool
    retry: bool = False
    guarded: int = 0  # enclosing try blocks (this function) whose handlers can catch API errors
    import_guard: int = 0  # enclosing try blocks that catch ImportError


@dataclass
class _Call:
    node: ast.Call
    label: str
    in_async: bool
    guarded: bool
    receiver: str | None
    mode: Mode
    sync_use: bool  # result used on the spot (attribute, subscript, for, with): not a coroutine
    awaited: bool


def _names(expr: ast.expr | None) -> list[str]:
    """Exception class names an ``except`` clause catches (last dotted part)."""
    if expr is None:
        return ["*"]
    if isinstance(expr, ast.Tuple):
        return [n for e in expr.elts for n in _names(e)]
    if isinstance(expr, ast.Attribute):
        return [expr.attr]
    if isinstance(expr, ast.Name):
        return [expr.id]
    return ["?"]


def dotted_name(expr: ast.expr) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, None for anything else."""
    parts: list[str] = []
    while isinstance(expr, ast.Attribute):
        parts.append(expr.attr)
        expr = expr.value
    if isinstance(expr, ast.Name):
        parts.append(expr.id)
        return ".".join(reversed(parts))
    return None


def _attr_chain(expr: ast.expr) -> tuple[tuple[str, ...], ast.expr]:
    """``a.b.c`` → (("b", "c"), the expression ``a``): the attribute names and what they hang on."""
    attrs: list[str] = []
    while isinstance(expr, ast.Attribute):
        attrs.append(expr.attr)
        expr = expr.value
    return tuple(reversed(attrs)), expr


def _client_path(chain: tuple[str, ...], sfx: tuple[str, ...]) -> list[str]:
    """The attributes before an LLM API suffix, without the API's own words (``chat``,
    ``completions``...): what leads to the client object."""
    head = list(chain[: len(chain) - len(sfx)])
    while head and head[-1] in _API_WORDS:
        head.pop()
    return head


def keyword_arg(call: ast.Call, name: str) -> ast.expr | None:
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def _has_kw(call: ast.Call, name: str) -> bool:
    return any(k.arg == name for k in call.keywords)


def _splat(call: ast.Call) -> bool:
    """``**kwargs``/``*args`` present: the call may pass anything, so assume it does."""
    return any(k.arg is None for k in call.keywords) or any(
        isinstance(a, ast.Starred) for a in call.args
    )


def _is_none(expr: ast.expr | None) -> bool:
    return isinstance(expr, ast.Constant) and expr.value is None


def _str(expr: ast.expr | None) -> str | None:
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return expr.value
    return None


def _model_name(name: str) -> bool:
    return "model" in name.lower()


_SUFFIXES_BY_LAST: dict[str, list[tuple[str, ...]]] = {}
for _sfx in _LLM_SUFFIXES:
    _SUFFIXES_BY_LAST.setdefault(_sfx[-1], []).append(_sfx)


def _suffix(chain: tuple[str, ...]) -> tuple[str, ...] | None:
    for sfx in _SUFFIXES_BY_LAST.get(chain[-1], ()):
        if chain[-len(sfx) :] == sfx:
            return sfx
    return None


_LEAVES = (ast.expr_context, ast.operator, ast.unaryop, ast.cmpop, ast.boolop, ast.Name)
_SYNC_PARENTS = (ast.Attribute, ast.Subscript, ast.For, ast.comprehension, ast.With)


class _Visitor:
    """One walk over a module's AST, collecting raw findings; call :meth:`finish` after."""

    def __init__(self, settings: Settings, *, is_test: bool, expressions: bool = True,
                 graph: bool = False) -> None:
        self.s = settings
        self.graph = graph
        self.scope: list[str] = []  # class and function names around the current node
        self.functions: dict[str, _Function] = {}
        self.current: list[_Function | None] = [None]  # None: module level or a lambda
        self.expressions = expressions  # False: only import statements matter in this file
        self.raws: list[Raw] = []
        self.aliases: dict[str, str] = {}  # local name → qualified name
        self.frames: list[_Frame] = [_Frame(is_async=False)]
        self.type_checking = 0
        self.kinds: dict[str, str] = {}  # receiver key → client kind ("" when ambiguous)
        self.calls: list[_Call] = []
        self.session_calls: list[tuple[ast.Call, str, str]] = []
        self.llm_ctors: list[tuple[ast.Call, str]] = []
        self.httpx_ctors: list[tuple[ast.Call, str, str]] = []  # (call, bound name, class)
        self.exports: dict[str, str] = {}
        self.pending: list[Raw] = []
        self.is_test = is_test

    # -- plumbing --

    def visit(self, node: ast.AST, parent: ast.AST | None) -> None:
        if not self.expressions and isinstance(node, ast.expr):
            return
        method = _DISPATCH.get(type(node))
        if method is not None:
            method(self, node, parent)
        else:
            self.children(node)

    def children(self, node: ast.AST) -> None:
        # ast.iter_child_nodes without the generator, and without the Load/Store leaves.
        for name in node._fields:
            value = getattr(node, name, None)
            if isinstance(value, list):
                for item in value:  # pyright: ignore[reportUnknownVariableType]
                    if isinstance(item, ast.AST) and not isinstance(item, _LEAVES):
                        self.visit(item, node)
            elif isinstance(value, ast.AST) and not isinstance(value, _LEAVES):
                self.visit(value, node)

    def body(self, stmts: Iterable[ast.AST], parent: ast.AST) -> None:
        for stmt in stmts:
            self.visit(stmt, parent)

    def add(self, code: str, node: ast.AST, message: str, *, severity: str | None = None,
            subject: str | None = None) -> None:
        line = getattr(node, "lineno", 1)
        col = getattr(node, "col_offset", 0) + 1
        self.raws.append(Raw(code, line, col, message, severity, subject))

    def qual(self, expr: ast.expr) -> str | None:
        """The imported thing an expression names (``OpenAI`` → ``openai.OpenAI``), or None."""
        dotted = dotted_name(expr)
        if dotted is None:
            return None
        head, _, rest = dotted.partition(".")
        base = self.aliases.get(head)
        if base is None:
            return None
        return f"{base}.{rest}" if rest else base

    # -- scopes --

    def v_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef, parent: ast.AST | None) -> None:
        self.body(node.decorator_list, node)
        if self.expressions:
            self._arguments(node.args, node)
        retry = any(self._is_retry(d) for d in node.decorator_list)
        is_async = isinstance(node, ast.AsyncFunctionDef)
        self.frames.append(_Frame(is_async=is_async, retry=retry))
        self.scope.append(node.name)
        fn = _Function(is_async)
        if self.graph:
            self.functions.setdefault(".".join(self.scope), fn)
        self.current.append(fn)
        self.body(node.body, node)
        self.current.pop()
        self.scope.pop()
        self.frames.pop()

    def v_class(self, node: ast.ClassDef, parent: ast.AST | None) -> None:
        self.scope.append(node.name)
        self.current.append(None)
        self.children(node)
        self.current.pop()
        self.scope.pop()

    def v_lambda(self, node: ast.Lambda, parent: ast.AST | None) -> None:
        self._arguments(node.args, node)
        self.frames.append(_Frame(is_async=False))
        self.current.append(None)  # `to_thread(lambda: fetch())` runs elsewhere
        self.visit(node.body, node)
        self.current.pop()
        self.frames.pop()

    def _arguments(self, args: ast.arguments, owner: ast.AST) -> None:
        positional = [*args.posonlyargs, *args.args]
        pairs = list(zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True))
        pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None]
        for arg, default in pairs:
            self._named_value(arg.arg, default)
            self.visit(default, owner)
        for arg in (*positional, *args.kwonlyargs):
            if arg.annotation is not None:
                self._set_kind(arg.arg, self._kind_of(self.qual(arg.annotation)))

    @staticmethod
    def _is_retry(dec: ast.expr) -> bool:
        name = (dotted_name(dec.func if isinstance(dec, ast.Call) else dec) or "").lower()
        return "retry" in name or name.endswith("on_exception")

    def v_try(self, node: ast.Try | ast.TryStar, parent: ast.AST | None) -> None:
        for handler in node.handlers:
            for typ in (handler.type.elts if isinstance(handler.type, ast.Tuple)
                        else [handler.type] if handler.type is not None else []):
                q = self.qual(typ)
                if q is not None and q.startswith("openai.error."):
                    self.add("FC212", typ, f"{q} does not exist in openai 1.0 and later: the "
                             "except clause itself raises AttributeError when an error occurs",
                             subject="openai")
        caught = [n for h in node.handlers for n in _names(h.type)]
        guards = any(n not in _UNRELATED for n in caught)
        imports = any(n in _IMPORT_ERRORS or n == "*" for n in caught)
        frame = self.frames[-1]
        frame.guarded += guards
        frame.import_guard += imports
        self.body(node.body, node)
        frame.guarded -= guards
        frame.import_guard -= imports
        self.body(node.handlers, node)
        self.body(node.orelse, node)
        self.body(node.finalbody, node)

    def v_if(self, node: ast.If, parent: ast.AST | None) -> None:
        self.visit(node.test, node)
        type_checking = (dotted_name(node.test) or "").endswith("TYPE_CHECKING")
        # Imports that depend on the platform or Python version: which branch runs in the
        # image is not known here, so neither branch's imports are judged.
        platform = not type_checking and any(
            (dotted_name(n) or "") in _PLATFORM_TESTS
            for n in ast.walk(node.test)
            if isinstance(n, ast.Attribute)
        )
        self.type_checking += type_checking + platform
        self.body(node.body, node)
        self.type_checking -= type_checking
        self.body(node.orelse, node)
        self.type_checking -= platform

    # -- imports --

    def v_import(self, node: ast.Import, parent: ast.AST | None) -> None:
        for alias in node.names:
            if alias.asname:
                self.aliases[alias.asname] = alias.name
            else:
                top = alias.name.partition(".")[0]
                self.aliases[top] = top
            self._check_import(node, alias.name, (), parent)
            self._sdk_import(node, alias.name)

    def v_import_from(self, node: ast.ImportFrom, parent: ast.AST | None) -> None:
        if node.level or not node.module:
            return
        for alias in node.names:
            self.aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            self._sdk_import(node, f"{node.module}.{alias.name}")
        self._check_import(node, node.module, tuple(a.name for a in node.names), parent)

    def _sdk_import(self, node: ast.stmt, module: str) -> None:
        """FC212/FC213: provider modules that are gone or at their end of life."""
        if module == "openai.error" or module.startswith("openai.error."):
            self.add("FC212", node, "openai.error was removed in openai 1.0 (its exceptions are "
                     "openai.APIError, openai.RateLimitError, …): the import fails",
                     subject="openai")
            return
        for old, why in _DEPRECATED_SDKS:
            if module == old or module.startswith(old + "."):
                self.add("FC213", node, f"{old}: {why}")
                return

    def _check_import(self, node: ast.stmt, module: str, names: tuple[str, ...],
                      parent: ast.AST | None) -> None:
        if self.type_checking or self.frames[-1].import_guard or "FC201" not in self.s.enabled:
            return
        # In a test, one inside a function or block fails that test, which the test run
        # reports itself (and modules the test writes at run time look unresolved); one at
        # module level breaks the whole file's collection.
        if self.is_test and not isinstance(parent, ast.Module):
            return
        s = self.s
        if s.resolves(module):
            return
        if names and all(n != "*" and s.resolves(f"{module}.{n}") for n in names):
            return
        if names and names[0] != "*" and (module in NAMESPACE_ROOTS or s.namespace(module)):
            module = f"{module}.{names[0]}"  # `from google import genai` is about google.genai
        self.add(
            "FC201",
            node,
            f"import of {module!r}: no declared dependency, local module or stdlib module provides it",
            severity="warning" if self.is_test else None,
            subject=module,
        )

    # -- values bound to names: secrets and model names --

    def v_assign(self, node: ast.Assign | ast.AnnAssign, parent: ast.AST | None) -> None:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        value = node.value
        if value is not None and self.expressions:
            for target in targets:
                name = self._target_name(target)
                if name is not None:
                    self._named_value(name, value)
                key = dotted_name(target)
                if key is not None and isinstance(value, ast.Call):
                    self._bind(key, value)
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            self._set_kind(node.target.id, self._kind_of(self.qual(node.annotation)))
        self.children(node)

    @staticmethod
    def _target_name(target: ast.expr) -> str | None:
        if isinstance(target, ast.Name):
            return target.id
        if isinstance(target, ast.Attribute):
            return target.attr
        if isinstance(target, ast.Subscript):
            return _str(target.slice)
        return None

    def _named_value(self, name: str, value: ast.expr) -> None:
        """``name = value`` in any spelling: credential names with random values (FC304),
        model names with floating aliases (FC701)."""
        text = _str(value)
        if text is None and isinstance(value, ast.Call):
            # pydantic Field("default"), SecretStr("..."), os.getenv("X", "default")
            default = keyword_arg(value, "default")
            cands = [t for t in (_str(a) for a in value.args[:2]) if t is not None]
            text = _str(default) if default is not None else (cands[-1] if cands else None)
        if text is None:
            return
        if credential_name(name):
            if looks_random(text):
                self.add("FC304", value, f"hard-coded secret in {name}: {redact_value(text)}")
        elif _model_name(name) and is_floating_model(text, self.s.floating):
            self.add("FC701", value, floating_message(text))

    def v_dict(self, node: ast.Dict, parent: ast.AST | None) -> None:
        for key, value in zip(node.keys, node.values, strict=True):
            name = _str(key)
            if name is not None:
                self._named_value(name, value)
        self.children(node)

    def v_constant(self, node: ast.Constant, parent: ast.AST | None) -> None:
        value = node.value
        if isinstance(value, str) and "-latest" in value and is_family_latest(value):
            self.add("FC701", node, floating_message(value))

    # -- calls --

    def v_with(self, node: ast.With | ast.AsyncWith, parent: ast.AST | None) -> None:
        for item in node.items:
            self.visit(item.context_expr, node)
            if item.optional_vars is not None:
                key = dotted_name(item.optional_vars)
                if key is not None and isinstance(item.context_expr, ast.Call):
                    self._bind(key, item.context_expr)
                self.visit(item.optional_vars, node)
        self.body(node.body, node)

    def v_call(self, node: ast.Call, parent: ast.AST | None) -> None:
        q = self.qual(node.func)
        fn = self.current[-1]
        if fn is not None and self.graph:
            self._graph_call(fn, node, q)
        if q is not None:
            self._known_call(node, q, parent)
        if isinstance(node.func, ast.Attribute):
            self._method_call(node, node.func, parent, q)
        for kw in node.keywords:
            if kw.arg is not None:
                self._named_value(kw.arg, kw.value)
        self.children(node)

    def _graph_call(self, fn: _Function, node: ast.Call, q: str | None) -> None:
        """Record the call for FC406: what it blocks on, or which project function it calls."""
        if not fn.is_async and fn.blocking is None:
            label = self._blocking_label(node, q)
            if label is not None:
                fn.blocking = (label, node.lineno)
                return
        func = node.func
        if q is not None:
            fn.calls.append((q, node.lineno, node.col_offset + 1))
        elif isinstance(func, ast.Name):
            fn.calls.append(("." + func.id, node.lineno, node.col_offset + 1))
        elif (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
              and func.value.id == "self" and len(self.scope) >= 2):
            cls = ".".join(self.scope[:-1])  # the method's class
            fn.calls.append((f".{cls}.{func.attr}", node.lineno, node.col_offset + 1))

    def _blocking_label(self, node: ast.Call, q: str | None) -> str | None:
        if q is not None and q in _BLOCKING:
            return q
        func = node.func
        if not isinstance(func, ast.Attribute):
            return None
        chain, base = _attr_chain(func)
        sfx = _suffix(chain)
        if sfx is not None:  # an LLM API call: client.chat.completions.create → client
            head = _client_path(chain, sfx)
        elif chain[-1] in _HTTP_METHODS:  # session.get, client.post
            head = list(chain[:-1])
        else:
            return None
        if "aio" in chain or chain[-1].endswith(("_async", "acreate")):
            return None
        if self._kind(self._receiver(base, head)) in _BLOCKING_KINDS:
            return dotted_name(func) or ".".join(chain)
        return None

    def _known_call(self, node: ast.Call, q: str, parent: ast.AST | None) -> None:
        head, _, rest = q.partition(".")
        if head == "openai" and rest.partition(".")[0] in _OPENAI_V0:
            self.add("FC212", node, f"{q}() was removed in openai 1.0 and raises "
                     "APIRemovedInV1 when called", subject="openai")
            return
        if q in _LLM_SYNC or q in _LLM_ASYNC:
            timeout = keyword_arg(node, "timeout")
            if (timeout is None and not _splat(node)) or _is_none(timeout):
                self.llm_ctors.append((node, q))
        elif q in _GENAI_CLIENT:
            if not _splat(node) and not self._genai_timeout(keyword_arg(node, "http_options")):
                self.llm_ctors.append((node, "google.genai.Client"))
        elif q in _HTTPX_FUNCS:
            if not _has_kw(node, "timeout") and not _splat(node):
                self.add("FC503", node, f"{q}(...) without an explicit timeout: httpx's 5 s "
                         "default is shorter than many LLM responses")
        elif q in _URLOPEN:
            if len(node.args) < 3 and not _has_kw(node, "timeout") and not _splat(node):
                self.add("FC502", node, "urllib.request.urlopen() without a timeout can wait forever")
        elif q in _ENV_GETTERS and len(node.args) >= 2:
            env, default = _str(node.args[0]), _str(node.args[1])
            if env and default:
                if credential_name(env):
                    if looks_random(default):
                        self.add("FC304", node.args[1], f"hard-coded secret as the default of "
                                 f"{q}({env!r}): {redact_value(default)}")
                elif _model_name(env) and is_floating_model(default, self.s.floating):
                    self.add("FC701", node.args[1], floating_message(default))
        elif q in _LITELLM:
            self._record_call(node, q, parent, receiver=None, mode=_LITELLM[q])

    @staticmethod
    def _genai_timeout(opts: ast.expr | None) -> bool:
        if opts is None or _is_none(opts):
            return False
        if isinstance(opts, ast.Dict):
            return any(_str(k) == "timeout" for k in opts.keys)
        if isinstance(opts, ast.Call):
            return _has_kw(opts, "timeout") or _splat(opts)
        return True  # built elsewhere: cannot tell, assume it carries a timeout

    def _method_call(self, node: ast.Call, func: ast.Attribute, parent: ast.AST | None,
                     q: str | None) -> None:
        chain, base = _attr_chain(func)
        sfx = _suffix(chain)
        if sfx is not None:
            head = _client_path(chain, sfx)
            if "aio" in chain or chain[-1].endswith(("_async", "acreate")):
                mode = "async"
            elif chain[-1] in _GENAI_METHODS:
                mode = "sync-if-genai"  # google's async API lives under .aio / *_async
            else:
                mode = ""
            self._record_call(node, dotted_name(func) or ".".join(chain[-3:]), parent,
                              receiver=self._receiver(base, head), mode=mode)
        elif chain[-1] in _HTTP_METHODS and q is None:
            receiver = self._receiver(base, list(chain[:-1]))
            if receiver is not None and not _has_kw(node, "timeout") and not _splat(node):
                self.session_calls.append((node, receiver, chain[-1]))

    def _receiver(self, base: ast.expr, head: list[str]) -> str | None:
        if isinstance(base, ast.Name):
            return ".".join([base.id, *head])
        if isinstance(base, ast.Call):
            q = self.qual(base.func)
            return f"<call>{q}" if q else None
        return None

    def _record_call(self, node: ast.Call, label: str, parent: ast.AST | None, *,
                     receiver: str | None, mode: Mode) -> None:
        frame = self.frames[-1]
        self.calls.append(
            _Call(node, label, frame.is_async, bool(frame.guarded) or frame.retry, receiver,
                  mode, isinstance(parent, _SYNC_PARENTS), isinstance(parent, ast.Await))
        )

    # -- client kinds --

    def _bind(self, key: str, call: ast.Call) -> None:
        """``key = Client(...)`` or ``with Client(...) as key``: remember what ``key`` is."""
        q = self.qual(call.func)
        kind = self._kind_of(q)
        self._set_kind(key, kind)
        if kind in ("llm-sync", "llm-async") and len(self.frames) == 1 and "." not in key:
            self.exports[key] = kind
        if q in _HTTPX_CLIENTS and not _has_kw(call, "timeout") and not _splat(call):
            self.httpx_ctors.append((call, key, q))

    def _set_kind(self, key: str, kind: str | None) -> None:
        if kind is not None:
            old = self.kinds.get(key)
            self.kinds[key] = kind if old in (None, kind) else ""

    @staticmethod
    def _kind_of(q: str | None) -> str | None:
        if q is None:
            return None
        if q in _LLM_SYNC:
            return "llm-sync"
        if q in _LLM_ASYNC:
            return "llm-async"
        if q in _GENAI_CLIENT:
            return "genai"
        if q in _REQUESTS_SESSION:
            return "requests-session"
        return _HTTPX_CLIENTS.get(q)

    def _kind(self, receiver: str | None) -> str | None:
        if receiver is None:
            return None
        if receiver.startswith("<call>"):
            return self._kind_of(receiver[6:])
        kind = self.kinds.get(receiver)
        if kind is None and receiver.startswith("self."):
            kind = self.kinds.get(receiver[5:])
        return kind or None

    # -- after the walk: rules that need the whole file --

    def finish(self) -> None:
        on = self.s.enabled
        llm = any(
            v == m or v.startswith(m + ".") for v in self.aliases.values() for m in LLM_MODULES
        )
        genai = any(v.startswith(("google.genai", "google.generativeai")) for v in self.aliases.values())
        calls = self.calls if llm else []
        for call in calls:
            if "FC404" in on and call.in_async and not call.awaited:
                blocks = self._blocks(call, genai)
                if blocks:
                    self.add("FC404", call.node, _blocking_message(call))
                elif blocks is None:
                    self._defer("FC404", call, _blocking_message(call))
            if "FC601" in on and not call.guarded:
                self.add("FC601", call.node, _unguarded_message(call))
        if not llm:
            # No SDK imported here, but the client may come from a module that has one: the
            # engine decides with that module's exports (and Twilio's messages.create is not
            # an LLM call).
            for call in self.calls:
                if "FC404" in on and call.in_async and not call.awaited and call.mode != "async":
                    self._defer("FC404", call, _blocking_message(call))
                if "FC601" in on and not call.guarded:
                    self._defer("FC601", call, _unguarded_message(call))
        if "FC501" in on:
            per_call = bool(calls) and all(_has_kw(c.node, "timeout") for c in calls)
            for node, q in self.llm_ctors:
                if q == "google.genai.Client":
                    self.add("FC501", node, "genai.Client() without an http_options timeout")
                elif _is_none(keyword_arg(node, "timeout")):
                    self.add("FC501", node, f"{q.rpartition('.')[2]}(timeout=None) disables the "
                             "timeout")
                elif not per_call:
                    self.add("FC501", node, f"{q.rpartition('.')[2]}() without an explicit "
                             "timeout (the SDK default is 10 minutes)")
        if "FC503" in on:
            # A client without a timeout matters only where a request through it passes none
            # either; one handed to code that sets per-request timeouts is fine.
            for node, key, q in self.httpx_ctors:
                bare = key.removeprefix("self.")
                late = [(c, m) for c, r, m in self.session_calls if r.removeprefix("self.") == bare]
                if late:
                    call, method = late[0]
                    self.add("FC503", node, f"{q}() without an explicit timeout, and "
                             f"{bare}.{method}() on line {call.lineno} sets none either: "
                             "httpx's 5 s default is shorter than many LLM responses")
        if "FC502" in on:
            for node, receiver, method in self.session_calls:
                if self._kind(receiver) == "requests-session":
                    self.add("FC502", node, f"{receiver}.{method}() on a requests.Session "
                             "without a timeout can wait forever")
        self._dedupe()

    def _blocks(self, call: _Call, genai: bool) -> bool | None:
        """True: a blocking call; False: not; None: depends on a client from elsewhere."""
        if call.mode == "async":
            return False
        if call.mode == "sync":
            return True
        kind = self._kind(call.receiver)
        if kind == "llm-async":
            return False
        if kind == "llm-sync" or (call.mode == "sync-if-genai" and (genai or kind == "genai")):
            return True
        return True if call.sync_use else None

    def _defer(self, code: str, call: _Call, message: str) -> None:
        where = self._qualify(call.receiver)
        if where is not None:
            node = call.node
            self.pending.append(Raw(code, node.lineno, node.col_offset + 1, message, None, where))

    def _qualify(self, receiver: str | None) -> str | None:
        """``llm.client`` with ``from app import llm`` → ``app.llm.client``."""
        if receiver is None or receiver.startswith("<call>"):
            return None
        head, _, rest = receiver.partition(".")
        base = self.aliases.get(head)
        if base is None:
            return None
        return f"{base}.{rest}" if rest else base

    def _dedupe(self) -> None:
        seen: set[tuple[str, int]] = set()
        out: list[Raw] = []
        for raw in self.raws:
            key = (raw.code, raw.line)
            if key not in seen:
                seen.add(key)
                out.append(raw)
        self.raws = out


def _blocking_message(call: _Call) -> str:
    return f"synchronous LLM call {call.label}() inside async def blocks the event loop"


def _unguarded_message(call: _Call) -> str:
    return f"LLM API call {call.label}() has no exception handler in its function"


_Handler = Callable[[_Visitor, Any, "ast.AST | None"], None]
_DISPATCH: dict[type[ast.AST], _Handler] = {
    ast.FunctionDef: _Visitor.v_function,
    ast.AsyncFunctionDef: _Visitor.v_function,
    ast.Lambda: _Visitor.v_lambda,
    ast.ClassDef: _Visitor.v_class,
    ast.Try: _Visitor.v_try,
    ast.TryStar: _Visitor.v_try,
    ast.If: _Visitor.v_if,
    ast.Import: _Visitor.v_import,
    ast.ImportFrom: _Visitor.v_import_from,
    ast.Assign: _Visitor.v_assign,
    ast.AnnAssign: _Visitor.v_assign,
    ast.Dict: _Visitor.v_dict,
    ast.Constant: _Visitor.v_constant,
    ast.With: _Visitor.v_with,
    ast.AsyncWith: _Visitor.v_with,
    ast.Call: _Visitor.v_call,
}
