"""The CLI's contract: implemented stages listed, exit codes, clear errors without tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flightcheck.cli", *args],
        capture_output=True, text=True, cwd=cwd, check=False, timeout=60,
    )


def test_help_lists_every_stage_deploy_and_rollback() -> None:
    out = _cli("--help")
    assert out.returncode == 0
    commands = out.stdout.split("Commands:")[1]
    for cmd in ("ci", "lint", "build", "run-with-memory-limit", "health-poll", "ai-smoke",
                "deploy", "rollback", "config", "report"):
        assert cmd in commands


def test_unknown_option_is_a_usage_error_without_traceback() -> None:
    out = _cli("ci", "--bogus")
    assert out.returncode == 2
    assert "No such option: --bogus" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_bad_memory_flag_is_a_config_error() -> None:
    out = _cli("ci", "--memory", "4GB", "--only", "lint")
    assert out.returncode == 2
    assert "did you mean 4Gi" in out.stderr
    assert "reproduce: flightcheck config --explain" in out.stderr


def test_bad_service_env_and_runtime() -> None:
    bad_env = _cli("ci", "--service-env", "NOEQUALS", "--only", "lint")
    assert bad_env.returncode == 2 and "KEY=VALUE" in bad_env.stderr
    bad_rt = _cli("ci", "--runtime", "podman", "--only", "lint")
    assert bad_rt.returncode == 2 and "unknown runtime" in bad_rt.stderr


def test_unknown_stage() -> None:
    out = _cli("ci", "--only", "launch")
    assert out.returncode == 2
    assert "unknown stage 'launch'" in out.stderr


def test_config_explain_shows_sources(tmp_path: Path) -> None:
    (tmp_path / "flightcheck.toml").write_text('[service]\nname = "quotebot"\n')
    out = _cli("config", "--explain", "--memory", "2Gi", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = {ln.split()[0]: ln for ln in out.stdout.splitlines()[1:]}
    assert "[file:flightcheck.toml]" in lines["service.name"]
    assert "[cli:--memory]" in lines["run.memory_limit"] and "2Gi" in lines["run.memory_limit"]
    assert "[default]" in lines["service.port"]


def test_lint_only_run_writes_reports(tmp_path: Path) -> None:
    out = _cli("ci", "--only", "lint", "--report-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    for name in ("flightcheck-report.json", "junit.xml", "summary.md", "lint.sarif"):
        assert (tmp_path / name).is_file(), name


def test_missing_service_env_file(tmp_path: Path) -> None:
    out = _cli("ci", "--only", "lint", "--service-env-file", str(tmp_path / "nope.env"))
    assert out.returncode == 2
    assert "no such file" in out.stderr and "Traceback" not in out.stderr
