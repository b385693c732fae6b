"""Rules that work on raw text: provider credentials, private keys, AWS keys, generic secrets
in config files, floating model names in config files, and suppression comments.

Kept free of heavy imports: this runs inside the worker processes. Every pattern is guarded by
a plain substring test first, so a file without ``sk-`` never pays for the OpenAI regex.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections.abc import Iterator
from typing import NamedTuple

from flightcheck.secrets import redact_value


class Raw(NamedTuple):
    """A finding before the catalog gives it a category and severity."""

    code: str
    line: int
    col: int
    message: str
    severity: str | None = None  # None: the rule's default
    subject: str | None = None  # what the finding is about (the module of FC201)


# --- where a position is ---------------------------------------------------------------


class LineIndex:
    """Offset → (line, col), both 1-based. Built on first use: most files have no finding."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._starts: list[int] | None = None

    @property
    def lines(self) -> int:
        return self._text.count("\n") + (0 if self._text.endswith("\n") or not self._text else 1)

    def position(self, offset: int) -> tuple[int, int]:
        if self._starts is None:
            starts = [0]
            find = self._text.find
            i = find("\n")
            while i != -1:
                starts.append(i + 1)
                i = find("\n", i + 1)
            self._starts = starts
        line = bisect_right(self._starts, offset)
        return line, offset - self._starts[line - 1] + 1


# --- suppressions ----------------------------------------------------------------------

_SUPPRESS = re.compile(
    r"#[ \t]*(?:flightcheck:[ \t]*ignore\[([A-Za-z0-9_, \t]+)\]|noqa:[ \t]*([A-Za-z0-9_, \t]+))"
)


def suppressions(text: str, index: LineIndex | None = None) -> dict[int, set[str]]:
    """line → codes silenced there by ``# flightcheck: ignore[FC301]`` or ``# noqa: FC301``."""
    if "flightcheck:" not in text and "noqa" not in text:
        return {}
    index = index or LineIndex(text)
    out: dict[int, set[str]] = {}
    for m in _SUPPRESS.finditer(text):
        codes = m.group(1) or m.group(2) or ""
        line, _ = index.position(m.start())
        out.setdefault(line, set()).update(c.upper() for c in re.split(r"[,\s]+", codes) if c)
    return out


# --- does a value look like a real secret ----------------------------------------------

# Values that announce themselves as placeholders or test data.
_PLACEHOLDER = re.compile(
    r"xxxx|\*\*\*|\.\.\.|<[^>]*>|\$\{|\{\{|%\(|your|example|placeholder|changeme|change[-_]me|"
    r"replace|dummy|fake|test|sample|mock|redacted|secret|password|insert|enter[-_]|todo|"
    r"0{6}|123456|abcdef|qwerty|letmein|here$|^none$|^null$",
    re.I,
)
_HEX_DIGEST = re.compile(r"(?:[0-9a-f]+|[0-9A-F]+)")
_DIGEST_LENGTHS = {32, 40, 56, 64, 96, 128}
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# Env var names, snake_case words and dotted paths: names of things, not values.
_IDENTIFIER = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|[a-z]+(?:_[a-z0-9]+)+|[A-Za-z_]\w*(?:\.\w+)+")


def entropy(value: str) -> float:
    """Shannon entropy in bits per character."""
    counts: dict[str, int] = {}
    for ch in value:
        counts[ch] = counts.get(ch, 0) + 1
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def is_placeholder(value: str) -> bool:
    return bool(_PLACEHOLDER.search(value)) or (len(value) >= 8 and len(set(value)) <= 3)


def is_digest(value: str) -> bool:
    """Hashes, digests, commit ids and UUIDs are identifiers, not credentials."""
    return bool(
        (len(value) in _DIGEST_LENGTHS and _HEX_DIGEST.fullmatch(value)) or _UUID.fullmatch(value)
    )


def looks_random(value: str, *, min_len: int = 12) -> bool:
    """A value that could be a generated credential: long, no spaces, mixed characters,
    high entropy, and none of the shapes of placeholders, digests or identifiers."""
    if len(value) < min_len or len(value) > 1024 or any(c.isspace() for c in value):
        return False
    if "://" in value or value.startswith(("/", "./", "~")) or _IDENTIFIER.fullmatch(value):
        return False
    has_digit = any(c.isdigit() for c in value)
    has_upper = any(c.isupper() for c in value)
    has_lower = any(c.islower() for c in value)
    if not has_digit or not (has_upper or has_lower):
        return False
    if entropy(value) < 3.0 or is_digest(value) or is_placeholder(value):
        return False
    return True


_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_CRED_LAST = {"key", "apikey", "token", "secret", "password", "passwd", "pwd", "passphrase",
              "credential", "credentials"}
# "key" preceded by these is a lookup key, not a credential.
_NOT_CRED_KEY = {"sort", "cache", "primary", "foreign", "dict", "lookup", "partition", "row",
                 "hot", "group", "idempotency", "unique", "composite", "shard", "routing",
                 "object", "index", "column", "field", "public", "map", "hash", "s3", "bucket",
                 "redis", "state", "storage", "env", "sign", "context", "config", "translation",
                 "i18n", "message", "dedup", "lock", "metric", "session", "tag", "type"}
_NOT_CRED_TOKEN = {"csrf", "xsrf", "next", "page", "pagination", "continuation", "cancel",
                   "cancellation", "max", "bos", "eos", "pad", "unk", "sep", "cls", "mask",
                   "special", "start", "end", "stop", "num", "count", "limit"}


def credential_name(name: str) -> bool:
    """True for names that hold credentials: OPENAI_API_KEY, apiKey, db_password, token."""
    words = [w.lower() for w in _WORD.findall(name)]
    if not words or words[-1] not in _CRED_LAST:
        return False
    prev = words[-2] if len(words) > 1 else ""
    if words[-1] == "key":
        return len(words) > 1 and prev not in _NOT_CRED_KEY
    if words[-1] == "token":
        return prev not in _NOT_CRED_TOKEN
    return True


# --- provider credentials ----------------------------------------------------------------


class _Pattern(NamedTuple):
    code: str
    provider: str
    needles: tuple[str, ...]  # cheap substring guards (none: the regex itself is as cheap)
    regex: re.Pattern[str]
    body_from: int  # where the random part starts, for the randomness check


# The left token boundary is checked in code, not with a look-behind: a pattern that starts
# with a literal lets re skip ahead to it, ~20x faster on files that mention "sk-" in passing.
_B = ""
_E = r"(?![A-Za-z0-9_-])"
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_PROVIDERS: tuple[_Pattern, ...] = (
    _Pattern("FC301", "Anthropic API key", ("sk-ant-",),
             re.compile(_B + r"sk-ant-[a-z]+\d*-[A-Za-z0-9_-]{20,}"), 7),
    _Pattern("FC301", "OpenAI API key", ("sk-",),
             re.compile(_B + r"sk-(?!ant-)(?:(?:proj|svcacct|admin|None)-)?[A-Za-z0-9_-]{20,}"), 3),
    _Pattern("FC301", "Google API key", ("AIza",),
             re.compile(_B + r"AIza[0-9A-Za-z_-]{35}" + _E), 4),
    _Pattern("FC301", "Hugging Face token", ("hf_",),
             re.compile(_B + r"hf_[A-Za-z0-9]{30,}" + _E), 3),
    _Pattern("FC301", "GitHub token", (),
             re.compile(_B + r"(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{50,})" + _E), 4),
    _Pattern("FC301", "Slack token", ("xox",),
             re.compile(_B + r"xox[abposr]-[A-Za-z0-9-]{20,}" + _E), 5),
    _Pattern("FC301", "Stripe live key", ("_live_",),
             re.compile(_B + r"(?:sk|rk)_live_[A-Za-z0-9]{20,}" + _E), 8),
    _Pattern("FC301", "Groq API key", ("gsk_",),
             re.compile(_B + r"gsk_[A-Za-z0-9]{40,}" + _E), 4),
    _Pattern("FC302", "AWS access key id", (),
             re.compile(r"A(?:KIA|SIA|BIA|CCA)[A-Z0-9]{16}(?![A-Za-z0-9])"), 4),
)
_AWS_SECRET = re.compile(
    r"aws_?secret_?(?:access_?)?key[\"']?\s*[:=,]\s*[rbRB]?[\"']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])",
    re.I,
)
_PRIVATE_KEY = re.compile(
    r"-----BEGIN ((?:RSA|EC|DSA|OPENSSH|ENCRYPTED|PGP) )?PRIVATE KEY(?: BLOCK)?-----"
)
_B64_RUN = re.compile(r"[A-Za-z0-9+/]{40,}")


def _provider_body_ok(body: str) -> bool:
    if is_placeholder(body):
        return False
    has_digit = any(c.isdigit() for c in body)
    has_upper = any(c.isupper() for c in body)
    has_lower = any(c.islower() for c in body)
    # Generated keys mix character classes (Hugging Face's are letters only, but mixed case).
    mixed = (has_digit and (has_upper or has_lower)) or (has_upper and has_lower)
    return mixed and entropy(body) >= 3.0


def scan_credentials(text: str, index: LineIndex) -> Iterator[Raw]:
    """Provider keys (FC301), AWS keys (FC302) and private key blocks (FC303)."""
    for pat in _PROVIDERS:
        if pat.needles and not any(n in text for n in pat.needles):
            continue
        for m in pat.regex.finditer(text):
            if m.start() and text[m.start() - 1] in _TOKEN_CHARS:
                continue  # the middle of a longer token
            token = m.group(0)
            if pat.provider == "OpenAI API key" and token.startswith("sk-ant-"):
                continue
            if not _provider_body_ok(token[pat.body_from :]):
                continue
            line, col = index.position(m.start())
            yield Raw(pat.code, line, col, f"hard-coded {pat.provider} {redact_value(token)}")
    if "ecret" in text or "ECRET" in text:
        for m in _AWS_SECRET.finditer(text):
            value = m.group(1)
            if is_placeholder(value) or entropy(value) < 3.5:
                continue
            line, col = index.position(m.start(1))
            yield Raw("FC302", line, col, f"hard-coded AWS secret access key {redact_value(value)}")
    if "PRIVATE KEY-----" in text:
        for m in _PRIVATE_KEY.finditer(text):
            after = text[m.end() : m.end() + 600].replace("\\n", "\n")
            body = _B64_RUN.search(after)
            if body is None or is_placeholder(after[: body.end()]):
                continue  # a marker string in parsing code, not a key
            line, col = index.position(m.start())
            kind = (m.group(1) or "").strip()
            yield Raw("FC303", line, col, f"{kind + ' ' if kind else ''}private key block")


# --- config files: generic secrets and model names -----------------------------------------

_TEXT_ASSIGN = re.compile(
    r"""(?P<name>[A-Za-z_][\w.-]*)["']?[ \t]*[:=][ \t]*(?P<q>["']?)(?P<value>[^\s"'#,;]{2,})(?P=q)"""
)


def scan_config_text(text: str, index: LineIndex, floating: frozenset[str]) -> Iterator[Raw]:
    """``NAME=value`` / ``name: value`` / ``"name": "value"`` pairs in .env, YAML, TOML, JSON,
    INI files: credential names with random values (FC304), model keys naming a floating
    alias (FC701)."""
    lower = text.lower()
    want_secret = any(w in lower for w in ("key", "token", "secret", "passw", "pwd", "credential"))
    want_model = "model" in lower
    if not (want_secret or want_model):
        return
    for m in _TEXT_ASSIGN.finditer(text):
        name, value = m.group("name"), m.group("value")
        short = name.rsplit(".", 1)[-1]
        if want_secret and credential_name(short) and looks_random(value):
            line, col = index.position(m.start("value"))
            yield Raw("FC304", line, col, f"hard-coded secret in {short}: {redact_value(value)}")
        elif want_model and "model" in short.lower() and is_floating_model(value, floating):
            line, col = index.position(m.start("value"))
            yield Raw("FC701", line, col, floating_message(value))


# --- model names ---------------------------------------------------------------------------

# Names providers move to new snapshots without notice (documented in docs/lint.md).
FLOATING_MODELS: frozenset[str] = frozenset(
    {
        "gpt-4o", "gpt-4o-mini", "gpt-4-turbo", "gpt-4", "gpt-3.5-turbo", "gpt-4.1",
        "gpt-4.1-mini", "gpt-4.1-nano", "o1", "o1-mini", "o3", "o3-mini", "o4-mini",
        "gemini-pro", "gemini-1.5-pro", "gemini-1.5-flash", "gemini-1.5-flash-8b",
        "gemini-2.0-flash", "gemini-2.0-flash-lite",
        "claude-opus-4-0", "claude-sonnet-4-0", "claude-opus-4-1",
    }
)
_FAMILY = re.compile(
    r"(?:gpt|chatgpt|o\d|claude|gemini|gemma|mistral|mixtral|codestral|pixtral|ministral|"
    r"command|llama|grok|deepseek|qwen|text-embedding|embed)[\w.:-]*-latest",
    re.I,
)


def _model_id(value: str) -> str:
    # "models/gemini-1.5-pro-latest", "openai/gpt-4o" (LiteLLM style) → the model id.
    return value.strip().rsplit("/", 1)[-1]


def is_floating_model(value: str, floating: frozenset[str]) -> bool:
    """A model name that floats: ``*-latest`` or a known alias (for a model-named key)."""
    model = _model_id(value)
    return model.endswith("-latest") or model in floating


def is_family_latest(value: str) -> bool:
    """``*-latest`` of a known LLM family: floating wherever it appears (no key needed)."""
    return bool(_FAMILY.fullmatch(_model_id(value)))


def floating_message(value: str) -> str:
    return f"floating model alias {value!r}: pin a dated/versioned model id"
