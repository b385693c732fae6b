"""Runtimes sit below the stages: no module under flightcheck.runtimes imports the graph, a
stage, the run context or a command line (DESIGN.md: "runtimes swappable behind a small
protocol, below the stages (no imports upward)"). Checked on the source with ast, so an import
hidden in a function body counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
RUNTIMES = SRC / "flightcheck" / "runtimes"
ABOVE = ("flightcheck.graph", "flightcheck.stages", "flightcheck.cli", "flightcheck.attached_cli",
         "flightcheck.context")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every module ``source`` (the text of ``module``) imports, as absolute names; ``from pkg
    import name`` counts as ``pkg`` and ``pkg.name`` (name may be a submodule)."""
    package = module if is_package else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def upward(names: set[str]) -> list[str]:
    return sorted(m for m in names if any(m == a or m.startswith(a + ".") for a in ABOVE))


def test_no_runtime_module_imports_the_layers_above() -> None:
    files = sorted(RUNTIMES.rglob("*.py"))
    assert {"base.py", "docker.py", "process.py", "attached.py", "guard.py"} <= \
        {f.name for f in files}
    offenders = {}
    for f in files:
        names = imported(f.read_text(encoding="utf-8"), module_name(f),
                         is_package=f.name == "__init__.py")
        if upward(names):
            offenders[str(f.relative_to(SRC))] = upward(names)
    assert offenders == {}, f"runtimes must not import upward: {offenders}"


@pytest.mark.parametrize("code, found", [
    ("from flightcheck import graph", ["flightcheck.graph"]),
    ("def f():\n    from flightcheck.stages.run import x",
     ["flightcheck.stages.run", "flightcheck.stages.run.x"]),
    ("import flightcheck.cli as c", ["flightcheck.cli"]),
    ("from ..context import Context", ["flightcheck.context", "flightcheck.context.Context"]),
    ("from .. import stages", ["flightcheck.stages"]),
    ("from flightcheck.runtimes.base import Exit\nfrom . import _proc\nimport httpx", []),
])
def test_the_check_sees_every_kind_of_import(code: str, found: list[str]) -> None:
    assert upward(imported(code, "flightcheck.runtimes.probe")) == found


def test_the_attached_plan_lives_above_the_stages() -> None:
    plan = SRC / "flightcheck" / "attached_cli.py"
    names = imported(plan.read_text(encoding="utf-8"), "flightcheck.attached_cli")
    assert "flightcheck.graph" in names  # it runs the graph's prepare hooks: hence its place
