"""Simulated retention campaigns (generate/mechanism.py, generate/campaigns.py): determinism, the recorded
propensity, accounts left untouched, a heterogeneous true effect, and labels that show it.

The tables are compared as the generator defines them (`simulate`, lazy) rather than written: run_generate
writes them with `io.overwrite_table` like every raw table (tests/test_generate.py covers the writing).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from typing import Any

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from churn_spark import io, schemas
from churn_spark.config import Settings
from churn_spark.generate import Simulation, simulate
from churn_spark.uplift import campaigns

pytestmark = pytest.mark.slow  # three small simulations

SMALL: dict[str, Any] = {"accounts": 400, "start": "2022-01-01", "end": "2023-12-31", "seed": 11,
                         "events_per_account_month": 1.0, "history_months": 6}
CAMPAIGNS = {"dates": ["2022-04-01", "2022-07-01", "2022-10-01"], "share": 0.5, "propensity": 0.8,
             "cost_per_contact": 30.0, "channel": "email"}


def _settings(campaign: dict[str, Any] | None = None, **generate: Any) -> Settings:
    extra = {"campaigns": campaign} if campaign is not None else {}
    return Settings(generate={**SMALL, **extra, **generate})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def sims(spark: SparkSession) -> Iterator[tuple[Simulation, Simulation, Simulation]]:
    one = simulate(spark, _settings(CAMPAIGNS, partitions=1))
    three = simulate(spark, _settings(CAMPAIGNS, partitions=3))
    plain = simulate(spark, _settings(partitions=2))
    yield one, three, plain
    for s in (one, three, plain):
        s.sim.unpersist()


def test_same_seed_same_campaign_tables_whatever_the_partitioning(sims: tuple[Simulation, ...]) -> None:
    one, three, _ = sims
    assert one.interventions is not None and three.interventions is not None
    assert one.intervention_truth is not None and three.intervention_truth is not None
    io.assert_schema(one.interventions, schemas.INTERVENTIONS, "interventions", allow_extra=False)
    io.assert_schema(one.intervention_truth, schemas.INTERVENTION_TRUTH, "intervention_truth", allow_extra=False)
    assert_df_equality(one.interventions, three.interventions, ignore_row_order=True)
    assert_df_equality(one.intervention_truth, three.intervention_truth, ignore_row_order=True)
    assert_df_equality(one.subscriptions, three.subscriptions, ignore_row_order=True)


def test_untreated_accounts_are_as_without_campaigns(sims: tuple[Simulation, ...]) -> None:
    with_campaigns, _, plain = sims
    assert with_campaigns.interventions is not None and plain.interventions is None
    treated = with_campaigns.interventions.where(F.col("arm") == "treatment").select("account_id").distinct()
    # every other account (unassigned or control) lives exactly the same life, subscription by subscription
    assert_df_equality(with_campaigns.subscriptions.join(treated, "account_id", "left_anti"),
                       plain.subscriptions.join(treated, "account_id", "left_anti"), ignore_row_order=True)
    assert_df_equality(with_campaigns.accounts, plain.accounts, ignore_row_order=True)
    # while the treated accounts' lives changed for some
    changed = with_campaigns.subscriptions.join(treated, "account_id").exceptAll(
        plain.subscriptions.join(treated, "account_id"))
    assert changed.count() > 0


def test_propensity_cost_and_delivery_recorded(sims: tuple[Simulation, ...]) -> None:
    assert sims[0].interventions is not None
    per_arm = sims[0].interventions.groupBy("arm", "propensity", "channel", "cost", "delivered").agg(
        F.count_distinct("campaign_id").alias("campaigns"))
    expected = sims[0].interventions.sparkSession.createDataFrame(
        [("control", 0.8, "email", 0.0, False, 3), ("treatment", 0.8, "email", 30.0, True, 3)],
        "arm string, propensity double, channel string, cost double, delivered boolean, campaigns long")
    assert_df_equality(per_arm, expected, ignore_row_order=True, ignore_nullable=True)


def test_treatment_share_within_a_binomial_bound(sims: tuple[Simulation, ...]) -> None:
    assert sims[0].interventions is not None
    row = sims[0].interventions.agg(F.count(F.lit(1)).alias("n"),
                                    F.count_if(F.col("arm") == "treatment").alias("k")).first()
    assert row is not None
    n, k, p = row["n"], row["k"], CAMPAIGNS["propensity"]
    # k ~ Binomial(n, p): |k - n p| <= 4 sd fails a correct generator with probability < 1e-4
    assert n > 100
    assert abs(k - n * p) <= 4 * math.sqrt(n * p * (1 - p)), (n, k)


def test_each_account_assigned_once_per_horizon_and_eligible(sims: tuple[Simulation, ...]) -> None:
    sim = sims[0]
    assert sim.interventions is not None
    settings = _settings(CAMPAIGNS)
    # assigned accounts are eligible at assigned_at as the labels define it: none is left out as ineligible
    labelled = campaigns.with_assignment_labels(sim.interventions, sim.subscriptions, sim.accounts, settings.churn,
                                                dt.date(2023, 12, 31))
    assert campaigns.outcome_counts(labelled)["ineligible"] == 0
    # the 6-month horizon: an account assigned on 2022-04-01 is not assigned again on 2022-07-01
    repeated = sim.interventions.groupBy("account_id").agg(F.array_sort(F.collect_list("assigned_at")).alias("d")) \
        .where(F.size("d") > 1).where(F.months_between(F.col("d")[1], F.col("d")[0]) < 6)
    assert repeated.count() == 0


def test_true_uplift_varies_and_is_negative_for_some(sims: tuple[Simulation, ...]) -> None:
    sim = sims[0]
    assert sim.intervention_truth is not None
    stats = sim.intervention_truth.agg(F.min("uplift").alias("lo"), F.max("uplift").alias("hi"),
                                       F.stddev("uplift").alias("sd"),
                                       F.max(F.abs(F.col("uplift") - (F.col("p_control") - F.col("p_treatment"))))
                                       .alias("err")).first()
    assert stats is not None
    assert stats["lo"] < 0 < stats["hi"] and stats["sd"] > 0.01 and stats["err"] == 0
    # p_control is the untreated truth: churn_truth of the account at assigned_at
    truth = sim.churn_truth.withColumnRenamed("as_of_date", "assigned_at")
    joined = sim.intervention_truth.join(truth, ["account_id", "assigned_at"], "left")
    assert joined.where(~F.col("p_control").eqNullSafe(F.col("churn_probability"))).count() == 0


def test_observed_churn_difference_has_the_sign_of_the_true_uplift(spark: SparkSession) -> None:
    # 2,000 accounts, 3 years, four campaigns six months apart, every eligible account assigned, half treated
    settings = Settings(generate={  # type: ignore[arg-type]
        "accounts": 2000, "start": "2022-01-01", "end": "2024-12-31", "seed": 5, "history_months": 12,
        "events_per_account_month": 1.0, "campaigns": {"dates": ["2022-04-01", "2022-10-01", "2023-04-01",
                                                                  "2023-10-01"], "share": 1.0, "propensity": 0.5}})
    sim = simulate(spark, settings)
    try:
        assert sim.interventions is not None and sim.intervention_truth is not None
        labelled = campaigns.with_assignment_labels(sim.interventions, sim.subscriptions, sim.accounts,
                                                    settings.churn, dt.date(2024, 12, 31))
        rates = labelled.transform(campaigns.filter_labelled).groupBy("arm").agg(F.mean("label").alias("rate"))
        observed = {r["arm"]: r["rate"] for r in rates.collect()}
        true_row = sim.intervention_truth.agg(F.mean("uplift").alias("u")).first()
        assert true_row is not None
        difference = observed["control"] - observed["treatment"]
        assert true_row["u"] > 0 and difference > 0, (true_row["u"], observed)
        assert math.copysign(1, difference) == math.copysign(1, true_row["u"])
    finally:
        sim.sim.unpersist()
