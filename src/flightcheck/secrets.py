"""Keeping secrets out of logs, reports and errors.

A :class:`Redactor` knows the secret values in play (provider keys passed to the service, secret
files) and replaces them wherever text leaves flightcheck; it also masks anything shaped like a
provider key (the lint stage's patterns) or a private key block, known or not. A value is a
secret by its name (``*KEY*``, ``*TOKEN*``, ``*CREDS*``, ...) or by its look (a provider key, a
URL with a password, a long high-entropy string), whatever it is called.

Text is only ever shortened after it was redacted (:func:`excerpt`): cutting first could leave
part of a key that the redactor no longer recognises.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from functools import cache

_SECRET_NAME = re.compile(
    r"KEY|TOKEN(?!S)|SECRET|PASSWORD|PASSWD|PASSPHRASE|_PWD(?:_|$)|CREDENTIAL|CREDS|"
    r"AUTH|PRIVATE|(?:^|_)DSN(?:_|$)|SIGNING|(?:^|_)SALT(?:_|$)",
    re.I,
)
MASK = "***"
_MIN_SECRET = 6  # shorter values would mask ordinary words; real keys are long

# scheme://user:password@host — the password part of a connection URL.
_URL_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:([^\s/@]+)@")
# The block's base64 body (also as JSON-escaped "\n"), up to its END line when there is one:
# never past the key, so a JSON document around it stays a JSON document.
_PEM = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY(?: BLOCK)?-----(?:[A-Za-z0-9+/=\s]|\\[nr])*"
    r"(?:-----END [A-Z ]*PRIVATE KEY(?: BLOCK)?-----)?"
)
_SEGMENT = re.compile(r"[-_.:@,;]")


def is_secret_name(name: str) -> bool:
    """True for env names that conventionally hold credentials (OPENAI_API_KEY, HF_TOKEN,
    LLM_CREDS, DB_PASSWD, SENTRY_DSN, ...)."""
    return bool(_SECRET_NAME.search(name))


@cache
def _key_patterns() -> re.Pattern[str]:
    """The lint stage's provider-key patterns (OpenAI, Anthropic, Google, AWS, HF, GitHub,
    Slack, Stripe, Groq) as one regex with a token boundary on the left."""
    from flightcheck.lint.textscan import _PROVIDERS  # read-only: one list of key shapes

    body = "|".join(f"(?:{p.regex.pattern})" for p in _PROVIDERS)
    return re.compile(f"(?<![A-Za-z0-9_-])(?:{body})")


def _entropy(value: str) -> float:
    counts: dict[str, int] = {}
    for ch in value:
        counts[ch] = counts.get(ch, 0) + 1
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def looks_like_secret(value: str) -> bool:
    """True for a value that is a credential by its look: a provider key, a URL with a
    password, a private key block, or a long random token (a model name, a path, a URL or a
    sentence is not)."""
    v = value.strip()
    if len(v) < 8:
        return False
    if _key_patterns().search(v) or _URL_PASSWORD.search(v) or "PRIVATE KEY-----" in v:
        return True
    if len(v) < 16 or any(c.isspace() for c in v) or "://" in v or v.startswith(("/", "./", "~")):
        return False
    longest = max(_SEGMENT.split(v), key=len)
    if len(longest) < 16:
        return False  # gpt-4o-mini-2024-07-18, 1.2.3-beta, host:port
    # Generated tokens mix digits and letters (a CamelCase name does not).
    mixed = any(c.isdigit() for c in longest) and any(c.isalpha() for c in longest)
    return mixed and _entropy(longest) >= 3.0


def is_secret(name: str, value: str) -> bool:
    """A secret by its name or by its value."""
    return is_secret_name(name) or looks_like_secret(value)


def redact_value(value: str) -> str:
    """A safe preview of a secret: its first 4 characters, then the mask and its length."""
    if len(value) <= 8:
        return MASK
    return f"{value[:4]}{MASK}({len(value)} chars)"


def scrub(text: str) -> str:
    """Mask what looks like a key in ``text``, known or not: provider keys, passwords in
    URLs, private key blocks."""
    if not text:
        return text
    text = _key_patterns().sub(MASK, text)
    if "://" in text:
        text = _URL_PASSWORD.sub(lambda m: m.group(0).replace(m.group(1), MASK), text)
    if "PRIVATE KEY" in text:
        text = _PEM.sub(MASK, text)
    return text


def excerpt(text: str, limit: int, redact: Callable[[str], str], *, one_line: bool = False) -> str:
    """At most ``limit`` characters of ``text``, cut only after it was redacted (a key that
    straddles the cut would otherwise leave its first part behind)."""
    safe = redact(text)
    if one_line:
        safe = " ".join(safe.split())
    return safe if len(safe) <= limit else safe[: max(0, limit - 1)] + "…"


class Redactor:
    """Replaces known secret values, and anything shaped like a key, in any text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(*secrets)
        _key_patterns()  # compiled now, not on the first probe a stage times

    def add(self, *values: str) -> None:
        new = {v for v in values if v and len(v) >= _MIN_SECRET}
        if new - self._values:
            self._values |= new
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def add_env(self, env: Mapping[str, str]) -> None:
        """Treat as secrets the values of credential-named variables and the values that look
        like credentials, whatever their names."""
        self.add(*(v for k, v in env.items() if is_secret(k, v)))

    def __call__(self, text: str) -> str:
        if not text:
            return text
        if self._pattern is not None:
            text = self._pattern.sub(MASK, text)
        return scrub(text)

    def excerpt(self, text: str, limit: int, *, one_line: bool = False) -> str:
        """``text`` redacted, then cut to ``limit`` characters."""
        return excerpt(text, limit, self, one_line=one_line)

    def __bool__(self) -> bool:
        return bool(self._values)
