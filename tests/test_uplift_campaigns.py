"""The campaign contract (`interventions`) and the outcome of an assignment (uplift/campaigns.py), on hand rows."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from churn_spark import check, io, schemas
from churn_spark.config import ChurnSettings, Settings
from churn_spark.uplift import campaigns

D = dt.date
RAW = ("campaign_id string, account_id string, assigned_at string, arm string, propensity string, channel string, "
       "cost string, delivered string")


def _rejected(out: io.Conformed) -> DataFrame:
    return out.rejected.select("reason", F.get_json_object("record", "$.account_id").alias("account_id"),
                               F.get_json_object("record", "$.arm").alias("arm"))


def test_reject_reasons_of_the_campaign_contract(spark: SparkSession) -> None:
    raw = spark.createDataFrame([
        ("c1", "a1", "2023-03-01", "treatment", "0.8", "email", "25", "true"),
        ("c1", "a1", "2023-03-01", "control", "0.8", "email", "0", "false"),  # same (campaign, account)
        (" c2 ", "a1", "2023-04-01", "treatment", "0.5", None, None, None),  # another campaign: fine
        ("c1", "a2", "2023-03-01", "holdout", "0.8", None, None, None),
        ("c1", "a3", "2023-03-01", "Treatment", "0.8", None, None, None),  # arms are exact
        ("c1", "a4", "2023-03-01", "control", "1", None, None, None),  # nobody could be held out
        ("c1", "a5", "2023-03-01", "control", "0", None, None, None),
        ("c1", "a6", "2023-03-01", "treatment", "0.8", "email", "-1", "true"),
        ("c1", "a7", "2023-03-01", "treatment", "0.8", "email", "25", "maybe"),
        ("c1", "a8", None, "control", "0.8", None, None, None),
        ("c1", "a9", "2023-03-01", "control", "lots", None, None, None),
    ], RAW)
    out = io.conform(raw, schemas.INTERVENTIONS, "interventions", key=("campaign_id", "account_id"))
    # duplicates: among the valid copies the first by all values is kept; "control" sorts before "treatment"
    expected = spark.createDataFrame([
        ("duplicate_campaign_id_account_id", "a1", "treatment"),
        ("unknown_arm", "a2", "holdout"),
        ("unknown_arm", "a3", "Treatment"),
        ("propensity_out_of_range", "a4", "control"),
        ("propensity_out_of_range", "a5", "control"),
        ("negative_cost", "a6", "treatment"),
        ("bad_type_delivered", "a7", "treatment"),
        ("missing_assigned_at", "a8", "control"),
        ("bad_type_propensity", "a9", "control"),
    ], "reason string, account_id string, arm string")
    assert_df_equality(_rejected(out), expected, ignore_row_order=True, ignore_nullable=True)
    good = spark.createDataFrame([
        ("c1", "a1", D(2023, 3, 1), "control", 0.8, "email", 0.0, False),
        ("c2", "a1", D(2023, 4, 1), "treatment", 0.5, None, None, None),
    ], schemas.INTERVENTIONS)
    assert_df_equality(out.good, good, ignore_row_order=True, ignore_nullable=True)


def _accounts(spark: SparkSession) -> DataFrame:
    created = dt.datetime(2023, 1, 1, 9, 30)
    return spark.createDataFrame([("a1", created), ("a2", created), ("a3", created)], schemas.ACCOUNTS)


def test_orphans_rejected_and_optional_columns_absent(spark: SparkSession, tmp_path: Path) -> None:
    # an export without channel, cost and delivered: they read as null; a1 is assigned under another name
    path = tmp_path / "interventions"
    path.mkdir()
    rows = [{"campaign": "c1", "account_id": "a1", "assigned_at": "01/03/2023", "arm": "treatment", "propensity": 0.8},
            {"campaign": "c1", "account_id": "zz", "assigned_at": "01/03/2023", "arm": "control", "propensity": 0.8}]
    (path / "part.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    settings = Settings(lakehouse=str(tmp_path), inputs={  # type: ignore[arg-type]
        "interventions": {"format": "json", "path": str(path), "columns": {"campaign_id": "campaign"},
                          "date_format": "dd/MM/yyyy"}})
    accounts = _accounts(spark)
    out = campaigns.read_interventions(spark, settings, accounts)
    expected = spark.createDataFrame([("c1", "a1", D(2023, 3, 1), "treatment", 0.8, None, None, None)],
                                     schemas.INTERVENTIONS)
    assert_df_equality(out.good, expected, ignore_nullable=True)
    assert io.reject_counts(out.rejected) == {"interventions": {"unknown_account_id": 1}}
    # churn-spark check applies the same rule across tables
    conformed = io.read_input(spark, settings, "interventions")
    assert conformed is not None
    checked = check.with_table_rules({"accounts": io.conform(accounts, schemas.ACCOUNTS, "accounts", key="account_id"),
                                      "interventions": conformed})
    assert io.reject_counts(checked["interventions"].rejected) == {"interventions": {"unknown_account_id": 1}}


def test_outcome_is_the_label_at_assigned_at_censored_and_ineligible_left_out(spark: SparkSession) -> None:
    subscriptions = spark.createDataFrame([
        ("s1", "a1", "pro", D(2023, 1, 1), D(2023, 6, 15), 100, 1, 1),  # ends within 6 months of 2023-03-01
        ("s2", "a2", "pro", D(2023, 1, 1), None, 100, 1, 1),  # open: never churns
        ("s3", "a3", "pro", D(2023, 1, 1), D(2023, 2, 1), 100, 1, 1),  # ended before 2023-03-01
    ], "subscription_id string, account_id string, product_id string, start_date date, end_date date, "
       "mrr int, quantity int, bill_period_months int").withColumn("mrr", F.col("mrr").cast("decimal(18,2)"))
    assignments = spark.createDataFrame([
        ("c1", "a1", D(2023, 3, 1), "treatment", 0.8, "email", 25.0, True),
        ("c1", "a2", D(2023, 3, 1), "control", 0.8, "email", 0.0, False),
        ("c1", "a3", D(2023, 3, 1), "control", 0.8, "email", 0.0, False),  # not eligible: no active subscription
        # data_end 2024-12-31: 2024-06-01 + 6 months + 30 days = 2024-12-31, not after it: labelled;
        # 2024-06-15 + 6 months + 30 days = 2025-01-14, after it: censored
        ("c2", "a2", D(2024, 6, 1), "treatment", 0.8, "email", 25.0, True),
        ("c3", "a2", D(2024, 6, 15), "treatment", 0.8, "email", 25.0, True),
    ], schemas.INTERVENTIONS)
    churn = ChurnSettings(horizon_months=6, grace_days=30)
    labelled = campaigns.with_assignment_labels(assignments, subscriptions, _accounts(spark), churn, D(2024, 12, 31))
    expected = spark.createDataFrame([  # tenure: 2023-01-01 -> 2023-03-01 is 59 days, -> 2024-06-01 is 517
        ("c1", "a1", D(2023, 3, 1), "treatment", 0.8, "email", 25.0, True, D(2023, 3, 1), 1, D(2023, 6, 15), 59),
        ("c1", "a2", D(2023, 3, 1), "control", 0.8, "email", 0.0, False, D(2023, 3, 1), 0, None, 59),
        ("c2", "a2", D(2024, 6, 1), "treatment", 0.8, "email", 25.0, True, D(2024, 6, 1), 0, None, 517),
    ], schemas.CAMPAIGN_OUTCOMES)
    out = labelled.transform(campaigns.filter_labelled)
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)
    assert campaigns.outcome_counts(labelled) == {"assignments": 5, "labelled": 3, "censored": 1, "ineligible": 1}


def test_outcome_status_with_a_null_row(spark: SparkSession) -> None:
    df = spark.createDataFrame([(1, 10), (None, 10), (None, None)], "label int, tenure_days int")
    out = df.select(campaigns.outcome_status(F.col("label"), F.col("tenure_days")).alias("s"))
    expected = spark.createDataFrame([("labelled",), ("censored",), ("ineligible",)], "s string")
    assert_df_equality(out, expected, ignore_nullable=True)
