"""Assertions on one response: each returns a :class:`CheckResult` with actual vs expected."""

from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass
from typing import Any

import jsonschema
import jsonschema.validators

from flightcheck.smoke.jsonpath import display, resolve
from flightcheck.smoke.suite import JsonCheck, TokenBudget, is_finite_number

_MAX_SHOWN = 300


@dataclass
class CheckResult:
    """One assertion's outcome. ``check`` names it: status, schema, equals, latency_ms, ..."""

    check: str
    ok: bool
    expected: Any = None
    actual: Any = None
    path: str | None = None
    message: str = ""
    source: str | None = None  # whose numbers: "provider" (fake model log) or "service"

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"check": self.check, "ok": self.ok}
        if self.path is not None:
            out["path"] = self.path
        out["expected"] = _clip(self.expected)
        out["actual"] = _clip(self.actual)
        if self.message:
            out["message"] = self.message
        if self.source:
            out["source"] = self.source
        return out


def _clip(value: Any) -> Any:
    """JSON-safe and short enough for a report."""
    if isinstance(value, str) and len(value) > _MAX_SHOWN:
        return value[:_MAX_SHOWN] + f"… ({len(value)} chars)"
    if isinstance(value, dict | list):
        text = json.dumps(value, default=str)
        return value if len(text) <= 2 * _MAX_SHOWN else _clip(text)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def show(value: Any) -> str:
    """A value as it reads in a message: JSON, clipped."""
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "…"


def diff(expected: Any, actual: Any) -> str:
    """A readable difference: a unified diff for structures, ``expected X, got Y`` otherwise."""
    if isinstance(expected, dict | list) and isinstance(actual, dict | list):
        lines = difflib.unified_diff(
            json.dumps(expected, indent=2, sort_keys=True, default=str).splitlines(),
            json.dumps(actual, indent=2, sort_keys=True, default=str).splitlines(),
            "expected",
            "actual",
            lineterm="",
            n=1,
        )
        return "\n".join(list(lines)[:40])
    return f"expected {show(expected)}, got {show(actual)}"


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: 4 == 4.0, but True is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if is_finite_number(a) and is_finite_number(b):
        return float(a) == float(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _contains(container: Any, item: Any) -> bool:
    if isinstance(container, str):
        return isinstance(item, str) and item in container
    if isinstance(container, list):
        return any(_equal(x, item) for x in container)
    if isinstance(container, dict) and isinstance(item, dict):
        return all(k in container and _equal(container[k], v) for k, v in item.items())
    return False


def _number(value: Any) -> float | None:
    if is_finite_number(value):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def check_json(check: JsonCheck, doc: Any) -> CheckResult:
    """Evaluate one JSON-path check against a parsed body."""
    where = display(check.path)
    found, actual = resolve(doc, check.path)
    kind, expected = check.kind, check.expected
    if kind == "exists":
        ok = found == expected
        what = "present" if expected else "absent"
        return CheckResult(kind, ok, expected, found, where, "" if ok else f"{where} should be {what}")
    if not found:
        return CheckResult(kind, False, expected, None, where, f"{where} is missing from the response")
    if kind == "equals":
        ok = _equal(actual, expected)
        msg = "" if ok else f"{where}: {diff(expected, actual)}"
    elif kind == "contains":
        ok = _contains(actual, expected)
        msg = "" if ok else f"{where}: expected it to contain {show(expected)}, got {show(actual)}"
    elif kind == "regex":
        text = actual if isinstance(actual, str) else json.dumps(actual)
        ok = re.search(str(expected), text) is not None
        msg = "" if ok else f"{where}: {show(actual)} does not match /{expected}/"
    elif kind == "one_of":
        ok = any(_equal(actual, option) for option in expected)
        msg = "" if ok else f"{where}: expected one of {show(expected)}, got {show(actual)}"
    else:  # approx
        number = _number(actual)
        tol = max(
            check.tolerance if check.tolerance is not None else 0.0,
            abs(expected) * check.rel_tolerance if check.rel_tolerance is not None else 0.0,
        )
        if check.tolerance is None and check.rel_tolerance is None:
            tol = 1e-9
        ok = number is not None and abs(number - expected) <= tol
        if number is None:
            msg = f"{where}: expected a number ≈ {expected}, got {show(actual)}"
        else:
            msg = "" if ok else (
                f"{where}: expected {expected} ± {tol:g}, got {number:g} "
                f"(off by {abs(number - expected):g})"
            )
        return CheckResult("approx", ok, {"value": expected, "tolerance": tol}, actual, where, msg)
    return CheckResult(kind, ok, expected, actual, where, msg)


def check_status(expected: list[int], actual: int, body_excerpt: str) -> CheckResult:
    ok = actual in expected
    want = expected[0] if len(expected) == 1 else expected
    msg = "" if ok else f"HTTP {actual}, expected {want}; body: {body_excerpt}"
    return CheckResult("status", ok, want, actual, None, msg)


def check_schema(schema: dict[str, Any], doc: Any) -> CheckResult:
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if not errors:
        return CheckResult("schema", True)
    shown = [
        f"{display(''.join(f'[{p}]' if isinstance(p, int) else f'.{p}' for p in e.absolute_path))}"
        f": {e.message}"
        for e in errors[:5]
    ]
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return CheckResult(
        "schema", False, "matches the schema", shown, None,
        "response does not match the schema: " + "; ".join(shown) + more,
    )


def check_latency(budget_ms: float, actual_ms: float) -> CheckResult:
    ok = actual_ms <= budget_ms
    msg = "" if ok else f"latency {actual_ms:.0f} ms over the budget of {budget_ms:.0f} ms"
    return CheckResult("latency_ms", ok, budget_ms, round(actual_ms, 1), None, msg)


def check_tokens(budget: TokenBudget, usage: dict[str, int], source: str) -> list[CheckResult]:
    """Token budget against one usage source ("provider" or "service")."""
    out: list[CheckResult] = []
    for limit, key in (
        (budget.max_total, "total_tokens"),
        (budget.max_prompt, "prompt_tokens"),
        (budget.max_completion, "completion_tokens"),
    ):
        if limit is None:
            continue
        actual = usage.get(key, 0)
        ok = actual <= limit
        msg = "" if ok else (
            f"{key} {actual} over the budget of {limit} (usage reported by the {source}: "
            f"{show(usage)})"
        )
        out.append(CheckResult(f"tokens.{key}", ok, limit, actual, None, msg, source))
    return out


def check_cost(budget_usd: float, cost_usd: float | None, why_unknown: str) -> CheckResult:
    if cost_usd is None:
        return CheckResult("cost_usd", False, budget_usd, None, None, f"cost unknown: {why_unknown}")
    ok = cost_usd <= budget_usd
    msg = "" if ok else f"estimated cost ${cost_usd:.6f} over the budget of ${budget_usd:.6f}"
    return CheckResult("cost_usd", ok, budget_usd, round(cost_usd, 8), None, msg)
