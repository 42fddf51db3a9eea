"""Account features: tenure, current contract (MRR, seats, product, billing period), plan changes, attributes.

Subscriptions are read only through `asof.subscriptions_as_of`: an `end_date` after D is null here.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from churn_spark import asof
from churn_spark.config import FeatureSettings
from churn_spark.features import catalog as cat
from churn_spark.schemas import KEYS


def with_first_subscription_flag(subscriptions: DataFrame) -> DataFrame:
    """Adds `is_first`: the account's earliest subscription (by start, then id), which is no plan change."""
    order = Window.partitionBy("account_id").orderBy("start_date", "subscription_id")
    return subscriptions.withColumn("is_first", F.row_number().over(order) == 1)


def _active_at(day: Column) -> Column:
    return asof.active_on(day, F.col("start_date"), F.col("end_date"))


def _mrr_where(cond: Column) -> Column:
    return F.sum(F.when(cond, F.col("mrr"))).cast("double")


def contract_features(known: DataFrame, features: FeatureSettings) -> DataFrame:
    """Grain (account, as_of_date) from as-of subscriptions: MRR, seats, main product, plan changes, MRR change.

    The main subscription is the active one with the highest mrr, then the latest start, then the
    highest id (deterministic).
    """
    d = F.col("as_of_date")
    active = _active_at(d)
    main = F.max(F.when(active, F.struct("mrr", "start_date", "subscription_id", "product_id", "bill_period_months")))
    aggs = [
        _mrr_where(active).alias("mrr"),
        F.sum(F.when(active, F.col("quantity"))).cast("double").alias("quantity"),
        F.count_if(active).cast("double").alias("active_subscriptions"),
        main.alias("__main"),
    ]
    for w in features.change_windows_days:
        started = ~F.col("is_first") & (F.col("start_date") > F.date_sub(d, w))
        aggs.append(F.count_if(started).cast("double").alias(cat.plan_changes_col(w)))
        aggs.append(_mrr_where(_active_at(F.date_sub(d, w))).alias(f"__mrr_{w}"))
    grouped = known.groupBy(*KEYS).agg(*aggs)
    changes = {cat.mrr_change_col(w): F.try_divide(F.col("mrr") - F.col(f"__mrr_{w}"), F.col(f"__mrr_{w}"))
               for w in features.change_windows_days}
    return grouped.withColumns({
        "mrr_per_seat": F.try_divide(F.col("mrr"), F.col("quantity")),
        "product_id": F.col("__main.product_id"),
        "bill_period_months": F.col("__main.bill_period_months").cast("string"),
        **changes,
    }).drop("__main", *[f"__mrr_{w}" for w in features.change_windows_days])


def account_features(subscriptions: DataFrame, accounts: DataFrame, snapshots: DataFrame,
                     features: FeatureSettings, attributes: list[str]) -> DataFrame:
    """Grain (account, as_of_date) for accounts with a subscription known at D; attributes as strings."""
    history = max(features.change_windows_days)
    known = asof.subscriptions_as_of(with_first_subscription_flag(subscriptions), snapshots, history)
    attrs = accounts.select("account_id", *[F.col(a).cast("string").alias(a) for a in attributes])
    return contract_features(known, features).join(attrs, "account_id", "left")


def tenure_as_double(df: DataFrame) -> DataFrame:
    """`tenure_days` (from the labels) as a double feature column."""
    return df.withColumn("tenure_days", F.col("tenure_days").cast("double"))

