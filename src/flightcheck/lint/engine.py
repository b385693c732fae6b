"""Orchestration: find the files, fan them out, run ruff and hadolint beside, merge.

Wall time is the design constraint. ruff (a subprocess, its own threads) starts first and runs
while the worker processes compile and scan the Python files; each file is read once and
parsed at most once (see pyscan). Small trees are scanned in-process: starting workers costs
more than it saves.
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
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import IO

from flightcheck.config import LintConfig
from flightcheck.errors import ConfigError, StageError, UsageError
from flightcheck.lint import dockerfile, worker
from flightcheck.lint.deps import installed_import_names, is_declaration, read_declarations
from flightcheck.lint.pyscan import NAMESPACE_ROOTS, FileResult, Settings
from flightcheck.lint.rules import RULES, TEST_EXEMPT, UPSTREAM, codes_for
from flightcheck.lint.textscan import FLOATING_MODELS, Raw
from flightcheck.results import Finding, Severity

# Directories never worth scanning, whatever the config says.
_SKIP_DIRS = frozenset(
    {".git", ".hg", ".svn", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache",
     ".tox", ".nox", "node_modules", ".venv", ".eggs", ".idea", ".vscode"}
)
_CONFIG_SUFFIXES = frozenset(
    {".env", ".yaml", ".yml", ".toml", ".json", ".ini", ".cfg", ".conf", ".properties", ".sh",
     ".bash", ".tfvars", ".pem", ".key", ".ipynb"}
)
_RUFF_CODES = ("ASYNC210", "ASYNC212", "ASYNC251", "ASYNC220", "ASYNC221", "ASYNC222", "S113")
_INLINE_BYTES = 2_000_000  # below this much Python, worker start-up costs more than it saves
_MAX_ARGS_CHARS = 100_000


@dataclass
class SkippedFile:
    file: str
    reason: str


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


@dataclass
class _Files:
    python: list[worker.Task] = field(default_factory=list)
    text: list[worker.Task] = field(default_factory=list)
    dockerfiles: list[tuple[Path, str]] = field(default_factory=list)
    declarations: list[Path] = field(default_factory=list)
    local: set[str] = field(default_factory=set)
    skipped: list[SkippedFile] = field(default_factory=list)
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
            files.skipped.append(SkippedFile(rel, f"larger than max_file_kb ({size // 1024} KiB > {config.max_file_kb} KiB)"))
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
        for dirpath, dirnames, filenames in os.walk(start):
            here = Path(dirpath)
            rel_dir = _rel(root, here)
            rel_dir = "" if rel_dir == "." else rel_dir
            keep = []
            for d in dirnames:
                rel = f"{rel_dir}/{d}" if rel_dir else d
                if d in _SKIP_DIRS or _excluded(rel, d, config.exclude):
                    continue
                if (here / d / "pyvenv.cfg").exists():
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
        if base.is_dir():
            for entry in base.iterdir():
                if entry.suffix == ".py":
                    files.local.add(entry.stem)
                elif entry.is_dir() and (entry / "__init__.py").exists():
                    files.local.add(entry.name)
    for start in paths:
        pkg = start if start.is_dir() else start.parent
        while (pkg / "__init__.py").exists() and pkg.parent != pkg:
            files.local.add(pkg.name)  # the packages the scanned files live in
            pkg = pkg.parent
    return files


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
        if (
            (folder / "pyproject.toml").is_file()
            or (folder / "setup.py").is_file()
            or (folder / ".git").exists()
            or any(folder.glob("requirements*.txt"))
        ):
            return folder
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

    def __init__(self, binary: str, tasks: list[worker.Task], select: list[str]) -> None:
        self._rel = {t.path: t.rel for t in tasks}
        self._procs: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []
        base = [binary, "check", "--isolated", "--no-cache", "--exit-zero", "--quiet",
                "--output-format", "json", "--select", ",".join(select), "--"]
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
                code = UPSTREAM.get(str(item.get("code")))
                rel = self._rel.get(str(item.get("filename")))
                if code is None or rel is None:
                    continue  # syntax errors come from the real compiler instead
                loc = item.get("location") or {}
                line = int(loc.get("row") or 1)
                # subject: the row where ruff looks for noqa comments (end of a multi-line string)
                raw = Raw(code, line, int(loc.get("column") or 1),
                          f"{item.get('message')} (ruff {item.get('code')})",
                          subject=str(item.get("noqa_row") or line))
                found.setdefault(rel, []).append(raw)
        return found

    def kill(self) -> None:
        for proc, out in self._procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            out.close()


def _ruff_candidates(tasks: list[worker.Task]) -> list[worker.Task]:
    """Files the ruff rules can match at all: ASYNC2xx need an ``async def``, S113 needs
    requests or httpx. Reading them here is cheap; parsing them twice is not."""
    out: list[worker.Task] = []
    for task in tasks:
        try:
            with open(task.path, "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        if b"async" in data or b"requests" in data or b"httpx" in data:
            out.append(task)
    return out


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
    root: Path, paths: list[Path], config: LintConfig, *, use_hadolint: bool = True
) -> LintReport:
    """Lint ``paths`` (files or directories); findings' files are relative to ``root``.

    ``use_hadolint=False`` forces the builtin Dockerfile checks (tests compare the two).
    """
    started = time.perf_counter()
    root = root.resolve()
    enabled = enabled_codes(config)
    severities = _severities(config)
    report = LintReport(root=root)
    files = _discover(root, [p.resolve() for p in paths], config)
    report.skipped.extend(files.skipped)
    declared = read_declarations(files.declarations)
    settings = Settings.build(
        enabled=enabled,
        stdlib=frozenset(sys.stdlib_module_names),
        local=frozenset(files.local),
        declared=frozenset(declared.modules()),
        floating=FLOATING_MODELS | frozenset(config.extra_floating_models),
    )

    ruff_select = [u for u in _RUFF_CODES if UPSTREAM[u] in enabled]
    ruff: _Ruff | None = None
    ruff_files = _ruff_candidates(files.python) if ruff_select else []
    if ruff_files:
        binary = find_tool("ruff")
        if binary is None:
            report.notes.append("ruff not found: FC401-FC403, FC405 and FC502 (requests) not checked")
        else:
            ruff = _Ruff(binary, ruff_files, ruff_select)
            report.tools["ruff"] = binary
    extra: dict[str, list[Raw]] = {}
    try:
        results = list(_scan(files, settings))
        report.files = sum(1 for r in results if not r.skipped)
        if ruff is not None:
            try:
                extra = ruff.results()
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                report.notes.append(f"ruff failed ({exc}): FC401-FC403, FC405 and FC502 "
                                    "(requests) not checked")
    finally:
        if ruff is not None:
            ruff.kill()
    for rel, raws in extra.items():
        results.append(FileResult(rel, raws=raws))

    results.extend(_dockerfiles(files.dockerfiles, enabled, report, use_hadolint))
    _finish(report, results, declared.distributions, enabled, severities, bool(declared.files))
    report.seconds = round(time.perf_counter() - started, 3)
    return report


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
    for task in sorted(tasks, key=lambda t: -_size(t.path)):
        i = loads.index(min(loads))
        bins[i].append(task)
        loads[i] += _size(task.path) + 2000  # per-file overhead
    return bins


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _dockerfiles(
    found: list[tuple[Path, str]], enabled: frozenset[str], report: LintReport, use_hadolint: bool
) -> Iterator[FileResult]:
    if not found or not enabled & {"FC801", "FC802", "FC803", "FC804", "FC805"}:
        return
    parsed: dict[str, list[dockerfile.Instruction]] = {}
    for path, rel in found:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # the text pass already noted it
        parsed[rel] = dockerfile.parse(text)
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
            raws += [r for r in via_hadolint.get(rel, []) if r.code in enabled]
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
) -> None:
    suppress: dict[str, dict[int, set[str]]] = {}
    pending: list[tuple[str, Raw]] = []
    exports: dict[str, str] = {}
    undecided: list[tuple[str, Raw]] = []
    for res in results:
        if res.skipped:
            report.skipped.append(SkippedFile(res.rel, res.skipped))
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
                    file=rel, line=raw.line, col=raw.col, fix=rule.fix)
        )
    report.findings.sort(key=lambda f: (f.file or "", f.line or 0, f.col or 0, f.code))
    report.skipped.sort(key=lambda s: s.file)
