"""One log line per stage of a long job, with its elapsed time (`features: labels written (41 s)`).

Row counts go in the line only where the job already has them (a write's metrics, a count it needs
anyway): a stage line never costs a Spark action of its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

log = logging.getLogger("churn_spark")


def rows(n: int | float | None) -> str:
    """A row count as people read it: 512, 4.1k, 12.3M."""
    if n is None:
        return "?"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return f"{int(n)}"


def seconds(elapsed: float) -> str:
    return f"{elapsed:.1f} s" if elapsed < 10 else f"{elapsed:.0f} s"


@dataclass
class Stage:
    """What the line will say; the body may replace it once it knows more (`stage.done("... 4.1k rows")`),
    or drop it when the stage turned out to have nothing to do (`stage.done(None)`)."""

    job: str
    what: str | None
    started: float = field(default_factory=time.monotonic)

    def done(self, what: str | None) -> None:
        self.what = what

    def elapsed(self) -> float:
        return time.monotonic() - self.started


@contextmanager
def stage(job: str, what: str) -> Iterator[Stage]:
    """Time the block and log `<job>: <what> (<elapsed> s)` when it ends (`... failed` on an error)."""
    current = Stage(job, what)
    try:
        yield current
    except BaseException:
        log.info("%s: %s failed (%s)", job, current.what or what, seconds(current.elapsed()))
        raise
    if current.what:
        log.info("%s: %s (%s)", job, current.what, seconds(current.elapsed()))
