"""The CI files' deploy jobs call the module's deploy function with arguments it registers, on
the main branch only, after the checks, with Workload Identity Federation (no stored key)."""

from __future__ import annotations

import json
import re
import shlex

import yaml
from ci_support import REPO
from flightcheck_ci.main import OIDC_TOKEN_FILE, Flightcheck


def _deploy_flags() -> set[str]:
    fn = Flightcheck.__dagger_module__.get_object("Flightcheck").functions["deploy"]
    return {"--" + p.name.replace("_", "-") for p in fn.parameters.values()}


def _dagger_calls(script: str) -> list[list[str]]:
    text = script.replace("\\\n", " ")
    return [shlex.split(line.strip())[2:] for line in text.splitlines()
            if line.strip().startswith("dagger call deploy")]


def test_github_deploys_from_main_after_ci_with_workload_identity() -> None:
    jobs = yaml.safe_load((REPO / ".github/workflows/flightcheck.yml").read_text())["jobs"]
    deploy = jobs["deploy"]
    assert deploy["needs"] == "ci"
    assert "refs/heads/main" in deploy["if"] and "push" in deploy["if"]
    assert deploy["permissions"]["id-token"] == "write"
    auth = next(s for s in deploy["steps"] if str(s.get("uses", "")).startswith(
        "google-github-actions/auth@"))
    assert set(auth["with"]) == {"workload_identity_provider", "service_account"}
    (call,) = [c for s in deploy["steps"] for c in _dagger_calls(s.get("run", ""))]
    flags = {arg.split("=", 1)[0] for arg in call if arg.startswith("--")}
    assert flags <= _deploy_flags() and {"--source", "--project", "--gcp-credentials"} <= flags
    assert not any("key" in s.get("with", {}).get("credentials_json", "") for s in deploy["steps"])


def test_gitlab_deploys_from_the_default_branch_with_its_oidc_token() -> None:
    jobs = yaml.safe_load((REPO / ".gitlab-ci.yml").read_text())
    deploy = jobs["flightcheck-deploy"]
    assert deploy["needs"] == ["flightcheck"]
    assert "$CI_DEFAULT_BRANCH" in deploy["rules"][0]["if"]
    assert "GITLAB_OIDC_TOKEN" in deploy["id_tokens"]
    script = "\n".join(deploy["script"])
    (call,) = _dagger_calls(script)
    flags = {arg.split("=", 1)[0] for arg in call if arg.startswith("--")}
    assert flags <= _deploy_flags() and "--oidc-token" in flags
    config = re.search(r"cat > gcp-wif.json <<JSON\n(.*?)\nJSON", script, re.S)
    assert config is not None
    wif = json.loads(config.group(1))
    assert wif["type"] == "external_account"
    assert wif["credential_source"] == {"file": OIDC_TOKEN_FILE}  # where the module mounts it
