"""FC406: blocking calls reached from async def through the project's own functions."""

from __future__ import annotations

from pathlib import Path

from lint_support import hits, lint

FILES = {
    "requirements.txt": "requests\nhttpx\nopenai\nfastapi\n",
    "app/__init__.py": "",
    "app/quotes.py": """
        import requests
        import time


        def fetch_quote(symbol):
            return requests.get("https://q.example/" + symbol, timeout=10).json()


        def normalise(q):
            return {k.lower(): v for k, v in q.items()}


        def quote_and_wait(symbol):
            data = normalise(fetch_quote(symbol))
            return data


        def backoff():
            time.sleep(0.5)
    """,
    "app/llm.py": """
        from openai import OpenAI

        client = OpenAI(timeout=30)


        class Answerer:
            def __init__(self):
                self.client = OpenAI(timeout=30)

            def ask(self, q):
                try:
                    return self.client.chat.completions.create(model="gpt-4o-2024-08-06", messages=q)
                except Exception:
                    return None

            async def handle(self, q):
                return self.ask(q)
    """,
    "app/main.py": """
        import asyncio
        from fastapi import FastAPI
        from app import quotes
        from app.quotes import fetch_quote, normalise, quote_and_wait


        app = FastAPI()


        @app.get("/q/{s}")
        async def quote(s: str):
            return fetch_quote(s)


        @app.get("/deep/{s}")
        async def deep(s: str):
            quotes.backoff()
            return quote_and_wait(s)


        @app.get("/ok/{s}")
        async def ok(s: str):
            data = await asyncio.to_thread(fetch_quote, s)
            later = await asyncio.get_running_loop().run_in_executor(None, lambda: fetch_quote(s))
            return normalise(data), later


        def sync_route(s: str):
            return fetch_quote(s)
    """,
}


def test_blocking_through_helpers_across_modules(tmp_path: Path) -> None:
    report = lint(tmp_path, FILES)
    assert hits(report, "FC406") == {
        ("app/main.py", 12, "FC406"),  # fetch_quote → requests.get
        ("app/main.py", 17, "FC406"),  # quotes.backoff → time.sleep
        ("app/main.py", 18, "FC406"),  # quote_and_wait → fetch_quote → requests.get
        ("app/llm.py", 17, "FC406"),   # self.ask → sync OpenAI client
    }
    deep = next(f for f in report.findings if f.code == "FC406" and f.line == 18)
    assert "quote_and_wait() → fetch_quote() → requests.get() (app/quotes.py:6)" in deep.message
    # near-misses: to_thread/run_in_executor, pure helpers, sync routes: nothing
    assert not any(f.code.startswith("FC40") and f.line in (23, 24, 25, 29) for f in report.findings
                   if f.file == "app/main.py")


def test_depth_is_limited_and_async_helpers_are_not_followed(tmp_path: Path) -> None:
    report = lint(tmp_path, {
        "requirements.txt": "requests\n",
        "m.py": """
            import requests

            def l4():
                return requests.get("u", timeout=1)

            def l3():
                return l4()

            def l2():
                return l3()

            def l1():
                return l2()

            async def too_deep():
                return l1()

            async def three():
                return l2()

            async def helper():
                return 1

            async def awaits():
                return await helper()
        """,
    })
    assert hits(report, "FC406") == {("m.py", 19, "FC406")}
