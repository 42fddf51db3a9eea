"""Run summaries: one JSON document per job run under `runs/`, the record operators read first."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import uuid
from typing import Any

from churn_spark.lakehouse import Lakehouse

log = logging.getLogger("churn_spark")


def new_run_id(job: str) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{job}-{uuid.uuid4().hex[:6]}"


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def write_run_summary(lakehouse: Lakehouse, run_id: str, summary: dict[str, Any]) -> str:
    """Write `summary` as runs/<run_id>.json; local folders directly, URIs through Hadoop's FS."""
    text = json.dumps(summary, indent=2, sort_keys=True, default=_json_default)
    target = lakehouse.path(f"runs/{run_id}.json")
    if lakehouse.is_local:
        local = target.removeprefix("file:")
        os.makedirs(os.path.dirname(local), exist_ok=True)
        tmp = f"{local}.tmp"
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, local)
        return local
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    if spark is None:
        log.warning("no active Spark session: run summary for %s not written to %s", run_id, target)
        return target
    jvm: Any = spark.sparkContext._jvm
    jsc: Any = spark.sparkContext._jsc
    path = jvm.org.apache.hadoop.fs.Path(target)
    fs = path.getFileSystem(jsc.hadoopConfiguration())
    out = fs.create(path, True)
    out.write(bytearray(text.encode()))
    out.close()
    return target
