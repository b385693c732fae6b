"""The content-hash cache: a warm run reuses what an unchanged file produced, and nothing that
could change a finding is ever served stale."""

from __future__ import annotations

from pathlib import Path

import pytest
from lint_support import hits, keys, lint, write

from flightcheck.config import LintConfig
from flightcheck.lint import lint_paths
from flightcheck.lint.cache import cache_dir, key_of

FILES = {
    "requirements.txt": "requests==2.32.3\nopenai==1.55.3\n",
    "app/__init__.py": "",
    "app/agent.py": "def run_agent(user_id, message, metadata):\n    return message\n",
    "app/main.py": """
        import time
        import requests
        from app.agent import run_agent

        MODEL = "gpt-4o"

        def fetch(u):
            return requests.get(u, timeout=5).text

        async def handle(m):
            time.sleep(1)
            fetch(m)
            return run_agent(m)
    """,
    "Dockerfile": "FROM python:3.10-slim\nCMD python -m app\n",
    "app/new.py": "try:\n    pass\nexcept* ValueError:\n    pass\n",
}


def _found(report: object) -> list[tuple[str | None, int | None, str, str]]:
    return [(f.file, f.line, f.code, f.message) for f in report.findings]  # type: ignore[attr-defined]


def test_a_warm_run_gives_the_same_report_from_the_cache(tmp_path: Path) -> None:
    write(tmp_path, FILES)
    cold = lint(tmp_path)
    codes = {c for _, _, c, _ in _found(cold)}
    assert {"FC403", "FC406", "FC701", "FC903", "FC102", "FC803"} <= codes  # worker, ruff, ty, graph
    assert "cache" not in cold.tools and "ty" in cold.tools
    warm = lint(tmp_path)
    assert _found(warm) == _found(cold)
    assert warm.tools["cache"] == f"{cold.files} of {cold.files} files"
    assert "ty" not in warm.tools and "ruff" not in warm.tools  # nothing changed: neither ran
    assert (warm.files, warm.lines) == (cold.files, cold.lines)


def test_a_changed_file_is_checked_again_and_only_it(tmp_path: Path) -> None:
    write(tmp_path, FILES)
    lint(tmp_path)
    (tmp_path / "app" / "main.py").write_text("import time\nasync def h():\n    time.sleep(2)\n")
    report = lint(tmp_path)
    assert report.tools["cache"].startswith(f"{report.files - 1} of ")
    assert {(f.file, f.code) for f in report.findings if f.file == "app/main.py"} == {
        ("app/main.py", "FC403")}
    # the type gate saw the change too: run_agent(m) is gone with the old main.py
    assert not any(f.code.startswith("FC9") for f in report.findings)


def test_configuration_and_project_changes_start_afresh(tmp_path: Path) -> None:
    write(tmp_path, FILES)
    first = lint(tmp_path)
    assert any(f.code == "FC701" for f in first.findings)
    quiet = lint(tmp_path, disable=["FC701"])
    assert not any(f.code == "FC701" for f in quiet.findings) and "cache" not in quiet.tools
    # a new declared dependency changes what an import resolves to: every file again
    (tmp_path / "requirements.txt").write_text("requests==2.32.3\n")
    again = lint(tmp_path, disable=["FC701"])
    assert "cache" not in again.tools


def test_a_corrupt_cache_is_ignored_and_rewritten(tmp_path: Path) -> None:
    write(tmp_path, FILES)
    cold = lint(tmp_path)
    path = cache_dir() / "lint" / f"{key_of(str(tmp_path.resolve()))}.pickle"
    assert path.is_file()
    path.write_bytes(b"\x80\x05garbage")
    again = lint(tmp_path)
    assert _found(again) == _found(cold) and "cache" not in again.tools
    assert "cache" in lint(tmp_path).tools


def test_secrets_are_not_cached_in_clear(tmp_path: Path) -> None:
    key = keys()["openai"]
    write(tmp_path, {"settings.py": f'OPENAI_API_KEY = "{key}"\n'})
    lint(tmp_path)
    for path in (cache_dir() / "lint").glob("*.pickle"):
        assert key.encode() not in path.read_bytes()


@pytest.mark.parametrize("how", ["config", "env"])
def test_the_cache_can_be_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    monkeypatch.setenv("FLIGHTCHECK_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "svc"
    write(root, {"a.py": "x = 1\n"})
    if how == "env":
        monkeypatch.setenv("FLIGHTCHECK_NO_CACHE", "1")
        lint(root)
    else:
        lint(root, cache=False)
    assert not (tmp_path / "cache").exists()
    monkeypatch.delenv("FLIGHTCHECK_NO_CACHE", raising=False)
    lint(root)
    assert list((tmp_path / "cache" / "lint").glob("*.pickle"))


def test_an_unwritable_cache_dir_is_a_note_not_a_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("FLIGHTCHECK_CACHE_DIR", str(blocker))
    write(tmp_path / "svc", {"a.py": "x = 1\n"})
    report = lint_paths(tmp_path / "svc", [tmp_path / "svc"], LintConfig(exclude=[]))
    assert any("cache not written" in n for n in report.notes) and not report.failed


def test_the_cache_serves_another_process(tmp_path: Path) -> None:
    # the key must not depend on per-process hash seeds (frozensets in the settings)
    import subprocess
    import sys

    write(tmp_path, FILES)
    code = ("import sys; from pathlib import Path; from flightcheck.config import LintConfig;"
            "from flightcheck.lint import lint_paths;"
            "r = lint_paths(Path(sys.argv[1]), [Path(sys.argv[1])], LintConfig(exclude=[]));"
            "print(r.tools.get('cache', 'cold'))")
    outs = [subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                           text=True, check=True).stdout.strip() for _ in range(2)]
    assert outs[0] == "cold" and outs[1] == "5 of 5 files"


# --- reading less on a warm run: stat records and FC406's facts --------------------------------


def _count_calls(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list[object]:
    calls: list[object] = []
    real = getattr(module, name)

    def counting(*args: object, **kw: object) -> object:
        calls.append(args[0] if args else None)
        return real(*args, **kw)

    monkeypatch.setattr(module, name, counting)
    return calls


def test_files_whose_stat_is_unchanged_are_not_read_again(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from flightcheck.lint import engine

    monkeypatch.setattr(engine, "_RACY_NS", 0)  # every file counts as modified long ago
    write(tmp_path, FILES)
    cold = lint(tmp_path)
    hashed = _count_calls(monkeypatch, engine, "digest")
    facts = _count_calls(monkeypatch, engine, "function_facts")
    warm = lint(tmp_path)
    assert hashed == [] and facts == []  # no file read, no module parsed for FC406
    assert _found(warm) == _found(cold)
    assert any(c == "FC406" for _, _, c, _ in _found(warm))


def test_a_rewrite_that_keeps_size_and_mtime_is_still_seen(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from flightcheck.lint import engine

    monkeypatch.setattr(engine, "_RACY_NS", 0)
    write(tmp_path, FILES)
    agent = tmp_path / "app" / "agent.py"
    n = lint(tmp_path).files
    before = agent.stat()
    text = agent.read_text()
    changed = text.replace("user_id, message, metadata", "user_id, message, metadat_")
    assert len(changed) == len(text)
    agent.write_text(changed)
    import os

    os.utime(agent, ns=(before.st_atime_ns, before.st_mtime_ns))  # a tool that keeps mtimes
    assert agent.stat().st_mtime_ns == before.st_mtime_ns
    report = lint(tmp_path)  # the ctime moved: read, hashed, checked again
    assert report.tools["cache"] == f"{n - 1} of {n} files"


def test_files_modified_just_before_a_run_are_read_on_the_next(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A stat taken in the same clock tick as a write cannot tell the write apart: files this
    young get no stat record, so the next run reads them (and records them then)."""
    from flightcheck.lint import engine

    write(tmp_path, FILES)
    n = lint(tmp_path).files
    hashed = _count_calls(monkeypatch, engine, "digest")
    warm = lint(tmp_path)
    assert len(hashed) == n and warm.tools["cache"] == f"{n} of {n} files"


def test_fc406_follows_a_changed_callee_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flightcheck.lint import engine

    monkeypatch.setattr(engine, "_RACY_NS", 0)
    files = {"requirements.txt": "requests==2.32.3\n", "app/__init__.py": "",
             "app/net.py": "import requests\n\ndef get(u):\n    return requests.get(u, timeout=5)\n",
             "app/main.py": "from app.net import get\n\nasync def handle(u):\n    return get(u)\n"}
    write(tmp_path, files)
    assert {(f, line) for f, line, _ in hits(lint(tmp_path), "FC406")} == {("app/main.py", 4)}
    (tmp_path / "app" / "net.py").write_text("async def get(u):\n    return u\n")
    assert hits(lint(tmp_path), "FC406") == set()  # the remembered facts were for the old text
