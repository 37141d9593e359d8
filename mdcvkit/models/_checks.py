"""Checks of model settings shared by the model files."""

import math

__all__ = ["check_number"]


def check_number(name, value, *, minimum=0.0, strict=False, example="1.0"):
    """Return ``value`` as float, or raise ValueError naming the setting, its value and a valid example."""
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}={value!r} must be a number, e.g. {example}") from err
    if not math.isfinite(number) or number < minimum or (strict and number == minimum):
        bound = ">" if strict else ">="
        raise ValueError(f"{name}={value!r} must be a finite number {bound} {minimum:g}, e.g. {example}")
    return number
