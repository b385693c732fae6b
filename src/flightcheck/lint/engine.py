"""Orchestration: find the files, fan them out, run ruff and hadolint beside, merge.

Wall time is the design constraint. ruff (a subprocess, its own threads) starts first and runs
while the worker processes scan the Python files; each file is read once and parsed at most
once (see pyscan). Small trees are scanned in-process: starting workers costs more than it
saves.

Syntax (FC101) is CPython's compiler's verdict, but the compiler does not read every file:
ruff's parser reads them all (for the service's Python) with the rules that mirror the
compiler's symbol-table and code-generation errors (RUFF_COMPILE_CODES), and only the files it
flags, plus those pyscan.compile_gate picks for what ruff does not mirror, are compiled. Over
CPython's own corpus of invalid code (45,000 snippets) that selection misses none
(tests/lint/test_compile_selection.py). Without ruff, every file is compiled.
"""

from __future__ import annotations

import gc
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from fnmatch import fnmatch
from functools import partial
from pathlib import Path
from typing import IO

from flightcheck import __version__
from flightcheck.config import LintConfig
from flightcheck.errors import ConfigError, StageError, UsageError
from flightcheck.lint import aideps, dockerfile, worker
from flightcheck.lint.cache import Entry, LintCache, Stat, digest, disabled_by_env, key_of
from flightcheck.lint.callgraph import blocking_calls
from flightcheck.lint.cloudrun_contract import Contract
from flightcheck.lint.deps import (
    Declared,
    add_image_installs,
    installed_import_names,
    is_declaration,
    read_declarations,
)
from flightcheck.lint.pyscan import (
    NAMESPACE_ROOTS,
    FileResult,
    FunctionFacts,
    Settings,
    compile_check,
    decode,
    function_facts,
)
from flightcheck.lint.rules import RULES, TEST_EXEMPT, UPSTREAM, codes_for, healthcheck_fix
from flightcheck.lint.target import (
    HOST,
    HOST_RUFF,
    Service,
    Target,
    is_version_syntax,
    target_python,
)
from flightcheck.lint.textscan import FLOATING_MODELS, Raw
from flightcheck.lint.typegate import TypeGate
from flightcheck.results import Finding, Severity

# Directories never worth scanning, whatever the config says.
_SKIP_DIRS = frozenset(
    {".git", ".hg", ".svn", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache",
     ".tox", ".nox", "node_modules", ".venv", ".eggs", ".idea", ".vscode",
     ".flightcheck"}  # flightcheck's own state: the local Cloud Run's keys, baselines
)
_CONFIG_SUFFIXES = frozenset(
    {".env", ".yaml", ".yml", ".toml", ".json", ".ini", ".cfg", ".conf", ".properties", ".sh",
     ".bash", ".tfvars", ".pem", ".key", ".ipynb"}
)
_RUFF_CODES = ("ASYNC210", "ASYNC212", "ASYNC251", "ASYNC220", "ASYNC221", "ASYNC222", "S113")
# ruff's rules for what CPython's compiler rejects after parsing (late/unknown __future__,
# import * in a function, two starred targets, break/continue/return/yield/await out of place,
# default except not last, nonlocal/global misuse, yield from in async): a file with one of
# these, or with any syntax error, is compiled. Not findings of their own.
RUFF_COMPILE_CODES = ("F404", "F406", "F407", "F622", "F701", "F702", "F704", "F706", "F707",
                      "PLE0115", "PLE0117", "PLE0118", "PLE1142", "PLE1700")
_INLINE_BYTES = 2_000_000  # below this much Python, worker start-up costs more than it saves
_MAX_ARGS_CHARS = 100_000


@dataclass
class SkippedFile:
    file: str
    reason: str
    unchecked: bool = True  # False: nothing to check there (binary data in a config file)


@dataclass
class LintReport:
    """Everything one lint run found."""

    root: Path
    findings: list[Finding] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. a tool that could not run
    files: int = 0
    lines: int = 0
    seconds: float = 0.0
    parsed: int = 0  # Python files that needed the AST rules (the rest were only compiled)
    tools: dict[str, str] = field(default_factory=dict)

    def count(self, severity: Severity) -> int:
        return sum(1 for f in self.findings if f.severity is severity)

    def by_category(self) -> dict[str, int]:
        return dict(Counter(f.category for f in self.findings))

    @property
    def failed(self) -> bool:
        return self.count(Severity.ERROR) > 0

    @property
    def unchecked(self) -> list[SkippedFile]:
        """Files and directories that were not checked (too large, unreadable): a run that
        skipped them did not check everything, so ``--strict`` fails it."""
        return [s for s in self.skipped if s.unchecked]


@dataclass
class _Files:
    python: list[worker.Task] = field(default_factory=list)
    text: list[worker.Task] = field(default_factory=list)
    dockerfiles: list[tuple[Path, str]] = field(default_factory=list)
    declarations: list[Path] = field(default_factory=list)
    local: set[str] = field(default_factory=set)
    skipped: list[SkippedFile] = field(default_factory=list)
    pycache: list[Path] = field(default_factory=list)  # bytecode directories seen (FC806)
    python_bytes: int = 0


# --- configuration ------------------------------------------------------------------------


def enabled_codes(config: LintConfig) -> frozenset[str]:
    """All codes minus ``disable`` (codes, upstream codes, categories or FC prefixes)."""
    off: set[str] = set()
    for entry in config.disable:
        codes = codes_for(entry)
        if not codes:
            raise _unknown_selector("disable", entry)
        off |= codes
    return frozenset(RULES) - off


def _severities(config: LintConfig) -> dict[str, Severity]:
    out: dict[str, Severity] = {}
    for entry, level in config.severity.items():
        codes = codes_for(entry)
        if not codes:
            raise _unknown_selector("severity", entry)
        for code in codes:
            out[code] = Severity(level)
    return out


def _unknown_selector(key: str, entry: str) -> ConfigError:
    import difflib

    near = difflib.get_close_matches(entry, [*RULES, *UPSTREAM], n=1)
    return ConfigError(
        f"[lint] {key}: {entry!r} names no rule" + (f" — did you mean {near[0]!r}?" if near else ""),
        why="entries are rule codes (FC401), upstream codes (ASYNC210), categories (secret) or "
        "code prefixes (FC4)",
        fix="see `flightcheck lint --explain CODE` or docs/lint.md for the list",
        repro="flightcheck config --explain",
    )


# --- discovery ------------------------------------------------------------------------------


def _excluded(rel: str, name: str, patterns: list[str]) -> bool:
    """gitignore-like: a pattern with a slash is anchored at the root, one without matches
    any path component."""
    for pat in patterns:
        p = pat.strip().strip("/")
        if not p:
            continue
        if "/" in p:
            if fnmatch(rel, p) or rel.startswith(p + "/"):
                return True
        elif fnmatch(name, p):
            return True
    return False


def _is_test(rel: str) -> bool:
    parts = rel.split("/")
    name = parts[-1]
    return (
        any(p in ("tests", "test", "testing") for p in parts[:-1])
        or name.startswith("test_")
        or name.endswith("_test.py")
        or name == "conftest.py"
    )


def _rel(root: Path, path: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return Path(os.path.relpath(path, root)).as_posix()


def _discover(root: Path, paths: list[Path], config: LintConfig) -> _Files:
    files = _Files()
    seen: set[str] = set()
    limit = config.max_file_kb * 1024

    def add(path: Path, rel: str, size: int) -> None:
        if rel in seen:
            return
        seen.add(rel)
        name = path.name
        if name.endswith(".py"):
            files.local.add(name[:-3])
            kind = "python"
        elif dockerfile.is_dockerfile(name):
            files.dockerfiles.append((path, rel))
            kind = "dockerfile"
        elif path.suffix in _CONFIG_SUFFIXES or name.startswith(".env") or name.endswith(".env"):
            kind = "config"
        else:
            if is_declaration(name):
                files.declarations.append(path)
            elif name.endswith((".so", ".pyd")):
                files.local.add(name.partition(".")[0])  # extension modules import too
            return
        if is_declaration(name):
            files.declarations.append(path)
        if size > limit:
            files.skipped.append(SkippedFile(
                rel, f"larger than max_file_kb ({size // 1024} KiB > "
                f"{config.max_file_kb} KiB); raise [lint].max_file_kb to check it"))
            return
        task = worker.Task(str(path), rel, kind, _is_test(rel))
        if kind == "python":
            files.python.append(task)
            files.python_bytes += size
        else:
            files.text.append(task)

    for start in paths:
        if not start.exists():
            raise UsageError(
                f"lint path {start} does not exist",
                fix="check [lint].paths in flightcheck.toml or the PATH argument",
                repro=f"flightcheck lint {start}",
            )
        if start.is_file():
            add(start, _rel(root, start), start.stat().st_size)
            continue
        def unreadable(err: OSError, start: Path = start) -> None:
            where = _rel(root, Path(err.filename)) if err.filename else _rel(root, start)
            files.skipped.append(SkippedFile(
                where, f"directory not readable ({err.strerror or err})"))

        for dirpath, dirnames, filenames in os.walk(start, onerror=unreadable):
            here = Path(dirpath)
            rel_dir = _rel(root, here)
            rel_dir = "" if rel_dir == "." else rel_dir
            keep = []
            for d in dirnames:
                rel = f"{rel_dir}/{d}" if rel_dir else d
                if d == "__pycache__" and len(files.pycache) < 100:
                    files.pycache.append(here / d)
                if d in _SKIP_DIRS or _excluded(rel, d, config.exclude):
                    continue
                if _exists(here / d / "pyvenv.cfg"):
                    continue  # a virtualenv under another name
                keep.append(d)
            dirnames[:] = sorted(keep)
            if any(f.endswith(".py") for f in filenames) and here != root:
                files.local.add(here.name)
            for f in sorted(filenames):
                rel = f"{rel_dir}/{f}" if rel_dir else f
                if _excluded(rel, f, config.exclude):
                    continue
                path = here / f
                try:
                    size = path.stat().st_size
                except OSError:
                    continue  # dangling symlink
                add(path, rel, size)

    # The project's declarations and top-level modules count even when only part of it is
    # scanned (src/, one package, one file).
    project = _project_root(root)
    for extra in [project / "pyproject.toml", *sorted(project.glob("requirements*.txt"))]:
        if extra.is_file() and extra not in files.declarations:
            files.declarations.append(extra)
    for base in (project, project / "src"):
        try:
            entries = list(base.iterdir()) if base.is_dir() else []
        except OSError:
            continue  # outside the scanned paths: not ours to report
        for entry in entries:
            if entry.suffix == ".py":
                files.local.add(entry.stem)
            elif _exists(entry / "__init__.py"):
                files.local.add(entry.name)
    for start in paths:
        pkg = start if start.is_dir() else start.parent
        while _exists(pkg / "__init__.py") and pkg.parent != pkg:
            files.local.add(pkg.name)  # the packages the scanned files live in
            pkg = pkg.parent
    return files


def own_python_files(root: Path, paths: list[Path], config: LintConfig) -> dict[str, str]:
    """The project's own (non-test) Python files in ``paths``, found as lint finds them:
    absolute path → path relative to ``root``."""
    found = _discover(root.resolve(), [p.resolve() for p in paths], config)
    return {t.path: t.rel for t in found.python if not t.is_test}


def _image_hygiene(root: Path, service: Service, files: _Files,
                   parsed: dict[str, list[dockerfile.Instruction]]) -> Iterator[FileResult]:
    """FC806: ``COPY .`` of a context holding .env/.git/.venv/__pycache__ that no
    .dockerignore excludes."""
    paths = dict((rel, path) for path, rel in files.dockerfiles)
    for rel, instructions in parsed.items():
        copies = dockerfile.whole_context_copies(instructions)
        if not copies:
            continue
        path = paths[rel]
        context = (service.context if service.context is not None
                   and service.dockerfile is not None and path == service.dockerfile.resolve()
                   else path.parent)
        pycache = [_rel(context, d) for d in files.pycache if d.is_relative_to(context)]
        offenders = dockerfile.context_offenders(context, pycache)
        patterns: list[str] = []
        for ignore in (path.with_name(path.name + ".dockerignore"), context / ".dockerignore"):
            if ignore.is_file():
                patterns = ignore.read_text(encoding="utf-8", errors="replace").splitlines()
                break
        left = [o for o in offenders if not dockerfile.dockerignore_excludes(patterns, o)]
        if not left:
            continue
        why = "no .dockerignore" if not patterns else ".dockerignore does not exclude them"
        yield FileResult(rel, raws=[Raw(
            "FC806", copies[0], 1,
            f"COPY of the whole build context takes {', '.join(left)} into the image ({why}): "
            "secrets and history ship with it, and every change to them rebuilds the layer")])


def _module_table(tasks: list[worker.Task]) -> dict[str, str]:
    """Dotted module name → file; the name with the fewest leading directories dropped wins
    (``app.main`` is ``app/main.py`` before ``src/x/app/main.py``)."""
    ranked: dict[str, tuple[int, str]] = {}
    for task in tasks:
        for dropped, name in enumerate(_module_names(task.rel)):
            if name not in ranked or ranked[name] > (dropped, task.rel):
                ranked[name] = (dropped, task.rel)
    return {name: rel for name, (_, rel) in ranked.items()}


def _read_text(root: Path, rel: str) -> str | None:
    try:
        return (root / rel).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a directory we may not look into: os.walk reports it
        return False


def _module_names(rel: str) -> list[str]:
    """Every dotted name a file may be imported as: ``src/app/llm.py`` → app.llm, …"""
    parts = rel.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return [".".join(parts[i:]) for i in range(len(parts)) if parts[i:]]


def _project_root(start: Path) -> Path:
    """The nearest directory at or above ``start`` that declares a project (pyproject.toml,
    requirements*.txt, setup.py) or holds .git; ``start`` itself when there is none."""
    for folder in (start, *start.parents):
        try:
            if (
                (folder / "pyproject.toml").is_file()
                or (folder / "setup.py").is_file()
                or (folder / ".git").exists()
                or any(folder.glob("requirements*.txt"))
            ):
                return folder
        except OSError:
            continue
    return start


# --- external tools -------------------------------------------------------------------------


def find_tool(name: str) -> str | None:
    """A console script of this environment first, then PATH."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / (name + (".exe" if os.name == "nt" else ""))
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)


class _Ruff:
    """ruff over the Python files, started now, collected later."""

    def __init__(self, binary: str, tasks: list[worker.Task], select: list[str],
                 target: Target | None = None) -> None:
        self._rel = {t.path: t.rel for t in tasks}
        self._procs: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []
        self.target = target
        self.parse_errors: set[str] = set()  # files ruff's parser rejects (for the target)
        self.to_compile: set[str] = set()  # files CPython's compiler must judge (see above)
        # Always a version: ruff's default is a newer Python than this one, whose compiler
        # judges the files ruff does not flag (PEP 758's ``except A, B``, say).
        version = ["--target-version", target.ruff if target is not None else HOST_RUFF]
        base = [binary, "check", "--isolated", "--no-cache", "--exit-zero", "--quiet",
                "--output-format", "json", *version, "--select", ",".join(select), "--"]
        for chunk in _chunks([t.path for t in tasks]):
            out = tempfile.TemporaryFile()
            proc = subprocess.Popen([*base, *chunk], stdout=out, stderr=subprocess.DEVNULL)
            self._procs.append((proc, out))

    def results(self, timeout: float = 600) -> dict[str, list[Raw]]:
        """Findings by file; raises RuntimeError when ruff did not produce a report."""
        found: dict[str, list[Raw]] = {}
        for proc, out in self._procs:
            proc.wait(timeout=timeout)
            out.seek(0)
            data = out.read()
            out.close()
            if proc.returncode != 0:
                raise RuntimeError(f"ruff exited {proc.returncode}")
            try:
                items = json.loads(data or b"[]")
            except ValueError as exc:
                raise RuntimeError(f"ruff's report is not JSON ({exc})") from None
            for item in items:
                upstream = str(item.get("code"))
                rel = self._rel.get(str(item.get("filename")))
                if rel is None:
                    continue
                if upstream in RUFF_COMPILE_CODES:
                    self.to_compile.add(rel)
                    continue
                code = UPSTREAM.get(upstream)
                loc = item.get("location") or {}
                if code is None:
                    if item.get("code") in (None, "invalid-syntax"):
                        self.to_compile.add(rel)
                        self._syntax(rel, str(item.get("message")), loc, found)
                    continue
                line = int(loc.get("row") or 1)
                # subject: the row where ruff looks for noqa comments (end of a multi-line string)
                raw = Raw(code, line, int(loc.get("column") or 1),
                          f"{item.get('message')} (ruff {item.get('code')})",
                          subject=str(item.get("noqa_row") or line))
                found.setdefault(rel, []).append(raw)
        return found

    def _syntax(self, rel: str, message: str, loc: dict[str, object],
                found: dict[str, list[Raw]]) -> None:
        """Syntax the target Python lacks is FC102; other syntax errors are the compiler's
        (FC101), remembered to judge files written for a newer Python than this one."""
        if self.target is not None and is_version_syntax(message):
            line = int(str(loc.get("row") or 1))
            found.setdefault(rel, []).append(
                Raw("FC102", line, int(str(loc.get("column") or 1)),
                    f"{message.removeprefix('SyntaxError: ')}: the service runs Python "
                    f"{self.target.label} ({self.target.source})")
            )
        else:
            self.parse_errors.add(rel)

    def kill(self) -> None:
        for proc, out in self._procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            out.close()


def _chunks(paths: list[str]) -> Iterator[list[str]]:
    chunk: list[str] = []
    size = 0
    for p in paths:
        if chunk and size + len(p) > _MAX_ARGS_CHARS:
            yield chunk
            chunk, size = [], 0
        chunk.append(p)
        size += len(p) + 1
    if chunk:
        yield chunk


# --- the run ----------------------------------------------------------------------------------


def lint_paths(
    root: Path, paths: list[Path], config: LintConfig, *, use_hadolint: bool = True,
    service: Service | None = None,
) -> LintReport:
    """Lint ``paths`` (files or directories); findings' files are relative to ``root``.

    ``service``: the deployed service's Dockerfile, port and probe paths (default: the
    ``Dockerfile`` at the root or the project root, the default port and probes).
    ``use_hadolint=False`` forces the builtin Dockerfile checks (tests compare the two).
    """
    started = time.perf_counter()
    run_ns = time.time_ns()
    root = root.resolve()
    enabled = enabled_codes(config)
    severities = _severities(config)
    report = LintReport(root=root)
    files = _discover(root, [p.resolve() for p in paths], config)
    report.skipped.extend(files.skipped)
    declared = read_declarations(files.declarations)
    parsed_dockerfiles = _parse_dockerfiles(files.dockerfiles)
    for path, rel in files.dockerfiles:
        if rel in parsed_dockerfiles:
            installs, req_files = dockerfile.pip_installs(parsed_dockerfiles[rel])
            add_image_installs(declared, path, installs, req_files)
    ruff_bin = find_tool("ruff")
    # ruff's parser picks the files CPython's compiler judges (module docstring)
    ruff_judges = "FC101" in enabled and ruff_bin is not None
    settings = Settings.build(
        compile_all=not ruff_judges,
        enabled=enabled,
        stdlib=frozenset(sys.stdlib_module_names),
        local=frozenset(files.local),
        declared=frozenset(declared.modules()),
        floating=FLOATING_MODELS | frozenset(config.extra_floating_models),
    )

    service = service or _default_service(root)
    service_df = _service_dockerfile(service, files.dockerfiles, parsed_dockerfiles)
    project = _project_root(root)
    target = target_python(service_df[1] if service_df else None,
                           service_df[0] if service_df else None, project)
    python = target.label if target is not None else f"{HOST[0]}.{HOST[1]}"
    if target is not None and (target.version == HOST or "FC102" not in enabled):
        target = None  # this interpreter's compiler judges exactly the service's syntax
    ruff_select = [u for u in _RUFF_CODES if UPSTREAM[u] in enabled]
    if target is not None:
        ruff_select = ruff_select or ["ASYNC210"]
    if ruff_judges:
        ruff_select = [*ruff_select, *RUFF_COMPILE_CODES]
    if not ruff_select:
        ruff_bin = None

    # Unchanged files: their results come from the cache, keyed by content hash.
    ty_bin = find_tool("ty")
    cache: LintCache | None = None
    if config.cache and not disabled_by_env():
        cache = LintCache.open(root, key_of(
            __version__, sys.version, sorted(enabled), settings.fingerprint(), python, target,
            ruff_select, tool_id(ruff_bin), tool_id(ty_bin)))
    hashes, candidates, stats = _fingerprint(files.python + files.text, cache, run_ns)
    cached: dict[str, Entry] = {}
    if cache is not None:
        for task in files.python + files.text:
            entry = cache.lookup(task.rel, hashes.get(task.rel, b""))
            if entry is not None:
                cached[task.rel] = entry
    todo = _Files(python=[t for t in files.python if t.rel not in cached],
                  text=[t for t in files.text if t.rel not in cached])
    todo.python_bytes = sum(_size(t.path) for t in todo.python)

    own = [t for t in files.python if not t.is_test]
    type_key = key_of(python, sorted((t.rel, hashes.get(t.rel)) for t in own))
    type_results: dict[str, list[Raw]] | None = None
    gate: TypeGate | None = None
    if cache is not None and cache.type_key == type_key:
        type_results = cache.type_results
    else:
        gate = _start_type_gate(root, own, enabled, python, ty_bin, report)

    ruff: _Ruff | None = None
    ruff_files = ([t for t in todo.python if ruff_judges or target is not None
                   or t.rel in candidates] if ruff_select else [])
    if ruff_files:
        if ruff_bin is None:
            report.notes.append("ruff not found: FC102, FC401-FC403, FC405 and FC502 (requests) "
                                "not checked")
        else:
            ruff = _Ruff(ruff_bin, ruff_files, ruff_select, target)
            report.tools["ruff"] = ruff_bin
    extra: dict[str, list[Raw]] = {}
    complete = True  # every tool answered: what this run found may be cached
    try:
        fresh = list(_scan(todo, settings))
        to_compile: set[str] | None = None  # None: every Python file
        if ruff is not None:
            try:
                extra = ruff.results()
                to_compile = ruff.to_compile
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                complete = False
                report.notes.append(f"ruff failed ({exc}): FC102, FC401-FC403, FC405 and FC502 "
                                    "(requests) not checked")
        if ruff_judges:
            _compile_selected(fresh, {t.rel: t.path for t in todo.python}, to_compile)
        # What needs no ty runs here, while ty's last batches do (in their own processes).
        facts_memo = dict(cache.facts) if cache is not None else {}
        derived = _derived_checks(root, [e.result for e in cached.values()] + fresh, files,
                                  settings, enabled, service, service_df, parsed_dockerfiles,
                                  declared, report, use_hadolint, hashes, facts_memo)
        if gate is not None:
            try:
                type_results = gate.results()
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                report.notes.append(f"ty failed ({exc}): the type gate (FC901-FC905) not checked")
    finally:
        if ruff is not None:
            ruff.kill()
        if gate is not None:
            gate.kill()

    ruffed = {t.rel for t in ruff_files} if ruff is not None else set()
    parse_errors = set(ruff.parse_errors) if ruff is not None else set()
    entries: dict[str, Entry] = dict(cached)
    for rel, entry in cached.items():
        if entry.stat != stats.get(rel):  # read and hashed again: record its stat now
            entries[rel] = replace(entry, stat=stats.get(rel))
    for res in fresh:
        if res.rel in hashes:
            entries[res.rel] = Entry(hashes[res.rel], res,
                                     extra.get(res.rel, []) if res.rel in ruffed else None,
                                     res.rel in parse_errors, stats.get(res.rel))
    facts_memo = {rel: hf for rel, hf in facts_memo.items() if hashes.get(rel) == hf[0]}
    saved_type_key = type_key if type_results is not None else ""
    # the key names the tools: a missing one is a new key
    if cache is not None and complete and not cache.unchanged(entries, saved_type_key, facts_memo):
        note = cache.save(root, entries, saved_type_key, type_results or {}, facts_memo)
        if note:
            report.notes.append(note)
    results = [e.result for e in cached.values()] + fresh
    report.files = sum(1 for r in results if not r.skipped)
    for rel, entry in cached.items():
        if entry.ruff:
            extra[rel] = entry.ruff
        if entry.ruff_parse_error:
            parse_errors.add(rel)
    if cached:
        report.tools["cache"] = f"{len(cached)} of {len(files.python) + len(files.text)} files"
    for rel, raws in (type_results or {}).items():
        results.append(FileResult(rel, raws=raws))
    for rel, raws in extra.items():
        results.append(FileResult(rel, raws=raws))
    results.extend(derived)
    if target is not None and target.version > HOST:
        _newer_syntax(results, parse_errors, target, report)
    # FC804's example HEALTHCHECK probes the service's own port and liveness path
    fixes = {"FC804": healthcheck_fix(service.port, service.probes[-1] if service.probes else "/health")}
    _finish(report, results, declared.distributions, enabled, severities, bool(declared.files),
            aideps.without_legacy_api(declared.specs), fixes)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _derived_checks(
    root: Path, scanned: list[FileResult], files: _Files, settings: Settings,
    enabled: frozenset[str], service: Service,
    service_df: tuple[str, list[dockerfile.Instruction]] | None,
    parsed_dockerfiles: dict[str, list[dockerfile.Instruction]], declared: Declared,
    report: LintReport, use_hadolint: bool, hashes: dict[str, bytes],
    facts_memo: dict[str, tuple[bytes, dict[str, FunctionFacts]]],
) -> list[FileResult]:
    """The checks over the whole project: the Cloud Run contract, FC406's call graph (from
    the facts the scan put in ``scanned``, and of the modules it reads on demand, remembered
    in ``facts_memo`` by content hash), the Dockerfiles, unpinned SDKs, the build context."""
    results: list[FileResult] = []
    modules = _module_table(files.python)
    if service_df is not None and enabled & {"FC821", "FC822", "FC823"}:
        contract = Contract(root, service, service_df[0], service_df[1],
                            modules, {t.rel for t in files.python},
                            partial(_read_text, root))
        for rel, raws in contract.check().items():
            results.append(FileResult(rel, raws=raws))
        if contract.unjudged_routes is not None and "FC823" in enabled:
            report.notes.append(
                f"FC823 (a route at the probe path) not checked: no flightcheck.toml declares the "
                f"probe paths ([health.startup].path, [health.liveness].path) for the app in "
                f"{contract.unjudged_routes}; add one (`flightcheck init`) to check its routes")
    if "FC406" in enabled:
        def facts(rel: str) -> dict[str, FunctionFacts]:
            known = facts_memo.get(rel)
            if known is not None and rel in hashes and known[0] == hashes[rel]:
                return known[1]
            text = _read_text(root, rel)
            found = function_facts(settings, rel, text) if text is not None else {}
            if rel in hashes:
                facts_memo[rel] = (hashes[rel], found)
            return found

        for rel, raws in blocking_calls(scanned, _module_names, modules, facts).items():
            results.append(FileResult(rel, raws=raws))
    results.extend(_dockerfiles(files.dockerfiles, parsed_dockerfiles, enabled, report, use_hadolint))
    if "FC211" in enabled:
        for rel, raws in aideps.unpinned(declared.specs, root).items():
            results.append(FileResult(rel, raws=raws))
    if "FC806" in enabled:
        results.extend(_image_hygiene(root, service, files, parsed_dockerfiles))
    return results


_RACY_NS = 2_000_000_000  # a stat is trusted for files last modified this long before a run


def _fingerprint(tasks: list[worker.Task], cache: LintCache | None, run_ns: int,
                 ) -> tuple[dict[str, bytes], set[str], dict[str, Stat]]:
    """Content hash of every file (one read per file, none when its stat is the one the
    cache recorded with its hash), the Python files ruff's rules can match at all (ASYNC2xx
    need an ``async def``, S113 needs requests or httpx; only among the files read), and the
    stats worth recording (files modified well before this run: see cache.py)."""
    hashes: dict[str, bytes] = {}
    candidates: set[str] = set()
    stats: dict[str, Stat] = {}
    for task in tasks:
        try:
            st = os.stat(task.path)
        except OSError:
            continue  # the worker reports it
        stat = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        known = cache.known_hash(task.rel, stat) if cache is not None else None
        if known is not None:
            hashes[task.rel], stats[task.rel] = known, stat
            continue
        try:
            with open(task.path, "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        hashes[task.rel] = digest(data)
        if max(st.st_mtime_ns, st.st_ctime_ns) < run_ns - _RACY_NS and len(data) == st.st_size:
            stats[task.rel] = stat
        if task.kind == "python" and (b"async" in data or b"requests" in data or b"httpx" in data):
            candidates.add(task.rel)
    return hashes, candidates, stats


def tool_id(binary: str | None) -> tuple[str, int, int] | None:
    """A tool's identity for the cache key: its path, size and mtime (a new version differs)."""
    if binary is None:
        return None
    try:
        st = os.stat(binary)
    except OSError:
        return None
    return binary, st.st_size, int(st.st_mtime)


def _start_type_gate(root: Path, own: list[worker.Task], enabled: frozenset[str], python: str,
                     binary: str | None, report: LintReport) -> TypeGate | None:
    """ty over the project's own files (a test calling wrongly fails the test, not prod)."""
    if not enabled & {"FC901", "FC902", "FC903", "FC904", "FC905"} or not own:
        return None
    if binary is None:
        report.notes.append("ty not found: the type gate (FC901-FC905) not checked "
                            "(pip install flightcheck brings it)")
        return None
    modules = {name: t.rel for t in own for name in _module_names(t.rel)}
    try:
        gate = TypeGate(binary, root, {t.path: t.rel for t in own}, modules, python)
    except OSError as exc:
        report.notes.append(f"ty could not start ({exc}): the type gate (FC901-FC905) not checked")
        return None
    report.tools["ty"] = binary
    return gate


def _default_service(root: Path) -> Service:
    for folder in (root, _project_root(root)):
        if (folder / "Dockerfile").is_file():
            return Service(dockerfile=folder / "Dockerfile")
    return Service()


def _service_dockerfile(
    service: Service, found: list[tuple[Path, str]], parsed: dict[str, list[dockerfile.Instruction]]
) -> tuple[str, list[dockerfile.Instruction]] | None:
    """The service's Dockerfile among the scanned ones (rel, instructions)."""
    if service.dockerfile is None:
        return None
    want = service.dockerfile.resolve()
    for path, rel in found:
        if path == want and rel in parsed:
            return rel, parsed[rel]
    try:  # outside the scanned paths (lint of src/ only): still the service's Python
        return service.dockerfile.name, dockerfile.parse(want.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None


def _compile_selected(fresh: list[FileResult], python: dict[str, str],
                      selected: set[str] | None) -> None:
    """CPython's compiler on the files ruff flagged (``selected``; None: ruff did not answer,
    so every Python file) that the scan did not compile already."""
    for res in fresh:
        if res.compiled or res.skipped or res.rel not in python or (
                selected is not None and res.rel not in selected):
            continue
        res.compiled = True
        try:
            with open(python[res.rel], "rb") as fh:
                text = decode(fh.read())
        except OSError:
            continue  # gone since the scan read it: the next run reports it
        if text is not None:
            raw = compile_check(res.rel, text)
            if raw is not None:
                res.raws.append(raw)


def _newer_syntax(results: list[FileResult], parse_errors: set[str], target: Target,
                  report: LintReport) -> None:
    """The service runs a newer Python than this one: a file this compiler rejects but ruff
    parses for the target (PEP 695 ``type``, 3.12 f-strings, …) is valid there."""
    spared = 0
    for i, res in enumerate(results):  # copies: cached results stay as the worker made them
        if res.rel in parse_errors or not any(r.code == "FC101" for r in res.raws):
            continue
        results[i] = replace(res, raws=[r for r in res.raws if r.code != "FC101"])
        spared += 1
    if spared:
        report.notes.append(
            f"{spared} file(s) use syntax newer than Python {HOST[0]}.{HOST[1]} (which runs "
            f"flightcheck): checked with ruff's parser for Python {target.label} only; run "
            f"flightcheck on Python {target.label} for the compiler's checks")


def _scan(files: _Files, settings: Settings) -> Iterator[FileResult]:
    tasks = files.python + files.text
    n = min(os.cpu_count() or 1, 8)
    if files.python_bytes < _INLINE_BYTES or n < 2:
        worker.init(settings)
        yield from _inline(tasks)
        return
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER_BOOT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(n)
    ]
    try:
        bins = _balance(tasks, n)
        with ThreadPoolExecutor(n) as pool:
            outputs = list(
                pool.map(
                    lambda pb: pb[0].communicate(pickle.dumps((settings, pb[1]))),
                    zip(procs, bins, strict=True),
                )
            )
        for proc, chunk, (out, _err) in zip(procs, bins, outputs, strict=True):
            if proc.returncode == 0:
                yield from pickle.loads(out)
            elif proc.returncode in (-signal.SIGINT, -signal.SIGTERM):
                raise StageError(
                    f"lint was interrupted (worker got signal {-proc.returncode})",
                    repro="flightcheck lint",
                )
            else:  # a crashed worker (OOM-killed, say): redo its files here, slowly but surely
                worker.init(settings)
                yield from _inline(chunk)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# A worker needs only pyscan/textscan/secrets. Registering the two packages as bare namespaces
# skips their __init__ (pydantic, the whole engine): a third of a second per worker.
_PKG = Path(__file__).resolve().parent
_WORKER_BOOT = (
    "import sys, types\n"
    f"for name, path in (('flightcheck', {str(_PKG.parent)!r}), ('flightcheck.lint', {str(_PKG)!r})):\n"
    "    module = types.ModuleType(name)\n"
    "    module.__path__ = [path]\n"
    "    sys.modules[name] = module\n"
    "from flightcheck.lint.worker import main\n"
    "main()\n"
)


def _inline(tasks: list[worker.Task]) -> list[FileResult]:
    """Scan here, with the cyclic GC paused: building ASTs triggers it constantly."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return [worker.run(t) for t in tasks]
    finally:
        if enabled:
            gc.enable()


def _balance(tasks: list[worker.Task], n: int) -> list[list[worker.Task]]:
    """Largest files first into the lightest bin: compile time follows file size."""
    bins: list[list[worker.Task]] = [[] for _ in range(n)]
    loads = [0] * n
    for size, task in sorted(((_size(t.path), t) for t in tasks), key=lambda st: -st[0]):
        i = loads.index(min(loads))
        bins[i].append(task)
        loads[i] += size + 2000  # per-file overhead
    return bins


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _parse_dockerfiles(found: list[tuple[Path, str]]) -> dict[str, list[dockerfile.Instruction]]:
    parsed: dict[str, list[dockerfile.Instruction]] = {}
    for path, rel in found:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # the text pass notes it
        parsed[rel] = dockerfile.parse(text)
    return parsed


def _dockerfiles(
    found: list[tuple[Path, str]], parsed: dict[str, list[dockerfile.Instruction]],
    enabled: frozenset[str], report: LintReport, use_hadolint: bool
) -> Iterator[FileResult]:
    if not found or not enabled & {"FC801", "FC802", "FC803", "FC804", "FC805"}:
        return
    via_hadolint: dict[str, list[Raw]] | None = None
    binary = find_tool("hadolint") if use_hadolint else None
    if binary is not None:
        try:
            via_hadolint = dockerfile.run_hadolint(binary, {str(p): r for p, r in found if r in parsed})
            report.tools["hadolint"] = binary
        except (OSError, RuntimeError, subprocess.SubprocessError, ValueError) as exc:
            report.notes.append(f"hadolint failed ({exc}); builtin Dockerfile checks used instead")
    elif use_hadolint:
        report.notes.append("hadolint not found; builtin Dockerfile checks used instead")
    for rel, instructions in parsed.items():
        raws = dockerfile.own_rules(instructions, enabled)
        if via_hadolint is not None:
            # DL3025 also fires on a shell-form HEALTHCHECK CMD, which runs fine: only
            # CMD/ENTRYPOINT are meant.
            health = dockerfile.healthcheck_lines(instructions)
            raws += [r for r in via_hadolint.get(rel, [])
                     if r.code in enabled and not (r.code == "FC803" and r.line in health)]
        else:
            raws += dockerfile.builtin_rules(instructions, enabled)
        yield FileResult(rel, raws=raws, suppress=dockerfile.suppressions(instructions))


def _finish(
    report: LintReport,
    results: Iterable[FileResult],
    declared: set[str],
    enabled: frozenset[str],
    severities: dict[str, Severity],
    has_declarations: bool,
    without_legacy: frozenset[str] = frozenset(),
    fixes: dict[str, str] | None = None,
) -> None:
    suppress: dict[str, dict[int, set[str]]] = {}
    pending: list[tuple[str, Raw]] = []
    exports: dict[str, str] = {}
    undecided: list[tuple[str, Raw]] = []
    for res in results:
        if res.skipped:
            report.skipped.append(SkippedFile(res.rel, res.skipped, res.unchecked))
        report.lines += res.lines
        report.parsed += res.parsed
        if res.suppress:
            suppress.setdefault(res.rel, {}).update(res.suppress)
        pending.extend((res.rel, raw) for raw in res.raws)
        for module in _module_names(res.rel) if res.exports else ():
            for name, kind in res.exports.items():
                key = f"{module}.{name}"
                exports[key] = kind if exports.get(key, kind) == kind else ""
        undecided.extend((res.rel, raw) for raw in res.pending)
    # Calls on a client another module created: FC404 if that client is synchronous, FC601
    # if it is an LLM client at all.
    for rel, raw in undecided:
        kind = exports.get(raw.subject or "")
        if kind == "llm-sync" or (raw.code == "FC601" and kind == "llm-async"):
            pending.append((rel, raw))

    installed: dict[str, str] | None = None
    tests: dict[str, bool] = {}
    for rel, raw in pending:
        if raw.code not in enabled:
            continue
        if raw.code in TEST_EXEMPT and tests.setdefault(rel, _is_test(rel)):
            continue
        if raw.code == "FC212" and raw.subject not in without_legacy:
            continue  # the declared version still has the old API
        rule = RULES[raw.code]
        line_codes = suppress.get(rel, {})
        silenced = line_codes.get(raw.line, set())
        if raw.code.startswith(("FC40", "FC502")) and raw.subject and raw.subject.isdigit():
            silenced = silenced | line_codes.get(int(raw.subject), set())  # ruff's noqa row
        if raw.code in silenced or silenced & set(rule.upstream):
            continue
        message = raw.message
        level = raw.severity or rule.severity
        if raw.code == "FC201" and raw.subject:
            if installed is None:
                installed = installed_import_names(declared) if declared else {}
            top = raw.subject.partition(".")[0]
            via = installed.get(top) if top not in NAMESPACE_ROOTS else None
            if via == "":
                continue  # a declared distribution provides it under another name
            if via:
                message = (f"import of {raw.subject!r} works only because {via} depends on it: "
                           "declare it")
                level = "warning"
            elif not has_declarations:
                message += " (no requirements*.txt or pyproject.toml found)"
        sev = severities.get(raw.code) or Severity(level)
        report.findings.append(
            Finding(code=raw.code, category=rule.category, severity=sev, message=message,
                    file=rel, line=raw.line, col=raw.col,
                    fix=(fixes or {}).get(raw.code, rule.fix))
        )
    report.findings.sort(key=lambda f: (f.file or "", f.line or 0, f.col or 0, f.code))
    report.skipped.sort(key=lambda s: s.file)
