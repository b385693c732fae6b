"""Config values that would disable a check or escape the project are errors (exit 2), found
before anything is built; the bad value never shows in the error when it is a secret."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from config_support import config_error, write_config
from trust_support import provider_key

from flightcheck.config import load
from flightcheck.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flightcheck.cli", *args],
        capture_output=True, text=True, cwd=cwd, check=False, timeout=120,
    )


# --- booleans, infinities, unbounded numbers -------------------------------------------------


def test_a_boolean_is_not_a_port(tmp_path: Path) -> None:
    msg = config_error(tmp_path, "[service]\nport = true\n")
    assert "service.port" in msg and "boolean" in msg


@pytest.mark.parametrize("value", ["inf", "1e308", "nan", "true"])
def test_request_timeout_must_be_a_bounded_number(tmp_path: Path, value: str) -> None:
    msg = config_error(tmp_path, f"[smoke]\nrequest_timeout_s = {value}\n")
    assert "smoke.request_timeout_s" in msg


def test_liveness_failure_threshold_is_bounded(tmp_path: Path) -> None:
    assert "health.liveness.failure_threshold" in config_error(
        tmp_path, "[health.liveness]\nfailure_threshold = 1000000000\n"
    )


@pytest.mark.parametrize("memory", ["0Mi", "5Mi", "0Gi", "1Ki"])
def test_memory_below_dockers_minimum_is_rejected(tmp_path: Path, memory: str) -> None:
    msg = config_error(tmp_path, f'[run]\nmemory_limit = "{memory}"\n')
    assert "run.memory_limit" in msg and "6Mi" in msg


def test_memory_flag_zero_is_a_config_error_before_anything_runs(tmp_path: Path) -> None:
    write_config(tmp_path, '[service]\nname = "svc"\n')
    out = _cli("ci", "--memory", "0Mi", "--until", "build", "--report-dir", "r", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "6Mi" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "r" / "flightcheck-report.json").exists()


def test_six_mebibytes_is_accepted(tmp_path: Path) -> None:
    loaded = load(write_config(tmp_path, '[run]\nmemory_limit = "6Mi"\n'), environ={})
    assert loaded.config.run.memory_limit == "6Mi"


# --- environment overrides keep the case of variable names ------------------------------------


def test_env_override_of_a_service_variable_keeps_its_case(tmp_path: Path) -> None:
    key = provider_key()
    loaded = load(
        write_config(tmp_path, ""),
        environ={
            "FLIGHTCHECK__SERVICE__ENV__OPENAI_API_KEY": key,
            "FLIGHTCHECK__SERVICE__ENV__Mixed_Case": "x",
            "FLIGHTCHECK__LINT__SEVERITY__FC802": '"error"',
            "FLIGHTCHECK__SMOKE__REQUEST_TIMEOUT_S": "12",
        },
    )
    cfg = loaded.config
    assert cfg.service.env == {"OPENAI_API_KEY": key, "Mixed_Case": "x"}
    assert cfg.lint.severity == {"FC802": "error"}
    assert cfg.smoke.request_timeout_s == 12
    assert loaded.source_of("service.env.OPENAI_API_KEY") == (
        "env:FLIGHTCHECK__SERVICE__ENV__OPENAI_API_KEY"
    )


# --- paths stay inside the project ------------------------------------------------------------


def test_dockerfile_outside_the_build_context_is_rejected(tmp_path: Path) -> None:
    msg = config_error(tmp_path, '[service]\ndockerfile = "../../../etc/passwd"\n')
    assert "service.dockerfile" in msg and "outside" in msg


def test_source_outside_the_config_directory_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "proj").mkdir()
    with pytest.raises(ConfigError) as info:
        load(write_config(tmp_path / "proj", '[service]\nsource = ".."\n'), environ={})
    assert "service.source" in info.value.render() and "outside" in info.value.render()


@pytest.mark.parametrize("suite", ["../smoke.yaml", "/etc/passwd"])
def test_suite_outside_the_config_directory_is_rejected(tmp_path: Path, suite: str) -> None:
    (tmp_path / "proj").mkdir()
    with pytest.raises(ConfigError) as info:
        load(write_config(tmp_path / "proj", f'[smoke]\nsuite = "{suite}"\n'), environ={})
    assert "smoke.suite" in info.value.render() and "outside" in info.value.render()


def test_a_symlink_out_of_the_context_is_outside_too(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile.link").symlink_to("/etc/passwd")
    assert "service.dockerfile" in config_error(tmp_path, '[service]\ndockerfile = "Dockerfile.link"\n')


def test_passwd_as_dockerfile_never_reaches_the_output(tmp_path: Path) -> None:
    write_config(tmp_path, '[service]\nname = "svc"\ndockerfile = "../../../../../../etc/passwd"\n')
    out = _cli("ci", "--until", "build", "--report-dir", "r", cwd=tmp_path)
    assert out.returncode == 2
    assert "root:" not in out.stdout + out.stderr
    assert "service.dockerfile" in out.stderr


def test_missing_dockerfile_is_a_config_error_before_build(tmp_path: Path) -> None:
    write_config(tmp_path, '[service]\nname = "svc"\n')
    out = _cli("ci", "--until", "build", "--runtime", "docker", "--report-dir", "r", cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "no Dockerfile" in out.stderr and str(tmp_path / "Dockerfile") in out.stderr
    assert "reproduce: flightcheck" in out.stderr and "Traceback" not in out.stderr


def test_missing_dockerfile_is_fine_for_the_process_runtime_and_for_lint(tmp_path: Path) -> None:
    write_config(tmp_path, '[service]\nname = "svc"\n[lint]\npaths = ["."]\n')
    (tmp_path / "app.py").write_text("print('hi')\n")
    lint = _cli("ci", "--only", "lint", "--report-dir", "r", cwd=tmp_path)
    assert lint.returncode == 0, lint.stderr


# --- section-level errors never print the section (which may hold secrets) --------------------


def test_a_section_error_does_not_dump_the_section(tmp_path: Path) -> None:
    msg = config_error(
        tmp_path,
        '[deploy]\nmemory = "64Mi"\n[deploy.env]\nDB_PASSWORD = "hunter2-correct-horse"\n',
    )
    assert "hunter2" not in msg


def test_a_key_pasted_into_the_wrong_setting_is_not_echoed(tmp_path: Path) -> None:
    key = provider_key()
    msg = config_error(tmp_path, f'[service]\nname = "{key}"\n')
    assert "service.name" in msg and key[:12] not in msg and key[-12:] not in msg
    msg = config_error(tmp_path, "", overrides={"run.memory_limit": (key, "--memory")})
    assert key[:12] not in msg and key[-12:] not in msg


# --- the fake/real choice is explicit ---------------------------------------------------------


def test_model_defaults_to_fake_and_accepts_real(tmp_path: Path) -> None:
    assert load(write_config(tmp_path, ""), environ={}).config.smoke.model == "fake"
    real = load(write_config(tmp_path, '[smoke]\nmodel = "real"\n'), environ={})
    assert real.config.smoke.model == "real"
    assert "smoke.model" in config_error(tmp_path, '[smoke]\nmodel = "openai"\n')


def test_the_old_fake_model_key_says_what_replaced_it(tmp_path: Path) -> None:
    msg = config_error(tmp_path, "[smoke]\nfake_model = false\n")
    assert 'model = "real"' in msg
