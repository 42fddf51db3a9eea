"""The benchmark's race is fair: every racer computes the same labels and feature subset as ours.

Tiny hand-made inputs with boundary rows; the expected table is worked out by hand (comments), and
each racer's output must equal it. Times are never asserted (bench/ measures them).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from pyspark.sql import SparkSession

from bench.measure import run_watched
from bench.peers import duckdb_peer, naive_spark, ours, pandas_peer
from bench.report import diff_outputs, load_output
from bench.spec import RaceSpec, span_days

pytestmark = pytest.mark.slow  # the benchmark racers (DuckDB, pandas, Spark) and a watched subprocess

D1, D2 = dt.date(2023, 6, 1), dt.date(2023, 7, 1)


def ts(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s)


def write_inputs(spark: SparkSession, root: Path) -> None:
    """Parquet exports as the runner writes them (timestamps as UTC micros)."""
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    spark.createDataFrame([
        ("a1", ts("2023-01-10 08:00:00"), "DE", "web", "retail"),
        ("a2", ts("2023-03-01 10:00:00"), "FR", "sales", "media"),
        ("a3", ts("2023-06-15 00:00:00"), "DE", "web", "media"),
        ("a4", ts("2022-01-01 00:00:00"), "US", "web", "retail"),
    ], "account_id string, created_at timestamp, country string, channel string, industry string"
    ).write.parquet(str(root / "accounts"))
    spark.createDataFrame([
        # a1: a 10-day gap (<= grace 30) bridges s1 and s2 into one period ending 2023-09-01
        ("s1", "a1", "basic", dt.date(2023, 1, 10), dt.date(2023, 4, 10), Decimal("10.00"), 1, 1),
        ("s2", "a1", "pro", dt.date(2023, 4, 20), dt.date(2023, 9, 1), Decimal("20.00"), 2, 1),
        ("s3", "a2", "basic", dt.date(2023, 3, 1), None, Decimal("10.00"), 1, 12),
        ("s4", "a3", "basic", dt.date(2023, 6, 15), None, Decimal("10.00"), 1, 1),
        ("s5", "a4", "basic", dt.date(2022, 1, 1), dt.date(2023, 5, 1), Decimal("10.00"), 1, 1),  # never eligible
    ], "subscription_id string, account_id string, product_id string, start_date date, end_date date, "
       "mrr decimal(18,2), quantity int, bill_period_months int").write.parquet(str(root / "subscriptions"))
    spark.createDataFrame([
        ("t1", "a1", ts("2023-05-01 09:00:00"), ts("2023-06-01 00:00:00"), "high", "email", "slow and broken"),
        ("t2", "a2", ts("2023-06-30 23:00:00"), None, "low", "chat", "thanks"),
        ("t3", "a2", ts("2023-02-01 09:00:00"), ts("2023-02-02 09:00:00"), "low", "chat", None),
    ], "ticket_id string, account_id string, opened_at timestamp, closed_at timestamp, priority string, "
       "channel string, text string").write.parquet(str(root / "support_tickets"))
    spark.createDataFrame([
        ("e1", "a1", "login", ts("2023-05-31 23:59:59"), 1.0),
        ("e2", "a1", "login", ts("2023-06-01 00:00:00"), None),  # on D1: not before D1
        ("e3", "a1", "Error Page", ts("2023-04-01 12:00:00"), 2.0),  # in D1's 90 days, one day before D2's
        ("e4", "a2", "login", ts("2021-11-01 10:00:00"), None),  # older than the 18-month span
    ], "event_id string, account_id string, event_type string, event_time timestamp, value double"
    ).selectExpr("*", "to_date(event_time) AS event_date").write.parquet(str(root / "events"))
    spark.conf.unset("spark.sql.parquet.outputTimestampType")


def expected() -> pd.DataFrame:
    """By hand. Windows at D1: 28d [05-04, 06-01), 90d [03-03, 06-01); at D2: 28d [06-03, 07-01), 90d [04-02, 07-01).
    D2 is censored (D2 + 6 months + 30 days = 2024-01-31 > data_end 2024-01-15), D1 is not."""
    cols = ["account_id", "as_of_date", "label", "churn_date", "tenure_days",
            "events_count_28d", "events_count_90d", "error_page_count_28d", "error_page_count_90d",
            "login_count_28d", "login_count_90d", "days_since_last_event", "tickets_open"]
    nan = float("nan")
    rows = [
        # a1 at D1: period ends 09-01 <= 12-01 -> churner; tenure 142; e1 (28d, 90d) + e3 (90d); t1 closes at D1 -> open
        ("a1", "2023-06-01", 1, "2023-09-01", 142, 1, 2, 0, 1, 1, 1, 1, 1),
        # a2 at D1: open subscription -> 0; tenure 92; e4 too old -> no days since; t2 not opened yet
        ("a2", "2023-06-01", 0, None, 92, 0, 0, 0, 0, 0, 0, nan, 0),
        # a1 at D2: censored; e1 + e2 in 90d only; e3 one day out; last event 06-01 -> 30 days; t1 closed
        ("a1", "2023-07-01", nan, None, 172, 0, 2, 0, 0, 0, 2, 30, 0),
        ("a2", "2023-07-01", nan, None, 122, 0, 0, 0, 0, 0, 0, nan, 1),
        # a3 eligible from its start 06-15: tenure 16, nothing else
        ("a3", "2023-07-01", nan, None, 16, 0, 0, 0, 0, 0, 0, nan, 0),
    ]
    df = pd.DataFrame(rows, columns=cols)
    for c in cols[2:]:
        if c != "churn_date":
            df[c] = df[c].astype("float64")
    df["churn_date"] = pd.to_datetime(df["churn_date"]).dt.strftime("%Y-%m-%d")
    return df.sort_values(["account_id", "as_of_date"]).reset_index(drop=True)


@pytest.fixture()
def spec(spark: SparkSession, tmp_path: Path) -> RaceSpec:
    write_inputs(spark, tmp_path / "data")
    windows = [28, 90]
    return RaceSpec(
        data_dir=str(tmp_path / "data"), out=str(tmp_path / "out"), snapshots=[D1.isoformat(), D2.isoformat()],
        data_end="2024-01-15", event_types={"Error Page": "error_page", "login": "login"}, windows=windows,
        span_days={d.isoformat(): span_days(d, windows, [], 18) for d in (D1, D2)}, master="local[2]",
        shuffle_partitions=2,
    )


def _with_out(spec: RaceSpec, name: str) -> RaceSpec:
    return RaceSpec(**{**spec.__dict__, "out": str(Path(spec.out).parent / name)})


@pytest.mark.parametrize("racer", ["ours", "naive_spark", "duckdb", "pandas"])
def test_racer_computes_the_hand_worked_labels_and_features(spark: SparkSession, spec: RaceSpec, racer: str) -> None:
    s = _with_out(spec, racer)
    if racer == "ours":
        rows = ours.run(s, spark)
    elif racer == "naive_spark":
        rows = naive_spark.run(s, spark)
    elif racer == "duckdb":
        rows = duckdb_peer.run(s, threads=2)
    else:
        rows = pandas_peer.run(s)
    got = load_output(Path(s.out))
    assert got is not None and rows == len(got)
    assert list(got.columns) == s.output_columns()
    pd.testing.assert_frame_equal(got, expected(), check_dtype=False)


def test_watched_racer_reports_its_peak_memory_even_between_samples(spec: RaceSpec, tmp_path: Path) -> None:
    """A racer that ends before the runner's second sample still reports a real peak (its own)."""
    s = _with_out(spec, "watched")
    s.save(tmp_path / "spec.json")
    out = run_watched(["bench.worker", "pandas", str(tmp_path / "spec.json"), str(tmp_path / "result.json")],
                      tmp_path / "result.json", tmp_path / "racer.log", timeout_s=120, poll_s=5)
    assert out["status"] == "ok" and out["rows"] == len(expected())
    assert out["peak_rss_mb"] > 40  # a Python process with pandas loaded; the one early sample sees far less
    assert "own_peak_rss_mb" not in out


def test_diff_outputs_names_the_column_and_rows_that_differ() -> None:
    ours_df = expected()
    theirs = ours_df.copy()
    theirs.loc[0, "login_count_90d"] = 7.0
    theirs = theirs.drop(index=4)
    check = diff_outputs(ours_df, theirs, list(ours_df.columns))
    assert check == {"equal": False, "rows": 5, "only_ours": 1, "only_theirs": 0,
                     "mismatched": {"login_count_90d": 1}}
    assert diff_outputs(ours_df, ours_df.copy(), list(ours_df.columns)) == {"equal": True, "rows": 5}
