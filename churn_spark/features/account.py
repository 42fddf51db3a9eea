"""Account features: tenure, current contract (MRR, seats, product, billing period), plan changes, attributes.

Subscriptions are read only through `asof.subscriptions_as_of`: an `end_date` after D is null here;
attributes with a history only through `asof.attributes_as_of`.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType

from churn_spark import asof
from churn_spark.config import FeatureSettings
from churn_spark.features import catalog as cat
from churn_spark.schemas import KEYS, attribute_type


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


def attribute_columns(source: DataFrame, attributes: Sequence[str]) -> list[Column]:
    """The declared attributes of `source` as features: numeric and boolean columns as double, others as
    string (`schemas.attribute_type`)."""
    return [F.col(a).cast(attribute_type(source.schema[a].dataType)).alias(a) for a in attributes]


def attribute_dtypes(source: DataFrame, attributes: Sequence[str]) -> dict[str, cat.Dtype]:
    """{attribute: catalogue dtype} of the attribute features read from `source` (what the table gets)."""
    return {a: "numeric" if isinstance(attribute_type(source.schema[a].dataType), DoubleType) else "categorical"
            for a in attributes}


def account_features(subscriptions: DataFrame, accounts: DataFrame, snapshots: DataFrame,
                     features: FeatureSettings, attributes: list[str],
                     attribute_history: DataFrame | None = None) -> DataFrame:
    """Grain (account, as_of_date) for accounts with a subscription known at D, with the declared attributes.

    Without `attribute_history` the attributes are assumed static: today's value (`accounts`) for every
    snapshot. With it, the value valid on D - 1 (`asof.attributes_as_of`), null when the account has no
    history row valid then (`accounts`' values are not used). Numeric attributes stay numeric (double).
    """
    history = max(features.change_windows_days)
    known = asof.subscriptions_as_of(with_first_subscription_flag(subscriptions), snapshots, history)
    contract = contract_features(known, features)
    if attribute_history is None:
        attrs = accounts.select("account_id", *attribute_columns(accounts, attributes))
        return contract.join(attrs, "account_id", "left")
    as_of = asof.attributes_as_of(attribute_history, snapshots, attributes)
    return contract.join(as_of.select(*KEYS, *attribute_columns(as_of, attributes)), list(KEYS), "left")


def tenure_as_double(df: DataFrame) -> DataFrame:
    """`tenure_days` (from the labels) as a double feature column."""
    return df.withColumn("tenure_days", F.col("tenure_days").cast("double"))

