"""The Python worker daemon: a zip archive's directory is re-read only when the archive changed
(churn_spark/pydaemon.py), and the session's Python tasks run under it."""

from __future__ import annotations

import sys
import zipfile
import zipimport
from pathlib import Path

import pandas as pd
import pytest
from pyspark import cloudpickle
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from churn_spark import pydaemon
from churn_spark.session import worker_daemon


def _zip(path: Path, names: list[str]) -> None:
    with zipfile.ZipFile(path, "w") as z:
        for name in names:
            z.writestr(name, f"X = {name!r}\n")


def test_an_archive_is_read_again_only_after_it_changed(tmp_path: Path) -> None:
    archive = tmp_path / "lib.zip"
    _zip(archive, ["a.py"])
    reads: list[str] = []

    def eager(importer: zipimport.zipimporter) -> None:  # what Python 3.11's zipimporter does: read it all
        reads.append(importer.archive)
        zipimport.zipimporter.invalidate_caches(importer)

    invalidate = pydaemon.when_changed(eager)
    importer = zipimport.zipimporter(str(archive))
    invalidate(importer)
    invalidate(importer)
    invalidate(importer)
    assert len(reads) == 1  # stamped by the first call, unchanged since
    assert importer.find_spec("b") is None
    _zip(archive, ["a.py", "b.py"])  # rewritten: another size
    invalidate(importer)
    assert len(reads) == 2
    assert importer.find_spec("b") is not None  # the new entry is seen
    other = zipimport.zipimporter(str(archive))  # a new importer has no stamp: its first call reads
    invalidate(other)
    assert len(reads) == 3


def test_an_unreadable_archive_is_always_invalidated(tmp_path: Path) -> None:
    calls: list[int] = []
    archive = tmp_path / "gone.zip"
    _zip(archive, ["a.py"])
    importer = zipimport.zipimporter(str(archive))
    archive.unlink()
    invalidate = pydaemon.when_changed(lambda _: calls.append(1))
    invalidate(importer)
    invalidate(importer)
    assert calls == [1, 1]


def test_the_daemon_is_pysparks_when_the_package_comes_with_py_files() -> None:
    # shipped with --py-files, the package reaches a Python worker per task, after its daemon started
    assert worker_daemon("") == {"spark.python.daemon.module": "churn_spark.pydaemon"}
    assert worker_daemon("local:///opt/app/churn_spark.zip") == {}


def _daemon_patched(values: pd.Series) -> pd.Series:
    """In a Python worker: is zipimporter's invalidation the daemon's (the worker was forked from it)?"""
    patched = getattr(zipimport.zipimporter.invalidate_caches, "__wrapped_eager__", False)
    return values.map(lambda _: f"{sys.version_info[:2]} {patched}")


def test_python_tasks_of_the_session_run_under_the_daemon(spark: SparkSession) -> None:
    assert spark.sparkContext.getConf().get("spark.python.daemon.module") == "churn_spark.pydaemon"
    if sys.version_info >= (3, 12):
        pytest.skip("Python 3.12 reads zip directories lazily: the daemon changes nothing")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    try:
        seen = spark.range(4).select(F.pandas_udf(_daemon_patched, StringType())(F.col("id")).alias("v")).collect()
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert {r["v"] for r in seen} == {f"{sys.version_info[:2]} True"}
