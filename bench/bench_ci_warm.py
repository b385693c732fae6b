"""Warm re-run of `flightcheck ci` on the unchanged reference service (image cached).

Prints total wall time and the per-stage split for the docker runtime (and the process
runtime), next to a baseline measured in the same run: the bare minimum any pipeline pays —
`docker run` of the same image until its startup probe answers 200, then `docker rm -f`.
Target: warm `flightcheck ci` on docker ≤ 10 s.

    .venv/bin/python bench/bench_ci_warm.py [--runs 3] [--runtime docker|process|both]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 10.0


def _ci(runtime: str, report_dir: Path) -> tuple[float, dict[str, float], int]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "flightcheck.cli", "ci", "--runtime", runtime,
         "--report-dir", str(report_dir)],
        cwd=REPO, capture_output=True, text=True, check=False,
    )
    wall = time.perf_counter() - started
    report = json.loads((report_dir / "flightcheck-report.json").read_text())
    split = {s["name"]: s["duration_s"] for s in report["stages"]}
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
    return wall, split, proc.returncode


def _image_of(report_dir: Path) -> str:
    report = json.loads((report_dir / "flightcheck-report.json").read_text())
    build = next(s for s in report["stages"] if s["name"] == "build")
    return str(build["details"]["image"])


def _bare_docker(image: str) -> float:
    """docker run → /health/startup 200 → docker rm -f, with the Debian client."""
    started = time.perf_counter()
    cid = subprocess.run(
        ["/usr/bin/docker", "run", "-d", "-p", "127.0.0.1::8080", image],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    try:
        port = subprocess.run(
            ["/usr/bin/docker", "port", cid, "8080/tcp"], capture_output=True, text=True, check=True
        ).stdout.split(":")[-1].strip()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/startup", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
    finally:
        subprocess.run(["/usr/bin/docker", "rm", "-f", cid], capture_output=True, check=False)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--runtime", choices=["docker", "process", "both"], default="both")
    args = parser.parse_args()
    runtimes = ["docker", "process"] if args.runtime == "both" else [args.runtime]
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    with tempfile.TemporaryDirectory() as tmp:
        for runtime in runtimes:
            report_dir = Path(tmp) / runtime
            _ci(runtime, report_dir)  # warm-up: builds and caches the image
            walls: list[float] = []
            splits: list[dict[str, float]] = []
            for _ in range(args.runs):
                wall, split, rc = _ci(runtime, report_dir)
                if rc != 0:
                    print(f"{runtime}: flightcheck ci failed (exit {rc})")
                    return 1
                walls.append(wall)
                splits.append(split)
            median = statistics.median(walls)
            print(f"\n{runtime}: warm `flightcheck ci` over {args.runs} runs")
            print(f"  total wall   median {median:6.2f} s  (min {min(walls):.2f}, max {max(walls):.2f})")
            for stage in splits[0]:
                values = [s.get(stage, 0.0) for s in splits]
                print(f"  {stage:<22} median {statistics.median(values):6.2f} s")
            if runtime == "docker":
                image = _image_of(report_dir)
                bare = statistics.median(_bare_docker(image) for _ in range(args.runs))
                print(f"  baseline: bare docker run → startup 200 → rm: {bare:.2f} s")
                print(f"  ratio flightcheck ci / bare run: {median / bare:.2f}×")
                verdict = "meets" if median <= TARGET_S else "MISSES"
                print(f"  target ≤ {TARGET_S:.0f} s: {verdict} ({median / TARGET_S:.2f}× of target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
