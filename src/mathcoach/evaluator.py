"""Exact evaluation of arithmetic expressions with sympy (the Wolfram|Alpha stand-in).

Input is untrusted. It is turned into Python source by sympy's tokenizer with a fixed set of
transformations, and that source is checked node by node against a whitelist (numbers, + - * /
**, parentheses, a few named functions and constants) before sympy's parse_expr evaluates it
with no builtins. The same walk estimates the size of the result in bits, so expressions such
as 9**9**9 or 100000! are refused before any work is done instead of eating CPU and memory.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import sympy
from sympy.parsing.sympy_parser import (
    auto_number,
    convert_xor,
    factorial_notation,
    parse_expr,
    stringify_expr,
)

MAX_LENGTH = 200
# Results up to ~3600 decimal digits: below CPython's 4300-digit int-to-str limit.
MAX_BITS = 12_000
MAX_EXPONENT = 100_000

_TRANSFORMATIONS = (auto_number, factorial_notation, convert_xor)
_FUNCTIONS: dict[str, Any] = {
    "sqrt": sympy.sqrt,
    "sin": sympy.sin,
    "cos": sympy.cos,
    "tan": sympy.tan,
    "asin": sympy.asin,
    "acos": sympy.acos,
    "atan": sympy.atan,
    "exp": sympy.exp,
    "log": sympy.log,
    "ln": sympy.log,
    "abs": sympy.Abs,
    "Abs": sympy.Abs,
    "floor": sympy.floor,
    "ceiling": sympy.ceiling,
    "factorial": sympy.factorial,
}
_CONSTANTS: dict[str, Any] = {"pi": sympy.pi, "E": sympy.E}
_NUMBERS: dict[str, Any] = {"Integer": sympy.Integer, "Float": sympy.Float}
_BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow)
_ALLOWED_HELP = (
    "use numbers, + - * / ^ (or **), parentheses, n!, the constants pi and E and the "
    f"functions {', '.join(sorted(_FUNCTIONS))}"
)


class EvaluationError(ValueError):
    """The expression is invalid or too expensive; the message says which and why."""


@dataclass(frozen=True)
class Evaluation:
    expression: str
    value: sympy.Expr
    result: str
    numeric: float | None


def evaluate(expression: str) -> Evaluation:
    """Evaluate exactly; raises EvaluationError with a user-facing message."""
    text = expression.strip()
    if not text:
        raise EvaluationError('the expression is empty; send e.g. {"expression": "2+2"}')
    if len(text) > MAX_LENGTH:
        raise EvaluationError(
            f"the expression is {len(text)} characters long; the limit is {MAX_LENGTH}"
        )
    try:
        source = stringify_expr(text, {}, dict(_NUMBERS), _TRANSFORMATIONS)
        tree = ast.parse(source.strip(), mode="eval")
    except (SyntaxError, TokenError, ValueError, TypeError) as exc:
        raise EvaluationError(f"{text!r} is not a valid expression ({_reason(exc)})") from None
    _Bounds(text).bits(tree.body)
    try:
        value = parse_expr(
            text,
            local_dict={**_FUNCTIONS, **_CONSTANTS},
            global_dict={"__builtins__": {}, **_NUMBERS, "factorial": sympy.factorial},
            transformations=_TRANSFORMATIONS,
        )
    except Exception as exc:  # noqa: BLE001 - any sympy failure on user input is a 422
        raise EvaluationError(f"{text!r} could not be evaluated ({_reason(exc)})") from None
    if not isinstance(value, sympy.Expr):
        raise EvaluationError(f"{text!r} is not an arithmetic expression")
    if value.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
        raise EvaluationError(f"{text!r} is undefined (division by zero or similar)")
    return Evaluation(text, value, str(value), _numeric(value))


def matches(expected: Evaluation, answer: str) -> bool:
    """True when `answer` (a number or expression) equals the evaluated expression."""
    try:
        given = evaluate(answer)
    except EvaluationError:
        return False
    if expected.numeric is not None and given.numeric is not None:
        return math.isclose(expected.numeric, given.numeric, rel_tol=1e-9, abs_tol=1e-12)
    return bool(sympy.simplify(expected.value - given.value) == 0)


def off_by_one(evaluation: Evaluation) -> Evaluation:
    """A plausible wrong result (the FAULT_DEGRADE_ANSWERS knob)."""
    value = evaluation.value + 1
    numeric = None if evaluation.numeric is None else evaluation.numeric + 1
    return Evaluation(evaluation.expression, value, str(value), numeric)


def warm_up() -> None:
    """Pay sympy's first-use costs (caches, lazy imports) before taking traffic."""
    for sample in ("2+2", "1/2 + 1/3", "sqrt(8)", "5!", "2^10 - 3*(4 - 1)"):
        evaluate(sample)


try:  # tokenize's TokenError moved between Python versions; import it defensively
    from tokenize import TokenError
except ImportError:  # pragma: no cover
    TokenError = SyntaxError  # type: ignore[misc,assignment]


def _pow2(bits: float) -> float:
    # Bounds beyond 2**64 are refused anyway; capping avoids float overflow.
    return 2.0 ** min(bits, 64.0)


def _reason(exc: BaseException) -> str:
    message = str(exc.args[0]) if exc.args else type(exc).__name__
    return message.split("\n")[0][:120]


def _numeric(value: sympy.Expr) -> float | None:
    if value.is_real is not True:
        return None
    try:
        number = float(value.evalf(30))
    except Exception:  # noqa: BLE001 - no float form (PrecisionExhausted, overflow, ...)
        return None
    return number if math.isfinite(number) else None


class _Bounds:
    """Whitelist walk over the Python AST that also bounds the result size.

    `bits(node)` is an upper bound on log2 of (|numerator| + |denominator|) of the node's value,
    which also bounds log2 |value|; Pow and factorial multiply it, everything else adds.
    """

    def __init__(self, text: str) -> None:
        self._text = text

    def _refuse(self, why: str) -> EvaluationError:
        return EvaluationError(f"{self._text!r} is refused: {why}")

    def _check(self, bits: float) -> float:
        if bits > MAX_BITS:
            digits = f"about {int(bits * 0.30103)}" if bits < 1e9 else "astronomically many"
            raise self._refuse(
                f"the result would have {digits} digits or more; "
                f"the limit is about {int(MAX_BITS * 0.30103)}"
            )
        return bits

    def bits(self, node: ast.expr) -> float:
        if isinstance(node, ast.BinOp) and isinstance(node.op, _BINOPS):
            left, right = self.bits(node.left), self.bits(node.right)
            if isinstance(node.op, ast.Pow):
                exponent = _pow2(right)
                if exponent > MAX_EXPONENT:
                    raise self._refuse(f"an exponent may be up to {MAX_EXPONENT} in magnitude")
                return self._check(left * exponent)
            return self._check(left + right + 1)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            return self.bits(node.operand)
        if isinstance(node, ast.Name):
            if node.id in _CONSTANTS:
                return 2.0
            raise EvaluationError(f"unknown name {node.id!r} in {self._text!r}; {_ALLOWED_HELP}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
            return self._call(node.func.id, node.args)
        raise EvaluationError(f"{self._text!r} uses unsupported syntax; {_ALLOWED_HELP}")

    def _call(self, name: str, args: list[ast.expr]) -> float:
        if name == "Integer" and len(args) == 1 and isinstance(args[0], ast.Constant):
            number = args[0].value
            if isinstance(number, int) and not isinstance(number, bool):
                # 0 and 1 stay 0 and 1 under any power; |n| >= 2 needs log2|n| bits.
                return self._check(math.log2(abs(number)) if abs(number) >= 2 else 0.0)
        if name == "Float" and len(args) == 1 and isinstance(args[0], ast.Constant):
            literal = args[0].value
            if isinstance(literal, str):
                return self._float_bits(literal)
        if name not in _FUNCTIONS:
            raise EvaluationError(f"unknown function {name!r} in {self._text!r}; {_ALLOWED_HELP}")
        if len(args) != 1:
            raise EvaluationError(f"{name}() takes exactly one argument, in {self._text!r}")
        arg = self.bits(args[0])
        if name == "factorial":
            n = _pow2(arg)
            # log2(n!) <= n * log2(n)
            return self._check(n * max(1.0, math.log2(n)))
        if name == "exp":
            # exp(x) needs x * log2(e) bits once anything (floor, evalf) looks at its digits.
            return self._check(_pow2(arg) * math.log2(math.e))
        return self._check(arg + 2)

    def _float_bits(self, literal: str) -> float:
        try:
            number = Decimal(literal)
        except InvalidOperation:
            raise EvaluationError(f"{literal!r} is not a number, in {self._text!r}") from None
        if not number.is_finite():
            raise EvaluationError(f"{literal!r} is not a finite number, in {self._text!r}")
        # A Float keeps a fixed precision; only its magnitude (the exponent) can grow.
        if number == 0:
            return 0.0
        if abs(number.adjusted()) < 300:
            return self._check(abs(math.log2(abs(float(number)))))
        return self._check((abs(number.adjusted()) + 1) * math.log2(10))
