"""Issue 22, item 6: a company's exports in a deliberately different shape go through `check`, ingest,
features, train and score with only a config file, and give the same labels and features as the same
data in contract shape.

One generated dataset (ingested once) is written twice:

- **contract shape** (lakehouse C): Delta accounts and subscriptions, JSON-lines events with ids, ISO times;
- **second shape** (lakehouse S): integer ids (accounts' a JSON number, subscriptions' a CSV "123.0"),
  other column and field names, epoch-millisecond times, CSV subscriptions with dd/MM/yyyy dates, a
  Parquet event backfill without event ids (re-delivered rows included), no tickets table.

Both carry the same ~200 event types -- the generator's 7 types times 29 variants -- which S writes with
case and punctuation variants ("Feature Use 7", "FEATURE-USE-7") and C as slugs (`feature_use_7`), and one
numeric attribute without history (`employees`). Account ids are the generator's number in both (C as
the string "123"), so the gold tables compare row for row.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from chispa import assert_approx_df_equality, assert_df_equality
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import MapType

from churn_spark.cli import main

pytestmark = pytest.mark.slow

VARIANTS = 29  # per generated type: 7 x 29 = 203 raw event types
SCORE_DATE = "2024-09-01"  # the last snapshot: scoring reuses its features slice
COMMON: dict[str, Any] = {
    "spark": {"shuffle_partitions": 2, "show_progress": False, "log_level": "ERROR"},
    "churn": {"horizon_months": 1, "lookback_months": 3, "snapshots": {"start": "2024-01-01", "end": "2024-09-01"}},
    "features": {"windows_days": [28, 90], "trend_windows_days": [28], "per_seat_windows_days": [28],
                 "change_windows_days": [90], "max_event_types": 12},
    "model": {"type": "lr", "refit": False, "validation_snapshots": 1, "test_snapshots": 2, "bootstrap_replicates": 0},
    "scoring": {"reason_candidates": 3, "drift_top_features": 3, "targeting": {"max_contacts": 20}},
}
GENERATE = {"accounts": 120, "start": "2023-07-01", "end": "2024-12-31", "seed": 11,
            "events_per_account_month": 4, "event_files": 2, "history_months": 6}
VOLATILE: set[str] = set()  # every column compares: the definition and the feature config are the same


def _config(path: Path, lakehouse: Path, extra: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump({"lakehouse": str(lakehouse), **COMMON, **extra}))
    return str(path)


def _number(account_id: Column) -> Column:
    """The generator's `acc-00000123` as the integer 123."""
    return F.regexp_extract(account_id, r"(\d+)$", 1).cast("long")


def _family(event_type: Column, event_id: Column) -> Column:
    """`feature_use` -> `feature_use_7`: 29 families per generated type, spread by the event's id."""
    return F.concat_ws("_", event_type, F.pmod(F.hash(event_id), F.lit(VARIANTS)).cast("string"))


def _variant(family: Column, event_id: Column) -> Column:
    """How an export spells the family: `Feature Use 7`, `FEATURE-USE-7` or `feature_use_7`, by the id."""
    spaced = F.regexp_replace(family, "_", " ")
    pick = F.pmod(F.hash(F.concat(event_id, F.lit("spelling"))), F.lit(3))
    return (F.when(pick == 0, F.initcap(spaced)).when(pick == 1, F.upper(F.regexp_replace(family, "_", "-")))
            .otherwise(family))


def _generated(spark: SparkSession, root: Path) -> tuple[DataFrame, DataFrame, DataFrame]:
    """Generate and ingest once (contract shape); accounts, subscriptions and bronze events of it."""
    lake = root / "generated"
    config = _config(root / "generated.yaml", lake, {"generate": GENERATE})
    assert main(["--config", config, "--quiet", "generate"]) == 0
    assert main(["--config", config, "--quiet", "ingest", "--once"]) == 0
    load = lambda p: spark.read.format("delta").load(str(lake / p))  # noqa: E731
    return load("raw/accounts"), load("raw/subscriptions"), load("bronze/events")


def _write_contract_shape(accounts: DataFrame, subs: DataFrame, events: DataFrame, lake: Path) -> None:
    num = _number(F.col("account_id")).cast("string")
    (accounts.select(num.alias("account_id"), "created_at",
                     (_number(F.col("account_id")) % 7 * 10).cast("double").alias("employees"))
     .write.format("delta").save(str(lake / "raw/accounts")))
    (subs.withColumn("subscription_id", F.concat_ws("-", num, F.substring_index("subscription_id", "-", -1)))
     .withColumn("account_id", num).write.format("delta").save(str(lake / "raw/subscriptions")))
    (events.select(F.to_json(F.struct(
        "event_id", num.alias("account_id"), _family(F.col("event_type"), F.col("event_id")).alias("event_type"),
        F.date_format("event_time", "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'").alias("event_time"), "value", "properties")))
     .coalesce(1).write.text(str(lake / "landing/events")))


def _write_second_shape(accounts: DataFrame, subs: DataFrame, events: DataFrame, exports: Path) -> None:
    num = _number(F.col("account_id"))
    (accounts.select(num.alias("customer_id"), F.unix_millis("created_at").alias("signup_ms"),
                     (num % 7 * 10).cast("int").alias("employees"))
     .coalesce(1).write.json(str(exports / "accounts")))
    day = lambda c: F.date_format(c, "dd/MM/yyyy")  # noqa: E731
    (subs.select(F.concat_ws("-", num, F.substring_index("subscription_id", "-", -1)).alias("sub_id"),
                 F.format_string("%d.0", num).alias("customer"), F.col("product_id").alias("product"),
                 day("start_date").alias("started"), day("end_date").alias("ended"),
                 F.col("mrr").cast("string").alias("monthly_amount"), F.col("quantity").alias("seats"),
                 F.col("bill_period_months").alias("period_months"))
     .coalesce(1).write.option("header", "true").csv(str(exports / "subscriptions")))
    rows = events.select(num.alias("customer"), _variant(_family(F.col("event_type"), F.col("event_id")),
                                                         F.col("event_id")).alias("kind"),
                         F.unix_millis("event_time").alias("ts"), F.col("value").alias("amount"),
                         F.col("properties").alias("props"))
    redelivered = rows.where(F.pmod(F.col("ts"), F.lit(50)) == 0)  # ~2 % sent twice: the same derived id
    rows.unionByName(redelivered).coalesce(2).write.parquet(str(exports / "events"))


def _second_shape_config(exports: Path) -> dict[str, Any]:
    """Everything S differs in, said in config only (what docs/onboarding.md walks through)."""
    return {
        "inputs": {
            "accounts": {"format": "json", "path": str(exports / "accounts"),
                         "columns": {"account_id": "customer_id", "created_at": "signup_ms"},
                         "timestamp_format": "epoch_ms"},
            "subscriptions": {"format": "csv", "path": str(exports / "subscriptions"),
                              "columns": {"subscription_id": "sub_id", "account_id": "customer",
                                          "product_id": "product", "start_date": "started", "end_date": "ended",
                                          "mrr": "monthly_amount", "quantity": "seats",
                                          "bill_period_months": "period_months"},
                              "date_format": "dd/MM/yyyy"},
            "support_tickets": {"enabled": False},
            "account_attributes": ["employees"],
        },
        "ingest": {"backfill": {"format": "parquet", "path": str(exports / "events")},
                   "fields": {"account_id": "customer", "event_type": "kind", "event_time": "ts",
                              "value": "amount", "properties": "props"},
                   "event_time_format": "epoch_ms", "missing_event_id": "derive"},
    }


def _stable(spark: SparkSession, path: Path) -> DataFrame:
    df = spark.read.format("delta").load(str(path))
    types = {f.name: f.dataType for f in df.schema.fields}
    return df.select(*[F.array_sort(F.map_entries(c)).alias(c) if isinstance(types[c], MapType) else F.col(f"`{c}`")
                       for c in sorted(c for c in df.columns if c not in VOLATILE)])


@pytest.fixture(scope="module")
def lakes(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("second-shape")
    accounts, subs, events = _generated(spark, root)
    contract, second, exports = root / "contract", root / "second", root / "exports"
    _write_contract_shape(accounts, subs, events, contract)
    _write_second_shape(accounts, subs, events, exports)
    c_config = _config(root / "contract.yaml", contract, {"inputs": {"support_tickets": {"enabled": False},
                                                                     "account_attributes": ["employees"]}})
    s_config = _config(root / "second.yaml", second, _second_shape_config(exports))
    for config in (c_config, s_config):
        if config == s_config:
            assert main(["--config", config, "--quiet", "check"]) == 0
            assert main(["--config", config, "--quiet", "ingest", "--source", "files"]) == 0
        else:
            assert main(["--config", config, "--quiet", "ingest", "--once"]) == 0
        assert main(["--config", config, "--quiet", "features"]) == 0
    assert main(["--config", s_config, "--quiet", "train"]) == 0
    assert main(["--config", s_config, "--quiet", "score", "--as-of", SCORE_DATE]) == 0
    return {"contract": contract, "second": second, "events": events.count(), "accounts": accounts.count()}


def _summary(lake: Path, job: str) -> dict[str, Any]:
    runs = sorted((lake / "runs").glob(f"*-{job}-*.json"))
    return json.loads(runs[-1].read_text())


def test_second_shape_gives_the_contract_shapes_labels(spark: SparkSession, lakes: dict[str, Any]) -> None:
    got, want = (_stable(spark, lakes[k] / "gold/churn_labels") for k in ("second", "contract"))
    assert want.count() > 0
    assert_df_equality(got, want, ignore_row_order=True, ignore_nullable=True)


def test_second_shape_gives_the_contract_shapes_features(spark: SparkSession, lakes: dict[str, Any]) -> None:
    got, want = (_stable(spark, lakes[k] / "gold/churn_features") for k in ("second", "contract"))
    assert got.columns == want.columns
    # 12 families of their own plus `other`, not 203 (features.max_event_types), and the numeric attribute
    assert [c for c in got.columns if c.startswith("other_")] and "employees" in got.columns
    assert_approx_df_equality(got, want, 1e-9, ignore_row_order=True, ignore_nullable=True)


def test_every_backfill_row_reached_bronze_once(spark: SparkSession, lakes: dict[str, Any]) -> None:
    """The Parquet rows without ids, re-deliveries included, are the generated events exactly once."""
    bronze = spark.read.format("delta").load(str(lakes["second"] / "bronze/events"))
    assert bronze.count() == lakes["events"]
    assert bronze.select("event_type").distinct().count() > 200  # the raw spellings are kept in bronze


def test_second_shape_is_scored_from_its_config_alone(spark: SparkSession, lakes: dict[str, Any]) -> None:
    """Every account with features at the score date gets a probability."""
    day = dt.date.fromisoformat(SCORE_DATE)
    at = lambda table: spark.read.format("delta").load(str(lakes["second"] / table)).where(  # noqa: E731
        F.col("as_of_date") == day)
    scores, features = at("gold/churn_scores"), at("gold/churn_features")
    assert _summary(lakes["second"], "score")["status"] == "succeeded"
    assert scores.count() == features.count() > 0
    assert scores.where(F.col("churn_probability").between(0, 1)).count() == scores.count()
