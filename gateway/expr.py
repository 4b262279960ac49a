"""Derived values: small arithmetic expressions over fields of one poll, evaluated without ``eval``.

A profile writes ``depth = install_height - distance + datum_offset``; this module parses the
text with :mod:`ast`, accepts only numbers, declared field names, ``+ - * /``, unary minus and
``abs``/``min``/``max``/``round(x, n)``, checks units (adding metres to volts is an error, a
product's unit is the product of units) and compiles the tree into nested closures, so a poll
pays a few function calls, not a parse. Anything else (attributes, subscripts, calls to other
names, comparisons, strings, lambdas) is refused at load time with the offending piece named.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gateway.errors import ProfileError

MAX_EXPRESSION_CHARS = 400
MAX_NODES = 64

Values = Mapping[str, float]
Fn = Callable[[Values], float]
#: a unit as {symbol: exponent}; None: a bare number, which takes the unit its context needs
Unit = tuple[tuple[str, int], ...] | None

_DIMENSIONLESS = ("", "/")


class ExpressionError(ProfileError):
    """An expression is not plain arithmetic over declared fields, or its units do not agree."""


def parse_unit(unit: str) -> tuple[tuple[str, int], ...]:
    """A SenML unit symbol as a unit vector ("" and "/" are dimensionless)."""
    return () if unit in _DIMENSIONLESS else ((unit, 1),)


def _combine(a: Unit, b: Unit, sign: int) -> Unit:
    exps: dict[str, int] = dict(a or ())
    for sym, e in b or ():
        exps[sym] = exps.get(sym, 0) + sign * e
    return tuple(sorted((s, e) for s, e in exps.items() if e))


def _show(u: Unit) -> str:
    if not u:
        return "a plain number"
    return "·".join(s if e == 1 else f"{s}^{e}" for s, e in u)


@dataclass(frozen=True, slots=True)
class Compiled:
    """A checked expression: ``evaluate(values)`` (NaN on division by zero), the fields it reads, its unit."""

    text: str
    evaluate: Fn
    names: tuple[str, ...]
    unit: Unit


def compile_expression(text: str, units: Mapping[str, str]) -> Compiled:
    """Parse and check ``text`` against the declared fields ``units`` (name -> unit); see the module doc."""
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"not an expression: {exc.msg}") from exc
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ExpressionError(f"expression has more than {MAX_NODES} parts")
    names: list[str] = []
    fn, unit = _build(tree.body, units, names)

    def evaluate(values: Values) -> float:
        try:
            return fn(values)
        except ZeroDivisionError:
            return math.nan

    return Compiled(text, evaluate, tuple(dict.fromkeys(names)), unit)


def check_unit(compiled: Compiled, want: str) -> None:
    """Refuse an expression whose unit is not ``want`` (a bare number fits any unit)."""
    if compiled.unit is not None and compiled.unit != parse_unit(want):
        raise ExpressionError(f"{compiled.text!r} is in {_show(compiled.unit)}, not {want or 'a plain number'!r}")


def _build(node: ast.AST, units: Mapping[str, str], names: list[str]) -> tuple[Fn, Unit]:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        c = float(node.value)
        return (lambda _v: c), None
    if isinstance(node, ast.Name):
        name = node.id
        if name not in units:
            raise ExpressionError(f"{name!r} is not a field of this profile")
        names.append(name)
        return (lambda v: v[name]), parse_unit(units[name])
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        f, u = _build(node.operand, units, names)
        if isinstance(node.op, ast.USub):
            return (lambda v: -f(v)), u
        return f, u
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub | ast.Mult | ast.Div):
        fa, ua = _build(node.left, units, names)
        fb, ub = _build(node.right, units, names)
        if isinstance(node.op, ast.Add | ast.Sub):
            u = _same(ua, ub, "+" if isinstance(node.op, ast.Add) else "-")
            if isinstance(node.op, ast.Add):
                return (lambda v: fa(v) + fb(v)), u
            return (lambda v: fa(v) - fb(v)), u
        if isinstance(node.op, ast.Mult):
            return (lambda v: fa(v) * fb(v)), _product(ua, ub, 1)
        return (lambda v: fa(v) / fb(v)), _product(ua, ub, -1)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        return _call(node.func.id, node.args, units, names)
    raise ExpressionError(f"{ast.unparse(node)!r} is not allowed (only numbers, fields, + - * /, abs, min, max, round)")


def _same(a: Unit, b: Unit, op: str) -> Unit:
    if a is not None and b is not None and a != b:
        raise ExpressionError(f"cannot {op} {_show(a)} and {_show(b)}")
    return a if a is not None else b


def _product(a: Unit, b: Unit, sign: int) -> Unit:
    if a is None and b is None:
        return None
    return _combine(a, b, sign)


def _call(func: str, args: list[ast.expr], units: Mapping[str, str], names: list[str]) -> tuple[Fn, Unit]:
    if func == "abs" and len(args) == 1:
        f, u = _build(args[0], units, names)
        return (lambda v: abs(f(v))), u
    if func == "round" and len(args) == 2:
        digits = args[1]
        if not (isinstance(digits, ast.Constant) and type(digits.value) is int and 0 <= digits.value <= 9):
            raise ExpressionError("round(x, n) needs n as a whole number 0..9")
        f, u = _build(args[0], units, names)
        n = digits.value
        return (lambda v: round(f(v), n)), u
    if func in ("min", "max") and len(args) >= 2:
        parts = [_build(a, units, names) for a in args]
        unit: Unit = None
        for _f, u in parts:
            unit = _same(unit, u, func)
        fns = [f for f, _u in parts]
        pick = min if func == "min" else max
        return (lambda v: pick(f(v) for f in fns)), unit
    raise ExpressionError(f"call {func}() with {len(args)} argument(s) is not allowed (abs, min, max, round)")
