"""Population stability of the scores and of the top features: training population vs scored population.

PSI = sum over bins of (a - e) * ln(a / e), with e the bin's share in the reference (training) data
and a its share in the scored population. Numeric bins are cut at the reference's deciles (so each
reference bin holds ~10%); nulls are a bin of their own; categorical bins are the categories. A share
of 0 is floored at `floor` so a bin that appears or disappears counts heavily but finitely. Rule of
thumb: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 major shift.

The reference is reduced once, at training, to its stored form (`reference_distributions`: per
column the bin edges and the bin shares, small JSON kept in the model's metadata.json); scoring bins
only the scored population at the stored edges (`stability_against`). Each population is reduced to
(feature, bin, count) in one aggregation; only those small aggregates and the reference's quantiles
reach the driver.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from churn_spark.config import Settings
from churn_spark.features.catalog import calendar_features, grows_by_design
from churn_spark.thresholds import count_at_or_below

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
    """Bin label of a number: how many edges are <= it ("0".."k"), or "null". The cast stays in each comparison
    (cheap): a boolean feature counts as numeric, and Spark will not compare a boolean with a double edge."""
    passed = count_at_or_below(value.cast("double"), edges)
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


def excluded_features(settings: Settings) -> list[str]:
    """Features never checked for drift: the catalogue's `grows_by_design` ones (tenure_days moves by a
    month every month for every account, so its PSI would warn every night), its `calendar` ones (the season
    is one value per night against a year of them in the reference) and `scoring.drift_exclude_features`."""
    return sorted(set(grows_by_design(settings)) | set(calendar_features(settings))
                  | set(settings.scoring.drift_exclude_features))


def _bin_order(b: str) -> tuple[int, int, str]:
    """Numeric bins in edge order, then the null bin; categories by name."""
    if b == NULL_BIN:
        return (2, 0, b)
    return (0, int(b), b) if b.isdigit() else (1, 0, b)


def reference_distributions(reference: DataFrame, numeric: Sequence[str], categorical: Sequence[str] = (),
                            bins: int = 10) -> dict[str, dict[str, Any]]:
    """The stored form of a reference population, per column (numeric, then categorical)::

        {"x": {"type": "numeric", "edges": [2.0, 4.0], "shares": {"0": 0.1, "1": 0.4, "2": 0.3, "null": 0.2}},
         "plan": {"type": "categorical", "shares": {"basic": 0.6, "pro": 0.4}}}

    Edges are the distinct interior quantiles (`quantile_edges`), shares are over all rows (nulls
    included). Two aggregations (quantiles, then one count per bin); the result is JSON-ready.
    """
    edges = quantile_edges(reference, list(numeric), bins)
    shares = bin_shares(reference, edges, categorical)

    def ordered(c: str) -> dict[str, float]:
        return {b: shares.get(c, {})[b] for b in sorted(shares.get(c, {}), key=_bin_order)}

    out: dict[str, dict[str, Any]] = {c: {"type": "numeric", "edges": edges[c], "shares": ordered(c)}
                                      for c in numeric}
    out.update({c: {"type": "categorical", "shares": ordered(c)} for c in categorical})
    return out


def stability_against(reference: Mapping[str, Mapping[str, Any]], current: DataFrame,
                      floor: float = DEFAULT_FLOOR) -> dict[str, float]:
    """PSI per column of `current` against stored reference distributions (`reference_distributions`'s
    form): only `current` is binned, at the stored edges; the reference population is never read."""
    edges = {c: [float(e) for e in r["edges"]] for c, r in reference.items() if r["type"] == "numeric"}
    categorical = [c for c, r in reference.items() if r["type"] == "categorical"]
    actual = bin_shares(current, edges, categorical)
    return {c: psi(r["shares"], actual.get(c, {}), floor) for c, r in reference.items()}


def population_stability(reference: DataFrame, current: DataFrame, numeric: Sequence[str],
                         categorical: Sequence[str] = (), bins: int = 10) -> dict[str, float]:
    """PSI per column of the current population against the reference, bins cut on the reference."""
    return stability_against(reference_distributions(reference, numeric, categorical, bins), current)
