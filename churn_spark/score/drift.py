"""Population stability of the scores and of the top features: training population vs scored population.

PSI = sum over bins of (a - e) * ln(a / e), with e the bin's share in the reference (training) data
and a its share in the scored population. Numeric bins are cut at the reference's deciles (so each
reference bin holds ~10%); nulls are a bin of their own; categorical bins are the categories. A share
of 0 is floored at `floor` so a bin that appears or disappears counts heavily but finitely. Rule of
thumb: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 major shift.

Both populations are reduced to (feature, bin, count) in one aggregation each; only those small
aggregates and the reference's quantiles reach the driver.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

NULL_BIN = "null"
DEFAULT_FLOOR = 1e-4


def psi(expected: Mapping[str, float], actual: Mapping[str, float], floor: float = DEFAULT_FLOOR) -> float:
    """PSI of two bin -> share maps (missing bins have share 0, floored)."""
    total = 0.0
    for b in set(expected) | set(actual):
        e, a = max(expected.get(b, 0.0), floor), max(actual.get(b, 0.0), floor)
        total += (a - e) * math.log(a / e)
    return total


def numeric_bin(value: Column, edges: Sequence[float]) -> Column:
    """Bin label of a number: how many edges are <= it ("0".."k"), or "null"."""
    passed = F.size(F.filter(F.array(*[F.lit(float(e)) for e in edges]), lambda e: e <= value.cast("double"))) \
        if edges else F.lit(0)
    return F.when(value.isNull(), F.lit(NULL_BIN)).otherwise(passed.cast("string"))


def categorical_bin(value: Column) -> Column:
    return F.coalesce(value.cast("string"), F.lit(NULL_BIN))


def quantile_edges(reference: DataFrame, columns: Sequence[str], bins: int = 10) -> dict[str, list[float]]:
    """Distinct interior decile edges of each numeric column in the reference (one aggregation)."""
    if not columns:
        return {}
    probs = [i / bins for i in range(1, bins)]
    quantiles = [F.percentile_approx(F.col(c).cast("double"), probs, 10_000).alias(c) for c in columns]
    row = reference.agg(*quantiles).first()
    assert row is not None
    return {c: sorted({float(e) for e in (row[c] or [])}) for c in columns}


def binned(df: DataFrame, edges: Mapping[str, Sequence[float]], categorical: Sequence[str]) -> DataFrame:
    """Long format: one (feature, bin) row per account and drift feature."""
    cells = [F.struct(F.lit(c).alias("feature"), numeric_bin(F.col(c), e).alias("bin")) for c, e in edges.items()]
    cells += [F.struct(F.lit(c).alias("feature"), categorical_bin(F.col(c)).alias("bin")) for c in categorical]
    return df.select(F.explode(F.array(*cells)).alias("cell")).select("cell.feature", "cell.bin")


def bin_shares(df: DataFrame, edges: Mapping[str, Sequence[float]],
               categorical: Sequence[str]) -> dict[str, dict[str, float]]:
    """{feature: {bin: share}} -- features x bins rows, safe to collect."""
    if not edges and not categorical:
        return {}
    counts = binned(df, edges, categorical).groupBy("feature", "bin").count()
    rows = counts.collect()
    totals: dict[str, int] = {}
    for r in rows:
        totals[r["feature"]] = totals.get(r["feature"], 0) + int(r["count"])
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        out.setdefault(r["feature"], {})[r["bin"]] = int(r["count"]) / totals[r["feature"]]
    return out


def population_stability(reference: DataFrame, current: DataFrame, numeric: Sequence[str],
                         categorical: Sequence[str] = (), bins: int = 10) -> dict[str, float]:
    """PSI per column of the current population against the reference, bins cut on the reference."""
    edges = quantile_edges(reference, list(numeric), bins)
    expected = bin_shares(reference, edges, categorical)
    actual = bin_shares(current, edges, categorical)
    return {c: psi(expected.get(c, {}), actual.get(c, {})) for c in [*numeric, *categorical]}
