"""Keeping secrets out of logs, reports and errors.

A :class:`Redactor` knows the secret values in play (provider keys passed to the service, secret
files) and replaces them wherever text leaves flightcheck.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH)", re.I)
MASK = "***"


def is_secret_name(name: str) -> bool:
    """True for env names that conventionally hold credentials (OPENAI_API_KEY, HF_TOKEN, ...)."""
    return bool(_SECRET_NAME.search(name))


def redact_value(value: str) -> str:
    """A safe preview of a secret: its first 4 characters, then the mask and its length."""
    if len(value) <= 8:
        return MASK
    return f"{value[:4]}{MASK}({len(value)} chars)"


class Redactor:
    """Replaces known secret values in any text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(*secrets)

    def add(self, *values: str) -> None:
        # Short values would mask ordinary words; real keys are long.
        new = {v for v in values if v and len(v) >= 6}
        if new - self._values:
            self._values |= new
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def add_env(self, env: Mapping[str, str]) -> None:
        """Treat the values of credential-named variables as secrets."""
        self.add(*(v for k, v in env.items() if is_secret_name(k)))

    def __call__(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)

    def __bool__(self) -> bool:
        return bool(self._values)
