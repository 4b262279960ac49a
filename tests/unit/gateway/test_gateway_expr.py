"""The derived-value evaluator: arithmetic over declared fields only, units checked, no eval."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.expr import ExpressionError, check_unit, compile_expression

UNITS = {"install_height": "m", "distance": "m", "datum_offset": "m", "battery": "V", "current": "A", "n": ""}


def test_arithmetic_and_units() -> None:
    c = compile_expression("install_height - distance + datum_offset", UNITS)
    assert c.evaluate({"install_height": 3.0, "distance": 2.5, "datum_offset": 0.25}) == 0.75
    assert c.names == ("install_height", "distance", "datum_offset")
    check_unit(c, "m")
    with pytest.raises(ExpressionError, match="not 'V'"):
        check_unit(c, "V")
    power = compile_expression("battery * current", UNITS)
    with pytest.raises(ExpressionError):
        check_unit(power, "W")  # V·A is not declared as W: no silent unit algebra
    assert compile_expression("round(abs(distance - 2 * install_height), 2)", UNITS).evaluate(
        {"distance": 1.0, "install_height": 1.2345}) == 1.47
    assert math.isnan(compile_expression("distance / n", UNITS).evaluate({"distance": 1.0, "n": 0.0}))


@pytest.mark.parametrize("text", [
    "battery + distance",  # V + m
    "min(distance, battery)",
    "__import__('os')",
    "distance.real",
    "open('/etc/passwd')",
    "[x for x in ()]",
    "lambda: 1",
    "distance if n else 0",
    "distance ** 2",
    "distance < 1",
    "'m'",
    "True + distance",
    "nope * 2",
    "round(distance, n)",
    "distance; n",
    "(" * 30 + "distance" + ")" * 30 + " + 1" * 40,
])
def test_anything_but_arithmetic_over_declared_fields_is_refused(text: str) -> None:
    with pytest.raises(ExpressionError):
        compile_expression(text, UNITS)


@given(st.text(max_size=40))
def test_arbitrary_text_is_refused_or_is_pure_arithmetic(text: str) -> None:
    """Whatever a profile writes, the result is either an error or a function of the declared fields."""
    try:
        c = compile_expression(text, UNITS)
    except ExpressionError:
        return
    assert set(c.names) <= set(UNITS)
    value = c.evaluate(dict.fromkeys(UNITS, 1.5))
    assert isinstance(value, float)


leaf = st.sampled_from(["install_height", "distance", "datum_offset"]) | st.floats(0.5, 9.0).map(lambda x: f"{x:.3f}")


def _tree(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(children, st.sampled_from(["+", "-"]), children).map(lambda t: f"({t[0]} {t[1]} {t[2]})")


@given(st.recursive(leaf, _tree, max_leaves=8), st.floats(0, 10), st.floats(0, 10), st.floats(-1, 1))
def test_sums_of_metres_evaluate_like_python(text: str, h: float, d: float, o: float) -> None:
    c = compile_expression(text, UNITS)
    env = {"install_height": h, "distance": d, "datum_offset": o}
    want = eval(text, {"__builtins__": {}}, env)  # the reference, on generated arithmetic only
    assert c.evaluate(env) == pytest.approx(want)
    if c.names:
        check_unit(c, "m")
