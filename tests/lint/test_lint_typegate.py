"""The type gate (FC901-FC905): calls into the project's own code that fail whatever the input,
found by a real type checker (ty); near-misses that work at run time stay silent."""

from __future__ import annotations

from pathlib import Path

import pytest
from lint_support import hits, lint

from flightcheck.lint.engine import find_tool

pytestmark = pytest.mark.skipif(find_tool("ty") is None, reason="ty not installed")

AGENT = """
    import functools
    from dataclasses import dataclass


    def run_agent(user_id: str, message: str, metadata: dict | None) -> str:
        return message


    def greet(name, *, loud=False):
        return name.upper() if loud else name


    def takes_any(*args, **kwargs):
        return args, kwargs


    def logged(fn):
        @functools.wraps(fn)
        def inner(*a, **k):
            return fn(*a, **k)
        return inner


    @logged
    def decorated(a, b):
        return a + b


    @dataclass
    class Reply:
        text: str
        tokens: int = 0


    class Caller:
        def __call__(self, x):
            return x

        def method(self, a):
            return a


    LIMIT = 3
    caller = Caller()
"""

MAIN = """
    import fastapi
    import app.agent as agent
    from app import lazy
    from app.agent import Caller, Reply, caller, decorated, greet, run_agent, takes_any

    api = fastapi.FastAPI()


    def handle(message: str) -> str:
        return run_agent(message)


    def bugs() -> None:
        greet("a", "b")
        greet("a", shout=True)
        agent.LIMIT()
        agent.run_agentt("u", "m", None)
        Caller().method()


    def fine(x: object) -> None:
        takes_any(1, 2, a=3)
        decorated(1, 2)
        caller(1)
        lazy.anything()
        Reply("x", tokens=2)
        api.get("/x")(lambda: None)
        fastapi.nonexistent_thing()  # a dependency: its real signature lives in the image
        kw = {"loud": True}
        greet("a", **kw)
        import os
        os.path.join("a", "b")
        print("a", "b", sep="")
"""

FILES = {
    "app/__init__.py": "",
    "app/agent.py": AGENT,
    "app/lazy.py": "def __getattr__(name):\n    return name\n",
    "app/main.py": MAIN,
    # a test that calls wrongly fails the test, not the service: not the gate's business
    "tests/test_agent.py": "from app.agent import greet\n\ndef test_g():\n    greet()\n",
}


def test_calls_that_always_fail_and_near_misses(tmp_path: Path) -> None:
    report = lint(tmp_path, FILES)
    assert hits(report, "FC9") == {
        ("app/main.py", 10, "FC903"),  # run_agent(message): the real service's bug
        ("app/main.py", 14, "FC901"),
        ("app/main.py", 15, "FC902"),
        ("app/main.py", 16, "FC904"),
        ("app/main.py", 17, "FC905"),
        ("app/main.py", 18, "FC903"),
    }
    finding = next(f for f in report.findings if f.code == "FC903" and f.line == 10)
    assert "message" in finding.message and "metadata" in finding.message
    assert finding.category == "type" and finding.severity.value == "error"
    assert report.tools.get("ty") and not report.notes


def test_the_gate_can_be_disabled_and_suppressed(tmp_path: Path) -> None:
    files = {"app/__init__.py": "", "app/agent.py": AGENT,
             "app/main.py": "from app.agent import greet\n"
                            "greet()  # noqa: FC903\n"
                            "greet(1, 2)\n"}
    assert hits(lint(tmp_path, files), "FC9") == {("app/main.py", 3, "FC901")}
    assert hits(lint(tmp_path, disable=["type"]), "FC9") == set()


def test_dynamic_python_that_works_stays_silent(tmp_path: Path) -> None:
    # Shapes that a checker misreads and that run fine: each was a false alarm on the CPython
    # standard library before the gate learnt it.
    files = {
        "svc/__init__.py": "",
        "svc/base.py": """
            from typing import Protocol


            class Path(Protocol):
                def joinpath(self, other: str) -> "Path": ...


            class Base:
                def render(self, a):
                    return a

                def run(self, x):
                    return self.render(x, 2)  # a subclass overrides render(a, b)


            class Legacy:
                def convert(s):
                    return s
                convert = staticmethod(convert)


            _hook = None


            def install(fn):
                global _hook
                _hook = fn


            def fire():
                return _hook()
        """,
        "svc/consts.py": "from os import *\nfrom _stat import *\n__all__ = ['EXTRA']\n",
        "svc/use.py": """
            from svc import base, consts
            from svc.base import Legacy, Path


            def go(p: Path) -> None:
                p.joinpath("a", "b")
                Legacy.convert("x")
                print(consts.EXTRA, consts.SF_NOUNLINK)


            if __name__ == "__main__":
                from unittest import main
                main("x", verbosity=2)


            def main():
                return base.fire()
        """,
    }
    assert hits(lint(tmp_path, files), "FC9") == set()


def test_batches_find_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flightcheck.lint import typegate

    whole = hits(lint(tmp_path / "whole", FILES, cache=False), "FC9")
    monkeypatch.setattr(typegate, "BATCH", 1)  # one ty process per file
    assert hits(lint(tmp_path / "batched", FILES, cache=False), "FC9") == whole != set()
