"""Benchmark: flightcheck lint vs ruff on a copy of the CPython standard library.

Copies ``lib/python3.X`` of the running interpreter (without site-packages and __pycache__)
to a temp dir, then times, in the same run and alternating:

* ``ruff check --select ALL --no-cache TREE`` (the baseline; output discarded),
* the same with ``--output-format concise`` (ruff's default output renders a source snippet for
  each of ~10^6 diagnostics, which is most of its wall time here; this is the stricter
  comparison, printed for the record), and
* flightcheck lint over the same tree with every category on (a fresh interpreter, so start-up
  and imports count),

and reports wall time, the ratios, and peak memory (summed RSS of the whole process tree,
sampled every 20 ms). The best of the rounds counts: the machine may be shared.

Target: flightcheck ≤ 1.5 × ruff. Run: ``.venv/bin/python bench/bench_lint.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

TARGET_RATIO = 1.5

_LINT = """
import json, sys
from pathlib import Path
from flightcheck.config import LintConfig
from flightcheck.lint import lint_paths
root = Path(sys.argv[1])
report = lint_paths(root, [root], LintConfig(exclude=[]))
print(json.dumps({"files": report.files, "lines": report.lines, "parsed": report.parsed,
                  "findings": len(report.findings), "by_category": report.by_category(),
                  "skipped": len(report.skipped), "seconds": report.seconds}))
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


def _timed(cmd: list[str], *, capture: bool) -> tuple[float, int, str]:
    """Wall seconds, peak tree RSS and stdout of ``cmd``."""
    peak = 0
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE if capture else subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
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
    return wall, peak, (out or b"").decode()


def _copy_stdlib(dest: Path) -> Path:
    src = Path(sysconfig.get_paths()["stdlib"])
    tree = dest / src.name
    shutil.copytree(src, tree, ignore=shutil.ignore_patterns("site-packages", "__pycache__"))
    return tree


def _count(tree: Path) -> tuple[int, int]:
    files = list(tree.rglob("*.py"))
    lines = sum(p.read_bytes().count(b"\n") for p in files)
    return len(files), lines


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (best is kept)")
    args = ap.parse_args()
    from flightcheck.lint.engine import find_tool

    ruff = find_tool("ruff")
    if ruff is None:
        print("ruff not found (pip install -e '.[dev]')", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="fc-bench-lint-") as tmp:
        tree = _copy_stdlib(Path(tmp))
        n_files, n_lines = _count(tree)
        print(f"tree: {tree} — {n_files} .py files, {n_lines:,} lines; {os.cpu_count()} cores")
        ruff_cmd = [ruff, "check", "--select", "ALL", "--no-cache", str(tree)]
        commands = {
            "ruff": ruff_cmd,
            "ruff-concise": [*ruff_cmd, "--output-format", "concise"],
            "flightcheck": [sys.executable, "-c", _LINT, str(tree)],
        }
        runs: dict[str, list[tuple[float, int]]] = {name: [] for name in commands}
        info: dict[str, object] = {}
        for i in range(args.rounds):
            order = list(commands)
            if i % 2:
                order.reverse()
            for name in order:
                wall, peak, out = _timed(commands[name], capture=name == "flightcheck")
                runs[name].append((wall, peak))
                if name == "flightcheck":
                    info = json.loads(out.strip().splitlines()[-1])
                print(f"  round {i + 1}: {name:<12} {wall:7.2f} s  peak {peak / 2**20:7.1f} MiB")
    best = {name: min(w for w, _ in r) for name, r in runs.items()}
    labels = {
        "ruff": "ruff check --select ALL --no-cache",
        "ruff-concise": "  … --output-format concise",
        "flightcheck": "flightcheck lint (all categories)",
    }
    print()
    for name, r in runs.items():
        print(f"{labels[name]:<35}: {best[name]:6.2f} s (best of {len(r)}; median "
              f"{statistics.median(w for w, _ in r):.2f} s), peak "
              f"{max(p for _, p in r) / 2**20:.0f} MiB")
    ratio = best["flightcheck"] / best["ruff"]
    print(f"ratio flightcheck / ruff            : {ratio:.2f}  (target ≤ {TARGET_RATIO})  "
          f"{'OK' if ratio <= TARGET_RATIO else 'OVER TARGET'}")
    print(f"ratio flightcheck / ruff (concise)  : {best['flightcheck'] / best['ruff-concise']:.2f}")
    print(f"flightcheck saw {info.get('files')} files, {info.get('lines'):,} lines; "
          f"{info.get('parsed')} needed the AST rules; {info.get('findings')} findings "
          f"{info.get('by_category')}; {info.get('skipped')} skipped")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    raise SystemExit(main())
