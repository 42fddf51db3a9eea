"""raw/interventions and raw/intervention_truth from the simulated retention campaigns.

The assignments and their effect are simulated inside the lifecycle (`mechanism.with_lifecycle`, see its
module docstring): a treated account's hazard really changes, so the labels the pipeline computes from the
generated subscriptions show the effect. Here the recorded assignments (the simulation's `campaigns` array)
become the campaign log in the `interventions` contract and, per assignment, the true churn probability over
the horizon without and with the contact (`mechanism.horizon_churn_probability`, the same approximation as
`churn_truth`, whose untreated value equals `p_control`).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from churn_spark.config import Settings
from churn_spark.generate.mechanism import MECHANISM, Calendar, Mechanism, horizon_churn_probability


def campaign_id(assigned_at: Column) -> Column:
    """`campaign-<yyyy-MM-dd>`: one campaign per date."""
    return F.concat(F.lit("campaign-"), F.date_format(assigned_at, "yyyy-MM-dd"))


def assignments(sim: DataFrame, cal: Calendar) -> DataFrame:
    """Grain (account, campaign month): the lifecycle's recorded assignments with the account's fixed state
    (`mu`, `created_m`, `annual`, `renew_moy`) beside the month's (`m`, `e_prev`, `plan`, `seats`, `fresh`),
    `assigned_at` (the month's first day) and `arm`."""
    keep = ["account_id", "mu", "created_m", "annual", "renew_moy"]
    return (
        sim.select(*keep, F.explode("campaigns").alias("c"))
        .select(*keep, "c.*")
        .withColumn("assigned_at", cal.month_start(F.col("m")))
        .withColumn("campaign_id", campaign_id(F.col("assigned_at")))
        .withColumn("arm", F.when(F.col("treated"), F.lit("treatment")).otherwise(F.lit("control")))
    )


def interventions_table(assigned: DataFrame, settings: Settings) -> DataFrame:
    """raw/interventions (schemas.INTERVENTIONS): the campaign log. Only the treated are contacted, so only
    they cost `cost_per_contact` and are `delivered`; every row carries the configured `propensity`."""
    camp = settings.generate.campaigns
    treated = F.col("treated")
    return assigned.select(
        "campaign_id", "account_id", "assigned_at", "arm",
        F.lit(camp.propensity).alias("propensity"),
        F.lit(camp.channel).alias("channel"),
        F.when(treated, F.lit(camp.cost_per_contact)).otherwise(F.lit(0.0)).alias("cost"),
        treated.alias("delivered"),
    )


def intervention_truth(assigned: DataFrame, settings: Settings, cal: Calendar,
                       mech: Mechanism = MECHANISM) -> DataFrame:
    """raw/intervention_truth (schemas.INTERVENTION_TRUTH): per assignment, P(churn within the horizon from
    `assigned_at`) without (`p_control`) and with (`p_treatment`) the treatment's logit shift in every month of
    the horizon, and `uplift` = p_control - p_treatment, whatever arm the account was drawn into."""
    return assigned.select(
        "campaign_id", "account_id", "assigned_at", "arm",
        horizon_churn_probability(settings, cal, mech).alias("p_control"),
        horizon_churn_probability(settings, cal, mech, F.col("shift")).alias("p_treatment"),
    ).withColumn("uplift", F.col("p_control") - F.col("p_treatment"))
