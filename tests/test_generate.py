"""Generator: determinism (seed, partitioning), contracts, and the mechanism it promises.

One small dataset (300 accounts, 2 years, few events per month) is generated twice with different
partitioning and shuffle settings; the mechanism tests read the written tables back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, MapType, StringType, StructField, StructType
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from churn_spark import io, schemas
from churn_spark.config import Settings
from churn_spark.generate import run_generate, simulate
from churn_spark.generate.mechanism import GENERATED_ATTRIBUTES
from churn_spark.generate.rand import poisson, uniform
from churn_spark.lakehouse import Lakehouse

pytestmark = pytest.mark.slow  # the generator writes two small datasets

SMALL: dict[str, Any] = {
    "accounts": 300, "start": "2022-01-01", "end": "2023-12-31", "seed": 11, "events_per_account_month": 4.0,
    "event_files": 3, "history_months": 6, "duplicate_event_rate": 0.01, "malformed_event_rate": 0.01,
}
RAW = ("accounts", "subscriptions", "support_tickets", "churn_truth")


def _settings(root: str, **generate: Any) -> Settings:
    # the generated accounts' attributes declared, so the accounts contract checks them too
    return Settings(lakehouse=root, generate={**SMALL, **generate},
                    inputs={"account_attributes": list(GENERATED_ATTRIBUTES)})  # type: ignore[arg-type]


@dataclass(frozen=True)
class Run:
    settings: Settings
    summary: dict[str, Any]

    def table(self, spark: SparkSession, name: str) -> DataFrame:
        return spark.read.format("delta").load(Lakehouse.from_settings(self.settings).path(f"raw/{name}"))

    def lines(self, spark: SparkSession) -> DataFrame:
        return spark.read.text(Lakehouse.from_settings(self.settings).landing_events)


@pytest.fixture(scope="module")
def runs(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Run, Run]]:
    root = tmp_path_factory.mktemp("generate")
    a = _settings(str(root / "a"), partitions=1)
    first = Run(a, run_generate(spark, a))
    before = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", "5")
    try:
        b = _settings(str(root / "b"), partitions=3)
        second = Run(b, run_generate(spark, b))
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", before)
    yield first, second


# --- randomness helpers ------------------------------------------------------------------------


def test_poisson_inverse_cdf_by_hand(spark: SparkSession) -> None:
    # lambda = 2: cdf(0..6) = .1353 .4060 .6767 .8571 .9473 .9834 .9955
    df = spark.createDataFrame([(0.10,), (0.30,), (0.50,), (0.90,), (0.99,)], "u double")
    out = df.select("u", poisson(F.lit(2.0), F.col("u"), F.lit(0.0)).alias("n"))
    expected = spark.createDataFrame([(0.10, 0), (0.30, 1), (0.50, 2), (0.90, 4), (0.99, 6)], "u double, n int")
    assert_df_equality(out, expected, ignore_nullable=True)


def test_uniform_depends_only_on_seed_stream_and_keys(spark: SparkSession) -> None:
    df = spark.range(0, 1000, 1, 1).select("id", uniform(7, 3, F.col("id")).alias("u"))
    again = spark.range(0, 1000, 1, 4).select("id", uniform(7, 3, F.col("id")).alias("u"))
    assert_df_equality(df, again, ignore_row_order=True)
    stats = df.agg(F.min("u"), F.max("u"), F.avg("u")).first()
    assert stats[0] >= 0.0 and stats[1] < 1.0 and abs(stats[2] - 0.5) < 0.05
    other = spark.range(0, 1000, 1, 1).select("id", uniform(8, 3, F.col("id")).alias("u"))
    assert df.join(other, ["id", "u"]).count() == 0  # another seed gives other numbers


# --- determinism ---------------------------------------------------------------------------------


def test_same_seed_gives_identical_tables_whatever_the_partitioning(spark: SparkSession, runs: tuple[Run, Run]) -> None:
    a, b = runs
    for name in RAW:
        assert_df_equality(a.table(spark, name), b.table(spark, name), ignore_row_order=True)
    assert_df_equality(a.lines(spark), b.lines(spark), ignore_row_order=True)
    assert a.summary == b.summary
    assert a.summary["event_files"] == SMALL["event_files"]


def test_another_seed_gives_other_data(spark: SparkSession, runs: tuple[Run, Run]) -> None:
    a, _ = runs
    other = simulate(spark, _settings(a.settings.lakehouse, seed=12))
    ours = a.table(spark, "subscriptions")
    theirs = other.subscriptions
    assert ours.columns == theirs.columns
    assert ours.exceptAll(theirs).count() > 0.5 * ours.count()
    other.sim.unpersist()


# --- contracts -----------------------------------------------------------------------------------


def test_raw_tables_conform_to_their_contracts(spark: SparkSession, runs: tuple[Run, Run]) -> None:
    a, _ = runs
    for name in RAW:
        conformed = io.read_input(spark, a.settings, name)
        assert conformed is not None
        assert io.reject_counts(conformed.rejected) == {}
        assert conformed.good.count() == a.summary["rows"][name]
    ids = a.table(spark, "accounts").select("account_id")
    for name in ("subscriptions", "support_tickets", "churn_truth"):
        assert a.table(spark, name).join(ids, "account_id", "left_anti").count() == 0


def test_event_lines_follow_the_contract_except_the_planted_noise(spark: SparkSession, runs: tuple[Run, Run]) -> None:
    a, _ = runs
    as_strings = StructType([
        StructField("event_id", StringType()), StructField("account_id", StringType()),
        StructField("event_type", StringType()), StructField("event_time", StringType()),
        StructField("value", DoubleType()), StructField("properties", MapType(StringType(), StringType())),
    ])
    parsed = a.lines(spark).select(F.from_json("value", as_strings).alias("j")).select("j.*")
    # (no `key`: conform's duplicate ranking cannot order by the map column; duplicates counted below)
    conformed = io.conform(parsed, schemas.EVENTS, "events")
    s = a.summary
    assert io.reject_counts(conformed.rejected) == {"events": {
        "missing_event_id": s["malformed_lines"]["bad_json"],
        "missing_account_id": s["malformed_lines"]["missing_account_id"],
        "bad_type_event_time": s["malformed_lines"]["bad_timestamp"],
    }}
    assert all(v > 0 for v in s["malformed_lines"].values()) and s["duplicate_lines"] > 0
    copies = conformed.good.groupBy("event_id").agg(F.count(F.lit(1)).alias("n"), F.countDistinct(
        F.to_json(F.struct("account_id", "event_type", "event_time", "value", "properties"))).alias("versions"))
    assert copies.agg(F.sum(F.col("n") - 1), F.max("versions")).first() == (s["duplicate_lines"], 1)
    good = conformed.good.dropDuplicates(["event_id"])
    assert good.count() == s["events"]
    start, end = dt.datetime(2022, 1, 1), dt.datetime(2024, 1, 1)
    bounds = good.agg(F.min("event_time"), F.max("event_time")).first()
    assert start <= bounds[0] and bounds[1] < end
    types = {r[0] for r in good.select("event_type").distinct().collect()}
    assert {"login", "feature_use", "api_call", "error", "support_visit"} <= types
    # Every event happens while its account has a subscription.
    subs = a.table(spark, "subscriptions")
    covered = good.alias("e").join(
        subs.alias("s"),
        (F.col("e.account_id") == F.col("s.account_id")) & (F.to_date("e.event_time") >= F.col("s.start_date"))
        & (F.col("s.end_date").isNull() | (F.to_date("e.event_time") < F.col("s.end_date"))),
        "left_semi",
    )
    assert covered.count() == s["events"]


# --- mechanism -----------------------------------------------------------------------------------


def _labels(subs: pd.DataFrame, truth: pd.DataFrame, grace: int, horizon: int, data_end: dt.date) -> pd.DataFrame:
    """Observed churn within the horizon for each truth row, from subscriptions (grace-merged periods)."""
    periods: dict[str, list[tuple[dt.date, dt.date | None]]] = {}
    for acc, rows in subs.sort_values(["account_id", "start_date"]).groupby("account_id"):
        merged: list[list[Any]] = []
        for start, end in zip(rows["start_date"], rows["end_date"], strict=True):
            end = None if pd.isna(end) else end
            if merged and merged[-1][1] is not None and (start - merged[-1][1]).days <= grace:
                merged[-1][1] = end if end is None else max(end, merged[-1][1])
            else:
                merged.append([start, end])
        periods[acc] = [(p[0], p[1]) for p in merged]
    out = []
    for acc, day, prob in truth.itertuples(index=False):
        limit = (pd.Timestamp(day) + pd.DateOffset(months=horizon)).date()
        if limit + dt.timedelta(days=grace) > data_end:
            continue  # censored
        period = next(p for p in periods[acc] if p[0] <= day and (p[1] is None or day < p[1]))
        out.append((acc, day, prob, int(period[1] is not None and day < period[1] <= limit)))
    return pd.DataFrame(out, columns=["account_id", "as_of_date", "p", "churned"])


def test_low_engagement_accounts_churn_more(spark: SparkSession, runs: tuple[Run, Run]) -> None:
    a, _ = runs
    sim = simulate(spark, a.settings)
    first = sim.months.where("active_at_start AND month_start = DATE'2022-01-01'").select("account_id", "e_prev")
    subs = a.table(spark, "subscriptions")
    last_row = subs.groupBy("account_id").agg(F.max_by("end_date", "start_date").alias("end"))
    df = first.join(last_row, "account_id").toPandas()
    sim.sim.unpersist()
    df["decile"] = pd.qcut(df["e_prev"], 10, labels=False)
    churned = df.assign(gone=df["end"].notna()).groupby("decile")["gone"].mean()
    assert len(df) > 100
    assert churned[0] > churned[9] + 0.2


def test_ticket_tone_follows_engagement(spark: SparkSession, runs: tuple[Run, Run]) -> None:
    a, _ = runs
    sim = simulate(spark, a.settings)
    tickets = a.table(spark, "support_tickets").withColumn("month_start", F.trunc("opened_at", "month"))
    joined = tickets.join(sim.months.select("account_id", F.col("month_start").cast("date"), "e"),
                          ["account_id", "month_start"]).select("text", "e").toPandas()
    sim.sim.unpersist()
    vader = SentimentIntensityAnalyzer()
    joined["tone"] = [vader.polarity_scores(t)["compound"] for t in joined["text"]]
    assert len(joined) == a.summary["rows"]["support_tickets"]
    assert joined["tone"].corr(joined["e"]) > 0.3
    low, high = joined["e"].quantile([0.25, 0.75])
    assert joined.loc[joined["e"] <= low, "tone"].mean() < 0 < joined.loc[joined["e"] >= high, "tone"].mean()


def test_truth_is_a_probability_and_higher_for_actual_churners(spark: SparkSession, runs: tuple[Run, Run]) -> None:
    a, _ = runs
    truth = a.table(spark, "churn_truth").toPandas()
    subs = a.table(spark, "subscriptions").select("account_id", "start_date", "end_date").toPandas()
    assert truth["churn_probability"].between(0.0, 1.0).all()
    c = a.settings.churn
    labelled = _labels(subs, truth, c.grace_days, c.horizon_months, a.settings.generate.end)
    by_label = labelled.groupby("churned")["p"].mean()
    assert labelled["churned"].sum() > 20
    assert by_label[1] > 1.5 * by_label[0]
    # Calibrated on average: the mean truth is near the observed churn rate.
    assert abs(labelled["p"].mean() - labelled["churned"].mean()) < 0.4 * labelled["churned"].mean()
