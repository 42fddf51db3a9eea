"""Retention campaigns as labelled data: each assignment of the `interventions` input with its outcome.

The outcome of an assignment is the churn label of its account at `as_of_date = assigned_at` under the
configured churn definition, computed by the labels code itself (`labels.churn_labels`), so an uplift model
learns the same "churn" the risk model does. Assignments without a usable label are left out and counted:
- `censored`: the label at `assigned_at` is null (`assigned_at + horizon + grace_days` after `data_end`);
- `ineligible`: the account is not eligible at `assigned_at` (no subscription active then, or tenure below
  `churn.min_tenure_days`), so no label and no features exist for it.
Rows of the input that break the contract (`io.conform`: `unknown_arm`, `propensity_out_of_range`,
`negative_cost`, `duplicate_campaign_id_account_id`, ...) or name an unknown account (`unknown_account_id`)
are rejected with their reason before this, as for every input.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from churn_spark import io, schemas
from churn_spark.config import ChurnSettings, Settings
from churn_spark.errors import ContractError
from churn_spark.features.job import FeatureInputs, load_inputs, resolve_data_end
from churn_spark.labels import churn_labels

LABELLED, CENSORED, INELIGIBLE = "labelled", "censored", "ineligible"
"""`outcome_status` of an assignment: what `campaign_outcomes` keeps, and the two reasons it leaves one out."""


def outcome_status(label: Column, tenure_days: Column) -> Column:
    """`ineligible` without a labels row (no `tenure_days`), `censored` with a null label, else `labelled`."""
    return (F.when(tenure_days.isNull(), F.lit(INELIGIBLE)).when(label.isNull(), F.lit(CENSORED))
            .otherwise(F.lit(LABELLED)))


def with_assignment_labels(interventions: DataFrame, subscriptions: DataFrame, accounts: DataFrame,
                           churn: ChurnSettings, data_end: dt.date) -> DataFrame:
    """Every assignment (grain: campaign, account) with `as_of_date` (= `assigned_at`), the label values at that
    date (`label`, `churn_date`, `tenure_days`; null when the account is not eligible then) and `outcome_status`.

    Labels are computed only for the distinct assignment dates (a tiny, broadcast snapshot frame).
    """
    snapshots = F.broadcast(interventions.select(F.col("assigned_at").alias("as_of_date")).distinct())
    labels = churn_labels(subscriptions, accounts, snapshots, churn, data_end)
    return (
        interventions.withColumn("as_of_date", F.col("assigned_at"))
        .join(labels, ["account_id", "as_of_date"], "left")
        .withColumn("outcome_status", outcome_status(F.col("label"), F.col("tenure_days")))
    )


def filter_labelled(assignments: DataFrame) -> DataFrame:
    """The assignments with an observed outcome (`outcome_status` labelled), as schemas.CAMPAIGN_OUTCOMES."""
    return assignments.where(F.col("outcome_status") == F.lit(LABELLED)).select(
        *[F.col(f.name).cast(f.dataType) if f.name == "label" else F.col(f.name)
          for f in schemas.CAMPAIGN_OUTCOMES.fields])


def outcome_counts(assignments: DataFrame) -> dict[str, int]:
    """{`assignments`, `labelled`, `censored`, `ineligible`}: one small aggregate, safe to collect."""
    status = F.col("outcome_status")
    row = assignments.agg(F.count(F.lit(1)).alias("assignments"),
                          *[F.count_if(status == F.lit(s)).alias(s) for s in (LABELLED, CENSORED, INELIGIBLE)]).first()
    assert row is not None
    return {k: int(v or 0) for k, v in row.asDict().items()}


@dataclass(frozen=True)
class CampaignOutcomes:
    """The labelled assignments (schemas.CAMPAIGN_OUTCOMES), the assignments left out by status (`counts`),
    the input's rejected rows (io.REJECT_SCHEMA) and the `data_end` censoring was decided against."""

    outcomes: DataFrame
    counts: dict[str, int]
    rejected: DataFrame
    data_end: dt.date

    def summary(self) -> dict[str, object]:
        """For a run summary: the counts, rejected rows by reason, and `data_end`."""
        rejected = io.reject_counts(self.rejected).get("interventions", {})
        return {**self.counts, "rejected": dict(sorted(rejected.items())), "data_end": self.data_end.isoformat()}


def read_interventions(spark: SparkSession, settings: Settings, accounts: DataFrame) -> io.Conformed:
    """`inputs.interventions` through its contract, orphans (account not among the good `accounts`) rejected
    as `unknown_account_id`. A ContractError when the input is not configured."""
    conformed = io.read_input(spark, settings, "interventions")
    if conformed is None:
        raise ContractError("no campaign log: set inputs.interventions (docs/contract.md, interventions)")
    return io.reject_unknown_accounts(conformed, accounts, "interventions")


def campaign_outcomes(spark: SparkSession, settings: Settings, inputs: FeatureInputs | None = None) -> CampaignOutcomes:
    """The assignments of `inputs.interventions` with their outcome (the churn label at `assigned_at`).

    `inputs`: the features job's conformed inputs (`features.job.load_inputs`, which syncs silver), read when
    not given; pass them to share one read with the features at `assigned_at`. `data_end` as the features
    job resolves it (`churn.data_end`, else the latest event day). The outcomes DataFrame is lazy.
    """
    inputs = inputs if inputs is not None else load_inputs(spark, settings)
    data_end = resolve_data_end(settings, inputs.events)
    conformed = read_interventions(spark, settings, inputs.accounts)
    assignments = with_assignment_labels(conformed.good, inputs.subscriptions, inputs.accounts, settings.churn,
                                         data_end)
    return CampaignOutcomes(filter_labelled(assignments), outcome_counts(assignments), conformed.rejected, data_end)
