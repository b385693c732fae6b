"""Benchmark: flightcheck lint vs ruff on a copy of the CPython standard library.

Copies ``lib/python3.X`` of the running interpreter (without site-packages and __pycache__) to
a temp dir, adds a service Dockerfile (``FROM python:3.10-slim``, uvicorn) so that every check
runs — the target-Python syntax pass over all files included — then times, in the same run and
alternating:

* ``ruff check --select ALL --no-cache --output-format concise TREE`` (the baseline; concise
  because ruff's default output renders a code frame for each of ~10^6 diagnostics, which is
  printing, not linting),
* flightcheck lint cold: every category on, an empty cache directory (a fresh interpreter, so
  start-up and imports count; the run writes the cache),
* flightcheck lint warm: the same tree again with the cache the cold run wrote,
* flightcheck lint cold without the type gate (``disable = ["type"]``, its own empty cache):
  the linting pass alone, since the type gate runs a type checker (ty), which a linter does
  not,

and reports wall time, the ratios, and peak memory (summed RSS of the whole process tree —
workers, ruff and ty included — sampled every 20 ms). The best of the rounds counts: the
machine may be shared.

``--type-checkers`` also times ty and pyrefly (when installed) restricted to the type gate's
rules on the same tree: the measurement behind choosing ty.

Targets: cold ≤ 1.0 × ruff, warm ≤ 0.10 × cold, peak memory below ruff's.
Run: ``.venv/bin/python bench/bench_lint.py [--rounds N] [--type-checkers]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

TARGET_COLD = 1.0
TARGET_WARM = 0.10

_LINT = """
import json, sys
from pathlib import Path
from flightcheck.config import LintConfig
from flightcheck.lint import lint_paths
root = Path(sys.argv[1])
report = lint_paths(root, [root], LintConfig(exclude=[], disable=sys.argv[2:]))
print(json.dumps({"files": report.files, "lines": report.lines, "parsed": report.parsed,
                  "findings": len(report.findings), "by_category": report.by_category(),
                  "skipped": len(report.skipped), "seconds": report.seconds,
                  "cache": report.tools.get("cache", ""), "notes": report.notes}))
"""

_DOCKERFILE = """FROM python:3.10-slim
WORKDIR /app
COPY . .
USER 10001
CMD ["uvicorn", "asyncio.__main__:app", "--host", "0.0.0.0", "--port", "8080"]
"""


def _tree_rss(pid: int) -> int:
    """Sum of VmRSS over ``pid`` and its descendants (Linux /proc), bytes."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                children = (task / "children").read_text().split()
                todo.extend(int(c) for c in children)
        except (OSError, ValueError):
            continue
    return total


def _timed(cmd: list[str], *, env: dict[str, str] | None = None,
           cwd: Path | None = None) -> tuple[float, int, str, float]:
    """Wall seconds, peak tree RSS, stdout and CPU seconds (user + system, children included)
    of ``cmd``. CPU time is the steadier measure on a shared machine."""
    peak = 0
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                            cwd=cwd)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, peak, (out or b"").decode(), cpu


def _copy_stdlib(dest: Path) -> Path:
    src = Path(sysconfig.get_paths()["stdlib"])
    tree = dest / src.name
    shutil.copytree(src, tree, ignore=shutil.ignore_patterns("site-packages", "__pycache__"))
    (tree / "Dockerfile").write_text(_DOCKERFILE)
    return tree


def _count(tree: Path) -> tuple[int, int]:
    files = list(tree.rglob("*.py"))
    lines = sum(p.read_bytes().count(b"\n") for p in files)
    return len(files), lines


def _type_checkers(tree: Path, env_dir: Path) -> None:
    from flightcheck.lint.engine import find_tool
    from flightcheck.lint.typegate import TY_RULES

    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    (env_dir / "lib" / f"python{python}" / "site-packages").mkdir(parents=True)
    (env_dir / "pyvenv.cfg").write_text(f"home = /nonexistent\nversion = {python}\n")
    commands: dict[str, list[str]] = {}
    ty = find_tool("ty")
    if ty:
        rules = [a for r in TY_RULES for a in ("--error", r)]
        commands["ty"] = [ty, "check", "--python", str(env_dir), "--python-version", python,
                          "--ignore", "all", *rules, "--output-format", "concise",
                          "--exit-zero", "--no-progress", str(tree)]
    pyrefly = find_tool("pyrefly")
    if pyrefly:
        cfg = tree / "pyrefly.toml"  # pyrefly checks what lies under its config's directory
        cfg.write_text(
            f'preset = "off"\npython-version = "{python}"\nskip-interpreter-query = true\n'
            "[errors]\nmissing-argument = \"error\"\nbad-argument-count = \"error\"\n"
            "unexpected-keyword = \"error\"\nnot-callable = \"error\"\n"
            "missing-attribute = \"error\"\n")
        commands["pyrefly"] = [pyrefly, "check", "-c", str(cfg), "--output-format", "min-text",
                               "."]  # run inside the tree: pyrefly takes globs, not a directory
    if not commands:
        print("type checkers: neither ty nor pyrefly is installed")
        return
    print()
    for name, cmd in commands.items():
        wall, peak, out, cpu = _timed(cmd, cwd=tree)
        print(f"type checker {name:<8}: {wall:6.2f} s, {cpu:6.2f} CPU-s, peak "
              f"{peak / 2**20:6.0f} MiB, {len(out.splitlines())} diagnostics (unfiltered)")


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (best is kept)")
    ap.add_argument("--type-checkers", action="store_true", help="also time ty and pyrefly")
    args = ap.parse_args()
    from flightcheck.lint.engine import find_tool

    ruff = find_tool("ruff")
    if ruff is None:
        print("ruff not found (pip install -e '.[dev]')", file=sys.stderr)
        return 2
    runs: dict[str, list[tuple[float, int]]] = {"ruff": [], "cold": [], "warm": [], "notype": []}
    cpus: dict[str, list[float]] = {"ruff": [], "cold": [], "warm": [], "notype": []}
    info: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="fc-bench-lint-") as tmp:
        tree = _copy_stdlib(Path(tmp))
        n_files, n_lines = _count(tree)
        print(f"tree: {tree} — {n_files} .py files, {n_lines:,} lines; {os.cpu_count()} cores")
        ruff_cmd = [ruff, "check", "--select", "ALL", "--no-cache", "--output-format", "concise",
                    str(tree)]
        lint_cmd = [sys.executable, "-c", _LINT, str(tree)]
        for i in range(args.rounds):
            env = {**os.environ, "FLIGHTCHECK_CACHE_DIR": str(Path(tmp) / f"cache-{i}")}
            env.pop("FLIGHTCHECK_NO_CACHE", None)
            notype_env = {**env, "FLIGHTCHECK_CACHE_DIR": str(Path(tmp) / f"cache-notype-{i}")}
            envs = {"ruff": None, "cold": env, "warm": env, "notype": notype_env}
            steps = [("ruff", ruff_cmd), ("cold", lint_cmd), ("warm", lint_cmd),
                     ("notype", [*lint_cmd, "type"])]
            if i % 2:
                steps = [steps[3], steps[1], steps[2], steps[0]]  # cold must precede warm
            for name, cmd in steps:
                wall, peak, out, cpu = _timed(cmd, env=envs[name])
                runs[name].append((wall, peak))
                cpus[name].append(cpu)
                if name != "ruff":
                    info[name] = json.loads(out.strip().splitlines()[-1])
                print(f"  round {i + 1}: {name:<6} {wall:7.2f} s  {cpu:7.2f} CPU-s  "
                      f"peak {peak / 2**20:7.1f} MiB")
        if args.type_checkers:
            _type_checkers(tree, Path(tmp) / "emptyenv")
    best = {name: min(w for w, _ in r) for name, r in runs.items()}
    peaks = {name: max(p for _, p in r) for name, r in runs.items()}
    labels = {
        "ruff": "ruff check --select ALL (concise)",
        "cold": "flightcheck lint, cold (all checks)",
        "warm": "flightcheck lint, warm (cache)",
        "notype": "flightcheck lint, cold, type gate off",
    }
    print()
    cpu = {name: min(c) for name, c in cpus.items()}
    for name, r in runs.items():
        print(f"{labels[name]:<37}: {best[name]:6.2f} s (best of {len(r)}; median "
              f"{statistics.median(w for w, _ in r):.2f} s), {cpu[name]:.2f} CPU-s, peak "
              f"{peaks[name] / 2**20:.0f} MiB")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
          "(a loaded machine stretches wall times; CPU-s ratios are steadier)")
    print(f"cold / ruff, CPU-s : {cpu['cold'] / cpu['ruff']:.2f}")
    cold = best["cold"] / best["ruff"]
    warm = best["warm"] / best["cold"]
    memory_ok = peaks["cold"] < peaks["ruff"]
    print(f"cold / ruff : {cold:.2f}  (target ≤ {TARGET_COLD})  "
          f"{'OK' if cold <= TARGET_COLD else 'OVER TARGET'}")
    print(f"warm / cold : {warm:.2f}  (target ≤ {TARGET_WARM})  "
          f"{'OK' if warm <= TARGET_WARM else 'OVER TARGET'}")
    print(f"without the type gate: cold / ruff {best['notype'] / best['ruff']:.2f} wall, "
          f"{cpu['notype'] / cpu['ruff']:.2f} CPU-s (the linting pass alone; the target above "
          "includes the type checker)")
    print(f"peak memory : flightcheck {peaks['cold'] / 2**20:.0f} MiB vs ruff "
          f"{peaks['ruff'] / 2**20:.0f} MiB  {'OK' if memory_ok else 'OVER TARGET'}")
    cold_info = info.get("cold", {})
    print(f"flightcheck saw {cold_info.get('files')} files, {cold_info.get('lines')} lines; "
          f"{cold_info.get('parsed')} needed the AST rules; {cold_info.get('findings')} findings "
          f"{cold_info.get('by_category')}; {cold_info.get('skipped')} skipped; "
          f"warm: cache {info.get('warm', {}).get('cache')}")
    for note in cold_info.get("notes") or []:  # type: ignore[union-attr]
        print(f"note: {note}")
    ok = cold <= TARGET_COLD and warm <= TARGET_WARM and memory_ok
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
