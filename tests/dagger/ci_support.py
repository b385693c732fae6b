"""Test support for the Dagger module: answer its queries like the engine would (conftest
puts its package, ci/src, on the path)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from dagger_recording import Recorder, Step, steps

REPO = Path(__file__).resolve().parents[2]

FAKE_SECRET = "sk-test-0123456789abcdefghij"  # what a secret "holds" when the plan runs


def dockerfile_config(path: Path = REPO / "Dockerfile") -> dict[str, Any]:
    """ENTRYPOINT/CMD/USER of the final stage, read from the real Dockerfile: what the engine's
    ``entrypoint``/``defaultArgs``/``user`` would answer for the built image."""
    out: dict[str, Any] = {"entrypoint": [], "defaultArgs": [], "user": ""}
    for line in path.read_text().splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "FROM":
            out = {"entrypoint": [], "defaultArgs": [], "user": ""}
        elif word == "CMD":
            out["defaultArgs"] = json.loads(rest)
        elif word == "ENTRYPOINT":
            out["entrypoint"] = json.loads(rest)
        elif word == "USER":
            out["user"] = rest.strip()
    return out


@functools.cache
def _plan_text(args: tuple[str, ...], secrets: tuple[str, ...]) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLIGHTCHECK", "OPENAI_",
                                                                    "GEMINI_"))}
    env.update({name: FAKE_SECRET for name in secrets})
    done = subprocess.run([sys.executable, "-m", "flightcheck.attached_cli", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def real_plan(recorder: Recorder, chain: list[Step]) -> str:
    """Answer ``file(PLAN_FILE).contents`` by running the real `attached plan` with the args
    the module put in its exec (minus --output: the plan comes back on stdout)."""
    lineage = recorder.lineage(chain)
    exec_args: list[str] = steps(lineage, "withExec")[-1].args["args"]
    assert exec_args[:4] == ["python", "-m", "flightcheck.attached_cli", "plan"], exec_args
    args = list(exec_args[3:])
    out = args.index("--output")
    del args[out:out + 2]
    secrets = tuple(s.args["name"] for s in steps(lineage, "withSecretVariable"))
    return _plan_text(tuple(args), secrets)


def report_json(*failed: tuple[str, str]) -> str:
    """A flightcheck-report.json whose stages (name, dagger repro) failed."""
    return json.dumps({"stages": [{"name": name, "status": "fail",
                                   "repro": {"local": f"flightcheck ci --only {name}",
                                             "dagger": dagger}}
                                  for name, dagger in failed]})


def contents(summary: str = "## flightcheck: all gates passed\n", report: str = "") -> Any:
    """``File.contents``: the plan for the plan file, ``summary`` for the report's summary.md,
    ``report`` for its flightcheck-report.json."""

    def answer(recorder: Recorder, chain: list[Step]) -> str:
        path = steps(recorder.lineage(chain), "file")[-1].args["path"]
        if path.endswith("flightcheck-plan.json"):
            return real_plan(recorder, chain)
        if path.endswith("summary.md"):
            return summary
        if path.endswith("flightcheck-report.json") and report:
            return report
        raise AssertionError(f"unexpected file read: {path}")

    return answer


def engine_answers(*, exit_code: int = 0, summary: str = "## flightcheck: all gates passed\n",
                   stdout: str = "", stderr: str = "", report: str = "") -> dict[str, Any]:
    """What the engine would answer for the module's leaves (the Dockerfile's image config)."""
    return {
        **dockerfile_config(),
        "contents": contents(summary, report or report_json()),
        "exitCode": exit_code,
        "stdout": stdout,
        "stderr": stderr,
    }
