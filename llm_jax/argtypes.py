"""argparse `type=` checkers with the config system's rigour: type, range and finiteness, one clear message.

`number(...)` and `integer(...)` build checkers; argparse turns their ArgumentTypeError into one `error:` line.
"""

from __future__ import annotations

import argparse
import math


def integer(low: int | None = None, high: int | None = None, what: str = "an integer"):
    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is out of range: expected {what}")
        return value
    check.__name__ = what  # argparse names the type in its messages
    return check


def number(low: float | None = None, high: float | None = None, low_open: bool = False, high_open: bool = False,
           what: str = "a finite number"):
    def check(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            raise argparse.ArgumentTypeError(f"{value:g} is out of range: expected {what}")
        return value
    check.__name__ = what
    return check


positive_int = integer(1, what="a positive integer")
nonneg_int = integer(0, what="an integer >= 0")
positive_number = number(0, low_open=True, what="a finite number > 0")
nonneg_number = number(0, what="a finite number >= 0")
fraction_open = number(0, 1, low_open=True, high_open=True, what="a number in (0, 1)")
probability = number(0, 1, low_open=True, what="a number in (0, 1]")


def int_list(text: str) -> list[int]:
    """'1024,4096' -> [1024, 4096]: comma-separated positive integers."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of positive integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every length must be a positive integer")
    return values


int_list.__name__ = "a comma-separated list of positive integers"
