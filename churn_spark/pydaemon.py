"""Spark's Python worker daemon on this project's sessions (`spark.python.daemon.module`): pyspark's own,
without one cost of CPython 3.10-3.11.

Why: every Python task (here the ticket-tone pandas UDF, `churn_spark/features/tone.py`) starts with
`importlib.invalidate_caches()` (`pyspark.worker_util.setup_spark_files`), and before Python 3.12 a
`zipimporter` then re-reads its archive's whole directory at once (CPython gh-103200, made lazy in 3.12):
`pyspark.zip` (1,220 entries) once for every package a worker imported from it, ~50 ms per task, which was
most of a Python worker's CPU in the test suite (docs/development.md). Here a zipimporter re-reads its archive
only when the file changed (size or modification time): what the invalidation is for (a file added with
`addPyFile` is a new path, with an importer of its own). From 3.12 on nothing is changed.

Executors need this package importable, as they already do for the tone UDF (pickled by reference).
"""

from __future__ import annotations

import importlib
import os
import sys
import zipimport
from collections.abc import Callable
from typing import Any

STAMP = "_churn_spark_stamp"


def archive_stamp(path: str) -> tuple[int, int] | None:
    """(size, modification time in ns) of an archive, None when it cannot be read (then always re-read)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def when_changed(invalidate: Callable[[Any], None]) -> Callable[[Any], None]:
    """`zipimporter.invalidate_caches` that calls `invalidate` only when the importer's archive changed since
    this importer last read it (or was never stamped)."""
    def invalidate_caches(self: Any) -> None:
        stamp = archive_stamp(self.archive)
        if stamp is not None and getattr(self, STAMP, None) == stamp:
            return
        invalidate(self)
        setattr(self, STAMP, stamp)

    return invalidate_caches


def install() -> bool:
    """Patch `zipimporter.invalidate_caches` where it reads eagerly (before 3.12); True when patched."""
    if sys.version_info >= (3, 12) or getattr(zipimport.zipimporter.invalidate_caches, "__wrapped_eager__", False):
        return False
    patched = when_changed(zipimport.zipimporter.invalidate_caches)
    patched.__wrapped_eager__ = True  # type: ignore[attr-defined]
    zipimport.zipimporter.invalidate_caches = patched  # type: ignore[method-assign,assignment]
    return True


def main() -> None:
    """pyspark's daemon, patched; every importer stamped once here, so forked workers inherit the stamps."""
    if install():
        importlib.invalidate_caches()
    from pyspark.daemon import manager

    manager()


if __name__ == "__main__":
    main()
