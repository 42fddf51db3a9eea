"""Mapping and formats in config (#22 item 1): source columns and fields under contract names, times in
epoch or pattern formats and source zones read as UTC, ids derived for events without one, and the
Parquet/CSV backfill of events with the stream's quarantine and exactly-once guarantees.

Every expected time is computed by hand in a comment next to it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from chispa import assert_df_equality
from ingest_cases import EXPECTED_BRONZE, assert_rerun_changes_nothing, bronze_contents
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from churn_spark import io, schemas
from churn_spark.config import Settings, TableSource, with_overrides
from churn_spark.errors import ConfigError, ContractError
from churn_spark.ingest import bronze_rows, checkpoint_path, run_ingest, validated_events
from churn_spark.lakehouse import Lakehouse

pytestmark = pytest.mark.slow  # backfills ingested into Delta tables: not in make test-fast

T = dt.datetime
D = dt.date
INGESTED_AT = T(2026, 1, 1)
RECORDS = "raw string, source string, _pos_a string, _pos_b long, ingested_at timestamp"
# 2024-05-01T00:00:00Z is 1714521600 s after the epoch: 2024-01-01 is day 19723 (1704067200 s), plus
# 31 + 29 + 31 + 30 = 121 days -> day 19844 x 86400 s. 09:30 adds 34200 s: 1714555800 s.
MAY1_0930_S = 1714555800


# --- batch tables: mapping -----------------------------------------------------------------


def test_with_contract_names_renames_mapped_columns_and_passes_the_others_through(spark: SparkSession) -> None:
    df = spark.createDataFrame([("c1", "2024-01-01", "junk", "x")],
                               "customer_id string, StartDate string, account_id string, note string")
    out = io.with_contract_names(df, {"account_id": "customer_id", "start_date": "StartDate"}, "subscriptions")
    # the source's own `account_id` is dropped: the mapping says customer_id is the account id
    expected = spark.createDataFrame([("c1", "2024-01-01", "x")], "account_id string, start_date string, note string")
    assert_df_equality(out, expected)


def test_a_mapping_to_a_missing_or_unknown_column_is_one_clear_error(spark: SparkSession) -> None:
    df = spark.createDataFrame([("c1", 1)], "customer_id string, created long")
    with pytest.raises(ContractError, match=r"accounts: mapped columns not found: cust \(inputs.accounts.columns"):
        io.mapped_to_contract(df, TableSource(path="x", columns={"account_id": "cust"}), schemas.ACCOUNTS, "accounts")
    with pytest.raises(ContractError, match=r"accounts: inputs.accounts.columns maps unknown columns: acount_id"):
        io.mapped_to_contract(df, TableSource(path="x", columns={"acount_id": "customer_id"}), schemas.ACCOUNTS,
                              "accounts")


def test_defaults_leave_the_input_as_it_is(spark: SparkSession) -> None:
    df = spark.createDataFrame([("a1", "2024-05-01T09:30:00")], "account_id string, created_at string")
    assert io.mapped_to_contract(df, TableSource(path="x"), schemas.ACCOUNTS, "accounts") is df


# --- time formats and zones ----------------------------------------------------------------


def test_epoch_iso_and_pattern_times_in_a_source_zone_become_utc(spark: SparkSession) -> None:
    cases = [
        # (text, format, zone, expected UTC)
        (str(MAY1_0930_S * 1000), "epoch_ms", "UTC", T(2024, 5, 1, 9, 30)),
        (f"{MAY1_0930_S}.25", "epoch_s", "UTC", T(2024, 5, 1, 9, 30, 0, 250000)),
        (f"{MAY1_0930_S}000001", "epoch_us", "Europe/Paris", T(2024, 5, 1, 9, 30, 0, 1)),  # epochs ignore the zone
        ("1.7145558E12", "epoch_ms", "UTC", T(2024, 5, 1, 9, 30)),  # a double rendered by Java
        # Paris is UTC+2 in summer (CEST, from 2024-03-31) and UTC+1 in winter (CET): 09:30 -> 07:30 / 08:30
        ("01/05/2024 09:30", "dd/MM/yyyy HH:mm", "Europe/Paris", T(2024, 5, 1, 7, 30)),
        ("15/01/2024 09:30", "dd/MM/yyyy HH:mm", "Europe/Paris", T(2024, 1, 15, 8, 30)),
        # New York is UTC-4 in May (EDT): 09:30 -> 13:30; an offset in the value wins over the zone
        ("2024-05-01T09:30:00", "iso", "America/New_York", T(2024, 5, 1, 13, 30)),
        ("2024-05-01T09:30:00Z", "iso", "America/New_York", T(2024, 5, 1, 9, 30)),
        ("2024-05-01T09:30:00+02:00", "iso", "America/New_York", T(2024, 5, 1, 7, 30)),
        ("2024-05-01 09:30 +0200", "yyyy-MM-dd HH:mm Z", "America/New_York", T(2024, 5, 1, 7, 30)),  # zone in pattern
        ("2024-05-01T09:30", "dd/MM/yyyy HH:mm", "Europe/Paris", None),  # not in the pattern
        ("soon", "epoch_ms", "UTC", None),
        ("9" * 40, "epoch_ms", "UTC", None),  # beyond any timestamp: null, not an overflow error
        (None, "epoch_s", "UTC", None),
    ]
    df = spark.createDataFrame([(i, c[0]) for i, c in enumerate(cases)], "i int, text string")
    out = df.select("i", *[F.when(F.col("i") == i, io.parsed_timestamp(F.col("text"), fmt, zone)).alias(f"t{i}")
                           for i, (_, fmt, zone, _) in enumerate(cases)])
    parsed = out.select("i", F.coalesce(*[F.col(f"t{i}") for i in range(len(cases))]).alias("utc")).orderBy("i")
    expected = spark.createDataFrame([(i, c[3]) for i, c in enumerate(cases)], "i int, utc timestamp")
    assert_df_equality(parsed, expected, ignore_nullable=True)


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n")
    return str(path.parent)


def test_read_input_maps_a_csv_with_a_pattern_in_a_source_zone_and_rejects_bad_times(spark: SparkSession,
                                                                                       settings: Settings) -> None:
    folder = _write_csv(Path(settings.lakehouse) / "exports" / "tickets" / "t.csv",
                        ["TicketRef", "customer", "opened", "closed", "priority", "channel", "text"], [
                            ["T1", "a1", "15.01.2024 10:00", "15.01.2024 12:30", "high", "email", "slow"],
                            ["T2", "a2", "01.07.2024 08:15", "", "low", "chat", ""],
                            ["T3", "a3", "2024-07-01T08:15", "", "low", "chat", ""],  # not the pattern
                            ["T4", "a4", "01.07.2024 08:15", "yesterday", "low", "chat", ""],  # nullable, still bad
                            ["T5", "a5", "", "", "low", "chat", ""],  # blank: missing
                        ])
    source = TableSource(format="csv", path=folder, timestamp_format="dd.MM.yyyy HH:mm", time_zone="Europe/Berlin",
                         columns={"ticket_id": "TicketRef", "account_id": "customer", "opened_at": "opened",
                                  "closed_at": "closed"})
    s = settings.model_copy(update={"inputs": settings.inputs.model_copy(update={"support_tickets": source})})
    out = io.read_input(spark, s, "support_tickets")
    assert out is not None
    # Berlin is UTC+1 in January (CET): 10:00 -> 09:00, 12:30 -> 11:30; UTC+2 in July (CEST): 08:15 -> 06:15
    expected = spark.createDataFrame([
        ("T1", "a1", T(2024, 1, 15, 9, 0), T(2024, 1, 15, 11, 30), "high", "email", "slow"),
        ("T2", "a2", T(2024, 7, 1, 6, 15), None, "low", "chat", None),
    ], schemas.SUPPORT_TICKETS)
    assert_df_equality(out.good.select(*schemas.SUPPORT_TICKETS.fieldNames()).orderBy("ticket_id"), expected,
                       ignore_nullable=True)
    rejected = out.rejected.select(
        "reason", F.get_json_object("record", "$.ticket_id").alias("ticket_id"),
        F.get_json_object("record", "$.opened_at").alias("opened_at"),
        F.get_json_object("record", "$.closed_at").alias("closed_at")).orderBy("ticket_id")
    expected_rejected = spark.createDataFrame([
        ("bad_type_opened_at", "T3", "unparsable as dd.MM.yyyy HH:mm: 2024-07-01T08:15", None),
        ("bad_type_closed_at", "T4", "2024-07-01T06:15:00.000000Z", "unparsable as dd.MM.yyyy HH:mm: yesterday"),
        ("missing_opened_at", "T5", None, None),
    ], "reason string, ticket_id string, opened_at string, closed_at string")
    assert_df_equality(rejected, expected_rejected, ignore_nullable=True)


def test_epoch_ms_accounts_and_patterned_dates_conform(spark: SparkSession) -> None:
    accounts = spark.createDataFrame([("c1", MAY1_0930_S * 1000), ("c2", None)], "customer string, created long")
    source = TableSource(path="x", columns={"account_id": "customer", "created_at": "created"},
                         timestamp_format="epoch_ms")
    out = io.conform(io.mapped_to_contract(accounts, source, schemas.ACCOUNTS, "accounts"), schemas.ACCOUNTS,
                     "accounts", key="account_id")
    assert_df_equality(out.good, spark.createDataFrame([("c1", T(2024, 5, 1, 9, 30))], schemas.ACCOUNTS),
                       ignore_nullable=True)
    assert [r["reason"] for r in out.rejected.collect()] == ["missing_created_at"]

    history = spark.createDataFrame([("a1", "31/01/2024", None), ("a1", "2024-02-01", "29/02/2024")],
                                    "account_id string, valid_from string, valid_to string")
    source = TableSource(path="x", date_format="dd/MM/yyyy")
    out = io.conform(io.mapped_to_contract(history, source, schemas.ACCOUNT_ATTRIBUTE_HISTORY,
                                           "account_attribute_history"),
                     schemas.ACCOUNT_ATTRIBUTE_HISTORY, "account_attribute_history")
    assert_df_equality(out.good, spark.createDataFrame([("a1", D(2024, 1, 31), None)],
                                                       schemas.ACCOUNT_ATTRIBUTE_HISTORY), ignore_nullable=True)
    assert [r["reason"] for r in out.rejected.collect()] == ["bad_type_valid_from"]


def test_time_settings_are_checked_when_the_config_is_read(settings: Settings) -> None:
    with pytest.raises(ConfigError, match=r"inputs.accounts.time_zone: Value error, unknown time zone 'Mars/Base'"):
        with_overrides(settings, {"inputs.accounts.time_zone": "Mars/Base"})
    with pytest.raises(ConfigError, match=r"ingest: Value error, source 'files' needs backfill.path"):
        with_overrides(settings, {"ingest.source": "files"})
    with pytest.raises(ConfigError, match=r"ingest.fields.evt"):
        with_overrides(settings, {"ingest.fields": {"evt": "x"}})


# --- events: fields, formats, derived ids ---------------------------------------------------


def _records(spark: SparkSession, docs: Sequence[Mapping[str, object]]) -> DataFrame:
    return spark.createDataFrame([(json.dumps(d), "f", "f", i, INGESTED_AT) for i, d in enumerate(docs)], RECORDS)


def _parsed(out: DataFrame) -> DataFrame:
    return out.select("reason", *EXPECTED_BRONZE.fieldNames()).orderBy("event_time", "event_type")


def test_event_fields_are_read_where_mapped_in_their_time_format(spark: SparkSession, settings: Settings) -> None:
    s = with_overrides(settings, {"ingest.fields": {"event_id": "id", "account_id": "$.who.account",
                                                    "event_type": "kind", "event_time": "ts", "value": "amount",
                                                    "properties": "props"},
                                  "ingest.event_time_format": "epoch_ms"})
    records = _records(spark, [
        {"id": "e1", "who": {"account": 123}, "kind": "login", "ts": MAY1_0930_S * 1000, "amount": 2,
         "props": {"plan": "pro"}, "event_id": "ignored"},
        {"id": "e2", "who": {"account": "a2"}, "kind": "login", "ts": "not-a-time"},
        {"id": "e3", "who": {}, "kind": "login", "ts": MAY1_0930_S * 1000 + 1},
    ])
    out = validated_events(records, s.ingest)
    expected = spark.createDataFrame([
        (None, "e1", "123", "login", T(2024, 5, 1, 9, 30), 2.0, {"plan": "pro"}),
        ("missing_account_id", "e3", None, "login", T(2024, 5, 1, 9, 30, 0, 1000), None, None),  # +1 ms
        ("bad_timestamp", "e2", "a2", "login", None, None, None),
    ], f"reason string, {', '.join(f'{f.name} {f.dataType.simpleString()}' for f in EXPECTED_BRONZE.fields)}")
    assert_df_equality(_parsed(out).orderBy("event_id"), expected.orderBy("event_id"), ignore_nullable=True)


def test_an_event_time_without_offset_is_read_in_the_source_zone(spark: SparkSession, settings: Settings) -> None:
    s = with_overrides(settings, {"ingest.time_zone": "Asia/Tokyo"})  # UTC+9, no daylight saving
    doc = {"event_id": "e1", "account_id": "a1", "event_type": "login"}
    out = validated_events(_records(spark, [{**doc, "event_time": "2024-05-01T09:30:00"},
                                            {**doc, "event_id": "e2", "event_time": "2024-05-01T09:30:00Z"}]), s.ingest)
    # 09:30 in Tokyo is 00:30 UTC; the second names its own zone (Z)
    assert_df_equality(out.select("event_id", "event_time").orderBy("event_id"),
                       spark.createDataFrame([("e1", T(2024, 5, 1, 0, 30)), ("e2", T(2024, 5, 1, 9, 30))],
                                             "event_id string, event_time timestamp"), ignore_nullable=True)


def test_events_without_id_get_one_from_their_content_the_same_for_a_redelivery(spark: SparkSession,
                                                                                 settings: Settings) -> None:
    s = with_overrides(settings, {"ingest.missing_event_id": "derive"})
    first = {"account_id": "a1", "event_type": "login", "event_time": "2024-05-01T09:30:00Z", "value": 1,
             "properties": {"plan": "pro", "seats": "3"}}
    # the same event re-delivered: fields in another order, the time with another notation, a blank id
    again = {"properties": {"seats": "3", "plan": "pro"}, "value": 1.0, "event_time": "2024-05-01T11:30:00+02:00",
             "event_type": "login", "account_id": "a1", "event_id": " "}
    other_time = {**first, "event_time": "2024-05-01T09:30:00.000001Z"}
    other_props = {**first, "properties": {"plan": "basic", "seats": "3"}}
    with_id = {**first, "event_id": "given"}
    out = validated_events(_records(spark, [first, again, other_time, other_props, with_id]), s.ingest)
    ids = [r["event_id"] for r in out.orderBy("_pos_b").collect()]
    assert ids[0] == ids[1] and len(ids[0]) == 64  # sha2-256 in hex
    assert len({ids[0], ids[2], ids[3], ids[4]}) == 4 and ids[4] == "given"
    assert out.where(F.col("reason").isNotNull()).count() == 0
    assert_df_equality(out.transform(bronze_rows).select("event_id"),  # the re-delivery is absorbed
                       spark.createDataFrame([(i,) for i in sorted(set(ids))], "event_id string"),
                       ignore_row_order=True, ignore_nullable=True)


def test_without_derive_a_missing_id_is_still_quarantined(spark: SparkSession, settings: Settings) -> None:
    doc = {"account_id": "a1", "event_type": "login", "event_time": "2024-05-01T09:30:00Z"}
    out = validated_events(_records(spark, [doc]), settings.ingest)
    assert [r["reason"] for r in out.collect()] == ["missing_event_id"]


# --- backfill sources ------------------------------------------------------------------------

BACKFILL_SCHEMA = "id string, customer string, kind string, ts long, amount double, props map<string,string>"


def _backfill_settings(settings: Settings, path: str, fmt: str, **extra: object) -> Settings:
    return with_overrides(settings, {
        "ingest.source": "files", "ingest.backfill.path": path, "ingest.backfill.format": fmt,
        "ingest.fields": {"event_id": "id", "account_id": "customer", "event_type": "kind", "event_time": "ts",
                          "value": "amount", "properties": "props"},
        "ingest.event_time_format": "epoch_ms", **extra})


def _quarantine(spark: SparkSession, lake: Lakehouse) -> DataFrame:
    return spark.read.format("delta").load(lake.bronze_events_quarantine).select("raw", "reason").orderBy("raw")


def _expected_bronze(spark: SparkSession, rows: list[tuple[object, ...]]) -> DataFrame:
    return spark.createDataFrame(rows, EXPECTED_BRONZE).orderBy("event_id")


def test_a_parquet_backfill_ingests_exactly_once_and_quarantines_bad_rows(spark: SparkSession, settings: Settings,
                                                                          tmp_path: Path) -> None:
    ms = MAY1_0930_S * 1000
    folder = str(tmp_path / "history")
    spark.createDataFrame([
        ("b1", "a1", "login", ms, 1.0, {"plan": "pro"}),
        ("b2", "a2", "page_view", ms + 60_000, None, None),  # 09:31
        ("b1", "a1", "login", ms, 1.0, {"plan": "pro"}),  # a re-delivery: absorbed
        ("b3", None, "login", ms, None, None),  # no account
    ], BACKFILL_SCHEMA).coalesce(1).write.parquet(folder)
    s = _backfill_settings(settings, folder, "parquet")
    lake = Lakehouse.from_settings(s)
    summary = run_ingest(spark, s)  # a backfill drains and stops without --once
    assert (summary["records_in"], summary["bronze_written"], summary["duplicates"], summary["quarantined_by_reason"],
            summary["trigger"], summary["location"]) == (4, 2, 1, {"missing_account_id": 1}, "availableNow", folder)
    assert summary["checkpoint"] == checkpoint_path(lake, s.ingest) and "/ingest/files-" in summary["checkpoint"]
    assert_df_equality(bronze_contents(spark, lake), _expected_bronze(spark, [
        ("b1", "a1", "login", T(2024, 5, 1, 9, 30), 1.0, {"plan": "pro"}),
        ("b2", "a2", "page_view", T(2024, 5, 1, 9, 31), None, None)]), ignore_nullable=True)
    # the row as one JSON record (null columns left out), with its reason
    assert_df_equality(_quarantine(spark, lake), spark.createDataFrame(
        [(f'{{"id":"b3","kind":"login","ts":{ms}}}', "missing_account_id")], "raw string, reason string"),
        ignore_nullable=True)
    assert_rerun_changes_nothing(spark, lake, lambda: run_ingest(spark, s))


def test_a_csv_backfill_reads_cells_as_json_values_and_derives_missing_ids(spark: SparkSession, settings: Settings,
                                                                           tmp_path: Path) -> None:
    folder = _write_csv(tmp_path / "csv" / "events.csv", ["id", "customer", "kind", "ts", "amount", "props"], [
        ["c1", "a1", "login", "01/05/2024 11:30", "1.5", '"{""plan"":""pro""}"'],
        ["", "a2", "login", "01/05/2024 11:30", "", ""],  # no id: derived
        ["", "a2", "login", "01/05/2024 11:30", "", ""],  # the same event again: same id, absorbed
        ["c3", "a3", "login", "01/05/2024 11:30", "lots", ""],  # not a number
        ["c4", "a4", "login", "2024-05-01", "", ""],  # not the pattern
    ])
    s = _backfill_settings(settings, folder, "csv", **{"ingest.event_time_format": "dd/MM/yyyy HH:mm",
                                                       "ingest.time_zone": "Europe/Paris",
                                                       "ingest.missing_event_id": "derive",
                                                       "ingest.backfill.options": {"escape": '"'}})  # RFC 4180 ""
    lake = Lakehouse.from_settings(s)
    summary = run_ingest(spark, s)
    assert (summary["records_in"], summary["bronze_written"], summary["duplicates"]) == (5, 2, 1)
    bronze = bronze_contents(spark, lake)
    derived = bronze.where("account_id = 'a2'").collect()[0]["event_id"]
    # 11:30 in Paris in May (CEST, UTC+2) is 09:30 UTC
    assert_df_equality(bronze, _expected_bronze(spark, [
        ("c1", "a1", "login", T(2024, 5, 1, 9, 30), 1.5, {"plan": "pro"}),
        (derived, "a2", "login", T(2024, 5, 1, 9, 30), None, None)]), ignore_nullable=True)
    assert len(derived) == 64
    assert_df_equality(_quarantine(spark, lake), spark.createDataFrame([
        ('{"id":"c3","customer":"a3","kind":"login","ts":"01/05/2024 11:30","amount":"lots"}', "bad_value_type"),
        ('{"id":"c4","customer":"a4","kind":"login","ts":"2024-05-01"}', "bad_timestamp"),
    ], "raw string, reason string"), ignore_nullable=True)
    assert_rerun_changes_nothing(spark, lake, lambda: run_ingest(spark, s))


def test_a_catalog_table_backfill_ingests_exactly_once(spark: SparkSession, settings: Settings,
                                                       tmp_path: Path) -> None:
    location = str(tmp_path / "events_history")
    spark.createDataFrame([("t1", "a1", "login", MAY1_0930_S * 1000, 2.0, None)], BACKFILL_SCHEMA) \
        .write.format("delta").save(location)
    table = "default.mapping_backfill_events"
    spark.sql(f"CREATE TABLE {table} USING delta LOCATION '{location}'")
    try:
        s = _backfill_settings(settings, location, "parquet",
                               **{"ingest.source": "table", "ingest.backfill.table": table})
        lake = Lakehouse.from_settings(s)
        summary = run_ingest(spark, s)
        assert (summary["records_in"], summary["bronze_written"], summary["checkpoint"].rsplit("/", 1)[-1]) == \
            (1, 1, "table-default.mapping_backfill_events")
        assert_df_equality(bronze_contents(spark, lake), _expected_bronze(spark, [
            ("t1", "a1", "login", T(2024, 5, 1, 9, 30), 2.0, None)]), ignore_nullable=True)
        assert_rerun_changes_nothing(spark, lake, lambda: run_ingest(spark, s))
    finally:
        spark.sql(f"DROP TABLE IF EXISTS {table}")
