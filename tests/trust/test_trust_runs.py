"""Whole runs of the real CLI on the process runtime (host processes on 127.0.0.1): a stage that
checked nothing never passes, and what the service sees is the same in every run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from trust_support import BASE_SUITE, REPO, ci, project, reports

pytestmark = pytest.mark.slow


def _stage(proj: Path, name: str) -> dict[str, object]:
    data = json.loads(reports(proj)["flightcheck-report.json"])
    return next(s for s in data["stages"] if s["name"] == name)


# --- the suite is loaded before the build -----------------------------------------------------


def test_missing_suite_is_a_config_error_before_the_build(tmp_path: Path) -> None:
    proj = project(tmp_path, suite=None)
    out = ci(proj, "--runtime", "process")
    assert out.returncode == 2, out.stderr
    assert "smoke suite" in out.stderr and "not found" in out.stderr
    assert "[build] started" not in out.stderr and "Traceback" not in out.stderr


def test_a_typo_in_the_suite_costs_seconds_not_a_build(tmp_path: Path) -> None:
    proj = project(tmp_path, suite=BASE_SUITE + "    expect: {json: [{path: status, equal: ok}]}\n")
    out = ci(proj, "--runtime", "process")
    assert out.returncode == 2, out.stderr
    assert "cases.0.expect.json.0.equal" in out.stderr and "[build] started" not in out.stderr


def test_a_yaml_alias_bomb_is_refused_not_expanded(tmp_path: Path) -> None:
    """Nine levels of nine aliases: 9**9 strings once expanded (by validation, by sending the
    body, by the report). Refused when the suite is loaded, before anything runs."""
    levels = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        levels.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    body = "".join(f"\n        {line}" for line in levels)
    suite = f"""\
version: 1
cases:
  - name: bomb
    request:
      method: POST
      path: /health
      json:{body}
"""
    proj = project(tmp_path, suite=suite)
    began = time.monotonic()
    out = ci(proj, "--runtime", "process", timeout=120)
    assert out.returncode == 2, out.stderr
    assert "alias" in out.stderr and "[build] started" not in out.stderr
    assert time.monotonic() - began < 60


# --- fake or real is a choice, not a guess from the keys ------------------------------------


def test_a_dummy_key_the_service_insists_on_still_runs_the_fake_model(tmp_path: Path) -> None:
    """The reference service with a key and a base URL of the user's: in fake mode (the
    default) both are replaced, so every scripted case runs against the fake model."""
    out = subprocess.run(
        [sys.executable, "-m", "flightcheck.cli", "ci", "--runtime", "process", "--only",
         "ai-smoke", "--report-dir", str(tmp_path / "report"),
         "--service-env", "OPENAI_API_KEY=dummy",
         "--service-env", "OPENAI_BASE_URL=http://127.0.0.1:9/v1"],
        cwd=REPO, capture_output=True, text=True, check=False, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    smoke = json.loads((tmp_path / "report" / "flightcheck-report.json").read_text())["stages"]
    res = next(s for s in smoke if s["name"] == "ai-smoke")
    counts = {m["name"]: m["value"] for m in res["measurements"]}
    assert counts["cases_skipped"] == 0 and counts["cases_passed"] == counts["cases_total"] > 5
    assert res["details"]["mode"] == "fake model server"
    assert "is replaced by a placeholder" in out.stderr


def test_real_mode_where_no_case_can_run_fails(tmp_path: Path) -> None:
    suite = """\
version: 1
cases:
  - name: scripted
    model: {replies: [{content: "hi"}]}
    request: {path: /health}
"""
    proj = project(tmp_path, suite=suite)
    out = ci(proj, "--runtime", "process", "--real-model")
    assert out.returncode == 1, out.stderr
    smoke = _stage(proj, "ai-smoke")
    assert smoke["status"] == "fail"
    assert any(f["code"] == "smoke.nothing-checked" for f in smoke["findings"])  # type: ignore[union-attr]
    (proj / "flightcheck.toml").write_text(
        (proj / "flightcheck.toml").read_text() + "\n[smoke]\nallow_empty = true\n")
    allowed = ci(proj, "--runtime", "process", "--real-model")
    assert allowed.returncode == 0, allowed.stderr
    assert _stage(proj, "ai-smoke")["status"] == "warn"


def test_the_whole_stage_has_a_deadline(tmp_path: Path) -> None:
    suite = "version: 1\ncases:\n" + "".join(
        f"  - name: slow {i}\n    request: {{path: /slow}}\n" for i in range(5))
    proj = project(tmp_path, "[smoke]\nstage_timeout_s = 2.5\n", suite=suite)
    began = time.monotonic()
    out = ci(proj, "--runtime", "process", "--only", "ai-smoke")
    assert out.returncode == 1, out.stderr
    assert time.monotonic() - began < 60
    smoke = _stage(proj, "ai-smoke")
    codes = [f["code"] for f in smoke["findings"]]  # type: ignore[union-attr]
    assert "smoke.deadline" in codes
    statuses = [c["status"] for c in smoke["details"]["cases"]]  # type: ignore[index]
    assert statuses[:1] == ["pass"] and statuses[-1] == "skipped"


# --- what the service sees is the same in every run -------------------------------------------


def test_the_import_check_gets_the_service_environment(tmp_path: Path) -> None:
    """needkey.py reads OPENAI_API_KEY at import: in fake mode it gets the placeholder."""
    proj = project(tmp_path, '\n[service.env]\nUNRELATED = "1"\n')
    toml = (proj / "flightcheck.toml").read_text().replace("import_check = []",
                                                            'import_check = ["needkey"]')
    (proj / "flightcheck.toml").write_text(toml)
    out = ci(proj, "--runtime", "process", "--until", "build")
    assert out.returncode == 0, out.stderr
    assert _stage(proj, "build")["status"] == "pass"


@pytest.mark.parametrize("partial", [["--only", "run-with-memory-limit"],
                                     ["--until", "health-poll"]])
def test_partial_runs_give_the_service_the_same_environment(
    tmp_path: Path, partial: list[str]
) -> None:
    proj = project(tmp_path, '\n[service.env]\nHOSTILE_REQUIRE_KEY = "1"\n')
    out = ci(proj, "--runtime", "process", *partial)
    assert out.returncode == 0, out.stderr
    assert "refusing to start" not in out.stderr
    assert "fake model server on port" in out.stderr


def test_the_process_runtime_writes_nothing_into_the_source(tmp_path: Path) -> None:
    proj = project(tmp_path)
    toml = (proj / "flightcheck.toml").read_text().replace("import_check = []",
                                                            'import_check = ["needkey"]')
    (proj / "flightcheck.toml").write_text(toml)
    before = sorted(p.relative_to(proj) for p in proj.rglob("*"))
    out = ci(proj, "--runtime", "process")
    assert out.returncode == 0, out.stderr
    assert sorted(p.relative_to(proj) for p in proj.rglob("*")) == before


def test_the_import_check_uses_the_services_own_interpreter(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    (site / "only_in_venv.py").write_text("VALUE = 1\n")
    proj = project(tmp_path)
    toml = (proj / "flightcheck.toml").read_text()
    toml = toml.replace('command = ["python", "app.py"]',
                        f'command = ["{venv}/bin/python", "app.py"]')
    toml = toml.replace("import_check = []", 'import_check = ["only_in_venv"]')
    (proj / "flightcheck.toml").write_text(toml)
    out = ci(proj, "--runtime", "process", "--until", "build")
    assert out.returncode == 0, out.stderr


def test_a_console_scripts_interpreter_is_read_from_its_shebang(tmp_path: Path) -> None:
    from flightcheck.runtimes.process import service_python

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "serve"
    script.write_text("#!/opt/venv/bin/python3.11\nprint('hi')\n")
    assert service_python(["bin/serve", "--port", "1"], cwd=tmp_path) == "/opt/venv/bin/python3.11"
    env_script = bin_dir / "serve-env"
    env_script.write_text("#!/usr/bin/env python3\n")
    env_script.chmod(0o755)
    found = service_python(["serve-env"], cwd=tmp_path, path=str(bin_dir) + ":/usr/bin")
    assert Path(found).name.startswith("python3")
    assert service_python(["python", "-m", "x"], cwd=tmp_path) == sys.executable
