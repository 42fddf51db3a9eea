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

`scoring.targeting.mode: uplift` values a contact by its predicted effect instead: the scored rows
carry `uplift`, the predicted reduction of the account's churn probability by the contact (an uplift
model's output), and

    expected_value = uplift * account_value - cost_per_contact

(`success_rate` does not apply: the uplift already is the contact's effect). The selection is the
same exact one over the accounts with a positive predicted uplift; an account the contact would not
help (uplift <= 0, or none predicted) is never contacted, whatever its value or the budget left.
"""

from __future__ import annotations

from fractions import Fraction

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from churn_spark.config import TargetingSettings
from churn_spark.errors import ContractError
from churn_spark.score.ranking import with_global_rank

RISK, UPLIFT = "risk", "uplift"
"""The values of `scoring.targeting.mode` (recorded per row in `targeting_mode`)."""


def account_value(mrr: Column, value_months: float) -> Column:
    """Value retained if the account stays: monthly revenue times the expected remaining months (null MRR -> 0)."""
    return F.coalesce(mrr.cast("double"), F.lit(0.0)) * F.lit(float(value_months))


def expected_contact_value(probability: Column, value: Column, success_rate: float, cost: float) -> Column:
    """Expected retained value of one contact minus its cost."""
    return probability * F.lit(float(success_rate)) * value - F.lit(float(cost))


def expected_uplift_value(uplift: Column, value: Column, cost: float) -> Column:
    """Expected value saved by one contact minus its cost; `uplift` is already the contact's effect on the
    churn probability, so no success rate applies (null uplift -> null)."""
    return uplift * value - F.lit(float(cost))


def with_expected_value(scored: DataFrame, targeting: TargetingSettings) -> DataFrame:
    """Add `targeting_mode`, `uplift` (null in risk mode), `account_value`, `contact_cost`, `expected_value`.

    Needs `churn_probability` and `mrr`; in uplift mode also `uplift` (predicted reduction of the churn
    probability by a contact), which is what the value then rests on.
    """
    if targeting.mode == UPLIFT and "uplift" not in scored.columns:
        raise ContractError("scoring.targeting.mode is uplift but the scored rows have no `uplift` column")
    uplift = F.col("uplift").cast("double") if targeting.mode == UPLIFT else F.lit(None).cast("double")
    value = account_value(F.col("mrr"), targeting.value_months)
    cost = targeting.cost_per_contact
    gain = (expected_uplift_value(F.col("uplift"), F.col("account_value"), cost) if targeting.mode == UPLIFT
            else expected_contact_value(F.col("churn_probability"), F.col("account_value"), targeting.success_rate,
                                        cost))
    return (
        scored.withColumn("targeting_mode", F.lit(targeting.mode))
        .withColumn("uplift", uplift)
        .withColumn("account_value", value)
        .withColumn("contact_cost", F.lit(float(cost)))
        .withColumn("expected_value", gain)
    )


def contact_limit(targeting: TargetingSettings) -> int | None:
    """Most contacts the limits allow (None: unlimited). Exact decimal division, so 100 / 0.1 is 1000."""
    limits = []
    if targeting.max_contacts is not None:
        limits.append(targeting.max_contacts)
    if targeting.budget is not None and targeting.cost_per_contact > 0:
        limits.append(int(Fraction(str(targeting.budget)) // Fraction(str(targeting.cost_per_contact))))
    return min(limits) if limits else None


def contactable(mode: str) -> Column:
    """Whether a contact can pay at all: positive expected value and, in uplift mode, a positive predicted
    uplift (a contact that leaves the churn probability unchanged or raises it is never made, even where a
    negative account value would turn its expected value positive). Null is false."""
    positive = F.col("expected_value") > 0
    return positive & (F.col("uplift") > 0) if mode == UPLIFT else positive


def select_targets(valued: DataFrame, limit: int | None, mode: str = RISK) -> DataFrame:
    """Contactable accounts, best expected value first (`target_rank`, ties by account_id), at most `limit`."""
    positive = valued.where(contactable(mode))  # null (no uplift predicted) drops the row
    ranked = with_global_rank(positive, "expected_value", "account_id", "target_rank")
    return ranked if limit is None else ranked.where(F.col("target_rank") <= limit)


def uplift_coverage(scored: DataFrame) -> dict[str, int]:
    """{`accounts_with_uplift`, `accounts_without_uplift`} of scored rows with an `uplift` column: an account the
    uplift model gives no prediction is never contacted in uplift mode, so the summary counts it instead of
    skipping it silently. One small aggregate."""
    row = scored.agg(F.count("uplift").alias("with"), F.count_if(F.col("uplift").isNull()).alias("without")).first()
    assert row is not None
    return {"accounts_with_uplift": int(row["with"]), "accounts_without_uplift": int(row["without"] or 0)}


def churn_targets(scored: DataFrame, targeting: TargetingSettings) -> DataFrame:
    """The target list from scores with `mrr` (and `uplift` in uplift mode): expected values, then the exact
    budgeted selection."""
    return scored.transform(lambda df: with_expected_value(df, targeting)).transform(
        lambda df: select_targets(df, contact_limit(targeting), targeting.mode))
