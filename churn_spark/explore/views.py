"""Exploration views: the questions a data scientist asks before training, as small Spark aggregates.

Every view is a `DataFrame -> DataFrame` function whose output has one row per snapshot, cohort,
attribute value, feature, feature pair or churn-definition variant -- never one row per account --
so only these small results (and explicit, bounded samples) reach pandas and matplotlib.

Inputs are the pipeline's own tables: `gold.churn_labels` (label 1/0/null per eligible account and
snapshot), `gold.churn_features`, the conformed `accounts` and `subscriptions`. Labels for other
churn definitions come from `churn_spark.labels.churn_labels`, the function the features job runs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from churn_spark.config import Settings, with_overrides
from churn_spark.labels import churn_labels

LABEL = "label"
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
MISSING_VALUE = "(missing)"


class TooManyRows(ValueError):
    """A view meant to be small is not: collecting it would move data-sized results to the driver."""


def to_pandas(view: DataFrame, max_rows: int = 20_000) -> pd.DataFrame:
    """A small view as pandas; refuses (instead of collecting) when it has more than `max_rows` rows."""
    pdf = view.limit(max_rows + 1).toPandas()
    if len(pdf) > max_rows:
        raise TooManyRows(f"view has more than {max_rows} rows; aggregate or sample it first")
    return pdf


# --- column helpers ------------------------------------------------------------------------------


def finite_double(col: Column) -> Column:
    """The value as double, null when null, NaN or infinite (ratios can be infinite)."""
    v = col.cast("double")
    return F.when(v.isNull() | F.isnan(v) | (F.abs(v) == float("inf")), F.lit(None).cast("double")).otherwise(v)


def label_counts() -> list[Column]:
    """Per group: eligible rows, labelled rows, churners, censored rows and the churn rate of the labelled."""
    label = F.col(LABEL)
    return [
        F.count(F.lit(1)).alias("eligible"),
        F.count(label).alias("labelled"),
        F.count_if(label == 1).alias("churned"),
        F.count_if(label.isNull()).alias("censored"),
        F.avg(label.cast("double")).alias("churn_rate"),
    ]


def with_signup_month(accounts: DataFrame) -> DataFrame:
    """`signup_month`: first day of the (UTC) month of `created_at` -- the account's cohort."""
    return accounts.withColumn("signup_month", F.trunc(F.to_date("created_at"), "month"))


# --- churn rate ----------------------------------------------------------------------------------


def churn_rate_by_snapshot(labels: DataFrame) -> DataFrame:
    """Grain: as_of_date. Eligible, labelled, churned, censored rows and the churn rate (of the labelled)."""
    return labels.groupBy("as_of_date").agg(*label_counts()).orderBy("as_of_date")


def churn_rate_by_cohort(labels: DataFrame, accounts: DataFrame) -> DataFrame:
    """Grain: signup_month. Distinct accounts and label counts over all their snapshots."""
    cohorts = accounts.transform(with_signup_month).select("account_id", "signup_month")
    return (
        labels.join(cohorts, "account_id")
        .groupBy("signup_month")
        .agg(F.countDistinct("account_id").alias("accounts"), *label_counts())
        .orderBy("signup_month")
    )


def attribute_values(attributes: Sequence[str]) -> Column:
    """An array of (attribute, value-as-text) structs: one per declared attribute, nulls as '(missing)'."""
    return F.array(*[
        F.struct(F.lit(a).alias("attribute"), F.coalesce(F.col(a).cast("string"), F.lit(MISSING_VALUE)).alias("value"))
        for a in attributes
    ])


def churn_rate_by_attribute(labels: DataFrame, accounts: DataFrame, attributes: Sequence[str]) -> DataFrame:
    """Grain: (attribute, value) for every declared account attribute, in one pass over the labels (no rows
    when none is declared, the default)."""
    pairs = accounts.select("account_id", F.inline(attribute_values(attributes))) if attributes else accounts.select(
        "account_id", F.lit(None).cast("string").alias("attribute"), F.lit(None).cast("string").alias("value")
    ).where(F.lit(False))
    return (
        labels.join(pairs, "account_id")
        .groupBy("attribute", "value")
        .agg(*label_counts())
        .orderBy("attribute", "value")
    )


# --- features ------------------------------------------------------------------------------------


def feature_separation(dataset: DataFrame, features: Sequence[str]) -> DataFrame:
    """Grain: feature. Mean among churned and retained rows, overall standard deviation, non-null share
    and `separation` = (mean churned - mean retained) / std (a standardised mean difference; null when
    the feature is constant). One aggregation over the labelled rows, ordered by |separation|.
    """
    label = F.col(LABEL)
    aggs = [F.count(F.lit(1)).alias("__rows")]
    for i, name in enumerate(features):
        v = finite_double(F.col(f"`{name}`"))
        aggs += [F.avg(F.when(label == 1, v)).alias(f"m1_{i}"), F.avg(F.when(label == 0, v)).alias(f"m0_{i}"),
                 F.stddev_samp(v).alias(f"sd_{i}"), F.count(v).alias(f"nn_{i}")]
    wide = dataset.agg(*aggs)
    structs = F.array(*[
        F.struct(F.lit(name).alias("feature"), F.col(f"m1_{i}").alias("mean_churned"),
                 F.col(f"m0_{i}").alias("mean_retained"), F.col(f"sd_{i}").alias("std"),
                 F.try_divide(F.col(f"nn_{i}"), F.col("__rows")).alias("non_null_share"))
        for i, name in enumerate(features)
    ])
    sd = F.col("std")
    separation = F.when(sd > 0, (F.col("mean_churned") - F.col("mean_retained")) / sd)
    return (wide.select(F.inline(structs)).withColumn("separation", separation)
            .orderBy(F.abs("separation").desc_nulls_last(), "feature"))


def top_features(separation: pd.DataFrame, k: int, min_non_null_share: float = 0.5) -> list[str]:
    """The `k` features that separate the classes most (by |separation|), among mostly non-null ones."""
    usable = separation[separation["separation"].notna() & (separation["non_null_share"] >= min_non_null_share)]
    ranked = usable.assign(_abs=usable["separation"].abs()).sort_values(["_abs", "feature"], ascending=[False, True])
    return list(ranked["feature"].head(k))


def feature_quantiles(dataset: DataFrame, features: Sequence[str], probs: Sequence[float] = QUANTILES,
                      accuracy: int = 10_000) -> DataFrame:
    """Grain: (feature, label). Approximate quantiles `q_<pct>` and the mean of each feature per class
    (what a box plot needs, computed in Spark rather than from the rows)."""
    aggs = []
    for i, name in enumerate(features):
        v = finite_double(F.col(f"`{name}`"))
        aggs += [F.percentile_approx(v, list(probs), accuracy).alias(f"q_{i}"), F.avg(v).alias(f"mean_{i}")]
    per_label = dataset.groupBy(LABEL).agg(*aggs)
    structs = F.array(*[
        F.struct(F.lit(name).alias("feature"),
                 *[F.col(f"q_{i}")[j].alias(f"q{round(p * 100):02d}") for j, p in enumerate(probs)],
                 F.col(f"mean_{i}").alias("mean"))
        for i, name in enumerate(features)
    ])
    return per_label.select(LABEL, F.inline(structs)).orderBy("feature", LABEL)


def feature_correlations(dataset: DataFrame, features: Sequence[str]) -> DataFrame:
    """Grain: (feature_a, feature_b) with a before b in `features`. Pearson correlation over the rows
    where both are present (Spark's `corr` aggregate, all pairs in one pass). Pass a sample for speed."""
    pairs = [(i, j) for i in range(len(features)) for j in range(i + 1, len(features))]
    if not pairs:
        return dataset.sparkSession.createDataFrame([], "feature_a string, feature_b string, correlation double")
    wide = dataset.agg(*[F.corr(finite_double(F.col(f"`{features[i]}`")), finite_double(F.col(f"`{features[j]}`")))
                       .alias(f"c_{i}_{j}") for i, j in pairs])
    structs = F.array(*[
        F.struct(F.lit(features[i]).alias("feature_a"), F.lit(features[j]).alias("feature_b"),
                 F.col(f"c_{i}_{j}").alias("correlation"))
        for i, j in pairs
    ])
    return wide.select(F.inline(structs))


def sample_fraction(rows: int, max_rows: int) -> float:
    """The Bernoulli fraction that keeps about `max_rows` of `rows` (1.0 when there are fewer)."""
    return 1.0 if rows <= max_rows else max_rows / rows


def scatter_sample(dataset: DataFrame, x: str, y: str, class_rows: dict[int, int], per_class: int,
                   seed: int) -> DataFrame:
    """About `per_class` rows of each label (stratified, so the rarer churners are visible) with `x`
    and `y` present: columns label, x, y. `class_rows` is {label: labelled rows}, from a view."""
    fractions = {int(k): sample_fraction(n, per_class) for k, n in class_rows.items()}
    return (dataset.sampleBy(LABEL, fractions, seed)
            .select(F.col(LABEL), finite_double(F.col(f"`{x}`")).alias(x), finite_double(F.col(f"`{y}`")).alias(y))
            .dropna(subset=[x, y]))


# --- the churn definition ------------------------------------------------------------------------


def definition_variants(settings: Settings, horizons: Sequence[int], grace_days: Sequence[int]) -> list[Settings]:
    """Settings for every (horizon, grace) pair, the configured pair included; validated like the config."""
    hs = sorted({*horizons, settings.churn.horizon_months})
    gs = sorted({*grace_days, settings.churn.grace_days})
    return [with_overrides(settings, {"churn.horizon_months": h, "churn.grace_days": g}) for h in hs for g in gs]


def label_rate_by_definition(subscriptions: DataFrame, accounts: DataFrame, snapshots: DataFrame,
                             variants: Sequence[Settings], data_end: dt.date) -> DataFrame:
    """Grain: (horizon_months, grace_days). The labels the library would produce under each churn
    definition, over the same snapshots: label counts, churn rate, labelled share (the rest is
    censored: its outcome window passes `data_end`) and retained rows per churner (class balance)."""
    per_variant = [
        churn_labels(subscriptions, accounts, snapshots, v.churn, data_end)
        .groupBy().agg(*label_counts())
        .select(F.lit(v.churn.horizon_months).alias("horizon_months"), F.lit(v.churn.grace_days).alias("grace_days"),
                "*")
        for v in variants
    ]
    out = per_variant[0]
    for df in per_variant[1:]:
        out = out.unionByName(df)
    return (out.withColumn("labelled_share", F.try_divide(F.col("labelled"), F.col("eligible")))
            .withColumn("retained_per_churner", F.try_divide(F.col("labelled") - F.col("churned"), F.col("churned")))
            .orderBy("horizon_months", "grace_days"))
