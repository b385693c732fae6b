"""FC211-FC213: provider SDKs without a pin, APIs the declared version removed, SDKs at their
end of life."""

from __future__ import annotations

from pathlib import Path

from lint_support import hits, lint, write

from flightcheck.config import LintConfig
from flightcheck.lint import lint_paths

OLD_API = """
    import openai
    from openai.error import RateLimitError


    def ask(q):
        try:
            return openai.ChatCompletion.create(model="gpt-4o-2024-08-06", messages=q)
        except openai.error.APIError:
            return None
"""


def test_unpinned_sdks_in_every_kind_of_declaration(tmp_path: Path) -> None:
    write(tmp_path, {
        "requirements.txt": "openai\nanthropic>=0.30\nlitellm==1.40.0\nfastapi\n",
        "pyproject.toml": """
            [project]
            name = "svc"
            dependencies = ["google-genai>=1.0", "langchain-openai~=0.2", "requests"]
            [project.optional-dependencies]
            dev = ["langchain-core"]
        """,
        "Dockerfile": """
            FROM python:3.11-slim
            RUN pip install --no-cache-dir langgraph "mistralai<2"
        """,
        "app.py": "x = 1\n",
    })
    report = lint_paths(tmp_path, [tmp_path], LintConfig(exclude=[]))
    assert hits(report, "FC211") == {
        ("requirements.txt", 1, "FC211"),  # openai
        ("requirements.txt", 2, "FC211"),  # anthropic>=0.30: no upper bound
        ("pyproject.toml", 3, "FC211"),  # google-genai>=1.0
        ("Dockerfile", 2, "FC211"),  # langgraph
    }
    # near-misses: pinned (litellm==), compatible release (~=), bounded (<2), not an AI SDK
    # (fastapi), an optional/dev extra (langchain-core)
    assert all(f.severity.value == "warning" for f in report.findings if f.code == "FC211")


def test_a_lock_file_pins_pyproject_ranges(tmp_path: Path) -> None:
    write(tmp_path, {"pyproject.toml": '[project]\nname = "s"\ndependencies = ["openai>=1"]\n',
                     "uv.lock": "version = 1\n", "app.py": "x = 1\n"})
    assert hits(lint(tmp_path), "FC211") == set()


def test_removed_openai_api_with_openai_1(tmp_path: Path) -> None:
    report = lint(tmp_path, {"requirements.txt": "openai==1.55.3\n", "app.py": OLD_API})
    assert hits(report, "FC212") == {("app.py", 2, "FC212"), ("app.py", 7, "FC212"),
                                     ("app.py", 8, "FC212")}
    assert all(f.severity.value == "error" for f in report.findings if f.code == "FC212")
    # unpinned openai installs 1.x too
    assert len(hits(lint(tmp_path, {"requirements.txt": "openai\n"}), "FC212")) == 3


def test_old_api_with_old_sdk_and_new_api_stay_silent(tmp_path: Path) -> None:
    assert hits(lint(tmp_path / "old", {"requirements.txt": "openai==0.28.1\n", "app.py": OLD_API}),
                "FC212") == set()
    assert hits(lint(tmp_path / "below", {"requirements.txt": "openai<1\n", "app.py": OLD_API}),
                "FC212") == set()
    new = """
        import openai
        from openai import OpenAI
        from openai.types.chat import ChatCompletion

        client = OpenAI(timeout=30)

        def ask(q) -> ChatCompletion | None:
            try:
                return client.chat.completions.create(model="gpt-4o-2024-08-06", messages=q)
            except openai.APIError:
                return None
    """
    assert hits(lint(tmp_path / "new", {"requirements.txt": "openai==1.55.3\n", "app.py": new}),
                "FC212") == set()


def test_deprecated_google_sdks(tmp_path: Path) -> None:
    report = lint(tmp_path, {
        "requirements.txt": "google-generativeai==0.8.5\ngoogle-cloud-aiplatform==1.70.0\n"
                            "google-genai==1.0.0\n",
        "a.py": "import google.generativeai as genai\n",
        "b.py": "from google import generativeai\n",
        "c.py": "from vertexai.generative_models import GenerativeModel\n",
        "d.py": "from google import genai\nfrom google.genai import types\n",  # the new SDK
    })
    assert hits(report, "FC213") == {("a.py", 1, "FC213"), ("b.py", 1, "FC213"),
                                     ("c.py", 1, "FC213")}
