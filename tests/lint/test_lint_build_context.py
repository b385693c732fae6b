"""FC806: COPY of a build context that holds .env, .git, a virtualenv or bytecode, with no
.dockerignore to keep them out."""

from __future__ import annotations

from pathlib import Path

from lint_support import hits, write

from flightcheck.config import LintConfig
from flightcheck.lint import lint_paths

DOCKERFILE = """
    FROM python:3.11-slim
    WORKDIR /app
    COPY requirements.txt .
    RUN pip install --no-cache-dir -r requirements.txt
    COPY . .
    USER 1000
    CMD ["python", "-m", "app"]
"""


def _context(root: Path, **extra: str) -> Path:
    write(root, {"Dockerfile": DOCKERFILE, "app/__init__.py": "", "app/__main__.py": "x = 1\n",
                 "requirements.txt": "", ".env": "LOG_LEVEL=debug\n", **extra})
    (root / "app" / "__pycache__").mkdir()
    (root / ".git").mkdir()
    return root


def _fc806(root: Path) -> set[tuple[str, int, str]]:
    return hits(lint_paths(root, [root], LintConfig(exclude=[])), "FC806")


def test_copy_of_a_context_without_dockerignore(tmp_path: Path) -> None:
    root = _context(tmp_path)
    report = lint_paths(root, [root], LintConfig(exclude=[]))
    assert hits(report, "FC806") == {("Dockerfile", 5, "FC806")}
    (finding,) = [f for f in report.findings if f.code == "FC806"]
    assert ".env" in finding.message and ".git" in finding.message
    assert "app/__pycache__" in finding.message and "no .dockerignore" in finding.message


def test_a_dockerignore_that_misses_one(tmp_path: Path) -> None:
    root = _context(tmp_path, **{".dockerignore": ".git\n**/__pycache__\n"})
    report = lint_paths(root, [root], LintConfig(exclude=[]))
    (finding,) = [f for f in report.findings if f.code == "FC806"]
    assert ".env" in finding.message and ".git" not in finding.message


def test_near_misses(tmp_path: Path) -> None:
    # a complete .dockerignore (with a re-included example file)
    ignore = ".git\n.venv\n**/__pycache__\n.env*\n!.env.example\n"
    assert _fc806(_context(tmp_path / "ignored", **{".dockerignore": ignore})) == set()
    # a catch-all with exceptions
    ignore = "*\n!app\n!requirements.txt\n**/__pycache__\n"
    assert _fc806(_context(tmp_path / "allowlist", **{".dockerignore": ignore})) == set()
    # copying only the package, not the context
    root = _context(tmp_path / "narrow")
    (root / "Dockerfile").write_text(DOCKERFILE.replace("COPY . .", "COPY app/ ./app/"))
    assert _fc806(root) == set()
    # a clean context: only an example env file
    clean = tmp_path / "clean"
    write(clean, {"Dockerfile": DOCKERFILE, "app/__main__.py": "x = 1\n",
                  ".env.example": "OPENAI_API_KEY=\n", "requirements.txt": ""})
    assert _fc806(clean) == set()


def test_flightchecks_own_state_is_not_linted_but_kept_out_of_the_image(tmp_path: Path) -> None:
    """The local Cloud Run keeps its issuer's private key under .flightcheck/: not a finding of
    the service's code, but nothing an image should carry."""
    write(tmp_path, {"Dockerfile": DOCKERFILE, "app/__init__.py": "", "requirements.txt": ""})
    key = tmp_path / ".flightcheck" / "emulator" / "identity" / "issuer.json"
    key.parent.mkdir(parents=True)
    key.write_text('{"private_key": "-----BEGIN PRIVATE KEY-----\\nMIIEv' + "A" * 200
                   + '\\n-----END PRIVATE KEY-----\\n"}')
    report = lint_paths(tmp_path, [tmp_path], LintConfig(exclude=[]))
    assert [f.code for f in report.findings if f.code.startswith("FC3")] == []
    (finding,) = [f for f in report.findings if f.code == "FC806"]
    assert ".flightcheck" in finding.message
    (tmp_path / ".dockerignore").write_text(".flightcheck\n")
    assert _fc806(tmp_path) == set()
