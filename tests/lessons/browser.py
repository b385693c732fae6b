"""A real headless Chromium (Debian's `chromium`) driven over the DevTools protocol.

The page is loaded in a fresh profile; every console message, uncaught exception and browser
log entry (failed loads, CSP violations, …) is collected from the protocol's events, the DOM is
queried with Runtime.evaluate, and a full-page screenshot is taken with Page.captureScreenshot.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--remote-debugging-port=0",
         "--remote-allow-origins=*"]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class PageLoad:
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, log errors
    messages: list[str] = field(default_factory=list)  # every console message
    values: dict[str, Any] = field(default_factory=dict)  # expression → its value


def load(url: str, expressions: dict[str, str], screenshot: Path | None = None,
         timeout_s: float = 60.0) -> PageLoad:
    """Open ``url``, evaluate ``expressions`` (name → JS) after the load event, screenshot."""
    exe = chromium()
    assert exe is not None
    profile = Path(tempfile.mkdtemp(prefix="fc-chromium-"))
    proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        port = _devtools_port(profile, proc, timeout_s)
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(t for t in targets if t.get("type") == "page")
        return _drive(page["webSocketDebuggerUrl"], url, expressions, screenshot, timeout_s)
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)


def _devtools_port(profile: Path, proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    """Chromium writes the port it chose into the profile's DevToolsActivePort."""
    deadline = time.monotonic() + timeout_s
    marker = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise AssertionError(f"chromium exited with {proc.returncode}:\n{err[-2000:]}")
        if marker.is_file():
            lines = marker.read_text().splitlines()
            if lines and lines[0].isdigit():
                return int(lines[0])
        time.sleep(0.1)
    raise AssertionError(f"chromium did not open its DevTools port within {timeout_s} s")


def _drive(ws_url: str, url: str, expressions: dict[str, str], screenshot: Path | None,
           timeout_s: float) -> PageLoad:
    out = PageLoad()
    ids = iter(range(1, 10_000))
    with connect(ws_url, max_size=64 * 2**20, open_timeout=timeout_s) as ws:

        def call(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
            my = next(ids)
            ws.send(json.dumps({"id": my, "method": method, "params": params or {}}))
            while True:
                msg = json.loads(ws.recv(timeout=timeout_s))
                if msg.get("id") == my:
                    if "error" in msg:
                        raise AssertionError(f"{method}: {msg['error']}")
                    return msg.get("result", {})
                _event(msg, out)

        for domain in ("Page", "Runtime", "Log"):
            call(f"{domain}.enable")
        call("Page.navigate", {"url": url})
        deadline = time.monotonic() + timeout_s
        while True:
            msg = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            _event(msg, out)
            if msg.get("method") == "Page.loadEventFired":
                break
        # Late events (a deferred script's error) arrive within a moment of the load event.
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            try:
                _event(json.loads(ws.recv(timeout=0.1)), out)
            except TimeoutError:
                pass
        for name, js in expressions.items():
            result = call("Runtime.evaluate", {"expression": js, "returnByValue": True})
            if "exceptionDetails" in result:
                raise AssertionError(f"{name}: {result['exceptionDetails']}")
            out.values[name] = result["result"].get("value")
        if screenshot is not None:
            shot = call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
            screenshot.write_bytes(base64.b64decode(shot["data"]))
    return out


def _event(msg: dict[str, Any], out: PageLoad) -> None:
    method, params = msg.get("method"), msg.get("params") or {}
    if method == "Runtime.consoleAPICalled":
        text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
        out.messages.append(f"{params.get('type')}: {text}")
        if params.get("type") in ("error", "assert"):
            out.errors.append(f"console.{params.get('type')}: {text}")
    elif method == "Runtime.exceptionThrown":
        details = params.get("exceptionDetails", {})
        out.errors.append("exception: " + str(details.get("exception", {}).get("description")
                                              or details.get("text")))
    elif method == "Log.entryAdded":
        entry = params.get("entry", {})
        if entry.get("level") == "error":
            out.errors.append(f"log ({entry.get('source')}): {entry.get('text')}")
