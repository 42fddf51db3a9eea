"""The budget-constrained target list: whom to contact to retain the most expected value.

Grain: one row per scored account at one `as_of_date`. Contacting an account costs
`cost_per_contact` and, if it would have churned, retains it with probability `success_rate`:

    account_value  = mrr * value_months
    expected_value = churn_probability * success_rate * account_value - cost_per_contact

Every contact costs the same, so among all sets of at most k accounts the best total is the k
largest positive expected values (swap argument: replacing any chosen account by a larger one
never lowers the total). The budget allows k = min(max_contacts, floor(budget / cost)); accounts
with expected value <= 0 are never chosen, since dropping them can only raise the total. The
selection is therefore exact, and at scale it is one ranked pass (see `ranking`), no collect.
"""

from __future__ import annotations

from fractions import Fraction

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from churn_spark.config import TargetingSettings
from churn_spark.score.ranking import with_global_rank


def account_value(mrr: Column, value_months: float) -> Column:
    """Value retained if the account stays: monthly revenue times the expected remaining months (null MRR -> 0)."""
    return F.coalesce(mrr.cast("double"), F.lit(0.0)) * F.lit(float(value_months))


def expected_contact_value(probability: Column, value: Column, success_rate: float, cost: float) -> Column:
    """Expected retained value of one contact minus its cost."""
    return probability * F.lit(float(success_rate)) * value - F.lit(float(cost))


def with_expected_value(scored: DataFrame, targeting: TargetingSettings) -> DataFrame:
    """Add `account_value`, `contact_cost`, `expected_value`; needs `churn_probability` and `mrr`."""
    value = account_value(F.col("mrr"), targeting.value_months)
    return (
        scored.withColumn("account_value", value)
        .withColumn("contact_cost", F.lit(float(targeting.cost_per_contact)))
        .withColumn("expected_value", expected_contact_value(
            F.col("churn_probability"), F.col("account_value"), targeting.success_rate, targeting.cost_per_contact))
    )


def contact_limit(targeting: TargetingSettings) -> int | None:
    """Most contacts the limits allow (None: unlimited). Exact decimal division, so 100 / 0.1 is 1000."""
    limits = []
    if targeting.max_contacts is not None:
        limits.append(targeting.max_contacts)
    if targeting.budget is not None and targeting.cost_per_contact > 0:
        limits.append(int(Fraction(str(targeting.budget)) // Fraction(str(targeting.cost_per_contact))))
    return min(limits) if limits else None


def select_targets(valued: DataFrame, limit: int | None) -> DataFrame:
    """Accounts with positive expected value, best first (`target_rank`, ties by account_id), at most `limit`."""
    positive = valued.where(F.col("expected_value") > 0)
    ranked = with_global_rank(positive, "expected_value", "account_id", "target_rank")
    return ranked if limit is None else ranked.where(F.col("target_rank") <= limit)


def churn_targets(scored: DataFrame, targeting: TargetingSettings) -> DataFrame:
    """The target list from scores with `mrr`: expected values, then the exact budgeted selection."""
    return scored.transform(lambda df: with_expected_value(df, targeting)).transform(
        lambda df: select_targets(df, contact_limit(targeting)))
