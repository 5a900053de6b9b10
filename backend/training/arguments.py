"""Command-line values of the training scripts, checked when they are parsed: a bad one stops the script before
any work, with the flag and its limit, instead of a traceback minutes into a run. No bpy."""

import argparse
from collections.abc import Callable

NAMES = {int: "an integer", float: "a number"}


def at_least(minimum: float, kind: type = int) -> Callable[[str], float]:
    """An argparse `type` that reads a `kind` (int or float) of at least `minimum`."""

    def read(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {NAMES[kind]}, got {text!r}") from None
        if not value >= minimum:  # also refuses nan
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g}, got {text}")
        return value

    return read


SEED = at_least(0)  # numpy's seed sequences take no negative numbers
COUNT = at_least(1)  # clips, batch sizes, threads, workers
STEPS = at_least(0)
RATE = at_least(0.0, float)  # learning rates and loss weights
