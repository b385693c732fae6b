"""The lint cache: results of unchanged files are reused, keyed by content hash.

One pickle per scanned root under ``$FLIGHTCHECK_CACHE_DIR``, else
``$XDG_CACHE_HOME/flightcheck`` (``~/.cache/flightcheck``): not under the scanned root, which
is usually the service's build context (a cache there would change the image's inputs). The
whole file is keyed by what can change a file's findings besides its content — flightcheck's
version, the enabled rules, the project's modules and declared dependencies, the target Python,
the tools' identities — so a change there starts afresh. Per file: the worker's result and
ruff's findings. The type gate's findings are kept for one set of file hashes (ty checks the
program as a whole), and FC406's facts of the modules it read on demand. A file whose size,
mtime, ctime and inode are those recorded with its hash is not read again (as git's index does); the
record is kept only for files last modified well before the run that read them, so a change in
the same clock tick as that read is still seen. Entries of files no longer present are dropped
on write; a corrupt or foreign cache is ignored. ``[lint].cache = false``, ``--no-cache`` or
``FLIGHTCHECK_NO_CACHE=1`` turn it off.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from flightcheck.lint.pyscan import FileResult, FunctionFacts
from flightcheck.lint.textscan import Raw

_FORMAT = 3  # 2: FileResult.compiled; 3: stat records, FC406 facts


def cache_dir() -> Path:
    explicit = os.environ.get("FLIGHTCHECK_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "flightcheck"


def disabled_by_env() -> bool:
    return os.environ.get("FLIGHTCHECK_NO_CACHE", "") not in ("", "0")


def write_atomically(path: Path, data: bytes) -> None:
    """``data`` at ``path`` whole or not at all: a temp file beside it, then a rename (a reader
    never sees half a record). Raises OSError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def key_of(*parts: object) -> str:
    return hashlib.blake2b(repr(parts).encode(), digest_size=16).hexdigest()


@dataclass
class Entry:
    hash: bytes
    result: FileResult
    ruff: list[Raw] | None = None  # None: ruff did not look at this file
    ruff_parse_error: bool = False
    stat: tuple[int, int, int, int] | None = None  # (size, mtime, ctime, inode) at hashing


Stat = tuple[int, int, int, int]
Facts = dict[str, FunctionFacts]


@dataclass
class LintCache:
    path: Path
    key: str
    entries: dict[str, Entry] = field(default_factory=dict)
    type_key: str = ""
    type_results: dict[str, list[Raw]] = field(default_factory=dict)
    facts: dict[str, tuple[bytes, Facts]] = field(default_factory=dict)  # rel → (hash, facts)

    @classmethod
    def open(cls, root: Path, key: str) -> LintCache:
        path = cache_dir() / "lint" / f"{key_of(str(root))}.pickle"
        cache = cls(path, key)
        try:
            with open(path, "rb") as fh:
                data = pickle.load(fh)
            if (isinstance(data, dict) and data.get("format") == _FORMAT
                    and data.get("key") == key and data.get("root") == str(root)):
                cache.entries = data["entries"]
                cache.type_key = data["type_key"]
                cache.type_results = data["type_results"]
                cache.facts = data["facts"]
        except (OSError, pickle.PickleError, EOFError, AttributeError, KeyError, TypeError,
                ValueError, ImportError, IndexError):
            pass  # absent, corrupt or from another version: start afresh
        return cache

    def lookup(self, rel: str, hash_: bytes) -> Entry | None:
        entry = self.entries.get(rel)
        return entry if entry is not None and entry.hash == hash_ else None

    def known_hash(self, rel: str, stat: Stat) -> bytes | None:
        """The recorded hash of ``rel`` when its stat is the recorded one: no need to read it."""
        entry = self.entries.get(rel)
        return entry.hash if entry is not None and entry.stat == stat else None

    def unchanged(self, entries: dict[str, Entry], type_key: str,
                  facts: dict[str, tuple[bytes, Facts]]) -> bool:
        """Whether saving would write what is already there (a warm run on an unchanged tree)."""
        return (type_key == self.type_key and facts.keys() == self.facts.keys()
                and entries.keys() == self.entries.keys()
                and all(e is self.entries[rel] for rel, e in entries.items()))

    def save(self, root: Path, entries: dict[str, Entry], type_key: str,
             type_results: dict[str, list[Raw]],
             facts: dict[str, tuple[bytes, Facts]] | None = None) -> str | None:
        """Write atomically; the error text when the cache cannot be written (never fatal)."""
        data = {"format": _FORMAT, "key": self.key, "root": str(root), "entries": entries,
                "type_key": type_key, "type_results": type_results, "facts": facts or {}}
        try:
            write_atomically(self.path, pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError as exc:
            return f"lint cache not written ({exc.strerror or exc}): the next run starts cold"
        return None
