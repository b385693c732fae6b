"""Secrets never appear, not even in part: real runs of the CLI on the process runtime, with a
service that echoes its key where a report cuts text short."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from trust_support import ci, flightcheck, leaked, project, provider_key, random_token, reports

from flightcheck import secrets

ECHO_SUITE = """\
version: 1
cases:
  - name: echo
    request: {path: /echo}
"""


def _everything(proj: Path, out: object) -> list[str]:
    texts = list(reports(proj).values())
    return [*texts, getattr(out, "stdout", ""), getattr(out, "stderr", "")]


@pytest.mark.slow
def test_a_key_straddling_the_response_excerpt_leaves_nothing(tmp_path: Path) -> None:
    key = provider_key()
    # 480 characters, then the key: the 500-character excerpt cuts it after 20.
    proj = project(tmp_path, '\n[service.env]\nHOSTILE_ECHO_VAR = "SERVICE_API_KEY"\n',
                   suite=ECHO_SUITE)
    out = ci(proj, "--runtime", "process", "--only", "ai-smoke",
             "--service-env", f"SERVICE_API_KEY={key}")
    assert out.returncode == 1, out.stderr
    data = json.loads(reports(proj)["flightcheck-report.json"])
    smoke = next(s for s in data["stages"] if s["name"] == "ai-smoke")
    assert "response_excerpt" in smoke["details"]["cases"][0]  # the excerpt is there...
    assert leaked(key, *_everything(proj, out)) == []  # ...without a piece of the key


@pytest.mark.slow
def test_a_key_in_a_failing_probe_body_leaves_nothing(tmp_path: Path) -> None:
    key = provider_key()
    proj = project(tmp_path, '\n[service.env]\nHOSTILE_ECHO_VAR = "SERVICE_API_KEY"\n'
                   'HOSTILE_STARTUP = "503secret"\n')
    toml = (proj / "flightcheck.toml").read_text().replace("failure_threshold = 10",
                                                            "failure_threshold = 2")
    (proj / "flightcheck.toml").write_text(toml)
    out = ci(proj, "--runtime", "process", "--until", "health-poll",
             "--service-env", f"SERVICE_API_KEY={key}")
    assert out.returncode == 1, out.stderr
    found = reports(proj)
    assert "HTTP 503" in found["junit.xml"] and "HTTP 503" in found["summary.md"]
    assert leaked(key, *_everything(proj, out)) == []


@pytest.mark.slow
def test_a_secret_is_known_by_its_value_whatever_its_name(tmp_path: Path) -> None:
    creds = random_token(40)
    proj = project(tmp_path, '\n[service.env]\nHOSTILE_ECHO_VAR = "LLM_CREDS"\n'
                   'HOSTILE_CRASH = "1"\n')
    out = ci(proj, "--runtime", "process", "--until", "run-with-memory-limit",
             "--service-env", f"LLM_CREDS={creds}")
    assert out.returncode == 1
    assert "connecting with credentials ***" in out.stderr  # the crash's log tail, masked
    assert leaked(creds, *_everything(proj, out)) == []
    data = json.loads(reports(proj)["flightcheck-report.json"])
    repro = next(s for s in data["stages"] if s["status"] == "fail")["repro"]["local"]
    assert '--service-env LLM_CREDS="$LLM_CREDS"' in repro


def test_config_explain_masks_secrets_by_value(tmp_path: Path) -> None:
    creds, key = random_token(40), provider_key()
    proj = project(tmp_path, f'\n[service.env]\nLLM_CREDS = "{creds}"\nWHATEVER = "{key}"\n'
                   'AI_MODEL = "gpt-4o-mini-2024-07-18"\n')
    out = flightcheck(proj, "config", "--explain")
    assert out.returncode == 0, out.stderr
    assert leaked(creds, out.stdout) == [] and leaked(key, out.stdout) == []
    assert "gpt-4o-mini-2024-07-18" in out.stdout  # not everything is a secret


def test_a_key_pasted_into_an_env_file_or_flag_is_not_echoed(tmp_path: Path) -> None:
    key = provider_key()
    proj = project(tmp_path)
    env_file = tmp_path / "secrets.env"
    env_file.write_text(f"GOOD=1\n{key}\n")
    bad_file = ci(proj, "--only", "lint", "--service-env-file", str(env_file))
    assert bad_file.returncode == 2
    assert "line 2" in bad_file.stderr and leaked(key, bad_file.stderr) == []
    bad_flag = ci(proj, "--only", "lint", "--service-env", key)
    assert bad_flag.returncode == 2 and "KEY=VALUE" in bad_flag.stderr
    assert leaked(key, bad_flag.stderr) == []
    memory = ci(proj, "--only", "lint", "--memory", key)
    assert memory.returncode == 2 and leaked(key, memory.stderr) == []


# --- the helpers themselves ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["LLM_CREDS", "GCP_CREDENTIALS", "BASIC_AUTH", "PRIVATE_PEM",
                                  "DB_PASSWD", "SENTRY_DSN", "DB_PWD", "OPENAI_API_KEY"])
def test_more_credential_names(name: str) -> None:
    assert secrets.is_secret_name(name)


@pytest.mark.parametrize("name", ["MAX_OUTPUT_TOKENS", "AI_MODEL", "PWD", "PORT"])
def test_not_every_name_is_a_credential(name: str) -> None:
    assert not secrets.is_secret_name(name)


def test_secrets_by_value_and_things_that_are_not() -> None:
    looks_like_secret = secrets.looks_like_secret
    assert looks_like_secret(provider_key())
    assert looks_like_secret(random_token(32))
    assert looks_like_secret("postgres://app:" + random_token(12) + "@db:5432/app")
    for plain in ("gpt-4o-mini-2024-07-18", "http://127.0.0.1:8929/v1", "0.2", "fake-math-1",
                  "flightcheck/mathcoach:4c647b33e4d7", "hello world, a sentence", "/app/src"):
        assert not looks_like_secret(plain), plain


def test_excerpts_are_cut_only_after_redaction() -> None:
    key = provider_key()
    redact = secrets.Redactor([key])
    text = "x" * 480 + key + " tail"
    cut = secrets.excerpt(text, 500, redact)
    assert len(cut) <= 500 and leaked(key, cut) == []
    assert "***" in cut
    # Unknown keys of known shapes are masked too (a key the service logs of its own).
    other = provider_key()
    assert leaked(other, secrets.Redactor()(f"using {other} now")) == []


def test_a_private_key_block_without_its_end_line_is_masked_to_the_end_of_its_body_only() -> None:
    """A finding shows a key's BEGIN line and part of its body: the report around it stays
    whole (the mask once ran to the end of the SARIF document, which then did not parse)."""
    import json

    from flightcheck.secrets import scrub

    doc = json.dumps({"flagged": 'KEY = """-----BEGIN RSA PRIVATE KEY-----\nMIIEab+/=\nxyz', "b": "after"})
    masked = scrub(doc)
    assert json.loads(masked) == {"flagged": 'KEY = """***', "b": "after"}
    assert scrub("a -----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY----- tail") == "a *** tail"


def test_redacting_a_json_document_keeps_it_json() -> None:
    """lint.sarif and the JSON report are redacted as text: a private key block (or a lone
    BEGIN marker that parsing code mentions) is masked without eating the rest."""
    block = ("-----BEGIN RSA " + "PRIVATE KEY-----\n" + random_token(64) + "\n"
             + random_token(40) + "\n-----END RSA " + "PRIVATE KEY-----")
    doc = json.dumps({"key": block, "marker": "-----BEGIN " + "PRIVATE KEY-----", "after": 1})
    masked = json.loads(secrets.Redactor()(doc))
    assert masked == {"key": "***", "marker": "***", "after": 1}
