"""No flightcheck.toml: every command that checks a service refuses with what, why, the
`flightcheck init` fix and a repro (exit 2, nothing built or written); lint and
`config --explain` run on the generic defaults and say so."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flightcheck import attached_cli, cli
from flightcheck.cloudrun import images

# Every command that needs to know how to build, start or probe the service.
SERVICE_COMMANDS = [
    ["ci"], ["ci", "--only", "lint"], ["build"], ["run-with-memory-limit"], ["health-poll"],
    ["ai-smoke"], ["deploy"], ["deploy", "--dry-run"], ["rollback"], ["config"],
    ["cost"], ["quality"], ["resources"], ["resources", "--from-report"], ["parity"],
    ["baseline", "save"], ["monitoring", "render"], ["monitoring", "apply"],
]


def _empty(tmp_path: Path) -> Path:
    d = tmp_path / "empty"
    d.mkdir()
    return d


def _python_service(tmp_path: Path) -> Path:
    """A small service `flightcheck init` can read: a Dockerfile and a package."""
    d = tmp_path / "svc"
    (d / "app").mkdir(parents=True)
    (d / "app" / "__init__.py").write_text("")
    (d / "app" / "__main__.py").write_text(
        "import os\nfrom http.server import HTTPServer, BaseHTTPRequestHandler\n\n"
        "HTTPServer(('0.0.0.0', int(os.environ.get('PORT', '8080'))), "
        "BaseHTTPRequestHandler).serve_forever()\n"
    )
    (d / "Dockerfile").write_text('FROM python:3.11-slim\nCOPY . /app\nWORKDIR /app\n'
                                  'CMD ["python", "-m", "app"]\n')
    return d


def _tree(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


def _run(argv: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch,
         capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    monkeypatch.chdir(cwd)
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    out = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 1), out.out + out.err


@pytest.mark.parametrize("argv", SERVICE_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("where", ["empty", "python-service"])
def test_service_command_without_config_is_a_clear_error_with_the_init_hint(
    argv: list[str], where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    d = _empty(tmp_path) if where == "empty" else _python_service(tmp_path)
    before = _tree(d)
    code, out = _run(argv, d, monkeypatch, capsys)
    assert code == 2, out
    assert f"error: no flightcheck.toml in {d}\n" in out
    assert "why: flightcheck needs to know how to build, start and probe your service" in out
    assert "`flightcheck init`" in out and "writes flightcheck.toml and smoke.yaml" in out
    assert "--config FILE" in out
    words = argv[: next((i for i, w in enumerate(argv) if w.startswith("-")), len(argv))]
    assert f"reproduce: cd {d} && flightcheck {' '.join(words)}\n" in out
    assert "mathcoach" not in out and "reference" not in out and "Traceback" not in out
    if where == "empty":  # nothing for init to read here: go to the service first
        assert "holds no Dockerfile and no Python files: cd to your service's directory" in out
    else:
        assert "run `flightcheck init` here: it reads your project (here: a Dockerfile and 2 Python files)" in out
    assert _tree(d) == before  # nothing built, cleared or written


def test_the_reported_first_run_ends_in_the_init_hint_without_a_traceback(tmp_path: Path) -> None:
    # The reported case, end to end through the console script: `flightcheck ci` in a
    # directory holding only app.py.
    (tmp_path / "app.py").write_text("print(1)\n")
    exe = Path(sys.executable).parent / "flightcheck"
    out = subprocess.run([str(exe), "ci"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 2, out.stderr
    assert out.stdout == ""
    assert out.stderr.splitlines() == [
        f"error: no flightcheck.toml in {tmp_path}",
        "  why: flightcheck needs to know how to build, start and probe your service (Dockerfile, "
        "port, start command, health paths, AI smoke suite), and flightcheck.toml says how; there "
        "is none here and no --config was given",
        "  fix: run `flightcheck init` here: it reads your project (here: no Dockerfile and 1 "
        "Python file) and writes flightcheck.toml and smoke.yaml; or pass --config FILE",
        f"  reproduce: cd {tmp_path} && flightcheck ci",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.py"]


def test_the_repro_never_carries_option_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _run(["ci", "--service-env", "TOKEN=hunter2-not-a-key", "--until", "build"],
                     _empty(tmp_path), monkeypatch, capsys)
    assert code == 2
    assert "hunter2" not in out and out.rstrip().endswith("&& flightcheck ci")


@pytest.mark.parametrize("where", ["empty", "python-service"])
def test_the_dagger_modules_helpers_refuse_too(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The module runs these in /src, the --source directory: no toml there is the same error.
    d = _empty(tmp_path) if where == "empty" else _python_service(tmp_path)
    monkeypatch.chdir(d)
    assert attached_cli.main(["plan"]) == 2
    plan = capsys.readouterr().err
    assert plan.startswith(f"error: no flightcheck.toml in {d}\n")
    # init belongs on the user's directory, not on the module's copy of it
    assert "fix: write one on your machine with `flightcheck init DIR` (DIR: the service's " \
           "directory, the one given as --source to the Dagger module)" in plan
    assert images.main(["repository"]) == 2
    repo = capsys.readouterr().err
    assert repo.startswith(f"error: no flightcheck.toml in {d}\n") and "`flightcheck init`" in repo
    assert "Traceback" not in plan + repo


def test_an_existing_smoke_yaml_changes_the_advice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # init refuses to overwrite smoke.yaml without --force: "run init here" would be a dead end.
    d = _python_service(tmp_path)
    (d / "smoke.yaml").write_text("cases: []\n")
    code, out = _run(["ci"], d, monkeypatch, capsys)
    assert code == 2
    assert "`flightcheck init` here would stop at your smoke.yaml" in out
    assert "move smoke.yaml aside" in out and "--config FILE" in out
    code, out = _run(["init"], d, monkeypatch, capsys)  # the dead end the advice avoids
    assert code == 2 and "never overwrites" in out


def test_a_toml_in_the_directory_is_still_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    d = _python_service(tmp_path)
    (d / "flightcheck.toml").write_text('[service]\nname = "svc"\n')
    code, out = _run(["config"], d, monkeypatch, capsys)
    assert code == 0 and out == f"config ok: {d / 'flightcheck.toml'}\n"


# --- lint: the cwd with the default [lint] settings, said on stderr --------------------------


def test_lint_without_config_lints_the_directory_with_defaults_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    d = _python_service(tmp_path)
    (d / "app" / "broken.py").write_text("def f(:\n")
    monkeypatch.chdir(d)
    from flightcheck.lint.command import lint_command

    assert lint_command(None, "json", None, None, None) == 1
    out = capsys.readouterr()
    found = json.loads(out.out)  # the note stays off stdout
    assert ("app/broken.py", "FC101") in {(f["file"], f["code"]) for f in found}
    assert out.err.splitlines()[0] == (
        f"note: no flightcheck.toml in {d}: linting {d} with the default [lint] settings (every "
        "rule at its default severity; excluded: tests/fixtures, .venv, node_modules, build, "
        "dist); `flightcheck init` writes a flightcheck.toml for your service"
    )


def test_lint_with_a_config_prints_no_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    d = _python_service(tmp_path)
    (d / "flightcheck.toml").write_text('[lint]\nexclude = ["app"]\n')
    monkeypatch.chdir(d)
    from flightcheck.lint.command import lint_command

    (d / "app" / "broken.py").write_text("def f(:\n")
    assert lint_command(None, "json", None, None, None) == 0  # the file's exclude applies
    assert "no flightcheck.toml" not in capsys.readouterr().err


# --- config --explain: the generic defaults, and it says whose ----------------------------------


def test_config_explain_without_config_shows_the_generic_defaults_and_their_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    d = _empty(tmp_path)
    monkeypatch.setenv("FLIGHTCHECK__SERVICE__PORT", "9000")
    code, out = _run(["config", "--explain", "--memory", "2Gi"], d, monkeypatch, capsys)
    assert code == 0, out
    header, *rows = out.splitlines()
    assert header.startswith(f"# no flightcheck.toml in {d}: the generic defaults a new "
                             "flightcheck.toml starts from")
    assert "`flightcheck init`" in header
    sources = {r.split()[0]: r.rsplit(None, 1)[-1] for r in rows}
    assert sources.pop("service.port") == "[env:FLIGHTCHECK__SERVICE__PORT]"
    assert sources.pop("run.memory_limit") == "[cli:--memory]"
    assert set(sources.values()) == {"[default]"}
    assert "mathcoach" not in out
