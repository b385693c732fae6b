"""What CPython refuses before it runs a line is FC101, never a skip: NUL bytes, binary data,
non-UTF-8 without a PEP 263 declaration, code nested beyond the compiler's limits. What lint
cannot read is reported as not checked, and fails under --strict."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lint_support import hits, lint

from flightcheck.lint import render_text

ROOT = Path(__file__).resolve().parents[2]


def _fc101(report: object) -> dict[str, str]:
    return {f.file or "": f.message for f in report.findings if f.code == "FC101"}  # type: ignore[attr-defined]


def test_files_cpython_cannot_decode_are_syntax_errors(tmp_path: Path) -> None:
    (tmp_path / "nul.py").write_bytes(b"x = 1\ny = 2 \x00\n")
    (tmp_path / "blob.py").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "latin.py").write_bytes("# caf\xe9\nx = 1\n".encode("latin-1"))
    (tmp_path / "badcookie.py").write_bytes(b"# -*- coding: klingon -*-\nx = 1\n")
    (tmp_path / "wrongcookie.py").write_bytes("# coding: ascii\nname = 'caf\xe9'\n".encode("latin-1"))
    # near-misses: a declared encoding that fits, a BOM, NUL written as an escape
    (tmp_path / "cookie.py").write_bytes("# -*- coding: latin-1 -*-\nname = 'caf\xe9'\n".encode("latin-1"))
    (tmp_path / "bom.py").write_bytes(b"\xef\xbb\xbfx = 1\n")
    (tmp_path / "escaped.py").write_text('SEP = "\\x00"\n')
    report = lint(tmp_path)
    assert hits(report) == {
        ("nul.py", 2, "FC101"), ("blob.py", 1, "FC101"), ("latin.py", 1, "FC101"),
        ("badcookie.py", 1, "FC101"), ("wrongcookie.py", 2, "FC101"),
    }
    msgs = _fc101(report)
    assert "null bytes" in msgs["nul.py"] and "null bytes" in msgs["blob.py"]
    assert "Non-UTF-8" in msgs["latin.py"] and "unknown encoding: klingon" in msgs["badcookie.py"]
    assert report.skipped == []
    # the interpreter agrees on every one of them
    for name in ("nul.py", "blob.py", "latin.py", "badcookie.py", "wrongcookie.py"):
        proc = subprocess.run([sys.executable, str(tmp_path / name)], capture_output=True, text=True)
        assert proc.returncode == 1 and "SyntaxError" in proc.stderr, name


def test_code_nested_beyond_the_compiler_is_a_syntax_error(tmp_path: Path) -> None:
    (tmp_path / "plus.py").write_text("a = 1\nx = " + "+".join(["a"] * 3000) + "\n")
    (tmp_path / "nots.py").write_text("a = 1\nx = " + "not " * 100_000 + "a\n")
    (tmp_path / "fine.py").write_text("a = 1\nx = " + "+".join(["a"] * 200) + "\n")  # near-miss
    report = lint(tmp_path)
    assert hits(report) == {("plus.py", 2, "FC101"), ("nots.py", 2, "FC101")}
    assert "nested too deeply" in _fc101(report)["plus.py"]
    assert report.failed and report.skipped == []


def test_strict_fails_when_a_file_was_not_checked(tmp_path: Path) -> None:
    (tmp_path / "flightcheck.toml").write_text('[service]\nname = "svc"\n[lint]\nmax_file_kb = 1\n')
    (tmp_path / "big.py").write_text("x = 1\n" * 1000)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "t"\ndependencies = []\n')
    exe = Path(sys.executable).parent / "flightcheck"
    base = [str(exe), "lint", str(tmp_path), "--config", str(tmp_path / "flightcheck.toml")]
    plain = subprocess.run(base, capture_output=True, text=True)
    strict = subprocess.run([*base, "--strict"], capture_output=True, text=True)
    assert plain.returncode == 0 and "not checked big.py" in plain.stdout
    assert strict.returncode == 1 and "1 not checked" in strict.stdout
    assert "Traceback" not in plain.stderr + strict.stderr


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_an_unreadable_directory_is_a_note_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("def f(:\n")
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "x.py").write_text("x = 1\n")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "t"\ndependencies = []\n')
    (tmp_path / "secret").chmod(0o000)
    cmd = [str(Path(sys.executable).parent / "flightcheck"), "lint", str(tmp_path), "--no-cache"]
    if os.geteuid() == 0:
        # root reads anything: drop the capabilities that let it, so permissions apply
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv (util-linux)")
        cmd = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *cmd]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    finally:
        (tmp_path / "secret").chmod(0o755)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1  # app/main.py's syntax error still counts
    assert "not checked secret: directory not readable (Permission denied)" in proc.stdout
    assert "app/main.py:1" in proc.stdout and "FC101" in proc.stdout


def test_render_text_names_unchecked_files(tmp_path: Path) -> None:
    (tmp_path / "big.py").write_text("x = 1\n" * 300_000)
    text = render_text(lint(tmp_path, max_file_kb=512))
    assert "not checked big.py" in text and "1 not checked" in text
