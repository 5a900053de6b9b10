"""A Ray driver process that never reports, like one whose actors take minutes to load the model. Its own module, so
that a spawned process imports nothing else."""

import time
from multiprocessing.connection import Connection
from typing import Any


def never_reports(settings: Any, pipe: Connection) -> None:
    time.sleep(600)
