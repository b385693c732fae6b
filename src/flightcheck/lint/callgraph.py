"""FC406: a blocking call reached from ``async def`` through the project's own functions.

The workers record, per function of a file with async code, its first blocking call
(requests, sync httpx, urlopen, time.sleep, subprocess, a sync LLM client) and the calls it
makes to names; here the calls are resolved against the project's modules — a module that
async code calls into is read on demand, so the cost follows the async code, not the tree —
and followed through synchronous functions, at most :data:`DEPTH` calls deep. Handing a function to ``asyncio.to_thread``/``run_in_executor`` is not
a call of it, so the usual fix is silent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from flightcheck.lint.pyscan import FileResult, FunctionFacts
from flightcheck.lint.textscan import Raw

DEPTH = 3  # async def → f → g → h that blocks


@dataclass(frozen=True)
class _Node:
    rel: str
    module: str
    qualname: str
    facts: FunctionFacts


def blocking_calls(results: Iterable[FileResult], module_names: Callable[[str], list[str]],
                   modules: dict[str, str],
                   load: Callable[[str], dict[str, FunctionFacts]]) -> dict[str, list[Raw]]:
    """rel → FC406 findings at the call sites in async functions.

    ``results`` carry the facts of files with async code; ``modules`` maps the project's
    dotted module names to files, and ``load(rel)`` reads the facts of a module that async
    code calls into (only those are ever read)."""
    table: dict[str, _Node] = {}
    files: list[tuple[str, list[str], dict[str, FunctionFacts]]] = []
    known: set[str] = set()

    def add(rel: str, functions: dict[str, FunctionFacts]) -> list[str]:
        known.add(rel)
        names = module_names(rel)
        for module in names:
            for qual, facts in functions.items():
                table.setdefault(f"{module}.{qual}", _Node(rel, module, qual, facts))
        return names

    for res in results:
        if res.functions:
            files.append((res.rel, add(res.rel, res.functions), res.functions))

    memo: dict[tuple[str, int], list[str] | None] = {}

    def resolve(target: str, names: list[str]) -> _Node | None:
        if target.startswith("."):
            for module in names:
                node = table.get(module + target)
                if node is not None:
                    return node
            return None
        node = table.get(target)
        if node is None:
            # app.helpers.fetch or app.helpers.Client.get: read that module once
            parts = target.split(".")
            for cut in range(len(parts) - 1, 0, -1):
                rel = modules.get(".".join(parts[:cut]))
                if rel is not None and rel not in known:
                    add(rel, load(rel))
                    node = table.get(target)
                    break
        return node

    def chain(key: str, node: _Node, depth: int) -> list[str] | None:
        """How the synchronous ``node`` blocks: [f(), g(), 'requests.get() (rel:line)']."""
        if (key, depth) in memo:
            return memo[key, depth]
        memo[key, depth] = None  # recursion guard
        is_async, blocking, calls = node.facts
        found: list[str] | None = None
        if is_async:
            pass  # calling it makes a coroutine; its own body is checked as async code
        elif blocking is not None:
            found = [f"{blocking[0]}() ({node.rel}:{blocking[1]})"]
        elif depth > 1:
            names = module_names(node.rel)
            for target, _line, _col in calls:
                callee = resolve(target, names)
                if callee is None:
                    continue
                sub = chain(f"{callee.module}.{callee.qualname}", callee, depth - 1)
                if sub is not None:
                    found = [f"{callee.qualname}()", *sub]
                    break
        memo[key, depth] = found
        return found

    out: dict[str, list[Raw]] = {}
    for rel, names, functions in files:
        for qual, (is_async, _blocking, calls) in functions.items():
            if not is_async:
                continue
            seen: set[int] = set()
            for target, line, col in calls:
                callee = resolve(target, names)
                if callee is None or line in seen:
                    continue
                path = chain(f"{callee.module}.{callee.qualname}", callee, DEPTH)
                if path is None:
                    continue
                seen.add(line)
                via = " → ".join([f"{callee.qualname}()", *path])
                out.setdefault(rel, []).append(Raw(
                    "FC406", line, col,
                    f"async def {qual.rpartition('.')[2]}() calls {callee.qualname}(), which "
                    f"blocks the event loop: {via}"))
    return out
