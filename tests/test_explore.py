"""Exploration views on hand-made rows (expected values by hand), figures, the HTML page, and
`churn-spark explore` end to end on a small generated lakehouse."""

from __future__ import annotations

import base64
import datetime as dt
import re
from decimal import Decimal

import pandas as pd
import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession
from pyspark.sql.types import (
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from churn_spark import asof, schemas
from churn_spark.config import Settings, with_overrides
from churn_spark.errors import ChurnSparkError, ConfigError
from churn_spark.explore import plots as P
from churn_spark.explore import views as V
from churn_spark.explore.report import SECTIONS, Exploration, figures, png, render_html, scatter_pair

D1, D2 = dt.date(2023, 2, 1), dt.date(2023, 4, 1)

LABELS = StructType([
    StructField("account_id", StringType(), False), StructField("as_of_date", DateType(), False),
    StructField("label", IntegerType(), True),
])
ACCOUNTS = StructType([
    StructField("account_id", StringType(), False), StructField("created_at", TimestampType(), False),
    StructField("country", StringType(), True), StructField("channel", StringType(), True),
])
COUNTS = [StructField("eligible", LongType(), False), StructField("labelled", LongType(), False),
          StructField("churned", LongType(), False), StructField("censored", LongType(), False),
          StructField("churn_rate", DoubleType(), True)]


def ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


@pytest.fixture()
def labels(spark: SparkSession):  # type: ignore[no-untyped-def]
    return spark.createDataFrame([
        ("a1", D1, 1), ("a2", D1, 0), ("a3", D1, None),
        ("a1", D2, 0), ("a2", D2, 0),
    ], LABELS)


@pytest.fixture()
def accounts(spark: SparkSession):  # type: ignore[no-untyped-def]
    return spark.createDataFrame([
        ("a1", ts("2022-01-05 10:00:00"), "DE", "web"),
        ("a2", ts("2022-01-31 23:30:00"), "FR", None),
        ("a3", ts("2022-02-01 00:00:00"), "DE", "sales"),
    ], ACCOUNTS)


def test_churn_rate_by_snapshot_counts_censored_apart_from_the_rate(spark, labels) -> None:  # type: ignore[no-untyped-def]
    expected = spark.createDataFrame([(D1, 3, 2, 1, 1, 0.5), (D2, 2, 2, 0, 0, 0.0)],
                                     StructType([StructField("as_of_date", DateType(), False), *COUNTS]))
    assert_df_equality(V.churn_rate_by_snapshot(labels), expected, ignore_nullable=True)


def test_churn_rate_by_cohort_uses_the_utc_signup_month(spark, labels, accounts) -> None:  # type: ignore[no-untyped-def]
    # a1 and a2 signed up in January (23:30 UTC on the 31st is still January); a3 in February.
    expected = spark.createDataFrame(
        [(dt.date(2022, 1, 1), 2, 4, 4, 1, 0, 0.25), (dt.date(2022, 2, 1), 1, 1, 0, 0, 1, None)],
        StructType([StructField("signup_month", DateType(), True), StructField("accounts", LongType(), False),
                    *COUNTS]))
    assert_df_equality(V.churn_rate_by_cohort(labels, accounts), expected, ignore_nullable=True)


def test_churn_rate_by_attribute_has_a_row_per_value_and_names_missing(spark, labels, accounts) -> None:  # type: ignore[no-untyped-def]
    expected = spark.createDataFrame([
        ("channel", "(missing)", 2, 2, 0, 0, 0.0),
        ("channel", "sales", 1, 0, 0, 1, None),
        ("channel", "web", 2, 2, 1, 0, 0.5),
        ("country", "DE", 3, 2, 1, 1, 0.5),
        ("country", "FR", 2, 2, 0, 0, 0.0),
    ], StructType([StructField("attribute", StringType(), False), StructField("value", StringType(), False),
                   *COUNTS]))
    assert_df_equality(V.churn_rate_by_attribute(labels, accounts, ["country", "channel"]), expected,
                       ignore_nullable=True)
    # no attribute declared (the default): no rows, the same columns
    assert_df_equality(V.churn_rate_by_attribute(labels, accounts, []), expected.limit(0), ignore_nullable=True)


DATASET = StructType([
    StructField("account_id", StringType(), False), StructField("as_of_date", DateType(), False),
    StructField("label", IntegerType(), False), StructField("f1", DoubleType(), True),
    StructField("f2", DoubleType(), True), StructField("f3", DoubleType(), True),
])


@pytest.fixture()
def dataset(spark: SparkSession):  # type: ignore[no-untyped-def]
    # f1: churned 4, 6 / retained 0, 2 (std of [4,6,0,2] = sqrt(20/3)); f2 constant where finite;
    # f3 present in 2 rows of 4 (an infinite ratio counts as missing).
    return spark.createDataFrame([
        ("a", D1, 1, 4.0, 5.0, float("inf")),
        ("b", D1, 1, 6.0, 5.0, 1.0),
        ("c", D1, 0, 0.0, float("nan"), 3.0),
        ("d", D1, 0, 2.0, 5.0, None),
    ], DATASET)


def test_feature_separation_is_a_standardised_mean_difference(spark, dataset) -> None:  # type: ignore[no-untyped-def]
    std_f1 = (20 / 3) ** 0.5
    std_f3 = 2 ** 0.5  # values 1 and 3
    expected = spark.createDataFrame([
        ("f1", 5.0, 1.0, std_f1, 1.0, 4.0 / std_f1),
        ("f3", 1.0, 3.0, std_f3, 0.5, -2.0 / std_f3),
        ("f2", 5.0, 5.0, 0.0, 0.75, None),
    ], "feature string, mean_churned double, mean_retained double, std double, non_null_share double, "
       "separation double")
    actual = V.feature_separation(dataset, ["f1", "f2", "f3"])
    assert_df_equality(actual, expected, ignore_nullable=True, allow_nan_equality=True)


def test_top_features_skips_constant_and_mostly_missing_features() -> None:
    sep = pd.DataFrame({"feature": ["a", "b", "c", "d"], "separation": [0.2, -0.9, None, 0.5],
                        "non_null_share": [1.0, 1.0, 1.0, 0.2]})
    assert V.top_features(sep, 5) == ["b", "a"]
    assert V.top_features(sep, 1) == ["b"]
    assert V.top_features(sep, 5, min_non_null_share=0.1) == ["b", "d", "a"]


def test_feature_quantiles_per_class(spark: SparkSession) -> None:
    rows = [(f"r{i}", D1, 0, float(v), None, None) for i, v in enumerate([1, 2, 3, 4, 5])]
    rows += [("s1", D1, 1, 10.0, None, None), ("s2", D1, 1, 20.0, None, None)]
    df = spark.createDataFrame(rows, DATASET)
    expected = spark.createDataFrame([
        (0, "f1", 1.0, 2.0, 3.0, 4.0, 5.0, 3.0),
        (1, "f1", 10.0, 10.0, 10.0, 20.0, 20.0, 15.0),
    ], "label int, feature string, q05 double, q25 double, q50 double, q75 double, q95 double, mean double")
    assert_df_equality(V.feature_quantiles(df, ["f1"]), expected, ignore_nullable=True)


def test_feature_correlations_pairwise_on_rows_where_both_are_present(spark: SparkSession) -> None:
    df = spark.createDataFrame([
        ("a", D1, 0, 1.0, 2.0, 4.0), ("b", D1, 0, 2.0, 4.0, 3.0), ("c", D1, 1, 3.0, 6.0, 2.0),
        ("d", D1, 1, 4.0, 8.0, 1.0), ("e", D1, 1, None, 1.0, 100.0),
    ], DATASET)
    actual = V.feature_correlations(df, ["f1", "f2", "f3"])
    # f1-f2 and f1-f3 ignore row e (f1 missing); f2-f3 includes it.
    f2 = [2.0, 4.0, 6.0, 8.0, 1.0]
    f3 = [4.0, 3.0, 2.0, 1.0, 100.0]
    r23 = pd.Series(f2).corr(pd.Series(f3))
    got = {(r["feature_a"], r["feature_b"]): r["correlation"] for r in actual.collect()}
    assert got.keys() == {("f1", "f2"), ("f1", "f3"), ("f2", "f3")}
    assert got[("f1", "f2")] == pytest.approx(1.0)
    assert got[("f1", "f3")] == pytest.approx(-1.0)
    assert got[("f2", "f3")] == pytest.approx(r23)
    assert V.feature_correlations(df, ["f1"]).collect() == []


def test_scatter_sample_keeps_rows_with_both_features(spark: SparkSession, dataset) -> None:  # type: ignore[no-untyped-def]
    actual = V.scatter_sample(dataset, "f1", "f3", {0: 2, 1: 2}, per_class=10, seed=1)
    expected = spark.createDataFrame([(1, 6.0, 1.0), (0, 0.0, 3.0)], "label int, f1 double, f3 double")
    assert_df_equality(actual, expected, ignore_nullable=True, ignore_row_order=True)
    assert V.sample_fraction(100, 1000) == 1.0
    assert V.sample_fraction(4000, 1000) == 0.25


def test_to_pandas_refuses_data_sized_results(spark: SparkSession, labels) -> None:  # type: ignore[no-untyped-def]
    assert len(V.to_pandas(labels, max_rows=5)) == 5
    with pytest.raises(V.TooManyRows):
        V.to_pandas(labels, max_rows=4)


# --- the churn definition ------------------------------------------------------------------------


def subscriptions_df(spark: SparkSession):  # type: ignore[no-untyped-def]
    def sub(sid: str, acc: str, start: str, end: str | None):  # type: ignore[no-untyped-def]
        return (sid, acc, "p1", dt.date.fromisoformat(start), dt.date.fromisoformat(end) if end else None,
                Decimal("10.00"), 1, 1)

    # A: a 17-day lapse between two subscriptions (bridged by a 30-day grace, not by 0); B, C: open.
    return spark.createDataFrame([
        sub("s1", "A", "2023-01-01", "2023-03-15"), sub("s2", "A", "2023-04-01", "2023-06-15"),
        sub("s3", "B", "2022-06-01", None), sub("s4", "C", "2023-01-20", None),
    ], schemas.SUBSCRIPTIONS)


def test_label_rate_by_definition_recomputes_labels_per_variant(spark: SparkSession, settings: Settings) -> None:
    accounts = spark.createDataFrame([("A", ts("2022-12-01 00:00:00")), ("B", ts("2022-06-01 00:00:00")),
                                      ("C", ts("2023-01-20 08:00:00"))], schemas.ACCOUNTS)
    base = with_overrides(settings, {"churn.horizon_months": 6, "churn.grace_days": 30})
    variants = V.definition_variants(base, [3], [0])
    assert [(v.churn.horizon_months, v.churn.grace_days) for v in variants] == [(3, 0), (3, 30), (6, 0), (6, 30)]
    snaps = asof.snapshot_frame(spark, [D1, D2])
    actual = V.label_rate_by_definition(subscriptions_df(spark), accounts, snaps, variants, dt.date(2023, 9, 1))
    # eligible: A, B, C at both snapshots. D2 + 6 months (+ grace) passes data_end: censored.
    # (3, 0): A churns at D1 (period ends 03-15) and at D2 (06-15 <= 07-01).
    # (3, 30): at D1 A's merged period ends 06-15 > 05-01: retained; at D2 churned.
    # (6, g): A churns at D1; D2 censored.
    expected = spark.createDataFrame([
        (3, 0, 6, 6, 2, 0, 1 / 3, 1.0, 2.0),
        (3, 30, 6, 6, 1, 0, 1 / 6, 1.0, 5.0),
        (6, 0, 6, 3, 1, 3, 1 / 3, 0.5, 2.0),
        (6, 30, 6, 3, 1, 3, 1 / 3, 0.5, 2.0),
    ], "horizon_months int, grace_days int, eligible long, labelled long, churned long, censored long, "
       "churn_rate double, labelled_share double, retained_per_churner double")
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_definition_variants_are_validated_like_the_config(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="horizon_months"):
        V.definition_variants(settings, [0], [30])


# --- figures and the page ------------------------------------------------------------------------


def small_exploration() -> Exploration:
    by_snapshot = pd.DataFrame({"as_of_date": [D1, D2], "eligible": [3, 2], "labelled": [2, 2], "churned": [1, 0],
                                "censored": [1, 0], "churn_rate": [0.5, 0.0]})
    by_cohort = pd.DataFrame({"signup_month": [dt.date(2022, 1, 1), dt.date(2022, 2, 1)], "accounts": [2, 1],
                              "eligible": [4, 1], "labelled": [4, 0], "churned": [1, 0], "censored": [0, 1],
                              "churn_rate": [0.25, None]})
    by_attribute = pd.DataFrame({"attribute": ["country", "country", "channel"], "value": ["DE", "FR", "web"],
                                 "eligible": [3, 2, 2], "labelled": [2, 2, 2], "churned": [1, 0, 1],
                                 "censored": [1, 0, 0], "churn_rate": [0.5, 0.0, 0.5]})
    separation = pd.DataFrame({"feature": ["f1", "f3"], "mean_churned": [5.0, 1.0], "mean_retained": [1.0, 3.0],
                               "std": [2.58, 1.41], "non_null_share": [1.0, 0.5], "separation": [1.55, -1.41]})
    quantiles = pd.DataFrame({"label": [0, 1, 0, 1], "feature": ["f1", "f1", "f3", "f3"],
                              "q05": [0.0, 4.0, 3.0, 1.0], "q25": [0.0, 4.0, 3.0, 1.0], "q50": [1.0, 5.0, 3.0, 1.0],
                              "q75": [2.0, 6.0, 3.0, 1.0], "q95": [2.0, 6.0, 3.0, 1.0], "mean": [1.0, 5.0, 3.0, 1.0]})
    definitions = pd.DataFrame({"horizon_months": [3, 6], "grace_days": [30, 30], "eligible": [6, 6],
                                "labelled": [6, 3], "churned": [1, 1], "censored": [0, 3],
                                "churn_rate": [1 / 6, 1 / 3], "labelled_share": [1.0, 0.5],
                                "retained_per_churner": [5.0, 2.0]})
    return Exploration(
        by_snapshot=by_snapshot, by_cohort=by_cohort, by_attribute=by_attribute, separation=separation,
        key_features=["f1", "f3"], quantiles=quantiles,
        correlations=pd.DataFrame({"feature_a": ["f1"], "feature_b": ["f3"], "correlation": [-0.8]}),
        correlation_features=["f1", "f3"],
        scatter=pd.DataFrame({"label": [0, 1, 1], "f1": [0.0, 4.0, 6.0], "f3": [3.0, 1.0, 1.5]}),
        scatter_xy=("f1", "f3"), definitions=definitions, configured_definition=(6, 30),
        model={"version": "v1", "model_type": "gbt", "trained_now": True,
               "metrics": {"roc_auc": 0.81, "pr_auc": 0.4},
               "splits": {"test": {"from": "2023-01-01", "to": "2023-03-01", "snapshots": 3, "rows": 10,
                                   "label_rate": 0.2}},
               "explanation": {"kind": "importances", "values": {"f1": 0.7, "f3": 0.3}}},
        context={"lakehouse": "/tmp/lake", "data_end": "2023-09-01", "table_versions": {},
                 "labelled_rows": 4, "churned_rows": 1, "numeric_features": 2},
    )


def test_figures_draw_the_views() -> None:
    ex = small_exploration()
    figs = figures(ex)
    assert list(figs) == [key for key, *_ in SECTIONS]
    rate_line = figs["over_time"].axes[1].get_lines()[0]  # type: ignore[union-attr]
    assert list(rate_line.get_ydata()) == [0.5, 0.0]
    cohort_bars = [p.get_height() for p in figs["cohort"].axes[0].patches]  # type: ignore[union-attr]
    assert cohort_bars == [0.25, 0.0]
    heat = figs["correlations"].axes[0].images[0].get_array()  # type: ignore[union-attr]
    assert heat.tolist() == [[1.0, -0.8], [-0.8, 1.0]]
    assert all(png(f)[:8] == b"\x89PNG\r\n\x1a\n" for f in figs.values())


def test_correlation_matrix_is_symmetric_with_unit_diagonal() -> None:
    pairs = pd.DataFrame({"feature_a": ["a", "a", "b"], "feature_b": ["b", "c", "c"], "correlation": [0.5, None, -0.2]})
    m = P.correlation_matrix(pairs, ["a", "b", "c"])
    assert m.loc["b", "a"] == 0.5 and m.loc["c", "b"] == -0.2 and m.loc["a", "a"] == 1.0
    assert pd.isna(m.loc["c", "a"])


def test_render_html_is_self_contained_with_one_png_per_section() -> None:
    ex = small_exploration()
    images = {k: png(f) for k, f in figures(ex).items()}
    page = render_html(ex, images)
    srcs = re.findall(r'<img[^>]*src="([^"]+)"', page)
    assert len(srcs) == len(SECTIONS)
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert base64.b64decode(srcs[0].split(",", 1)[1]) == images["over_time"]
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    assert not re.search(r"(https?:)?//[a-z]", text) and set(re.findall(r"(?:src|href)=\"([^\"]*)\"", text)) == {""}
    assert "<link" not in page and "<script" not in page
    assert "How the churn definition changes the labels" in page and "roc_auc" in page


def test_scatter_pair_skips_near_duplicates_of_the_best_feature() -> None:
    assert scatter_pair(["x"], ["a", "x", "b"]) == ("x", "a")
    assert scatter_pair(["x", "y", "z"], ["a"]) == ("x", "y")
    corr = pd.DataFrame({"feature_a": ["x", "x", "y"], "feature_b": ["y", "z", "z"], "correlation": [0.95, -0.3, 0.1]})
    assert scatter_pair(["x", "y", "z"], [], corr) == ("x", "z")
    everything_alike = corr.assign(correlation=[0.95, -0.9, 0.1])
    assert scatter_pair(["x", "y", "z"], [], everything_alike) == ("x", "y")
    with pytest.raises(ChurnSparkError):
        scatter_pair(["x"], [])


def test_count_features_are_jittered_for_the_scatter() -> None:
    counts = pd.Series([0, 1, 1, 2] * 5)
    spread = P.jittered(counts, seed=3)
    assert P.is_discrete(counts) and not P.is_discrete(pd.Series([0.5, 1.0]))
    assert (spread - counts).abs().max() <= 0.3 and spread.nunique() == len(counts)
    continuous = pd.Series([0.5, 1.25, 2.0])
    assert P.jittered(continuous, seed=3).equals(continuous)


def test_default_report_path_is_under_the_lakehouse_reports(settings: Settings) -> None:
    from churn_spark.explore.report import default_report_path

    assert default_report_path(settings) == f"{settings.lakehouse}/reports/explore.html"
