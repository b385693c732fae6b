"""config → run_v2.Service: every [deploy] key mapped, Cloud Run's limits checked before any
API call, each problem naming its key and what to use instead."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from config_support import REPO_CONFIG
from google.cloud import run_v2

from flightcheck.cloudrun import spec
from flightcheck.config import Config, load
from flightcheck.errors import ConfigError

DIGEST = "sha256:" + "ab" * 32
IMAGE = f"127.0.0.1:5000/mathcoach@{DIGEST}"


def _config(tmp_path: Path, text: str) -> Config:
    file = tmp_path / "flightcheck.toml"
    file.write_text('[service]\nname = "mathcoach"\nport = 8081\n' + text)
    return load(file, environ={}).config


def _problems(tmp_path: Path, text: str, **kw: object) -> dict[str, str]:
    found = spec.problems(_config(tmp_path, text), **kw)  # type: ignore[arg-type]
    return {p.key: p.render() for p in found}


FULL = """
[health.startup]
path = "/ready"
initial_delay_s = 2
period_s = 5
timeout_s = 3
failure_threshold = 12
[health.liveness]
path = "/live"
period_s = 15
timeout_s = 2
failure_threshold = 4
[deploy]
target = "cloudrun"
project = "acme-prod"
region = "us-central1"
service = "math-api"
memory = "2Gi"
cpu = "2"
timeout_s = 900
min_instances = 1
max_instances = 7
startup_cpu_boost = false
execution_environment = "gen1"
cpu_idle = false
concurrency = 40
service_account = "runner@acme-prod.iam.gserviceaccount.com"
labels = {team = "ml"}
env = {LOG_LEVEL = "debug"}
secrets = {OPENAI_API_KEY = "openai-key:3"}
"""


def test_every_deploy_key_and_both_probes_reach_the_service(tmp_path: Path) -> None:
    config = _config(tmp_path, FULL)
    assert spec.problems(config) == []
    target = spec.target_of(config)
    assert target.name == "projects/acme-prod/locations/us-central1/services/math-api"
    svc = spec.build_service(config, image=IMAGE, revision="math-api-abababa-00001",
                             env={"AI_MODEL": "m-1"}, sha="0123456789ab")
    t = svc.template
    assert t.revision == "math-api-abababa-00001"
    assert t.scaling.min_instance_count == 1 and t.scaling.max_instance_count == 7
    assert t.timeout.seconds == 900
    assert t.execution_environment == run_v2.ExecutionEnvironment.EXECUTION_ENVIRONMENT_GEN1
    assert t.max_instance_request_concurrency == 40
    assert t.service_account == "runner@acme-prod.iam.gserviceaccount.com"
    (c,) = t.containers
    assert c.image == IMAGE
    assert dict(c.resources.limits) == {"cpu": "2", "memory": "2Gi"}
    assert c.resources.cpu_idle is False and c.resources.startup_cpu_boost is False
    assert [(p.name, p.container_port) for p in c.ports] == [("http1", 8081)]
    env = {e.name: e for e in c.env}
    assert env["AI_MODEL"].value == "m-1" and env["LOG_LEVEL"].value == "debug"
    secret = env["OPENAI_API_KEY"].value_source.secret_key_ref
    assert (secret.secret, secret.version) == ("openai-key", "3")
    assert not env["OPENAI_API_KEY"].value
    sp, lp = c.startup_probe, c.liveness_probe
    assert (sp.http_get.path, sp.http_get.port, sp.initial_delay_seconds, sp.period_seconds,
            sp.timeout_seconds, sp.failure_threshold) == ("/ready", 8081, 2, 5, 3, 12)
    assert (lp.http_get.path, lp.period_seconds, lp.timeout_seconds, lp.failure_threshold) == (
        "/live", 15, 2, 4)
    assert dict(svc.labels) == {"team": "ml", "managed-by": "flightcheck",
                                "git-sha": "0123456789ab"}
    assert dict(t.labels) == dict(svc.labels)
    assert [(x.revision, x.percent) for x in svc.traffic] == [("math-api-abababa-00001", 100)]


def test_cpu_idle_is_explicit_in_the_document_and_fractions_are_millicpu(tmp_path: Path) -> None:
    config = _config(tmp_path, '[deploy]\ncpu = "0.5"\nmemory = "512Mi"\nconcurrency = 1\n')
    svc = spec.build_service(config, image=IMAGE, revision="mathcoach-x-1", env={})
    doc = spec.document(svc)
    resources = doc["template"]["containers"][0]["resources"]
    assert resources == {"limits": {"cpu": "500m", "memory": "512Mi"}, "cpuIdle": True,
                         "startupCpuBoost": True}
    always = _config(tmp_path, "[deploy]\ncpu_idle = false\n")
    doc = spec.document(spec.build_service(always, image=IMAGE, revision="mathcoach-x-1", env={}))
    assert doc["template"]["containers"][0]["resources"]["cpuIdle"] is False


def test_the_reference_config_is_deployable_and_asks_for_its_fake_model(tmp_path: Path) -> None:
    config = load(REPO_CONFIG, environ={}).config
    assert spec.problems(config) == []
    svc = spec.build_service(config, image=IMAGE, revision="mathcoach-abababa-00001",
                             env={"OPENAI_API_KEY": "sk-this-is-a-long-secret-value"},
                             fake_model_port=8929)
    doc = spec.document(svc)
    assert doc["template"]["annotations"] == {spec.FAKE_MODEL_ANNOTATION: "8929"}
    text = spec.to_yaml(doc)
    assert "sk-this-is-a-long-secret-value" not in text and "'***'" in text
    assert yaml.safe_load(text) == doc
    assert "uid" not in text and "etag" not in text


def test_a_long_local_startup_window_loads_but_cloud_run_refuses_it_with_a_fix(
    tmp_path: Path,
) -> None:
    text = "[health.startup]\nperiod_s = 10\ntimeout_s = 10\nfailure_threshold = 60\n"
    config = _config(tmp_path, text)  # valid for health-poll (local polling)
    assert config.health.startup.window_s == 600
    problems = _problems(tmp_path, text)
    msg = problems["health.startup.failure_threshold"]
    assert "10 × 60 = 600 s" in msg and "at most 240 s" in msg
    assert "use failure_threshold = 24" in msg
    with pytest.raises(ConfigError) as info:
        spec.validate(config, where="flightcheck.toml")
    assert info.value.exit_code == 2
    assert "health.startup.failure_threshold = 60" in info.value.render()
    assert "flightcheck deploy --dry-run" in info.value.render()


def test_a_30s_probe_timeout_with_a_10s_period_is_rejected_with_what_to_use(
    tmp_path: Path,
) -> None:
    file = tmp_path / "flightcheck.toml"
    file.write_text("[health.startup]\nperiod_s = 10\ntimeout_s = 30\nfailure_threshold = 24\n")
    with pytest.raises(ConfigError) as info:
        load(file, environ={})
    msg = info.value.render()
    assert "health.startup" in msg and "timeout_s (30) must not exceed period_s (10)" in msg
    assert "use timeout_s = 10" in msg and "failure_threshold" in msg
    # A config built without loading (model_construct) is caught by the deploy spec too.
    config = load(REPO_CONFIG, environ={}).config
    probe = config.health.startup.model_copy(update={"period_s": 10, "timeout_s": 30})
    config.health.startup = probe
    found = {p.key: p.render() for p in spec.problems(config)}
    assert "use timeout_s = 10" in found["health.startup.timeout_s"]


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("[health.startup]\ninitial_delay_s = 100\nperiod_s = 1.5\ntimeout_s = 1\n",
         "health.startup.period_s", "whole seconds"),
        ('[deploy]\ncpu = "0.5"\nmemory = "512Mi"\n', "deploy.concurrency",
         "use concurrency = 1"),
        ('[deploy]\ncpu = "0.5"\nmemory = "512Mi"\nconcurrency = 1\ncpu_idle = false\n',
         "deploy.cpu_idle", "use cpu_idle = true"),
        ('[deploy]\nenv = {PORT = "9000"}\n', "deploy.env.PORT", "remove it"),
        ('[deploy]\ntarget = "cloudrun"\nproject = "p"\nenv = {OPENAI_API_KEY = "sk-abc123456789"}\n',
         "deploy.env.OPENAI_API_KEY", "Secret Manager"),
        ('[deploy]\nlabels = {Team = "ml"}\n', "deploy.labels.Team", "rename it"),
        ('[deploy]\nlabels = {team = "ML Ops"}\n', "deploy.labels.team", "'ml-ops'"),
        ('[deploy]\nlabels = {managed-by = "me"}\n', "deploy.labels.managed-by", "remove the label"),
        ('[deploy]\nservice_account = "runner"\n', "deploy.service_account", "iam.gserviceaccount.com"),
        ('[deploy]\nsecrets = {API_TOKEN = "bad name:x"}\n', "deploy.secrets.API_TOKEN", "SECRET_NAME:VERSION"),
        ('[deploy]\nservice = "' + "a" * 50 + '"\n', "deploy.service", "at most 49 characters"),
        ('[deploy]\ntarget = "cloudrun"\nproject = "p"\nregion = "Europe West"\n', "deploy.region",
         "europe-west1"),
    ],
)
def test_each_cloud_run_limit_names_its_key_and_a_fix(
    tmp_path: Path, text: str, key: str, words: str
) -> None:
    problems = _problems(tmp_path, text)
    assert key in problems, problems
    assert words in problems[key]


def test_secrets_in_problems_are_never_shown(tmp_path: Path) -> None:
    text = '[deploy]\ntarget = "cloudrun"\nproject = "p"\nenv = {OPENAI_API_KEY = "sk-abc123456789"}\n'
    rendered = "\n".join(_problems(tmp_path, text).values())
    assert "sk-abc123456789" not in rendered and "***" in rendered


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[deploy]\ntimeout_s = 3601\n", "deploy.timeout_s"),
        ("[health.startup]\ninitial_delay_s = 241\n", "health.startup.initial_delay_s"),
        ('[deploy]\nmemory = "8Gi"\ncpu = "1"\n', "deploy.memory"),
    ],
)
def test_limits_every_target_shares_are_refused_when_the_file_loads(
    tmp_path: Path, text: str, key: str
) -> None:
    file = tmp_path / "flightcheck.toml"
    file.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(file, environ={})
    assert key.rpartition(".")[0] in info.value.render()


def test_revision_names_are_unique_prefixed_and_short(tmp_path: Path) -> None:
    a = spec.revision_name("mathcoach", IMAGE, now=1_700_000_000.0)
    b = spec.revision_name("mathcoach", IMAGE, now=1_700_000_000.1)
    assert a != b and a.startswith("mathcoach-abababa-")
    assert len(a) == len("mathcoach") + spec.REVISION_SUFFIX_LEN


def test_the_diff_shows_what_changes_and_nothing_when_equal(tmp_path: Path) -> None:
    config = _config(tmp_path, "")
    old = spec.document(spec.build_service(config, image=IMAGE, revision="mathcoach-a-1", env={}))
    new_cfg = _config(tmp_path, '[deploy]\nmemory = "2Gi"\n')
    new = spec.document(spec.build_service(new_cfg, image=IMAGE, revision="mathcoach-a-2", env={}))
    text = spec.diff(old, new, name="mathcoach")
    assert "-        memory: 1Gi" in text and "+        memory: 2Gi" in text
    assert "+  revision: mathcoach-a-2" in text
    assert spec.diff(new, new) == ""
    assert spec.diff(None, new).startswith("--- /dev/null (not deployed)")
