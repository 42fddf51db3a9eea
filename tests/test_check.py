"""Input checks that lose nothing: `churn-spark check` on a tiny hand-written lakehouse, and the same checks
in the features job (unknown accounts fail with one line, orphan subscriptions are counted)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import TEST_SPARK
from featuredata import D, T, accounts, events, subs, tickets, write_inputs
from pyspark.sql import SparkSession

from churn_spark import io, schemas
from churn_spark.check import report_text
from churn_spark.cli import main
from churn_spark.config import Settings, load_settings, with_overrides
from churn_spark.errors import InputCheckError
from churn_spark.features.job import load_inputs
from churn_spark.lakehouse import Lakehouse

pytestmark = pytest.mark.slow  # the check command over written lakehouses: not in make test-fast

UNKNOWN_LINE = ("ids do not join: rows whose account_id is not in accounts: subscriptions 33.33% (1 of 3), "
                "events 25.00% (1 of 4) (inputs.max_unknown_account_share 0.01) -- compare the ids across inputs "
                "(`churn-spark check`), set inputs.id_case, or raise the threshold")


@pytest.fixture(scope="module")
def lake(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """accounts a1..a3 (a3 twice: a duplicate; a2 without country), subscriptions of a1, a2, the unknown zz
    and one with a negative mrr; one ticket; bronze: 4 events, one of zz; a quarantine of 3 records."""
    root = tmp_path_factory.mktemp("check") / "lake"
    settings = Settings(lakehouse=str(root), spark=TEST_SPARK)
    acc = accounts(spark, [("a1", T(2023, 1, 5), "DE"), ("a2", T(2023, 6, 1), None), ("a3", T(2023, 2, 10), "FR"),
                           ("a3", T(2023, 2, 10), "FR")], ("country",))
    sb = subs(spark, [("s1", "a1", D(2023, 1, 5), None), ("s2", "a2", D(2023, 6, 1), D(2023, 12, 1)),
                      ("s3", "zz", D(2023, 3, 1), None), ("s4", "a1", D(2023, 2, 1), None, -5)])
    ev = events(spark, [("e1", "a1", "login", T(2023, 2, 1, 9)), ("e2", "a1", "login", T(2023, 3, 1)),
                        ("e3", "a2", "report", T(2023, 6, 2)), ("e4", "zz", "login", T(2023, 7, 1))])
    tk = tickets(spark, [("t1", "a1", T(2023, 2, 3), None, "high", None)])
    write_inputs(settings, acc, sb, ev, tk)
    now = dt.datetime(2023, 7, 2)
    spark.createDataFrame([("{", "invalid_json", "f", None, now, now.date()), ("x", "invalid_json", "f", None, now,
                                                                                 now.date()),
                           ('{"event_id":"e9"}', "bad_timestamp", "f", "e9", now, now.date())],
                          schemas.EVENTS_QUARANTINE).write.format("delta").save(
        Lakehouse.from_settings(settings).bronze_events_quarantine)
    return root


def _config(lake: Path, tmp_path: Path, **inputs: Any) -> str:
    """A config file for the lake: the test session's Spark settings (so `main` reuses it unchanged)."""
    path = tmp_path / "churn.yaml"
    path.write_text(yaml.safe_dump({"lakehouse": str(lake), "spark": TEST_SPARK.model_dump(mode="json"),
                                    "inputs": {"account_attributes": ["country"], **inputs}}))
    return str(path)


INPUTS = {
    "accounts": {"rows": 4, "valid": 3, "rejected": {"duplicate_account_id": 1}, "duplicate_rate": 0.25,
                 "null_rate": {"account_id": 0.0, "created_at": 0.0, "country": 0.25},
                 "date_range": {"created_at": ["2023-01-05T00:00:00", "2023-06-01T00:00:00"]}},
    "subscriptions": {"rows": 4, "valid": 2, "rejected": {"negative_mrr": 1, "unknown_account_id": 1},
                      "duplicate_rate": 0.0,
                      "null_rate": {"subscription_id": 0.0, "account_id": 0.0, "product_id": 0.0, "start_date": 0.0,
                                    "end_date": 0.75, "mrr": 0.0, "quantity": 0.0, "bill_period_months": 0.0},
                      # the rows that meet the contract (s1, s2 and the orphan s3)
                      "date_range": {"start_date": ["2023-01-05", "2023-06-01"],
                                     "end_date": ["2023-12-01", "2023-12-01"]}},
    "support_tickets": {"rows": 1, "valid": 1, "rejected": {}, "duplicate_rate": 0.0,
                        "null_rate": {"ticket_id": 0.0, "account_id": 0.0, "opened_at": 0.0, "closed_at": 1.0,
                                      "priority": 0.0, "channel": 0.0, "text": 1.0},
                        "date_range": {"opened_at": ["2023-02-03T00:00:00", "2023-02-03T00:00:00"],
                                       "closed_at": [None, None]}},
}
EVENTS = {"events": 4, "accounts": 3, "date_range": ["2023-02-01", "2023-07-01"], "event_types_total": 2,
          "event_types": [{"event_type": "login", "events": 3, "first": "2023-02-01", "last": "2023-07-01"},
                          {"event_type": "report", "events": 1, "first": "2023-06-02", "last": "2023-06-02"}],
          "quarantined": {"bad_timestamp": 1, "invalid_json": 2}}
REFERENCES = {"subscriptions": {"rows": 3, "unknown_account": 1, "share": 0.333333},
              "support_tickets": {"rows": 1, "unknown_account": 0, "share": 0.0},
              "events": {"rows": 4, "unknown_account": 1, "share": 0.25},
              "accounts_without_subscriptions": {"accounts": 3, "without": 1, "share": 0.333333}}


def test_check_fails_on_unknown_accounts_prints_the_report_and_one_error_line(spark, lake, tmp_path, capsys) -> None:
    before = {p.name for p in lake.glob("*")}
    assert main(["--config", _config(lake, tmp_path), "check", "--json"]) == 2
    out, err = capsys.readouterr()
    report = json.loads(out)  # stdout is the JSON document alone
    assert report["inputs"] == INPUTS and report["events"] == EVENTS
    assert report["account_references"] == REFERENCES
    assert report["passed"] is False
    assert [(c["check"], c["status"]) for c in report["checks"]] == [
        ("accounts readable", "ok"), ("subscriptions readable", "ok"), ("support_tickets readable", "ok"),
        ("ids join", "failed")]
    assert err.strip().splitlines()[-1] == f"error: check failed: {UNKNOWN_LINE.split(' -- ')[0]}"
    assert {p.name for p in lake.glob("*")} == before | {"runs"}  # no table written (gold, silver)
    summaries = [json.loads(p.read_text()) for p in (lake / "runs").glob("*-check-*.json")]
    assert [(s["status"], s["error"]) for s in summaries if s.get("result") == report] == [
        ("failed", f"InputCheckError: check failed: {UNKNOWN_LINE.split(' -- ')[0]}")]


def test_check_passes_within_the_thresholds_and_prints_a_short_report(spark, lake, tmp_path, capsys) -> None:
    assert main(["--config", _config(lake, tmp_path, max_unknown_account_share=0.5), "check"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("== check: succeeded in ")
    assert lines[1:] == [
        "      ok  accounts readable: 4 rows, 3 valid",
        "      ok  subscriptions readable: 4 rows, 2 valid",
        "      ok  support_tickets readable: 1 rows, 1 valid",
        "      ok  ids join: subscriptions 33.33%, support_tickets 0.00%, events 25.00%, "
        "accounts_without_subscriptions 33.33%",
        "accounts: 4 rows, 3 valid, duplicates 25.00%, rejected {'duplicate_account_id': 1}",
        "   null: country 25.0%",
        "   dates: created_at 2023-01-05T00:00:00..2023-06-01T00:00:00",
        "subscriptions: 4 rows, 2 valid, duplicates 0.00%, rejected {'negative_mrr': 1, 'unknown_account_id': 1}",
        "   null: end_date 75.0%",
        "   dates: start_date 2023-01-05..2023-06-01, end_date 2023-12-01..2023-12-01",
        "support_tickets: 1 rows, 1 valid, duplicates 0.00%",
        "   null: closed_at 100.0%, text 100.0%",
        "   dates: opened_at 2023-02-03T00:00:00..2023-02-03T00:00:00, closed_at None..None",
        "events (bronze): 4 from 3 accounts, 2023-02-01..2023-07-01, 2 types, "
        "quarantined {'bad_timestamp': 1, 'invalid_json': 2}",
        "   by type: login 3, report 1",
    ]


def test_check_names_a_missing_attribute_and_an_input_it_cannot_read(spark, lake, tmp_path, capsys) -> None:
    config = _config(lake, tmp_path, account_attributes=["segment"], max_unknown_account_share=0.5,
                     support_tickets={"format": "delta", "path": str(tmp_path / "nothing")})
    assert main(["--config", config, "check", "--json"]) == 2
    out, err = capsys.readouterr()
    checks = {c["check"]: (c["status"], c["detail"]) for c in json.loads(out)["checks"]}
    assert checks["accounts readable"] == ("failed", "accounts: missing attribute columns (inputs.account_attributes): "
                                                     "segment (found: account_id, created_at, country)")
    assert checks["support_tickets readable"][0] == "failed"
    assert checks["ids join"] == ("skipped", "needs readable accounts and subscriptions")
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert line.startswith("error: check failed: accounts: missing attribute columns (inputs.account_attributes): "
                           "segment (found: account_id, created_at, country); cannot read delta input at ")


# --- the same checks in the features job -----------------------------------------------------------


def _settings(lake: Path, **inputs: Any) -> Settings:
    return with_overrides(load_settings(None, {"lakehouse": str(lake)}),
                          {"spark": TEST_SPARK.model_dump(mode="json"), "inputs.account_attributes": ["country"],
                           **{f"inputs.{k}": v for k, v in inputs.items()}})


def test_features_fail_before_any_gold_table_when_ids_do_not_join(spark, lake, tmp_path) -> None:
    with pytest.raises(InputCheckError) as err:
        load_inputs(spark, _settings(lake))
    assert str(err.value) == UNKNOWN_LINE and err.value.result == {"account_references": REFERENCES}
    # through the CLI: the one line, exit 2, and the shares in the run summary
    config = tmp_path / "f.yaml"
    config.write_text(yaml.safe_dump({"lakehouse": str(lake), "spark": TEST_SPARK.model_dump(mode="json")}))
    # August: every event (February..July) is inside the windows the features of 2023-08-01 read
    assert main(["--config", str(config), "features", "--from", "2023-08-01", "--to", "2023-08-01"]) == 2
    (summary,) = [json.loads(p.read_text()) for p in (lake / "runs").glob("*-features-*.json")]
    assert summary["error"] == f"InputCheckError: {UNKNOWN_LINE}"
    assert summary["result"] == {"account_references": REFERENCES}
    assert not (lake / "gold").exists()


def test_a_features_run_checks_the_ids_of_the_events_its_windows_read(spark, lake) -> None:
    """With the default windows the features of D read the events from 548 days before D (the longest window; the
    18-month lookback starts a day later) to the day before D. July 1: e1, e2 (a1) and e3 (a2) of February to June 2;
    zz's e4 of July 1 is D itself, outside: 0 unknown of 3. June 1: e1 and e2 only."""
    settings = _settings(lake, max_unknown_account_share=0.5)
    july = load_inputs(spark, settings, [dt.date(2023, 7, 1)]).account_references
    assert july is not None and july["events"] == {"rows": 3, "unknown_account": 0, "share": 0.0}
    assert july["subscriptions"] == REFERENCES["subscriptions"]  # not windowed
    june = load_inputs(spark, settings, [dt.date(2023, 6, 1)]).account_references
    assert june is not None and june["events"] == {"rows": 2, "unknown_account": 0, "share": 0.0}
    everything = load_inputs(spark, settings).account_references  # as `check`: every day
    assert everything is not None and everything["events"] == REFERENCES["events"]


def test_features_count_orphan_subscriptions_and_tickets_with_their_reason(spark, lake) -> None:
    loaded = load_inputs(spark, _settings(lake, max_unknown_account_share=0.5))
    assert loaded.account_references == REFERENCES
    assert loaded.rejected is not None
    assert io.reject_counts(loaded.rejected) == {"accounts": {"duplicate_account_id": 1},
                                                 "subscriptions": {"negative_mrr": 1, "unknown_account_id": 1}}
    assert sorted(r["subscription_id"] for r in loaded.subscriptions.collect()) == ["s1", "s2"]


def test_report_text_without_inputs_or_events_is_just_the_checks() -> None:
    report = {"checks": [{"check": "ids join", "status": "skipped", "detail": "needs readable accounts"}],
              "inputs": {}, "events": None}
    assert report_text(report) == " skipped  ids join: needs readable accounts"
