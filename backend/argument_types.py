"""argparse types that check a value when it is parsed, so that a bad one stops the command at once with the flag and
its limit (argparse prefixes "argument --flag: "). No bpy, no torch."""

import argparse
import math
from collections.abc import Callable

NAMES = {int: "an integer", float: "a number"}


def at_least(minimum: float, kind: type = int, unit: str | None = None) -> Callable[[str], float]:
    """A finite `kind` (int or float) of at least `minimum`; `unit` (e.g. "seconds") names it in the message."""

    def read(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if unit is not None and (value is None or not minimum <= value < math.inf):
            raise argparse.ArgumentTypeError(f"must be a number of {unit}, at least {minimum:g}, got {text!r}")
        if value is None:
            raise argparse.ArgumentTypeError(f"must be {NAMES[kind]}, got {text!r}")
        if not minimum <= value < math.inf:  # also refuses nan and inf
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g}, got {text}")
        return value

    return read
