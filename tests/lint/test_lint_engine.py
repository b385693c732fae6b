"""Configuration, suppression, skipped files, the worker processes and the catalog."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from lint_support import hits, keys, lint

from flightcheck.config import LintConfig
from flightcheck.errors import ConfigError, UsageError
from flightcheck.lint import RULES, engine, explain, lint_paths
from flightcheck.lint.rules import CATEGORIES, rules_markdown

BLOCKING = """
    import time
    async def handler():
        time.sleep(1)
"""


def test_suppression_comments_name_the_code(tmp_path: Path) -> None:
    k = keys()
    report = lint(tmp_path, {
        "requirements.txt": "requests\n",
        "app.py": f"""
            import time, requests
            KEY = "{k['openai']}"  # flightcheck: ignore[FC301]
            OTHER = "{k['github']}"  # flightcheck: ignore[FC304]
            async def handler():
                time.sleep(1)  # noqa: FC403
                time.sleep(2)  # noqa: ASYNC251
                requests.get("u", timeout=1)  # flightcheck: ignore[FC401,FC502]
                time.sleep(3)
        """,
    })
    # A comment naming another code suppresses nothing.
    assert hits(report) == {("app.py", 3, "FC301"), ("app.py", 8, "FC403")}


def test_disable_by_code_category_and_upstream_code(tmp_path: Path) -> None:
    files = {"app.py": BLOCKING + '    MODEL = "gpt-4o"\n'}
    assert {c for _, _, c in hits(lint(tmp_path, files))} == {"FC403", "FC701"}
    assert {c for _, _, c in hits(lint(tmp_path, disable=["FC403"]))} == {"FC701"}
    assert {c for _, _, c in hits(lint(tmp_path, disable=["ASYNC251", "ai-model-pin"]))} == set()
    assert {c for _, _, c in hits(lint(tmp_path, disable=["FC7"]))} == {"FC403"}


def test_severity_overrides(tmp_path: Path) -> None:
    report = lint(tmp_path, {"app.py": BLOCKING + '    MODEL = "gpt-4o"\n'},
                  severity={"ai-model-pin": "error", "FC403": "warning"})
    assert {(f.code, f.severity.value) for f in report.findings} == {("FC701", "error"), ("FC403", "warning")}


@pytest.mark.parametrize("key", ["disable", "severity"])
def test_unknown_rule_in_config_is_a_clear_error(tmp_path: Path, key: str) -> None:
    value: object = ["FC999"] if key == "disable" else {"FC40l": "error"}
    with pytest.raises(ConfigError) as info:
        lint(tmp_path, {"a.py": "x = 1\n"}, **{key: value})
    assert "names no rule" in info.value.what and info.value.fix


def test_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        lint_paths(tmp_path, [tmp_path / "nope"], LintConfig())


def test_huge_files_are_not_checked_and_binary_config_files_skipped(tmp_path: Path) -> None:
    (tmp_path / "big.py").write_text("x = 1\n" * 300_000)
    (tmp_path / "cookie.py").write_bytes("# -*- coding: latin-1 -*-\nname = 'caf\xe9'\n".encode("latin-1"))
    (tmp_path / "conf.yaml").write_bytes(b"\xff\xfe\x00k\x00")
    report = lint(tmp_path, max_file_kb=512)
    reasons = {s.file: (s.reason, s.unchecked) for s in report.skipped}
    assert set(reasons) == {"big.py", "conf.yaml"}
    assert "max_file_kb" in reasons["big.py"][0] and reasons["big.py"][1]
    assert not reasons["conf.yaml"][1]  # binary data under a config name: nothing to check
    assert [s.file for s in report.unchecked] == ["big.py"]
    assert report.findings == []  # cookie.py (declared latin-1) is valid Python


def test_excludes_and_virtualenvs_are_not_scanned(tmp_path: Path) -> None:
    bad = "def f(:\n"
    report = lint(tmp_path, {
        "app.py": "x = 1\n",
        "build/gen.py": bad,
        "vendored/pkg/mod.py": bad,
        "env/pyvenv.cfg": "home = /usr\n",
        "env/lib/site.py": bad,
        ".git/hooks/x.py": bad,
        "sub/dist/y.py": bad,
    }, exclude=["build", "vendored/pkg"])
    assert hits(report) == {("sub/dist/y.py", 1, "FC101")}


def test_worker_processes_give_the_same_report_as_inline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    k = keys()
    files = {
        f"pkg/m{i}.py": f'import os\nTOKEN = os.getenv("API_TOKEN", "{k["generic"]}{i}")\n'
        f"async def f():\n    import time\n    time.sleep({i})\n"
        + ("def broken(:\n" if i % 7 == 0 else "")
        for i in range(40)
    }
    inline = lint(tmp_path, files)
    started: list[list[str]] = []

    class Spy(subprocess.Popen):  # type: ignore[type-arg]
        def __init__(self, args: list[str], **kw: object) -> None:
            started.append(list(args))
            super().__init__(args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "_INLINE_BYTES", 0)
    monkeypatch.setattr(engine.subprocess, "Popen", Spy)
    parallel = lint(tmp_path)
    assert sum("flightcheck.lint.worker" in " ".join(a) for a in started) >= 2
    assert parallel.findings == inline.findings
    assert (parallel.files, parallel.lines) == (inline.files, inline.lines)
    # 34 files parse: a secret and a sleep each; 6 do not: one syntax error each.
    assert len(inline.findings) == 34 + 34 + 6


def test_catalog_is_complete_and_explained() -> None:
    assert {r.category for r in RULES.values()} == set(CATEGORIES)
    for code, rule in RULES.items():
        text = explain(code)
        assert rule.why in text and rule.fix in text and f'disable = ["{code}"]' in text
        assert rule.severity in ("error", "warning", "info")
    assert explain("ASYNC210").startswith("FC401")
    assert explain("missing-argument").startswith("FC903")  # ty's rule name
    with pytest.raises(UsageError):
        explain("FC000")


def test_docs_describe_every_rule() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "lint.md").read_text()
    for code, rule in RULES.items():
        assert f"### {code} {rule.name}" in docs and rule.why in docs and rule.fix in docs
    # the rule reference is the catalog's own rendering (regenerate after changing a rule)
    assert docs[docs.index("# Rules\n"):] == rules_markdown()


def test_test_files_skip_the_ast_for_rules_tests_are_exempt_from(tmp_path: Path) -> None:
    # async code (FC406), a secret-looking assignment (FC304) and a model name (FC701) make a
    # service file parse; in a test file those rules do not apply, so it is only compiled
    from flightcheck.lint.rules import TEST_EXEMPT

    assert {"FC304", "FC406", "FC701"} <= TEST_EXEMPT
    body = ('import time\n\nMODEL = "gpt-4o"\nAPI_KEY = "' + keys()["generic"] + '"\n\n\n'
            "def wait() -> None:\n    time.sleep(1)\n\n\nasync def handler() -> None:\n"
            "    wait()\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_app.py").write_text(body)
    report = lint_paths(tmp_path, [tmp_path], LintConfig(exclude=[]))
    assert report.parsed == 0 and report.findings == []
    (tmp_path / "app.py").write_text(body)
    report = lint_paths(tmp_path, [tmp_path], LintConfig(exclude=[]))
    assert report.parsed == 1
    assert {(f.file, f.code) for f in report.findings} >= {
        ("app.py", "FC406"), ("app.py", "FC304"), ("app.py", "FC701")}


def test_urlopen_in_a_test_file_and_async_def_in_a_string_skip_the_ast(tmp_path: Path) -> None:
    # urlopen feeds FC502 and FC406 only (tests are exempt from both); `async def` in a
    # docstring starts no call graph. The same lines as code parse and find.
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_fetch.py").write_text(
        "from urllib.request import urlopen\n\n\ndef test_fetch() -> None:\n"
        "    urlopen('http://127.0.0.1:9/')\n")
    (tmp_path / "doc.py").write_text(
        'TOPICS = """\nasync def handler():\n    requests.get(url)\n"""\n')
    report = lint_paths(tmp_path, [tmp_path], LintConfig(exclude=[]))
    assert report.parsed == 0 and report.findings == []
    (tmp_path / "fetch.py").write_text(
        "from urllib.request import urlopen\n\n\ndef fetch() -> bytes:\n"
        "    return urlopen('http://127.0.0.1:9/').read()\n")
    (tmp_path / "handler.py").write_text(
        "import time\n\n\ndef wait() -> None:\n    time.sleep(1)\n\n\n"
        "async def handler() -> None:\n    wait()\n")
    report = lint_paths(tmp_path, [tmp_path], LintConfig(exclude=[]))
    assert report.parsed == 2
    assert {(f.file, f.code) for f in report.findings} >= {
        ("fetch.py", "FC502"), ("handler.py", "FC406")}
