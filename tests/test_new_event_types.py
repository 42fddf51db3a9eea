"""A never-seen event type arriving after the feature set was first built: ingested from the landing
folder into bronze, reported by features and score as `new_event_types`, ignored by the features (no
new columns, not even in the any-type counts), and the features write and scoring of the next date
keep working.

Four accounts; D1 = 2023-07-01 is built first (event types login, page_view get frozen), then a
`webinar` type appears in July and D2 = 2023-08-01 is built and scored, with a fifth account whose
country and channel the model never saw.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from chispa import assert_df_equality
from conftest import TEST_SPARK
from featuredata import D, T, accounts, subs
from modeldata import register, train_on_stored
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from churn_spark.config import Settings, with_overrides
from churn_spark.features import catalog as cat
from churn_spark.features.job import run_features
from churn_spark.ingest import run_ingest
from churn_spark.lakehouse import Lakehouse
from churn_spark.score.job import run_score

pytestmark = pytest.mark.slow  # ingest twice, features twice, a model, a scoring run

D1, D2 = D(2023, 7, 1), D(2023, 8, 1)
OVERRIDES: dict[str, Any] = {
    "churn.lookback_months": 2, "churn.horizon_months": 1,
    "features.windows_days": [7, 28], "features.trend_windows_days": [7], "features.per_seat_windows_days": [7],
    "features.change_windows_days": [28], "inputs.support_tickets.enabled": False,
    "scoring.drift_top_features": 3, "scoring.targeting.max_contacts": 2,
}
IDS = ["a1", "a2", "a3", "a4"]
JUNE = [("e1", "a1", "login", T(2023, 6, 28, 9)), ("e2", "a1", "login", T(2023, 6, 29, 9)),
        ("e3", "a1", "login", T(2023, 6, 30, 9)), ("e4", "a1", "page_view", T(2023, 6, 15, 9)),
        ("e5", "a2", "login", T(2023, 6, 30, 10)), ("e6", "a3", "login", T(2023, 6, 10, 9)),
        ("e7", "a3", "login", T(2023, 6, 30, 11))]
JULY = [("e8", "a1", "webinar", T(2023, 7, 20, 9)), ("e9", "a1", "webinar", T(2023, 7, 21, 9)),
        ("e10", "a2", "webinar", T(2023, 7, 31, 9)), ("e11", "a3", "login", T(2023, 7, 31, 12))]


def _land(lake: Lakehouse, name: str, rows: list[tuple[str, str, str, dt.datetime]]) -> None:
    folder = Path(lake.landing_events)
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"event_id": e, "account_id": a, "event_type": t, "event_time": ts.isoformat() + "Z"})
             for e, a, t, ts in rows]
    (folder / name).write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def runs(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    s = with_overrides(Settings(lakehouse=str(tmp_path_factory.mktemp("newtypes") / "lakehouse"), spark=TEST_SPARK),
                       OVERRIDES)
    lake = Lakehouse.from_settings(s)
    attrs = ("country", "channel", "industry")
    # a5 signs up in July with attribute values the model never saw (country JP, channel partner).
    accounts(spark, [(a, T(2023, 1, 1), "DE", "web", "retail") for a in IDS] + [("a5", T(2023, 7, 10), "JP",
                                                                              "partner", "retail")], attrs) \
        .write.format("delta").save(lake.raw_accounts)
    subs(spark, [(f"s-{a}", a, D(2023, 1, 1), None) for a in IDS] + [("s-a5", "a5", D(2023, 7, 10), None)]) \
        .write.format("delta").save(lake.raw_subscriptions)
    _land(lake, "june.jsonl", JUNE)
    run_ingest(spark, s, once=True)
    first = run_features(spark, with_overrides(s, {"churn.snapshots.start": D1, "churn.snapshots.end": D1}))
    model, meta = train_on_stored(spark, s, {"a1": 0, "a2": 0, "a3": 1, "a4": 1}, [D1])
    register(spark, s, "v1", model, meta, current=True)
    _land(lake, "july.jsonl", JULY)
    ingest = run_ingest(spark, s, once=True)
    second = run_features(spark, with_overrides(s, {"churn.snapshots.start": D2, "churn.snapshots.end": D2}))
    score = run_score(spark, s, D2)
    return {"settings": s, "lake": lake, "first": first, "ingest": ingest, "second": second, "score": score}


def test_the_new_type_reaches_bronze(spark: SparkSession, runs: dict[str, Any]) -> None:
    bronze = spark.read.format("delta").load(runs["lake"].bronze_events)
    assert bronze.where(F.col("event_type") == "webinar").count() == 3


def test_features_keep_the_frozen_types_and_report_the_new_one(spark: SparkSession, runs: dict[str, Any]) -> None:
    first, second = runs["first"], runs["second"]
    assert (first["event_types"], first["event_types_source"], first["new_event_types"]) == (
        ["login", "page_view"], "discovered", [])
    assert (second["event_types"], second["event_types_source"], second["new_event_types"]) == (
        ["login", "page_view"], "recorded", ["webinar"])
    features = spark.read.format("delta").load(runs["lake"].churn_features)
    assert not [c for c in features.columns if "webinar" in c]
    # Any-type events in [2023-07-04, 2023-08-01) at D2: the webinars are not counted, a3's login is.
    got = features.where(F.col("as_of_date") == D2).select("account_id", cat.count_col(cat.ANY_TYPE, 28))
    expected = spark.createDataFrame([("a1", 0.0), ("a2", 0.0), ("a3", 1.0), ("a4", 0.0), ("a5", 0.0)],
                                     f"account_id string, {cat.count_col(cat.ANY_TYPE, 28)} double")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_scoring_the_next_date_works_and_reports_the_new_type(spark: SparkSession, runs: dict[str, Any]) -> None:
    score = runs["score"]
    assert score["counts"]["scored"] == 5  # a5, with never-seen attribute values, is scored too
    a5 = spark.read.format("delta").load(runs["lake"].churn_scores).where("account_id = 'a5'").first()
    assert a5 is not None and 0.0 < a5["churn_probability"] < 1.0
    assert score["new_event_types"] == ["webinar"]
    # The features job had just written D2 with this configuration: scoring reused that slice.
    assert score["features"]["source"] == "reused"
    assert score["features"]["features_version"] == runs["second"]["features_version"]
