"""Deploy speed on the local target, against a baseline measured in the same run.

1. ``flightcheck deploy`` → 100% with step durations 0 (a step is judged once the candidate
   answered ``min_requests`` times), beside a plain ``docker run`` → healthy of the same image:
   what the rollout (push by digest, candidate, tag-URL checks, three canary steps, promote)
   costs over just starting the container.
2. A bad canary (``FAULT_ERROR_RATE=0.3``): the time from its first bad answer, and from the
   verdict (the threshold crossed), to the traffic back on the old revision.

    python bench/bench_deploy.py [--runs 3]

Targets: a bad canary is rolled back within one analysis interval — ≤ 1 s after the threshold
is crossed.
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
from typing import Any

import anyio
import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from flightcheck.cloudrun import local  # noqa: E402
from flightcheck.runtimes.docker import DockerRuntime  # noqa: E402

TARGET_ROLLBACK_S = 1.0
FAST = {
    "FLIGHTCHECK__DEPLOY__CANARY__STEP_DURATION_S": "0",
    "FLIGHTCHECK__DEPLOY__CANARY__REQUEST_RATE": "200",
    "FLIGHTCHECK__DEPLOY__CANARY__MIN_REQUESTS": "10",
}
SMALL_SUITE = "tests/fixtures/deploy/small-suite.yaml"  # inside the project


def docker_run_to_healthy(image: str) -> float:
    """Seconds from `docker run` (the API's create + start) to /health/startup answering 200."""
    import docker

    client = docker.from_env()
    started = time.perf_counter()
    container = client.containers.run(image, detach=True, environment={"PORT": "8080"},
                                      ports={"8080/tcp": ("127.0.0.1", None)},
                                      labels={"flightcheck.bench": "deploy"})
    try:
        port = None
        while port is None:
            container.reload()
            bindings = container.attrs["NetworkSettings"]["Ports"].get("8080/tcp") or []
            port = int(bindings[0]["HostPort"]) if bindings else None
        with httpx.Client(trust_env=False, timeout=2) as http:
            while True:
                try:
                    if http.get(f"http://127.0.0.1:{port}/health/startup").status_code == 200:
                        return time.perf_counter() - started
                except httpx.HTTPError:
                    pass
                time.sleep(0.005)
    finally:
        container.remove(force=True)


def deploy(api: str, service: str, report_dir: Path, *args: str, **env: str
           ) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "flightcheck.cli", "deploy", "--api-endpoint", api,
         "--report-dir", str(report_dir), *args],
        cwd=REPO, capture_output=True, text=True, check=False,
        env={**os.environ, **FAST, "FLIGHTCHECK__DEPLOY__SERVICE": service, **env})
    seconds = time.perf_counter() - started
    report = json.loads((report_dir / "flightcheck-report.json").read_text())
    stage = next(s for s in report["stages"] if s["name"] == "deploy")
    if proc.returncode not in (0, 1):
        raise SystemExit(f"deploy failed to run:\n{proc.stderr[-3000:]}")
    return seconds, stage


def _measure(stage: dict[str, Any], name: str) -> float | None:
    value = next((m["value"] for m in stage["measurements"] if m["name"] == name), None)
    return float(value) if isinstance(value, int | float) else None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    image = anyio.run(DockerRuntime(name="mathcoach").build, REPO, "Dockerfile").ref
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        api = local.ensure_running(work / "emulator", runtime="docker")
        try:
            plain = [docker_run_to_healthy(image) for _ in range(args.runs)]
            _, first = deploy(api, "bench", work / "first")
            assert first["status"] == "pass", first["summary"]
            total, rollout = [], []
            for i in range(args.runs):
                seconds, stage = deploy(api, "bench", work / f"good-{i}")
                assert stage["status"] == "pass", stage["summary"]
                total.append(seconds)
                rollout.append(_measure(stage, "deploy_seconds") or 0.0)
            first_bad, verdict = [], []
            for i in range(args.runs):
                _, stage = deploy(api, "bench", work / f"bad-{i}", "--service-env",
                                  "FAULT_ERROR_RATE=0.3", FLIGHTCHECK__SMOKE__SUITE=SMALL_SUITE)
                assert stage["details"]["status"] == "rolled_back", stage["summary"]
                first_bad.append(_measure(stage, "first_bad_to_rollback_s") or float("nan"))
                verdict.append(_measure(stage, "verdict_to_rollback_s") or float("nan"))
        finally:
            local.stop(work / "emulator")

    med = statistics.median
    print(f"image {image}, {args.runs} runs each, local target, step durations 0")
    print(f"plain docker run → healthy          median {med(plain):7.2f} s")
    print(f"flightcheck deploy → 100% (command) median {med(total):7.2f} s "
          f"({med(total) / med(plain):.1f}× the plain run; build cached, push, 3 steps)")
    print(f"  of which the rollout itself       median {med(rollout):7.2f} s "
          f"({med(rollout) / med(plain):.1f}×)")
    print(f"bad canary: first bad answer → traffic back  median {med(first_bad):6.3f} s, "
          f"max {max(first_bad):.3f} s")
    print(f"bad canary: threshold crossed → traffic back median {med(verdict):6.3f} s, "
          f"max {max(verdict):.3f} s (target ≤ {TARGET_ROLLBACK_S:g} s: "
          f"{'met' if max(verdict) <= TARGET_ROLLBACK_S else 'MISSED'})")
    return 0 if max(verdict) <= TARGET_ROLLBACK_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
