from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from churn_spark import io, schemas
from churn_spark.config import Settings, TableSource
from churn_spark.errors import ContractError

pytestmark = pytest.mark.slow  # every test writes and reads Delta tables: not in make test-fast

D = dt.date


def _raw_subscriptions(spark: SparkSession):
    # As a CSV source would hand them over: every column a string.
    cols = ["subscription_id", "account_id", "product_id", "start_date", "end_date", "mrr", "quantity",
            "bill_period_months", "extra"]
    rows = [
        ("s1", "a1", "basic", "2023-01-01", None, "10.50", "2", "1", "x"),       # good, open
        ("s2", "a1", "pro", "2023-02-01", "2023-03-01", "20", "1", "12", "y"),  # good
        ("s3", "", "basic", "2023-01-01", None, "10", "1", "1", "z"),           # missing account_id
        ("s4", "a2", "basic", "2023-13-45", None, "10", "1", "1", "z"),         # bad date
        ("s5", "a2", "basic", "2023-01-01", "2022-01-01", "10", "1", "1", "z"), # ends before start
        ("s6", "a2", "basic", "2023-01-01", None, "ten", "1", "1", "z"),        # bad decimal
        ("s7", "a2", "basic", "2023-01-01", None, "10", "0", "1", "z"),         # zero seats
        ("s1", "a1", "basic", "2023-01-01", None, "10.50", "2", "1", "x"),       # duplicate key
    ]
    return spark.createDataFrame(rows, ", ".join(f"{c} string" for c in cols))


def test_conform_keeps_good_rows_and_rejects_each_bad_row_with_a_reason(spark: SparkSession) -> None:
    out = io.conform(_raw_subscriptions(spark), schemas.SUBSCRIPTIONS, "subscriptions", key="subscription_id")
    expected_good = spark.createDataFrame(
        [("s1", "a1", "basic", D(2023, 1, 1), None, Decimal("10.50"), 2, 1),
         ("s2", "a1", "pro", D(2023, 2, 1), D(2023, 3, 1), Decimal("20.00"), 1, 12)],
        schemas.SUBSCRIPTIONS,
    )
    assert_df_equality(out.good, expected_good, ignore_row_order=True, ignore_nullable=True)
    reasons = sorted((r["table"], r["reason"]) for r in out.rejected.collect())
    assert reasons == sorted([
        ("subscriptions", "missing_account_id"), ("subscriptions", "bad_type_start_date"),
        ("subscriptions", "end_before_start"), ("subscriptions", "bad_type_mrr"),
        ("subscriptions", "nonpositive_quantity"), ("subscriptions", "duplicate_subscription_id"),
    ])
    assert io.reject_counts(out.rejected) == {"subscriptions": {
        "missing_account_id": 1, "bad_type_start_date": 1, "end_before_start": 1, "bad_type_mrr": 1,
        "nonpositive_quantity": 1, "duplicate_subscription_id": 1}}
    # The raw record travels with its reason so nothing is lost.
    rec = out.rejected.where("reason = 'bad_type_mrr'").first()["record"]
    assert '"subscription_id":"s6"' in rec and '"mrr":"ten"' in rec


def test_conform_missing_columns_is_one_clear_error(spark: SparkSession) -> None:
    df = spark.createDataFrame([("a1",)], "account_id string")
    with pytest.raises(ContractError, match=r"^accounts: missing columns: created_at; missing attribute columns "
                       r"\(inputs.account_attributes\): country \(found: account_id\)$"):
        io.conform(df, schemas.ACCOUNTS, "accounts", extra_columns=["country"])


def test_a_configured_attribute_missing_from_accounts_is_one_error_naming_it(spark: SparkSession) -> None:
    df = spark.createDataFrame([("a1", "2024-01-01", "DE")], "account_id string, created_at string, country string")
    with pytest.raises(ContractError) as err:
        io.conform(df, schemas.ACCOUNTS, "accounts", extra_columns=["country", "segment"])
    assert str(err.value) == ("accounts: missing attribute columns (inputs.account_attributes): segment "
                              "(found: account_id, created_at, country)")


def test_first_broken_rule_names_the_first_rule_in_order_and_skips_null_conditions(spark: SparkSession) -> None:
    df = spark.createDataFrame([(1, 5), (-1, 5), (-1, -5), (None, -5), (None, None), (1, 0)], "a int, b int")
    reason = io.first_broken_rule([("negative_a", F.col("a") < 0), ("negative_b", F.col("b") < 0),
                                   ("zero_b", F.col("b") == 0)])
    got = [r["reason"] for r in df.select(reason.alias("reason")).collect()]
    assert got == [None, "negative_a", "negative_a", "negative_b", None, "zero_b"]


def test_read_input_from_csv_and_parquet(spark: SparkSession, settings: Settings, tmp_path) -> None:
    csv_dir, pq_dir = str(tmp_path / "acc_csv"), str(tmp_path / "acc_pq")
    raw = spark.createDataFrame(
        [("a1", "2023-01-05 10:00:00", "DE", "web", "retail"), ("a2", "yesterday", "FR", "sales", "tech")],
        "account_id string, created_at string, country string, channel string, industry string",
    )
    raw.write.option("header", "true").csv(csv_dir)
    raw.write.parquet(pq_dir)
    for fmt, path in [("csv", csv_dir), ("parquet", pq_dir)]:
        s = settings.model_copy(update={"inputs": settings.inputs.model_copy(
            update={"accounts": TableSource(format=fmt, path=path)})})  # type: ignore[arg-type]
        out = io.read_input(spark, s, "accounts")
        assert out is not None
        assert [r["account_id"] for r in out.good.collect()] == ["a1"]
        assert out.good.first()["created_at"] == dt.datetime(2023, 1, 5, 10, 0)
        assert io.reject_counts(out.rejected) == {"accounts": {"bad_type_created_at": 1}}


def test_disabled_input_reads_as_absent(spark: SparkSession, settings: Settings) -> None:
    s = settings.model_copy(update={"inputs": settings.inputs.model_copy(
        update={"support_tickets": TableSource(path="raw/support_tickets", enabled=False)})})
    assert io.read_input(spark, s, "support_tickets") is None


def _labels(spark: SparkSession, rows):
    return spark.createDataFrame(rows, schemas.CHURN_LABEL_VALUES)


def test_write_slice_is_idempotent_and_leaves_other_slices(spark: SparkSession, tmp_path) -> None:
    path = str(tmp_path / "labels")
    a = _labels(spark, [("a1", D(2024, 1, 1), 0, None, 10), ("a2", D(2024, 1, 1), 1, D(2024, 3, 1), 20)])
    b = _labels(spark, [("a1", D(2024, 2, 1), None, None, 41)])
    pred_a = io.slice_predicate(within={"as_of_date": [D(2024, 1, 1)]})
    pred_b = io.slice_predicate(within={"as_of_date": [D(2024, 2, 1)]})
    io.write_slice(a, path, pred_a, ["as_of_date"], schemas.CHURN_LABEL_VALUES)
    io.write_slice(a, path, pred_a, ["as_of_date"], schemas.CHURN_LABEL_VALUES)
    io.write_slice(b, path, pred_b, ["as_of_date"], schemas.CHURN_LABEL_VALUES)
    got = spark.read.format("delta").load(path)
    assert_df_equality(got, a.unionByName(b), ignore_row_order=True, ignore_nullable=True)
    # Rewriting slice A with new content replaces exactly slice A.
    a2 = _labels(spark, [("a3", D(2024, 1, 1), 0, None, 5)])
    io.write_slice(a2, path, pred_a, ["as_of_date"], schemas.CHURN_LABEL_VALUES)
    assert_df_equality(spark.read.format("delta").load(path), a2.unionByName(b), ignore_row_order=True,
                       ignore_nullable=True)
    assert io.table_version(spark, path) == 3


def test_write_slice_refuses_rows_outside_the_slice_and_leaves_table(spark: SparkSession, tmp_path) -> None:
    path = str(tmp_path / "labels")
    a = _labels(spark, [("a1", D(2024, 1, 1), 0, None, 10)])
    io.write_slice(a, path, io.slice_predicate(within={"as_of_date": [D(2024, 1, 1)]}), ["as_of_date"])
    stray = _labels(spark, [("a9", D(2024, 5, 1), 0, None, 10)])
    with pytest.raises(Exception, match="(?i)replaceWhere|does not conform|DELTA_REPLACE_WHERE"):
        io.write_slice(stray, path, io.slice_predicate(within={"as_of_date": [D(2024, 1, 1)]}), ["as_of_date"])
    assert_df_equality(spark.read.format("delta").load(path), a, ignore_nullable=True)
    assert io.table_version(spark, path) == 0


def test_a_string_slice_with_a_quote_and_a_backslash_replaces_exactly_its_rows(spark: SparkSession, tmp_path) -> None:
    # a model version as a user may spell it: the predicate must name this value, not a parsed-escape variant
    path = str(tmp_path / "scores")
    odd, plain = "it's a\\b", "it's ab"

    def rows(version: str, score: float):
        return spark.createDataFrame([("a1", version, score)], "account_id string, model_version string, p double")

    io.write_slice(rows(odd, 0.1).unionByName(rows(plain, 0.2)), path,
                   io.slice_predicate(within={"model_version": [odd, plain]}), ["model_version"])
    io.write_slice(rows(odd, 0.9), path, io.slice_predicate(equals={"model_version": odd}), ["model_version"])
    got = spark.read.format("delta").load(path)
    assert_df_equality(got, rows(odd, 0.9).unionByName(rows(plain, 0.2)), ignore_row_order=True,
                       ignore_nullable=True)


def _wide(spark: SparkSession, rows: list[tuple]):
    """account_id, as_of_date and 40 nullable doubles c00..c39: more columns than Delta's default 32 with statistics."""
    return spark.createDataFrame(rows, "account_id string, as_of_date date, "
                                 + ", ".join(f"c{i:02d} double" for i in range(40)))


def _stats_columns(spark: SparkSession, path: str, version: int) -> set[str]:
    """Columns with a Delta null count in the statistics of commit `version`'s files."""
    commit = f"{path}/_delta_log/{version:020d}.json"
    stats = spark.read.text(commit).select(F.get_json_object("value", "$.add.stats").alias("s")).where("s IS NOT NULL")
    return {k for r in stats.collect() for k in json.loads(r["s"])["nullCount"]}


def test_written_counts_give_rows_and_nulls_of_every_column_of_one_commit(spark: SparkSession, tmp_path) -> None:
    path = str(tmp_path / "wide")
    full = tuple([1.0] * 40)
    null_c39 = tuple([1.0] * 39 + [None])
    jan = [("a1", D(2024, 1, 1), *full), ("a2", D(2024, 1, 1), *null_c39), ("a3", D(2024, 1, 1), *null_c39)]
    feb = [("a1", D(2024, 2, 1), *(None,) * 40)]
    mar = [("a1", D(2024, 3, 1), *full)]
    # an older table with statistics on every column (what the features table had before KEY_STATS_ONLY)
    io.write_slice(_wide(spark, feb + mar), path,
                   io.slice_predicate(within={"as_of_date": [D(2024, 2, 1), D(2024, 3, 1)]}),
                   ["as_of_date"], properties={"delta.dataSkippingNumIndexedCols": "-1"})
    assert "c39" in _stats_columns(spark, path, 0)
    v1_sources = spark.conf.get("spark.sql.sources.useV1SourceList")
    version = io.write_slice(_wide(spark, jan + feb), path,
                             io.slice_predicate(within={"as_of_date": [D(2024, 1, 1), D(2024, 2, 1)]}),
                             ["as_of_date"], properties=io.KEY_STATS_ONLY)
    assert version == 2  # 1 is the property's own metadata commit
    assert _stats_columns(spark, path, version) == {"account_id"}
    counts = {r["as_of_date"]: r for r in io.written_counts(spark, path, version, ["as_of_date"])}
    # only this commit's files: March (commit 0, still in the table) is not counted
    assert sorted(counts) == ["2024-01-01", "2024-02-01"]
    jan_counts, feb_counts = counts["2024-01-01"], counts["2024-02-01"]
    assert (jan_counts["__rows"], jan_counts["c39"], jan_counts["c00"]) == (3, 1, 3)
    assert (feb_counts["__rows"], feb_counts["c39"], feb_counts["account_id"]) == (1, 0, 1)
    assert spark.conf.get("spark.sql.sources.useV1SourceList") == v1_sources  # the V2 read was scoped
    # the property is set once: the next write adds no metadata commit
    assert io.write_slice(_wide(spark, feb), path, io.slice_predicate(within={"as_of_date": [D(2024, 2, 1)]}),
                          ["as_of_date"], properties=io.KEY_STATS_ONLY) == 3


def test_written_counts_find_files_under_escaped_partition_paths(spark: SparkSession, tmp_path) -> None:
    """Delta stores file paths URL-encoded; a partition value with ':' is escaped twice on the way."""
    path = str(tmp_path / "escaped")
    df = spark.createDataFrame([("a:b", 1.0), ("a:b", None), ("c d", 2.0)], "part string, x double")
    df.write.format("delta").partitionBy("part").save(path)
    counts = {r["part"]: (r["__rows"], r["x"]) for r in io.written_counts(spark, path, 0, ["part"])}
    assert counts == {"a:b": (2, 1), "c d": (1, 1)}


def test_write_slice_asserts_schema(spark: SparkSession, tmp_path) -> None:
    df = spark.createDataFrame([("a1", D(2024, 1, 1))], "account_id string, as_of_date date")
    with pytest.raises(ContractError, match="missing columns: label, churn_date, tenure_days"):
        io.write_slice(df, str(tmp_path / "x"), "as_of_date = '2024-01-01'", ["as_of_date"], schemas.CHURN_LABELS)


def test_merge_by_key_upserts_without_duplicates(spark: SparkSession, tmp_path) -> None:
    path = str(tmp_path / "m")
    first = spark.createDataFrame([("e1", 1), ("e2", 2)], "event_id string, v int")
    io.merge_by_key(spark, first, path, ["event_id"])
    io.merge_by_key(spark, spark.createDataFrame([("e2", 20), ("e3", 3)], "event_id string, v int"), path,
                    ["event_id"])
    io.merge_by_key(spark, spark.createDataFrame([("e3", 30)], "event_id string, v int"), path, ["event_id"],
                    update=False)
    expected = spark.createDataFrame([("e1", 1), ("e2", 20), ("e3", 3)], "event_id string, v int")
    assert_df_equality(spark.read.format("delta").load(path), expected, ignore_row_order=True)


def test_slice_predicate_quotes_literals() -> None:
    assert io.slice_predicate({"model_version": "v'1"}, {"as_of_date": [D(2024, 2, 1), D(2024, 1, 1)]}) == (
        "`model_version` = 'v\\'1' AND `as_of_date` IN ('2024-01-01', '2024-02-01')")


def test_conform_with_key_on_a_table_with_a_map_column(spark: SparkSession) -> None:
    rows = [("e1", "a1", "login", "2024-01-01T00:00:00", 1.0, {"k": "v"}),
            ("e1", "a1", "login", "2024-01-01T00:00:00", 1.0, {"k": "v"})]
    df = spark.createDataFrame(rows, "event_id string, account_id string, event_type string, event_time string, "
                                     "value double, properties map<string,string>")
    out = io.conform(df, schemas.EVENTS, "events", key="event_id")
    assert [r["event_id"] for r in out.good.collect()] == ["e1"]
    assert io.reject_counts(out.rejected) == {"events": {"duplicate_event_id": 1}}


def test_attribute_history_rows_are_conformed_and_bad_ones_rejected_with_a_reason(
        spark: SparkSession, settings: Settings, tmp_path) -> None:
    """account_attribute_history through read_input (types, valid_to > valid_from), then the rules across rows:
    unknown accounts, and every row of an overlapping pair of one account ([valid_from, valid_to), null = open)."""
    path = str(tmp_path / "history")
    spark.createDataFrame([
        ("a1", "2023-01-01", "2023-02-01", "basic", 5),  # good
        ("a1", "2023-02-01", None, "pro", 10),           # good: adjacent to the row before, not overlapping
        ("a2", "2023-01-01", "2023-03-01", "basic", 1),  # overlaps the next row (2023-02-01 .. 2023-03-01)
        ("a2", "2023-02-01", None, "pro", 2),            # overlaps the row before
        ("a3", "2023-01-01", "2023-01-01", "basic", 1),  # empty interval
        ("a3", "2023-02-01", "2023-01-15", "basic", 1),  # ends before it starts
        ("a3", "2023-03-01", None, "pro", None),          # good (a null attribute value is a value)
        ("zz", "2023-01-01", None, "basic", 1),          # no such account
        ("a1", None, None, "basic", 1),                  # no valid_from
        ("a1", "2023-13-01", None, "basic", 1),          # not a date
    ], "account_id string, valid_from string, valid_to string, plan string, seats int").write.parquet(path)
    s = settings.model_copy(update={"inputs": settings.inputs.model_copy(update={
        "account_attributes": ["plan", "seats"],
        "account_attribute_history": TableSource(format="parquet", path=path)})})  # type: ignore[arg-type]
    accounts = spark.createDataFrame([(a,) for a in ("a1", "a2", "a3")], "account_id string")
    conformed = io.read_input(spark, s, "account_attribute_history")
    assert conformed is not None
    out = io.check_attribute_history(conformed, accounts)
    want = spark.createDataFrame([
        ("a1", D(2023, 1, 1), D(2023, 2, 1), "basic", 5.0), ("a1", D(2023, 2, 1), None, "pro", 10.0),
        ("a3", D(2023, 3, 1), None, "pro", None),
    ], "account_id string, valid_from date, valid_to date, plan string, seats double")  # int attribute -> double
    assert_df_equality(out.good, want, ignore_row_order=True, ignore_nullable=True)
    assert io.reject_counts(out.rejected) == {"account_attribute_history": {
        "overlapping_interval": 2, "valid_to_not_after_valid_from": 2, "unknown_account_id": 1,
        "missing_valid_from": 1, "bad_type_valid_from": 1}}
    unknown = json.loads(out.rejected.where("reason = 'unknown_account_id'").first()["record"])
    assert unknown["account_id"] == "zz"


def test_unset_attribute_history_reads_as_absent(spark: SparkSession, settings: Settings) -> None:
    assert settings.inputs.account_attribute_history is None
    assert io.read_input(spark, settings, "account_attribute_history") is None


# --- ids, duplicates and versions, orphans (#22 items 2, 3, 5) ---------------------------------------

_SUBS = ("subscription_id string, account_id string, product_id string, start_date string, end_date string, "
         "mrr string, quantity string, bill_period_months string")


def _subs_row(sid: str, mrr: str = "10", product: str = "basic", account: str = "a1") -> tuple:
    return (sid, account, product, "2024-01-01", None, mrr, "1", "1")


def test_a_bad_first_copy_never_removes_the_good_copy(spark: SparkSession) -> None:
    """The bad copy sorts first by all values (-5 < 10): ranked with the good one it would make the good
    copy a duplicate and both rows would be lost. Only valid rows are ranked."""
    df = spark.createDataFrame([_subs_row("s1", mrr="-5"), _subs_row("s1", mrr="10"), _subs_row("s2", mrr="x")],
                               _SUBS)
    out = io.conform(df, schemas.SUBSCRIPTIONS, "subscriptions", key="subscription_id")
    want = spark.createDataFrame([("s1", "a1", "basic", D(2024, 1, 1), None, Decimal("10.00"), 1, 1)],
                                 schemas.SUBSCRIPTIONS)
    assert_df_equality(out.good, want, ignore_nullable=True)
    assert io.reject_counts(out.rejected) == {"subscriptions": {"negative_mrr": 1, "bad_type_mrr": 1}}


def test_with_a_version_column_the_latest_valid_copy_wins_and_ties_are_deterministic(spark: SparkSession) -> None:
    rows = [
        (*_subs_row("s1", mrr="10"), "2024-01-01"),
        (*_subs_row("s1", mrr="30"), "2024-03-01"),             # the latest valid copy: kept
        (*_subs_row("s1", mrr="20"), "2024-02-01"),
        (*_subs_row("s1", mrr="-1"), "2024-04-01"),             # later but invalid: its own reason only
        (*_subs_row("s2", product="pro"), "2024-01-01"),
        (*_subs_row("s2", product="basic"), "2024-01-01"),      # same version: the first by all values wins
        (*_subs_row("s3", mrr="7"), None),                     # no version loses to any version
        (*_subs_row("s3", mrr="8"), "2023-12-31"),
    ]
    df = spark.createDataFrame(rows, _SUBS + ", updated_at string")
    out = io.conform(df, schemas.SUBSCRIPTIONS, "subscriptions", key="subscription_id", version_column="updated_at")
    want = spark.createDataFrame([
        ("s1", "a1", "basic", D(2024, 1, 1), None, Decimal("30.00"), 1, 1),
        ("s2", "a1", "basic", D(2024, 1, 1), None, Decimal("10.00"), 1, 1),
        ("s3", "a1", "basic", D(2024, 1, 1), None, Decimal("8.00"), 1, 1),
    ], schemas.SUBSCRIPTIONS)
    assert_df_equality(out.good, want, ignore_row_order=True, ignore_nullable=True)
    assert io.reject_counts(out.rejected) == {"subscriptions": {"duplicate_subscription_id": 4, "negative_mrr": 1}}
    with pytest.raises(ContractError, match=r"^subscriptions: missing version column "
                       r"\(inputs.subscriptions.version_column\): changed_at \(found: "):
        io.conform(df, schemas.SUBSCRIPTIONS, "subscriptions", key="subscription_id", version_column="changed_at")


def test_read_input_uses_the_configured_version_column(spark: SparkSession, settings: Settings, tmp_path) -> None:
    path = str(tmp_path / "subs")
    spark.createDataFrame([(*_subs_row("s1", mrr="10"), 2), (*_subs_row("s1", mrr="20"), 1)],
                          _SUBS + ", version int").write.parquet(path)
    s = settings.model_copy(update={"inputs": settings.inputs.model_copy(update={
        "subscriptions": TableSource(format="parquet", path=path, version_column="version")})})
    out = io.read_input(spark, s, "subscriptions")
    assert out is not None
    assert [(r["subscription_id"], r["mrr"]) for r in out.good.collect()] == [("s1", Decimal("10.00"))]


def test_ids_are_normalised_in_every_id_column_so_tables_join(spark: SparkSession) -> None:
    """An account id stored as a double in accounts and as padded text in subscriptions is one account."""
    accounts = spark.createDataFrame([(123.0, "2024-01-01"), (1.5, "2024-01-01")],
                                     "account_id double, created_at string")
    subs = spark.createDataFrame([(" 7.0 ", " 123 ", "P1", "2024-01-01", None, "10", "1", "1"),
                                  ("8", "1.5", "p1", "2024-01-01", None, "10", "1", "1")], _SUBS)
    acc = io.conform(accounts, schemas.ACCOUNTS, "accounts", key="account_id", id_case="lower")
    sub = io.conform(subs, schemas.SUBSCRIPTIONS, "subscriptions", key="subscription_id", id_case="lower")
    assert_df_equality(acc.good.select("account_id"), spark.createDataFrame([("123",), ("1.5",)], "account_id string"),
                       ignore_row_order=True, ignore_nullable=True)
    joined = sub.good.join(acc.good, "account_id").select("subscription_id", "account_id", "product_id")
    want = spark.createDataFrame([("7", "123", "p1"), ("8", "1.5", "p1")],
                                 "subscription_id string, account_id string, product_id string")
    assert_df_equality(joined, want, ignore_row_order=True, ignore_nullable=True)


def test_copies_whose_ids_differ_only_in_format_are_duplicates(spark: SparkSession) -> None:
    df = spark.createDataFrame([("a1", "2024-01-01"), (" a1", "2024-01-01"), ("5.0", "2024-01-02"),
                                ("5", "2024-01-02")], "account_id string, created_at string")
    out = io.conform(df, schemas.ACCOUNTS, "accounts", key="account_id")
    assert sorted(r["account_id"] for r in out.good.collect()) == ["5", "a1"]
    assert io.reject_counts(out.rejected) == {"accounts": {"duplicate_account_id": 2}}


def test_orphan_subscriptions_are_rejected_and_counted_not_joined_away(spark: SparkSession) -> None:
    rows = [_subs_row("s1"), _subs_row("s2", account="zz"), _subs_row("s3", mrr="-1", account="zz")]
    raw = spark.createDataFrame(rows, _SUBS)
    subs = io.conform(raw, schemas.SUBSCRIPTIONS, "subscriptions", key="subscription_id")
    accounts = spark.createDataFrame([("a1",)], "account_id string")
    out = io.reject_unknown_accounts(subs, accounts, "subscriptions")
    assert [r["subscription_id"] for r in out.good.collect()] == ["s1"]
    assert out.good.columns == subs.good.columns
    assert io.reject_counts(out.rejected) == {"subscriptions": {"unknown_account_id": 1, "negative_mrr": 1}}
    orphan = json.loads(out.rejected.where("reason = 'unknown_account_id'").first()["record"])
    assert (orphan["subscription_id"], orphan["account_id"]) == ("s2", "zz")


def test_numeric_attributes_stay_numeric(spark: SparkSession) -> None:
    df = spark.createDataFrame([("a1", "2024-01-01", 12, True, "DE")],
                               "account_id string, created_at string, seats int, partner boolean, country string")
    out = io.conform(df, schemas.ACCOUNTS, "accounts", key="account_id", extra_columns=["seats", "partner", "country"])
    assert [(f.name, f.dataType.simpleString()) for f in out.good.schema.fields[2:]] == [
        ("seats", "double"), ("partner", "double"), ("country", "string")]
    assert out.good.first()[2:] == (12.0, 1.0, "DE")
