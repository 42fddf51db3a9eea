"""The pure pieces of `uplift train` (uplift/job.py): the split by campaign date, the assignment rows, the feature
list, the per-arm minimum, and the `uplift:` settings the CLI flags and jobs/uplift_train.py override."""

from __future__ import annotations

import datetime as dt

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from churn_spark.cli import entrypoint_argv
from churn_spark.config import Settings, with_overrides
from churn_spark.errors import ConfigError, ContractError
from churn_spark.train import pipeline as P
from churn_spark.uplift import job as J

D = dt.date


def test_split_by_campaign_date_keeps_the_label_gap() -> None:
    dates = [D(2022, 4, 1), D(2022, 7, 1), D(2022, 10, 1), D(2023, 1, 1), D(2022, 7, 1)]
    # test = 2023-01-01; label windows (D, D + 3 months + 10 days]: 2022-04-01 -> 07-11 and 2022-07-01 -> 10-11
    # end by it, 2022-10-01 -> 2023-01-11 does not
    assert J.plan_campaign_split(dates, 3, 10, 1) == ([D(2022, 4, 1), D(2022, 7, 1)], [D(2023, 1, 1)])
    assert J.plan_campaign_split(dates, 1, 0, 2) == ([D(2022, 4, 1), D(2022, 7, 1)],
                                                      [D(2022, 10, 1), D(2023, 1, 1)])
    with pytest.raises(ConfigError, match="more than 1 campaign date"):
        J.plan_campaign_split([D(2022, 4, 1)], 3, 0, 1)
    with pytest.raises(ConfigError, match="no training campaign"):
        J.plan_campaign_split([D(2022, 4, 1), D(2022, 5, 1)], 3, 0, 1)


def test_assignment_rows_join_features_at_assignment_and_truth(spark: SparkSession) -> None:
    outcomes = spark.createDataFrame([
        ("c1", "a1", D(2023, 1, 1), "treatment", 0.8, 1, 40),
        ("c1", "a2", D(2023, 1, 1), "control", 0.8, 0, 90),
        ("c1", "a3", D(2023, 1, 1), "control", 0.8, 0, 10),  # no feature row: dropped
    ], "campaign_id string, account_id string, as_of_date date, arm string, propensity double, label int, "
       "tenure_days int")
    features = spark.createDataFrame([
        ("a1", D(2023, 1, 1), 40, 3.0), ("a2", D(2023, 1, 1), 90, 5.0), ("a1", D(2022, 12, 1), 9, 1.0),
    ], "account_id string, as_of_date date, tenure_days int, logins double")
    truth = spark.createDataFrame([("c1", "a1", 0.3), ("c2", "a2", 0.9)], "campaign_id string, account_id string, "
                                                                          "uplift double")
    got = J.with_true_uplift(J.assignment_rows(outcomes, features), truth)
    # the features' tenure (at assigned_at) is the one kept; a2's truth belongs to another campaign
    expected = spark.createDataFrame([
        ("c1", "a1", D(2023, 1, 1), "treatment", 0.8, 1, 40, 3.0, 1, 0.3),
        ("c1", "a2", D(2023, 1, 1), "control", 0.8, 0, 90, 5.0, 0, None),
    ], "campaign_id string, account_id string, as_of_date date, arm string, propensity double, label int, "
       "tenure_days int, logins double, treated int, true_uplift double")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_column_order=True, ignore_nullable=True)


def test_arm_columns_drop_a_column_empty_in_one_arm_and_flag_gaps_in_either(spark: SparkSession) -> None:
    rows = spark.createDataFrame([  # treated, rare (no value among the control rows), gappy (a gap in control)
        (1, 1.0, 2.0, "pro"), (1, None, 3.0, "pro"), (0, None, None, "basic"), (0, None, 1.0, None),
    ], "treated int, rare double, gappy double, plan string")
    cols = J.arm_columns(rows, P.FeatureColumns(["rare", "gappy"], ["plan"]), indicators=True, cycles={"rare": 7})
    assert cols == P.FeatureColumns(["gappy"], ["plan"], ["gappy"], {})


def test_restricted_columns_keep_the_listed_features_in_order() -> None:
    cols = P.FeatureColumns(["tenure_days", "logins", "seats"], ["plan", "country"], ["logins", "seats"],
                            {"tenure_days": 365})
    assert J.restricted_columns(cols, ["seats", "plan", "tenure_days"]) == P.FeatureColumns(
        ["tenure_days", "seats"], ["plan"], ["seats"], {"tenure_days": 365})
    assert J.restricted_columns(cols, None) == cols


def test_too_few_assignments_in_an_arm_is_one_clear_error(spark: SparkSession) -> None:
    rows = spark.createDataFrame([(1,), (1,), (1,), (0,), (0,)], "treated int")
    J.check_arm_rows(rows, 2)
    with pytest.raises(ContractError, match=r"at least 3 assignments per arm \(uplift.min_rows_per_arm\): 3 "
                                            r"treated and 2 control"):
        J.check_arm_rows(rows, 3)


def test_uplift_settings_defaults_overrides_and_one_line_errors() -> None:
    u = Settings().uplift
    assert (u.learner, u.compare, u.family, u.test_dates, u.max_features, u.folds) == (
        "x_learner", ["t_learner", "transformed_outcome"], "lr", 1, 20, 3)
    s = with_overrides(Settings(), {"uplift.learner": "t_learner", "uplift.test_dates": 2, "uplift.family": None})
    assert (s.uplift.learner, s.uplift.test_dates, s.uplift.family) == ("t_learner", 2, "lr")
    with pytest.raises(ConfigError, match=r"^invalid config: uplift.learner: Input should be 't_learner', "):
        with_overrides(Settings(), {"uplift.learner": "s_learner"})
    with pytest.raises(ConfigError, match=r"^invalid config: uplift.folds: Input should be greater than or equal"):
        with_overrides(Settings(), {"uplift.folds": 1})


def test_the_job_entrypoint_is_the_cli_subcommand() -> None:
    # jobs/uplift_train.py passes ["train", *argv] as the `uplift` command's arguments; global flags move first
    assert entrypoint_argv("uplift", ["train", "--learner", "t_learner", "--config", "c.yaml"]) == [
        "--config", "c.yaml", "uplift", "train", "--learner", "t_learner"]


def test_a_bad_learner_flag_fails_before_any_spark_work(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("uplift_train_job", Path(__file__).parents[1] / "jobs" /
                                                  "uplift_train.py")
    assert spec is not None and spec.loader is not None
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    assert job.main(["--learner", "s_learner"]) != 0
    assert "uplift.learner: Input should be" in capsys.readouterr().err


def test_both_target_lists_are_valued_by_the_uplift_model(spark: SparkSession) -> None:
    from churn_spark.config import TargetingSettings

    scored = spark.createDataFrame([
        ("u1", 0.75, 100.0, 0.25), ("u2", 0.875, 100.0, -0.125), ("u3", 0.125, 40.0, 0.5), ("u4", 0.5, 20.0, 0.0),
    ], "account_id string, churn_probability double, mrr double, predicted_uplift double").withColumn(
        "uplift", F.col("predicted_uplift"))
    t = TargetingSettings(cost_per_contact=10.0, success_rate=0.5, value_months=10.0, max_contacts=2)
    # risk EV = p * .5 * mrr * 10 - 10: u2 427.5, u1 365, u4 40, u3 15 -> u2 + u1; their uplift -.125 + .25
    assert J.targeting_totals(scored, t.model_copy(update={"mode": "risk"})) == {
        "mode": "risk", "contacts": 2, "cost": 20.0, "expected_value": 792.5, "expected_saved_churners": 0.125}
    # uplift EV = uplift * mrr * 10 - 10: u1 240, u3 190 (u2 and u4 never: uplift <= 0) -> .25 + .5
    assert J.targeting_totals(scored, t.model_copy(update={"mode": "uplift"})) == {
        "mode": "uplift", "contacts": 2, "cost": 20.0, "expected_value": 430.0, "expected_saved_churners": 0.75}
