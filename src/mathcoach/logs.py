"""JSON structured logs: one object per line on stdout (what Cloud Logging parses).

Known secret values (API keys) are masked in every line, whatever logged them.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import Any

_MASK = "***"
# Attributes every LogRecord has; anything else was passed through `extra=` and is a field.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}

logger = logging.getLogger("mathcoach")


class JsonFormatter(logging.Formatter):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        values = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._secret = re.compile("|".join(map(re.escape, values))) if values else None

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 6),
            "severity": record.levelname,
            "logger": record.name,
        }
        event = getattr(record, "event", None)
        message = record.getMessage()
        if event is None:
            entry["event"] = "log"
        if message:
            entry["message"] = message
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key != "color_message" and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            # One line, last frame only: a reader needs the cause, not a wall of text.
            exc = record.exc_info[1]
            entry["error"] = f"{type(exc).__name__}: {exc}"
        line = json.dumps(entry, default=str)
        return self._secret.sub(_MASK, line) if self._secret else line


def setup(secrets: Iterable[str] = (), level: str = "INFO") -> dict[str, Any]:
    """Route our logs and uvicorn's through the JSON formatter; returns uvicorn's log_config."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "mathcoach"):
        named = logging.getLogger(name)
        named.handlers.clear()
        named.propagate = True
    # Access lines come from our middleware (with latency), so uvicorn's are off.
    logging.getLogger("uvicorn.access").disabled = True
    return {"version": 1, "disable_existing_loggers": False}


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event: {"event": name, "ts": ..., **fields}."""
    logger.log(level, "", extra={"event": name, **fields})


def now() -> float:
    return time.time()
