"""Global ranks without moving every row into one partition.

A window with `orderBy` and no `partitionBy` sorts the whole population in a single task. Here the
rows are first cut into value buckets by approximate quantiles of the sort key (ties always share a
bucket, and buckets are ordered like the key), ranked inside each bucket, then shifted by the number
of rows in the buckets before it -- a tiny aggregate. The result equals `row_number()` over the full
order exactly; only the bucket cut is approximate, which affects balance, never correctness.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from churn_spark.thresholds import count_at_or_below, count_below

_EDGES, _BUCKET, _OFFSET, _TOTAL, _SIZE = "__rank_edges", "__rank_bucket", "__rank_offset", "__rank_total", "__n"


def _bucket_edges(df: DataFrame, key: str, buckets: int) -> list[float]:
    """`buckets - 1` approximate quantiles of `key` (non-null keys), ascending; [] when there is no key.

    A few numbers read to the driver, so the bucket index is a tree of comparisons with constants
    (`thresholds.py`) instead of a lambda over an array column, which runs interpreted once per edge and row."""
    probs = [i / buckets for i in range(1, buckets)] or [0.5]
    row = df.agg(F.percentile_approx(F.col(key), probs, 10_000).alias(_EDGES)).first()
    edges = row[_EDGES] if row is not None else None
    return sorted(float(e) for e in edges if e is not None) if edges else []


def _with_bucket(df: DataFrame, key: str, descending: bool, buckets: int) -> DataFrame:
    """Bucket index ordered like the key: number of edges the key has passed in the sort direction."""
    edges = _bucket_edges(df, key, buckets)
    value = F.col(key)
    passed = F.lit(len(edges)) - count_at_or_below(value, edges) if descending else count_below(value, edges)
    return df.withColumn(_BUCKET, passed)


def with_global_rank(df: DataFrame, key: str, tiebreak: str, name: str, descending: bool = True,
                     buckets: int = 64, total_col: str | None = None) -> DataFrame:
    """Add `name`: 1-based row number ordered by `key` (desc by default, non-null) then `tiebreak` asc.

    `tiebreak` must be unique (e.g. account_id) so the order is total and the ranks deterministic.
    With `total_col`, also add the population size (for deciles) from the same small aggregate.
    Runs one small job at once (the bucket edges); persist `df` first when it is costly to recompute.
    """
    bucketed = _with_bucket(df, key, descending, buckets)
    order = [F.col(key).desc() if descending else F.col(key).asc(), F.col(tiebreak).asc()]
    sizes = bucketed.groupBy(_BUCKET).agg(F.count(F.lit(1)).alias(_SIZE))
    before = Window.orderBy(_BUCKET).rowsBetween(Window.unboundedPreceding, -1)
    offsets = sizes.select(
        _BUCKET,
        F.coalesce(F.sum(_SIZE).over(before), F.lit(0)).alias(_OFFSET),
        F.sum(_SIZE).over(Window.partitionBy()).alias(_TOTAL),
    )
    local = F.row_number().over(Window.partitionBy(_BUCKET).orderBy(*order))
    ranked = bucketed.join(F.broadcast(offsets), _BUCKET).withColumn(name, (F.col(_OFFSET) + local).cast("long"))
    if total_col is not None:
        ranked = ranked.withColumn(total_col, F.col(_TOTAL))
    return ranked.drop(_BUCKET, _OFFSET, _TOTAL)
