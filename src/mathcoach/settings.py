"""Settings from the environment, validated once at process start.

Every knob is an env variable (Cloud Run style). A bad value stops the process with a message
naming the variable, the value and what is expected, never a traceback.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar, cast

Provider = Literal["fake", "openai", "gemini"]
PROVIDERS: tuple[Provider, ...] = ("fake", "openai", "gemini")

# Pinned model versions: a floating alias ("gpt-4o-mini", "gemini-flash-latest") would let
# the provider change behaviour under a deployed service.
DEFAULT_MODELS: dict[Provider, str] = {
    "fake": "fake-math-1",
    "openai": "gpt-4o-mini-2024-07-18",
    "gemini": "gemini-2.0-flash-001",
}

_T = TypeVar("_T")


class ConfigError(Exception):
    """A setting is missing or invalid; the message says which and how to fix it."""


@dataclass(frozen=True)
class Faults:
    """Fault knobs (all off by default) that let tests prove each pipeline gate."""

    startup_delay_s: float = 0.0
    startup_alloc_mb: int = 0
    crash_on_start: bool = False
    error_rate: float = 0.0
    degrade_answers: bool = False
    hang_s: float = 0.0
    token_multiplier: float = 1.0

    def active(self) -> dict[str, float | int | bool]:
        """The knobs that differ from their defaults (for the startup log line)."""
        default = Faults()
        return {
            name: getattr(self, name)
            for name in self.__dataclass_fields__
            if getattr(self, name) != getattr(default, name)
        }


@dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 8080
    provider: Provider = "fake"
    model: str = DEFAULT_MODELS["fake"]
    temperature: float = 0.2
    top_k: int | None = 40
    top_p: float | None = 0.95
    max_output_tokens: int = 512
    seed: int | None = None
    ai_timeout_s: float = 30.0
    eval_timeout_s: float = 2.0
    openai_base_url: str = "https://api.openai.com/v1"
    gemini_base_url: str | None = None
    # repr=False keeps keys out of any accidental log of the settings object.
    openai_api_key: str | None = field(default=None, repr=False)
    gemini_api_key: str | None = field(default=None, repr=False)
    faults: Faults = field(default_factory=Faults)

    @property
    def secrets(self) -> list[str]:
        return [k for k in (self.openai_api_key, self.gemini_api_key) if k]

    def ai_params(self) -> dict[str, object]:
        """The parity surface, as logged at startup and reported by /health/ai."""
        return {
            "provider": self.provider,
            "model": self.model,
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "max_output_tokens": self.max_output_tokens,
            "seed": self.seed,
        }

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read and validate every setting; raises ConfigError on the first bad one."""
        provider = _get(env, "AI_PROVIDER", "fake", _choice(PROVIDERS))
        settings = cls(
            host=env.get("HOST") or "0.0.0.0",
            port=_get(env, "PORT", 8080, _int_range(1, 65535)),
            provider=provider,
            model=env.get("AI_MODEL") or DEFAULT_MODELS[provider],
            temperature=_get(env, "AI_TEMPERATURE", 0.2, _float_range(0, 2)),
            top_k=_get(env, "AI_TOP_K", 40, _int_range(1, 1000)),
            top_p=_get(env, "AI_TOP_P", 0.95, _float_range(0, 1, low_open=True)),
            max_output_tokens=_get(env, "MAX_OUTPUT_TOKENS", 512, _int_range(1, 1_000_000)),
            seed=_get(env, "AI_SEED", None, _int_range(0, 2**63 - 1)),
            ai_timeout_s=_get(env, "AI_TIMEOUT_S", 30.0, _float_range(0, 600, low_open=True)),
            eval_timeout_s=_get(env, "EVAL_TIMEOUT_S", 2.0, _float_range(0, 60, low_open=True)),
            openai_base_url=(env.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/"),
            gemini_base_url=env.get("GOOGLE_GEMINI_BASE_URL") or None,
            openai_api_key=env.get("OPENAI_API_KEY") or None,
            gemini_api_key=env.get("GEMINI_API_KEY") or env.get("GOOGLE_API_KEY") or None,
            faults=Faults(
                startup_delay_s=_get(env, "FAULT_STARTUP_DELAY_S", 0.0, _float_range(0, 3600)),
                startup_alloc_mb=_get(env, "FAULT_STARTUP_ALLOC_MB", 0, _int_range(0, 65536)),
                crash_on_start=_get(env, "FAULT_CRASH_ON_START", False, _bool),
                error_rate=_get(env, "FAULT_ERROR_RATE", 0.0, _float_range(0, 1)),
                degrade_answers=_get(env, "FAULT_DEGRADE_ANSWERS", False, _bool),
                hang_s=_get(env, "FAULT_HANG_S", 0.0, _float_range(0, 3600)),
                token_multiplier=_get(env, "FAULT_TOKEN_MULTIPLIER", 1.0, _float_range(0, 1e6)),
            ),
        )
        if not settings.openai_base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"OPENAI_BASE_URL={settings.openai_base_url!r} is not an http(s) URL; "
                "set it to the API root, e.g. https://api.openai.com/v1"
            )
        if provider == "openai" and not settings.openai_api_key:
            raise ConfigError(
                "AI_PROVIDER=openai needs OPENAI_API_KEY; set it (and OPENAI_BASE_URL for a "
                "compatible server), or use AI_PROVIDER=fake"
            )
        if provider == "gemini" and not settings.gemini_api_key:
            raise ConfigError(
                "AI_PROVIDER=gemini needs GEMINI_API_KEY; set it, or use AI_PROVIDER=fake"
            )
        return settings


def _get(env: Mapping[str, str], name: str, default: _T, parse: Callable[[str], _T]) -> _T:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return parse(raw.strip())
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is invalid: {exc}") from None


def _choice(options: tuple[Provider, ...]) -> Callable[[str], Provider]:
    def parse(raw: str) -> Provider:
        if raw.lower() not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return cast(Provider, raw.lower())

    return parse


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"expected an integer between {low} and {high}") from None
        if not low <= value <= high:
            raise ValueError(f"expected an integer between {low} and {high}")
        return value

    return parse


def _float_range(low: float, high: float, *, low_open: bool = False) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        bracket = "(" if low_open else "["
        expected = f"expected a number in {bracket}{low:g}, {high:g}]"
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(expected) from None
        if not math.isfinite(value) or value > high or value < low or (low_open and value == low):
            raise ValueError(expected)
        return value

    return parse


def _bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected 1/0, true/false, yes/no or on/off")
