"""Command-line values of the training scripts, checked when they are parsed: a bad one stops the script before
any work, with the flag and its limit, instead of a traceback minutes into a run. No bpy."""

from ..argument_types import at_least

SEED = at_least(0)  # numpy's seed sequences take no negative numbers
COUNT = at_least(1)  # clips, batch sizes, threads, workers
STEPS = at_least(0)
RATE = at_least(0.0, float)  # learning rates and loss weights
