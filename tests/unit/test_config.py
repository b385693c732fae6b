"""Config validation: each bad input gets its own clear message naming file, key and fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from config_support import config_error, write_config

from flightcheck.config import MissingConfig, format_memory, load, parse_memory
from flightcheck.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [("512Mi", 512 * 2**20), ("1Gi", 2**30), ("4Gi", 4 * 2**30), ("1G", 10**9), ("1.5Gi", 3 * 2**29)],
)
def test_parse_memory(text: str, expected: int) -> None:
    assert parse_memory(text) == expected


def test_format_memory_round_trips() -> None:
    assert format_memory(2**30) == "1Gi"
    assert format_memory(768 * 2**20) == "768Mi"
    assert parse_memory(format_memory(3 * 2**29)) == 3 * 2**29


def test_no_file_is_an_error_that_points_at_init(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingConfig) as info:
        load(None, environ={"FLIGHTCHECK__SERVICE__NAME": "svc"})  # an override is no config
    err = info.value
    assert err.exit_code == 2 and isinstance(err, ConfigError)
    assert err.what == f"no flightcheck.toml in {tmp_path}"
    assert "build, start and probe" in err.why
    assert "flightcheck init" in err.fix and "--config FILE" in err.fix
    assert err.repro == f"cd {tmp_path} && flightcheck config"


def test_no_file_with_defaults_is_generic_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    loaded = load(None, environ={}, missing="defaults")
    assert loaded.path is None and loaded.config.root == tmp_path.resolve()
    assert loaded.config.service.name == "service" and loaded.config.service.command == []
    assert loaded.config.environments == {} and loaded.config.health.ai_path is None
    assert {src for _, _, src in loaded.explain()} == {"default"}


def test_a_file_gets_generic_defaults_not_the_reference(tmp_path: Path) -> None:
    loaded = load(write_config(tmp_path, '[service]\nname = "quotebot"\n'), environ={})
    cfg = loaded.config
    assert cfg.service.command == [] and cfg.service.import_check == []
    assert cfg.environments == {} and cfg.health.ai_path is None
    assert loaded.source_of("service.command") == "default"


def test_probe_table_setting_only_the_path_keeps_the_other_defaults(tmp_path: Path) -> None:
    loaded = load(
        write_config(tmp_path, '[health.startup]\npath = "/ready"\n[health.liveness]\npath = "/healthz"\n'),
        environ={},
    )
    h = loaded.config.health
    assert (h.startup.path, h.startup.failure_threshold, h.startup.period_s) == ("/ready", 60, 1)
    assert (h.liveness.path, h.liveness.period_s, h.liveness.failure_threshold) == ("/healthz", 10, 3)


def test_ai_path_can_be_switched_off(tmp_path: Path) -> None:
    loaded = load(write_config(tmp_path, '[health]\nai_path = ""\n'), environ={})
    assert loaded.config.health.ai_path is None


def test_repo_file_is_valid() -> None:
    loaded = load(Path(__file__).parents[2] / "flightcheck.toml", environ={})
    assert loaded.config.health.startup.path == "/health/startup"


def test_memory_4gb_is_rejected_with_a_fix(tmp_path: Path) -> None:
    msg = config_error(tmp_path, '[run]\nmemory_limit = "4GB"\n')
    assert "run.memory_limit" in msg
    assert "flightcheck.toml" in msg
    assert "did you mean 4Gi" in msg


def test_unknown_key_suggests_the_near_one(tmp_path: Path) -> None:
    msg = config_error(tmp_path, "[run]\nmemory_limt = \"1Gi\"\n")
    assert "run.memory_limt" in msg
    assert "did you mean 'memory_limit'" in msg


def test_unknown_section(tmp_path: Path) -> None:
    msg = config_error(tmp_path, "[helth]\n")
    assert "helth" in msg and "health" in msg


def test_negative_timeout(tmp_path: Path) -> None:
    msg = config_error(tmp_path, "[health.startup]\npath = \"/h\"\ntimeout_s = -1\n")
    assert "health.startup.timeout_s" in msg
    assert "greater than or equal to 1" in msg


def test_probe_timeout_longer_than_period(tmp_path: Path) -> None:
    msg = config_error(tmp_path, "[health.liveness]\npath = \"/h\"\nperiod_s = 2\ntimeout_s = 5\n")
    assert "must not exceed period_s" in msg


def test_probe_path_must_be_absolute(tmp_path: Path) -> None:
    assert "must start with '/'" in config_error(tmp_path, '[health.startup]\npath = "health"\n')


def test_wrong_type(tmp_path: Path) -> None:
    msg = config_error(tmp_path, '[service]\nport = "eighty"\n')
    assert "service.port" in msg and "valid integer" in msg


def test_bad_service_name(tmp_path: Path) -> None:
    assert "not a valid Cloud Run service name" in config_error(tmp_path, '[service]\nname = "Math_Coach"\n')


def test_cloud_run_memory_cpu_rule(tmp_path: Path) -> None:
    msg = config_error(tmp_path, '[deploy]\nmemory = "8Gi"\ncpu = "1"\n')
    assert "needs more than cpu 1" in msg


def test_invalid_cpu(tmp_path: Path) -> None:
    assert "not a Cloud Run size" in config_error(tmp_path, '[deploy]\ncpu = "3"\n')


def test_cloudrun_target_needs_project(tmp_path: Path) -> None:
    assert "deploy.project" in config_error(tmp_path, '[deploy]\ntarget = "cloudrun"\n')


def test_canary_steps_must_end_at_100(tmp_path: Path) -> None:
    assert "ending at 100" in config_error(tmp_path, "[deploy.canary]\nsteps = [10, 50]\n")


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    msg = config_error(tmp_path, "[run\n")
    assert "is not valid TOML" in msg


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "nope.toml", environ={})
    assert "not found" in info.value.what
    assert "--config" in info.value.repro


def test_sources_default_file_env_cli(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[run]\nmemory_limit = "2Gi"\n[service]\nport = 9000\n')
    loaded = load(
        path,
        environ={"FLIGHTCHECK__SERVICE__PORT": "9100", "UNRELATED": "x"},
        overrides={"run.memory_limit": ("3Gi", "--memory")},
    )
    assert loaded.config.run.memory_limit == "3Gi"
    assert loaded.config.service.port == 9100
    assert loaded.source_of("run.memory_limit") == "cli:--memory"
    assert loaded.source_of("service.port") == "env:FLIGHTCHECK__SERVICE__PORT"
    assert loaded.source_of("service.name") == "default"
    assert loaded.source_of("service.dockerfile") == "default"


def test_env_override_error_names_the_variable(tmp_path: Path) -> None:
    path = write_config(tmp_path, "")
    with pytest.raises(ConfigError) as info:
        load(path, environ={"FLIGHTCHECK__RUN__MEMORY_LIMIT": "lots"})
    assert "env:FLIGHTCHECK__RUN__MEMORY_LIMIT" in info.value.render()


def test_paths_resolve_against_the_file(tmp_path: Path) -> None:
    (tmp_path / "svc").mkdir()
    loaded = load(write_config(tmp_path, '[service]\nsource = "svc"\n'), environ={})
    assert loaded.config.source_dir == (tmp_path / "svc").resolve()
    assert loaded.config.resolve(Path("smoke.yaml")) == (tmp_path / "svc" / "smoke.yaml").resolve()


def test_ai_params_env() -> None:
    from flightcheck.config import AIParams

    env = AIParams().as_env()
    assert env["AI_MODEL"] == "fake-math-1"
    assert set(env) == {"AI_MODEL", "AI_TEMPERATURE", "MAX_OUTPUT_TOKENS", "AI_TOP_K", "AI_TOP_P"}


def test_errors_never_echo_a_secret_value(tmp_path: Path) -> None:
    msg = config_error(tmp_path, '[deploy]\nopenai_api_key = "sk-proj-abcdefghijklmnop1234"\n')
    assert "deploy.openai_api_key = ***" in msg
    assert "sk-proj" not in msg
