"""What a worker does with one file: read it once, skip what cannot be text, then run the
Python scanner or the text rules.

A worker process (started by the engine, or ``python -m flightcheck.lint.worker``) reads
``(settings, tasks)`` pickled on stdin and writes the list of results pickled on stdout. Plain subprocesses rather
than multiprocessing: no re-import of the caller's ``__main__``, no fork of a threaded parent.
"""

from __future__ import annotations

import gc
import pickle
import sys
from typing import NamedTuple

from flightcheck.lint.pyscan import FileResult, Scanner, Settings, decode, undecodable_python
from flightcheck.lint.textscan import (
    LineIndex,
    Raw,
    scan_config_text,
    scan_credentials,
    suppressions,
)

_SCANNER: Scanner | None = None


class Task(NamedTuple):
    path: str  # absolute
    rel: str  # relative to the scanned root, "/"-separated
    kind: str  # "python" | "config" | "dockerfile"
    is_test: bool


def init(settings: Settings) -> None:
    """Process-pool initializer (also used inline)."""
    global _SCANNER
    _SCANNER = Scanner(settings)


def run(task: Task) -> FileResult:
    """Check one file; never raises for a bad file (it becomes a skip note)."""
    assert _SCANNER is not None, "worker.init() was not called"
    try:
        with open(task.path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return FileResult(task.rel, skipped=f"unreadable ({exc.strerror or exc})")
    if task.kind == "python":
        rejected = undecodable_python(data)
        if rejected is not None:
            # CPython refuses these files outright: the service dies on import.
            return FileResult(task.rel, raws=[rejected], lines=data.count(b"\n"), compiled=True)
    if b"\0" in data:
        return FileResult(task.rel, skipped="binary (contains NUL bytes)", unchecked=False)
    text = decode(data)
    if text is None:
        return FileResult(task.rel, skipped="not UTF-8 and no PEP 263 coding declaration",
                          unchecked=False)
    try:
        if task.kind == "python":
            return _SCANNER.scan(task.rel, text, is_test=task.is_test)
        return _text(task, text, _SCANNER)
    except Exception as exc:  # a linter bug must not hide the other files' findings
        return FileResult(task.rel, skipped=f"internal error, please report: {type(exc).__name__}: {exc}")


def _text(task: Task, text: str, scanner: Scanner) -> FileResult:
    index = LineIndex(text)
    res = FileResult(task.rel, lines=index.lines)
    on = scanner.s.enabled
    if task.kind == "config":
        res.suppress = suppressions(text, index)
    if on & {"FC301", "FC302", "FC303"}:
        res.raws.extend(_test_keys(r, task.is_test) for r in scan_credentials(text, index) if r.code in on)
    if on & {"FC304", "FC701"} and not task.is_test:
        taken = {r.line for r in res.raws}
        res.raws.extend(
            r
            for r in scan_config_text(text, index, scanner.s.floating)
            if r.code in on and not (r.code == "FC304" and r.line in taken)
        )
    return res


def _test_keys(raw: Raw, is_test: bool) -> Raw:
    """Key pairs under test directories are fixtures far more often than leaks: warn only."""
    return raw._replace(severity="warning") if is_test and raw.code == "FC303" else raw


def main() -> None:
    # A short-lived process building many ASTs: the cyclic GC would only cost time (~3x).
    gc.disable()
    settings, tasks = pickle.load(sys.stdin.buffer)
    init(settings)
    results = [run(task) for task in tasks]
    pickle.dump(results, sys.stdout.buffer, protocol=pickle.HIGHEST_PROTOCOL)


if __name__ == "__main__":
    main()
