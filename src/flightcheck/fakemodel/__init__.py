"""The fake model server: a deterministic OpenAI/Gemini stand-in run beside the service.

``SERVER_SCRIPT`` is the one stdlib-only file a runtime starts as a sidecar.
"""

from __future__ import annotations

from pathlib import Path

from flightcheck.fakemodel.server import DEFAULT_PORT, FAKE_API_KEY, count_tokens

SERVER_SCRIPT: Path = Path(__file__).with_name("server.py")

__all__ = ["DEFAULT_PORT", "FAKE_API_KEY", "SERVER_SCRIPT", "count_tokens"]
