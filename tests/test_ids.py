"""Ids that join (churn_spark/ids.py): one normalisation for every id, and the unknown-account shares."""

from __future__ import annotations

from decimal import Decimal

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from churn_spark import ids
from churn_spark.config import InputsSettings
from churn_spark.errors import ContractError, InputCheckError


def _normalized(spark: SparkSession, rows: list[tuple], dtype: str, case: str = "preserve"):  # type: ignore[no-untyped-def]
    df = spark.createDataFrame(rows, f"id {dtype}, want string")
    return df.select(ids.normalized_id(F.col("id"), case).alias("got"), "want")  # type: ignore[arg-type]


def _assert_got_is_want(df) -> None:  # type: ignore[no-untyped-def]
    assert_df_equality(df.select(F.col("got").alias("v")), df.select(F.col("want").alias("v")), ignore_nullable=True)


def test_text_ids_are_trimmed_and_integral_numbers_lose_their_fraction(spark: SparkSession) -> None:
    _assert_got_is_want(_normalized(spark, [
        ("123", "123"), ("123.0", "123"), (" 123 ", "123"), ("123.000", "123"), ("-7.00", "-7"),
        ("1.5", "1.5"),                                      # not integral: kept as written
        ("12345678901234567890.0", "12345678901234567890"),  # beyond a double's 15-16 digits: every digit kept
        ("1.2345678901E10", "12345678901"),                  # a large double as Spark renders it
        ("1.25E1", "1.25E1"),                                # not integral
        ("12E3", "12E3"),                                    # not a double's rendering: an id like any other
        ("a-1.0", "a-1.0"), ("AbC", "AbC"), ("", ""), (None, None),
    ], "string"))


def test_numeric_ids_render_without_decimals(spark: SparkSession) -> None:
    _assert_got_is_want(_normalized(spark, [(123.0, "123"), (1.5, "1.5"), (12345678901.0, "12345678901"),
                                            (-3.0, "-3"), (None, None)], "double"))
    _assert_got_is_want(_normalized(spark, [(123, "123"), (9007199254740993, "9007199254740993")], "bigint"))
    _assert_got_is_want(_normalized(spark, [(Decimal("123.00"), "123"), (Decimal("2.50"), "2.50")],
                                    "decimal(20,2)"))


@pytest.mark.parametrize(("case", "want"), [("preserve", "Ab-1"), ("lower", "ab-1"), ("upper", "AB-1")])
def test_case_is_configurable(spark: SparkSession, case: str, want: str) -> None:
    _assert_got_is_want(_normalized(spark, [(" Ab-1 ", want), (None, None)], "string", case))


def test_is_id_column_follows_the_contract_naming() -> None:
    assert [c for c in ("account_id", "subscription_id", "product_id", "mrr", "idle") if ids.is_id_column(c)] == [
        "account_id", "subscription_id", "product_id"]


def _accounts(spark: SparkSession, names: list[str]):  # type: ignore[no-untyped-def]
    return spark.createDataFrame([(a,) for a in names], "account_id string")


def test_account_references_count_rows_whose_account_is_unknown(spark: SparkSession) -> None:
    accounts = _accounts(spark, ["a1", "a2", "a3", "a4"])
    subscriptions = spark.createDataFrame([("a1",), ("a1",), ("a2",), ("zz",)], "account_id string")
    tickets = spark.createDataFrame([("a1",)], "account_id string")
    # daily activity rows: each stands for `events` events
    activity = spark.createDataFrame([("a1", 6), ("a2", 2), ("x9", 1), ("x9", 1)], "account_id string, events long")
    got = ids.input_account_references(accounts, subscriptions, tickets, activity)
    assert got == {
        "subscriptions": {"rows": 4, "unknown_account": 1, "share": 0.25},
        "support_tickets": {"rows": 1, "unknown_account": 0, "share": 0.0},
        "events": {"rows": 10, "unknown_account": 2, "share": 0.2},
        # a3 and a4 have no subscription
        "accounts_without_subscriptions": {"accounts": 4, "without": 2, "share": 0.5},
    }


def test_unknown_share_above_the_threshold_fails_with_one_line(spark: SparkSession) -> None:
    refs = ids.input_account_references(_accounts(spark, ["a1", "a2"]),
                                        spark.createDataFrame([("a1",), ("a2",)], "account_id string"), None,
                                        spark.createDataFrame([("a1", 97), ("x", 3)], "account_id string, events long"))
    assert refs["events"] == {"rows": 100, "unknown_account": 3, "share": 0.03}
    ids.check_account_references(refs, InputsSettings(max_unknown_account_share=0.03))  # at the threshold: fine
    with pytest.raises(InputCheckError) as err:
        ids.check_account_references(refs, InputsSettings())  # default 0.01
    assert str(err.value) == (
        "ids do not join: rows whose account_id is not in accounts: events 3.00% (3 of 100) "
        "(inputs.max_unknown_account_share 0.01) -- compare the ids across inputs (`churn-spark check`), "
        "set inputs.id_case, or raise the threshold")
    assert isinstance(err.value, ContractError) and err.value.result == {"account_references": refs}


def test_accounts_without_subscriptions_are_reported_and_fail_only_with_a_threshold(spark: SparkSession) -> None:
    refs = ids.input_account_references(_accounts(spark, ["a1", "a2"]),
                                        spark.createDataFrame([("a1",)], "account_id string"), None, None)
    assert refs == {"subscriptions": {"rows": 1, "unknown_account": 0, "share": 0.0},
                    "accounts_without_subscriptions": {"accounts": 2, "without": 1, "share": 0.5}}
    assert ids.reference_problems(refs, InputsSettings()) == []  # default: reported only
    assert ids.reference_problems(refs, InputsSettings(max_accounts_without_subscriptions_share=0.2)) == [
        "accounts without subscriptions: 50.00% (1 of 2; inputs.max_accounts_without_subscriptions_share 0.2)"]


@pytest.mark.parametrize(("case", "want"), [("preserve", "Acc-7"), ("lower", "acc-7")])
def test_events_account_ids_follow_the_inputs_id_case_at_ingest(spark: SparkSession, case: str, want: str) -> None:
    """An event's account id gets the accounts' normalisation (trim, integral numbers, `inputs.id_case`):
    ' Acc-7 ' lower-cased is 'acc-7'; 42.0 written as a JSON number is account '42'."""
    import datetime as dt
    import json

    from churn_spark.config import IngestSettings
    from churn_spark.ingest import validated_events

    docs = [{"event_id": "e1", "account_id": " Acc-7 ", "event_type": "login", "event_time": "2024-05-01T00:00:00Z"},
            {"event_id": "e2", "account_id": 42.0, "event_type": "login", "event_time": "2024-05-01T00:00:00Z"}]
    records = spark.createDataFrame([(json.dumps(d), "f", "f", i, dt.datetime(2026, 1, 1)) for i, d in enumerate(docs)],
                                    "raw string, source string, _pos_a string, _pos_b long, ingested_at timestamp")
    got = validated_events(records, IngestSettings(), case).orderBy("event_id").select("account_id", "reason")  # type: ignore[arg-type]
    assert [tuple(r) for r in got.collect()] == [(want, None), ("42", None)]
