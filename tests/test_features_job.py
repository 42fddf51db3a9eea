"""The features job end to end on a tiny lakehouse: tables, catalogue, summary, idempotence, composition, cost."""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil

import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from conftest import TEST_SPARK
from featuredata import D, T, accounts, events, subs, tickets, write_inputs
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from churn_spark import io
from churn_spark.config import Settings, with_overrides
from churn_spark.features import catalog as cat
from churn_spark.features.account import attribute_dtypes
from churn_spark.features.job import (
    ATTRIBUTES_STATIC,
    attributes_summary,
    build_labels_and_features,
    labels_and_features,
    load_inputs,
    run_features,
)
from churn_spark.lakehouse import Lakehouse
from churn_spark.schemas import CHURN_LABEL_VALUES, FEATURE_KEY_COLUMNS

pytestmark = pytest.mark.slow  # the features job end to end on written inputs

SMALL = {
    "features.windows_days": [7, 28], "features.trend_windows_days": [7], "features.per_seat_windows_days": [7],
    "features.change_windows_days": [28], "churn.lookback_months": 1, "churn.horizon_months": 1,
    "churn.grace_days": 10, "inputs.account_attributes": ["country"],
}


def make_settings(root: str, start: str, end: str, **extra: object) -> Settings:
    return with_overrides(Settings(lakehouse=root, spark=TEST_SPARK),
                          {**SMALL, "churn.snapshots.start": start, "churn.snapshots.end": end, **extra})


def seed_lake(spark: SparkSession, settings: Settings) -> None:
    acc = accounts(spark, [("a1", T(2022, 1, 5), "DE"), ("a2", T(2022, 6, 1), "FR"), ("a3", T(2023, 2, 10), None)],
                   ("country",))
    sb = subs(spark, [("s1", "a1", D(2022, 1, 5), D(2023, 1, 5)), ("s2", "a1", D(2023, 1, 5), None, 150, 2, "pro", 12),
                      ("s3", "a2", D(2022, 6, 1), D(2023, 2, 15)), ("s4", "a3", D(2023, 2, 10), None)])
    ev = events(spark, [("e1", "a1", "login", T(2022, 12, 30, 10)), ("e2", "a1", "login", T(2022, 12, 31, 10)),
                        ("e3", "a1", "report", T(2022, 12, 20), 2.5), ("e4", "a2", "login", T(2023, 1, 15)),
                        ("e5", "a1", "login", T(2023, 2, 28, 23, 59)), ("e6", "a2", "login", T(2023, 4, 2))])
    tk = tickets(spark, [("t1", "a1", T(2022, 12, 20), T(2022, 12, 21), "high", "This is awful"),
                         ("t2", "a2", T(2023, 1, 20), T(2023, 3, 5), "low", "thanks, great")])
    write_inputs(settings, acc, sb, ev, tk)


def table(spark: SparkSession, path: str) -> DataFrame:
    return spark.read.format("delta").load(path)


@pytest.fixture(scope="module")
def lakes(spark, tmp_path_factory):  # type: ignore[no-untyped-def]
    """lake 'all': Jan..Mar in one run, then again; lake 'parts': Jan..Feb then Mar."""
    out = {}
    for name in ("all", "parts"):
        root = str(tmp_path_factory.mktemp(name) / "lake")
        seed_lake(spark, make_settings(root, "2023-01-01", "2023-03-01"))
        out[name] = root
    whole = make_settings(out["all"], "2023-01-01", "2023-03-01")
    first = run_features(spark, whole)
    lake = Lakehouse.from_settings(whole)
    snapshot_1 = (table(spark, lake.churn_labels).collect(), table(spark, lake.churn_features).collect())
    again = run_features(spark, whole)
    run_features(spark, make_settings(out["parts"], "2023-01-01", "2023-02-01"))
    run_features(spark, make_settings(out["parts"], "2023-03-01", "2023-03-01"))
    return {"roots": out, "first": first, "again": again, "snapshot_1": snapshot_1, "settings": whole}


def test_labels_and_summary_hand_computed(spark, lakes):
    lake = Lakehouse.from_settings(lakes["settings"])
    # data_end = last event day 2023-04-02; D + 1 month + 10 days <= data_end only for 2023-01-01 and 2023-02-01
    want = spark.createDataFrame([
        ("a1", D(2023, 1, 1), 0, None, 361), ("a2", D(2023, 1, 1), 0, None, 214),
        ("a1", D(2023, 2, 1), 0, None, 392), ("a2", D(2023, 2, 1), 1, D(2023, 2, 15), 245),
        ("a1", D(2023, 3, 1), None, None, 420), ("a3", D(2023, 3, 1), None, None, 19),
    ], "account_id string, as_of_date date, label int, churn_date date, tenure_days int")
    got = table(spark, lake.churn_labels).select(*CHURN_LABEL_VALUES.fieldNames())  # definition: test below
    assert_df_equality(got, want, ignore_row_order=True, ignore_nullable=True)
    result = lakes["first"]
    assert result["data_end"] == "2023-04-02" and result["event_types"] == ["login", "report"]
    assert result["per_snapshot"] == [
        {"as_of_date": "2023-01-01", "eligible": 2, "churned": 0, "censored": 0, "label_rate": 0.0, "feature_rows": 2},
        {"as_of_date": "2023-02-01", "eligible": 2, "churned": 1, "censored": 0, "label_rate": 0.5, "feature_rows": 2},
        {"as_of_date": "2023-03-01", "eligible": 2, "churned": 0, "censored": 2, "label_rate": None, "feature_rows": 2},
    ]
    assert result["support"] == "enabled" and result["censored_rows"] == 2 and result["label_rows"] == 6
    assert result["attributes"] == ATTRIBUTES_STATIC  # no history input: attributes assumed static
    # tickets_open: only a2 at 2023-02-01 (t2 closed after D) -> 1 of 6 rows non-zero, never null
    assert result["null_rate"]["tickets_open"] == 0.0
    assert result["null_rate"]["days_since_last_event"] == pytest.approx(3 / 6, abs=1e-4)


# SMALL's churn settings as canonical JSON (sorted keys), and its sha256 cut to 16 hex digits
DEFINITION = ('{"censoring": "null when as_of_date + horizon_months + grace_days is after data_end", '
              '"grace_days": 10, "horizon_months": 1, "min_tenure_days": 0}')


def _fingerprint(definition: str) -> str:
    return hashlib.sha256(definition.encode()).hexdigest()[:16]


def test_every_label_row_records_its_definition_and_another_horizon_another_fingerprint(spark, lakes, tmp_path):
    lake = Lakehouse.from_settings(lakes["settings"])
    fp = _fingerprint(DEFINITION)
    got = table(spark, lake.churn_labels).select("account_id", "as_of_date", "data_end", "definition",
                                                 "definition_fingerprint")
    keys = [("a1", D(2023, 1, 1)), ("a2", D(2023, 1, 1)), ("a1", D(2023, 2, 1)), ("a2", D(2023, 2, 1)),
            ("a1", D(2023, 3, 1)), ("a3", D(2023, 3, 1))]
    want = spark.createDataFrame([(a, d, D(2023, 4, 2), DEFINITION, fp) for a, d in keys],
                                 "account_id string, as_of_date date, data_end date, definition string, "
                                 "definition_fingerprint string")
    assert_df_equality(got, want, ignore_row_order=True, ignore_nullable=True)
    assert lakes["first"]["label_definition"] == {"fingerprint": fp, "definition": json.loads(DEFINITION)}

    # April labelled on a copy with a 2-month horizon: its rows record that, the earlier slices keep theirs
    root = str(tmp_path / "lake")
    shutil.copytree(lakes["roots"]["all"], root)
    two_months = DEFINITION.replace('"horizon_months": 1', '"horizon_months": 2')
    result = run_features(spark, make_settings(root, "2023-04-01", "2023-04-01", **{"churn.horizon_months": 2}))
    assert result["label_definition"]["fingerprint"] == _fingerprint(two_months) != fp
    got = table(spark, Lakehouse(root).churn_labels).select("as_of_date", "definition", "definition_fingerprint")
    want = spark.createDataFrame(
        [(D(2023, m, 1), DEFINITION, fp) for m in (1, 2, 3)] + [(D(2023, 4, 1), two_months, _fingerprint(two_months))],
        "as_of_date date, definition string, definition_fingerprint string")
    assert_df_equality(got.distinct(), want, ignore_row_order=True, ignore_nullable=True)


def test_summary_null_rates_from_parquet_footers_equal_a_count_of_the_table(spark, lakes):
    result = lakes["first"]
    features = table(spark, Lakehouse.from_settings(lakes["settings"]).churn_features)
    names = [c for c in features.columns if c not in FEATURE_KEY_COLUMNS]
    non_null = features.agg(*[F.count(F.col(n)).alias(n) for n in names]).first()
    assert len(names) > 32  # beyond Delta's default of 32 columns with statistics
    assert result["null_rate"] == {n: round((6 - non_null[n]) / 6, 4) for n in names}
    assert any(rate > 0 for rate in result["null_rate"].values())
    assert lakes["again"]["null_rate"] == result["null_rate"]  # a rerun counts only its own commit's files


def test_columns_match_the_catalogue_and_types(spark, lakes):
    features = table(spark, Lakehouse.from_settings(lakes["settings"]).churn_features)
    specs = cat.feature_catalog(lakes["settings"], ["login", "report"], with_support=True)
    assert features.columns == ["account_id", "as_of_date", "feature_set_version", "config_fingerprint"] + [
        s.name for s in specs]
    types = dict(features.dtypes)
    for s in specs:
        assert types[s.name] == ("string" if s.dtype == "categorical" else "double"), s.name
    strings = {c for c, t in features.dtypes if t == "string"} - set(FEATURE_KEY_COLUMNS)
    assert strings == {s.name for s in specs if s.dtype == "categorical"}


def test_accounts_without_events_get_zero_counts_and_null_recency(spark, lakes):
    features = table(spark, Lakehouse.from_settings(lakes["settings"]).churn_features)
    got = features.where("as_of_date = '2023-03-01'").select(
        "account_id", "login_count_28d", "events_count_per_seat_7d", "days_since_last_event", "tickets_open",
        "mrr", "product_id", "country", "feature_set_version")
    want = spark.createDataFrame([
        ("a1", 1.0, 1 / 2, 1.0, 0.0, 150.0, "pro", "DE", "1"),  # login 2023-02-28 23:59; 2 seats
        ("a3", 0.0, 0.0, None, 0.0, 100.0, "basic", None, "1"),  # no events, no tickets
    ], "account_id string, login_count_28d double, events_count_per_seat_7d double, days_since_last_event double, "
       "tickets_open double, mrr double, product_id string, country string, feature_set_version string")
    assert_df_equality(got, want, ignore_row_order=True, ignore_nullable=True)


def test_the_season_of_each_snapshot_is_the_same_for_every_account(spark, lakes):
    """2023-01-01 is day 1 of 365 (angle 0), 2023-02-01 day 32 (angle 2 pi 31/365), 2023-03-01 day 60
    (2 pi 59/365): cos and sin of those, on both accounts of each snapshot."""
    features = table(spark, Lakehouse.from_settings(lakes["settings"]).churn_features)
    got = features.select("account_id", "as_of_date", "season_cos", "season_sin")
    angle = {D(2023, 1, 1): 0.0, D(2023, 2, 1): 2 * math.pi * 31 / 365, D(2023, 3, 1): 2 * math.pi * 59 / 365}
    want = spark.createDataFrame(
        [(a, d, math.cos(angle[d]), math.sin(angle[d])) for a, d in [("a1", D(2023, 1, 1)), ("a2", D(2023, 1, 1)),
                                                                     ("a1", D(2023, 2, 1)), ("a2", D(2023, 2, 1)),
                                                                     ("a1", D(2023, 3, 1)), ("a3", D(2023, 3, 1))]],
        "account_id string, as_of_date date, season_cos double, season_sin double")
    assert_approx_df_equality(got, want, 1e-12, ignore_row_order=True, ignore_nullable=True)


def test_rerun_is_identical_and_range_a_then_b_equals_a_union_b(spark, lakes):
    whole = Lakehouse.from_settings(lakes["settings"])
    parts = Lakehouse(lakes["roots"]["parts"])
    labels_1, features_1 = lakes["snapshot_1"]
    for path, before in ((whole.churn_labels, labels_1), (whole.churn_features, features_1)):
        now = table(spark, path)
        assert_df_equality(now, spark.createDataFrame(before, now.schema), ignore_row_order=True)
    # The first run also froze the feature set's event types (one table-property commit); a rerun is one commit.
    assert lakes["again"]["features_version"] == lakes["first"]["features_version"] + 2
    for path in ("gold/churn_labels", "gold/churn_features"):
        assert_df_equality(table(spark, parts.path(path)), table(spark, whole.path(path)), ignore_row_order=True)


def _scans(plan: str, table: str) -> int:
    return len([line for line in plan.splitlines() if re.search(r"Scan|FileScan", line) and table in line])


def test_plan_scans_silver_once_and_never_bronze_whatever_the_number_of_snapshots(spark, lakes):
    settings = lakes["settings"]
    inputs = load_inputs(spark, settings)
    plans = []
    # Plan strings cut a scan's location at 100 characters by default, and a long temporary path (e.g.
    # under a pytest-xdist worker's folder) would hide the table's name.
    spark.conf.set("spark.sql.maxMetadataStringLength", "10000")
    try:
        for snaps in ([D(2023, 3, 1)], [D(2022, 10 + i, 1) if i < 3 else D(2023, i - 2, 1) for i in range(6)]):
            _, features = labels_and_features(inputs, settings, snaps, D(2023, 4, 2), ["login", "report"])
            plans.append(features._jdf.queryExecution().executedPlan().toString())
    finally:
        spark.conf.unset("spark.sql.maxMetadataStringLength")
    assert [_scans(p, "silver/account_daily_activity") for p in plans] == [1, 1]
    assert [_scans(p, "bronze/events") for p in plans] == [0, 0]
    joins = [len(re.findall(r"Join", p)) for p in plans]
    assert joins[0] == joins[1]


def test_scoring_date_with_censored_labels_and_support_disabled(spark, lakes):
    settings = make_settings(lakes["roots"]["all"], "2023-01-01", "2023-03-01",
                             **{"inputs.support_tickets.enabled": False})
    labels, features = build_labels_and_features(spark, settings, [D(2023, 3, 1)])
    assert not [c for c in features.columns if c.startswith("ticket")]
    got = features.select("account_id", "as_of_date", "login_count_7d").join(labels, ["account_id", "as_of_date"])
    rows = [("a1", D(2023, 3, 1), 1.0, None, None, 420), ("a3", D(2023, 3, 1), 0.0, None, None, 19)]
    want = spark.createDataFrame(rows, "account_id string, as_of_date date, login_count_7d double, label int, "
                                 "churn_date date, tenure_days int")
    assert_df_equality(got, want, ignore_row_order=True, ignore_nullable=True)


def test_attribute_history_read_checked_and_used_as_of_each_snapshot(spark, tmp_path):
    """inputs.account_attribute_history end to end: conformed, bad rows counted, values as of D - 1, numeric kept."""
    root = str(tmp_path / "lake")
    settings = make_settings(root, "2023-02-01", "2023-03-01", **{
        "inputs.account_attributes": ["country", "seats_tier"],
        "inputs.account_attribute_history": {"format": "delta", "path": "raw/account_attribute_history"}})
    acc = spark.createDataFrame([("a1", T(2022, 1, 5), "DE", 9), ("a2", T(2022, 6, 1), "FR", 9),
                                 ("a3", T(2023, 2, 10), None, 9)],
                                "account_id string, created_at timestamp, country string, seats_tier int")
    sb = subs(spark, [("s1", "a1", D(2022, 1, 5), None), ("s3", "a2", D(2022, 6, 1), D(2023, 2, 15)),
                      ("s4", "a3", D(2023, 2, 10), None)])
    write_inputs(settings, acc, sb, events(spark, [("e1", "a1", "login", T(2023, 3, 2))]), None)
    spark.createDataFrame([
        ("a1", D(2022, 1, 5), D(2023, 2, 1), "AT", 1), ("a1", D(2023, 2, 1), None, "DE", 2),  # moved on 2023-02-01
        ("a2", D(2022, 6, 1), None, "FR", 3),
        ("a3", D(2023, 2, 10), D(2023, 2, 10), "IT", 1),  # empty interval: rejected, a3 has no value
        ("zz", D(2022, 1, 1), None, "ES", 1),             # unknown account: rejected
    ], "account_id string, valid_from date, valid_to date, country string, seats_tier int") \
        .write.format("delta").save(f"{root}/raw/account_attribute_history")
    settings = with_overrides(settings, {"inputs.support_tickets.enabled": False})
    loaded = load_inputs(spark, settings)
    assert loaded.rejected is not None and loaded.attribute_history is not None
    rejected = io.reject_counts(loaded.rejected)
    assert rejected == {"account_attribute_history": {"valid_to_not_after_valid_from": 1, "unknown_account_id": 1}}
    assert attributes_summary(settings, rejected).endswith(": 2 history rows rejected")
    _, features = build_labels_and_features(spark, settings, [D(2023, 2, 1), D(2023, 3, 1)])
    want = spark.createDataFrame([
        ("a1", D(2023, 2, 1), "AT", 1.0),  # the move dated 2023-02-01 is not seen at 2023-02-01 ...
        ("a1", D(2023, 3, 1), "DE", 2.0),  # ... but is at the next snapshot
        ("a2", D(2023, 2, 1), "FR", 3.0),
        ("a3", D(2023, 3, 1), None, None),  # its only history row was rejected: null, not today's value
    ], "account_id string, as_of_date date, country string, seats_tier double")
    assert_df_equality(features.select(*want.columns), want, ignore_row_order=True, ignore_nullable=True)
    dtypes = attribute_dtypes(loaded.attribute_history, ["country", "seats_tier"])  # what the catalogue is given
    specs = {s.name: s.dtype for s in cat.feature_catalog(settings, ["login"], with_support=False,
                                                          attribute_dtypes=dtypes)}
    assert specs["seats_tier"] == "numeric" and specs["country"] == "categorical"
