"""`churn-spark check`: every input check and a short data-quality report, without writing any table.

What a new user runs first on their exports: per input the rows, the rows that would be rejected and why
(duplicates, invalid values, orphans), null rates of the contract columns, date ranges; the share of
rows whose account is unknown (ids.account_references); the event types and volumes in bronze. The same
checks the features job applies, so a report that passes means the features job will read the inputs.
Reads raw inputs and bronze only (silver is not synced, no gold table is touched).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DateType, StructType, TimestampType

from churn_spark import ids, io, progress
from churn_spark.config import Settings
from churn_spark.errors import ContractError, InputCheckError
from churn_spark.lakehouse import Lakehouse

TABLES = ("accounts", "subscriptions", "support_tickets", "account_attribute_history", "interventions")
TOP_EVENT_TYPES = 50  # the report lists this many types by volume; the total count is always given
OK, FAILED, SKIPPED = "ok", "failed", "skipped"


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


def input_profile(conformed: io.Conformed, contract: StructType, extras: Sequence[str]) -> dict[str, Any]:
    """Rows, null rate of every contract column (null or blank as read) and declared attribute, and the
    first and last value of each date or timestamp column among the valid rows. One aggregation."""
    assert conformed.staged is not None
    valid = F.col("__reason").isNull()
    dated = [f.name for f in contract.fields if isinstance(f.dataType, DateType | TimestampType)]
    aggs = [F.count(F.lit(1)).alias("rows")]
    aggs += [F.count_if(io.is_blank(F.col(f"`__raw_{f.name}`"))).alias(f"n{i}") for i, f in enumerate(contract.fields)]
    aggs += [F.count_if(F.col(a).isNull()).alias(f"a{i}") for i, a in enumerate(extras)]
    aggs += [F.min(F.when(valid, F.col(c))).alias(f"lo{i}") for i, c in enumerate(dated)]
    aggs += [F.max(F.when(valid, F.col(c))).alias(f"hi{i}") for i, c in enumerate(dated)]
    row = conformed.staged.agg(*aggs).first()
    assert row is not None
    rows = int(row["rows"])
    nulls = {f.name: row[f"n{i}"] for i, f in enumerate(contract.fields)}
    nulls.update({a: row[f"a{i}"] for i, a in enumerate(extras)})
    return {"rows": rows,
            "null_rate": {c: round(n / rows, 4) if rows else 0.0 for c, n in nulls.items()},
            "date_range": {c: [_iso(row[f"lo{i}"]), _iso(row[f"hi{i}"])] for i, c in enumerate(dated)}}


def with_rejections(profile: dict[str, Any], rejected: dict[str, int]) -> dict[str, Any]:
    """The profile with the rejected rows by reason, the valid rows and the share of duplicate keys."""
    duplicates = sum(n for reason, n in rejected.items() if reason.startswith("duplicate_"))
    rows = profile["rows"]
    return {**profile, "valid": rows - sum(rejected.values()), "rejected": dict(sorted(rejected.items())),
            "duplicate_rate": round(duplicates / rows, 4) if rows else 0.0}


def read_inputs(spark: SparkSession, settings: Settings) -> tuple[dict[str, io.Conformed], dict[str, str]]:
    """The configured inputs through their contracts, and those that could not be read at all (table ->
    the one-line error: unreadable, a missing column or attribute, a required input disabled)."""
    conformed: dict[str, io.Conformed] = {}
    errors: dict[str, str] = {}
    for table in TABLES:
        try:
            read = io.read_input(spark, settings, table)
        except ContractError as exc:
            errors[table] = str(exc)
            continue
        if read is not None:
            conformed[table] = read
    for table in ("accounts", "subscriptions"):
        if table not in conformed and table not in errors:
            errors[table] = f"{table}: required, but inputs.{table}.enabled is false"
    return conformed, errors


def with_table_rules(conformed: dict[str, io.Conformed]) -> dict[str, io.Conformed]:
    """The rules across tables, as the features job applies them: rows of subscriptions, tickets and
    interventions (as uplift.campaigns reads them) whose account is unknown, and the attribute history's
    rules, rejected with their reasons."""
    accounts = conformed.get("accounts")
    if accounts is None:
        return conformed
    out = dict(conformed)
    for table in ("subscriptions", "support_tickets", "interventions"):
        if table in out:
            out[table] = io.reject_unknown_accounts(out[table], accounts.good, table)
    if "account_attribute_history" in out:
        out["account_attribute_history"] = io.check_attribute_history(out["account_attribute_history"], accounts.good)
    return out


def bronze_events(spark: SparkSession, settings: Settings) -> DataFrame | None:
    """`bronze.events`, or None before the first ingest."""
    path = Lakehouse.from_settings(settings).bronze_events
    return spark.read.format("delta").load(path) if io.table_exists(spark, path) else None


def events_profile(events: DataFrame, quarantine: DataFrame | None) -> dict[str, Any]:
    """Volumes of bronze: events, accounts, days; per event type (the `TOP_EVENT_TYPES` largest) its
    events and first and last day; quarantined records by reason. Small aggregates only."""
    total = events.agg(F.count(F.lit(1)).alias("events"), F.count_distinct("account_id").alias("accounts"),
                       F.min("event_date").alias("first"), F.max("event_date").alias("last"),
                       F.count_distinct("event_type").alias("types")).first()
    assert total is not None
    by_type = events.groupBy("event_type").agg(F.count(F.lit(1)).alias("events"), F.min("event_date").alias("first"),
                                               F.max("event_date").alias("last"))
    top = by_type.orderBy(F.desc("events"), "event_type").limit(TOP_EVENT_TYPES).collect()
    quarantined = {} if quarantine is None else {
        r["reason"]: int(r["count"]) for r in quarantine.groupBy("reason").count().collect()}
    return {"events": int(total["events"]), "accounts": int(total["accounts"]),
            "date_range": [_iso(total["first"]), _iso(total["last"])], "event_types_total": int(total["types"]),
            "event_types": [{"event_type": r["event_type"], "events": int(r["events"]), "first": _iso(r["first"]),
                             "last": _iso(r["last"])} for r in top],
            "quarantined": dict(sorted(quarantined.items()))}


def _check(name: str, status: str, detail: str) -> dict[str, str]:
    return {"check": name, "status": status, "detail": detail}


def run_check(spark: SparkSession, settings: Settings) -> dict[str, Any]:
    """Every input check and the data-quality report; raises InputCheckError (carrying the report) when a
    check fails. Writes nothing but the run summary (cli.execute)."""
    lake = Lakehouse.from_settings(settings)
    with progress.stage("check", "inputs profiled") as step:
        conformed, errors = read_inputs(spark, settings)
        checked = with_table_rules(conformed)
        rejected = io.reject_counts(reduce(DataFrame.unionByName, [c.rejected for c in checked.values()])) \
            if checked else {}
        report: dict[str, Any] = {"inputs": {}}
        for table, c in checked.items():
            contract, _ = io.INPUT_CONTRACTS[table]
            extras = settings.inputs.account_attributes if table in io.WITH_ATTRIBUTES else []
            report["inputs"][table] = with_rejections(input_profile(c, contract, extras), rejected.get(table, {}))
        step.done(f"inputs profiled: {', '.join(report['inputs']) or 'none readable'}")
    checks = [_check(f"{t} readable", FAILED, e) for t, e in errors.items()]
    checks += [_check(f"{t} readable", OK, f"{p['rows']} rows, {p['valid']} valid")
               for t, p in report["inputs"].items()]
    events = bronze_events(spark, settings)
    with progress.stage("check", "events profiled") as step:
        quarantine_path = lake.bronze_events_quarantine
        quarantine = spark.read.format("delta").load(quarantine_path) if io.table_exists(spark, quarantine_path) \
            else None
        report["events"] = events_profile(events, quarantine) if events is not None else None
        if events is None:
            step.done(None)
            checks.append(_check("events ingested", SKIPPED, "bronze.events absent: run `churn-spark ingest`"))
    checks.append(reference_check(conformed, events, settings, report))
    failed = [c for c in checks if c["status"] == FAILED]
    report["checks"], report["passed"] = checks, not failed
    if failed:
        raise InputCheckError("check failed: " + "; ".join(c["detail"] for c in failed), report)
    return report


def reference_check(conformed: dict[str, io.Conformed], events: DataFrame | None, settings: Settings,
                    report: dict[str, Any]) -> dict[str, str]:
    """The unknown-account shares of the inputs' valid rows (into `report`; what the features job measures)
    and whether they are within their thresholds. Events are counted from bronze."""
    accounts, subscriptions = conformed.get("accounts"), conformed.get("subscriptions")
    if accounts is None or subscriptions is None:
        report["account_references"] = None
        return _check("ids join", SKIPPED, "needs readable accounts and subscriptions")
    tickets = conformed.get("support_tickets")
    activity = events.select("account_id", F.lit(1).alias("events")) if events is not None else None
    references = ids.input_account_references(accounts.good, subscriptions.good, tickets.good if tickets else None,
                                              activity)
    report["account_references"] = references
    problems = ids.reference_problems(references, settings.inputs)
    if problems:
        return _check("ids join", FAILED, "ids do not join: " + "; ".join(problems))
    return _check("ids join", OK, ", ".join(f"{n} {r['share']:.2%}" for n, r in references.items()))


def report_text(report: dict[str, Any]) -> str:
    """The report as a few lines for people: the checks, then per input and for the events the figures."""
    lines = [f"{c['status']:>8}  {c['check']}: {c['detail']}" for c in report.get("checks", [])]
    for table, p in report.get("inputs", {}).items():
        lines.append(f"{table}: {p['rows']} rows, {p['valid']} valid, duplicates {p['duplicate_rate']:.2%}"
                     + (f", rejected {p['rejected']}" if p["rejected"] else ""))
        nulls = {c: r for c, r in p["null_rate"].items() if r > 0}
        if nulls:
            lines.append("   null: " + ", ".join(f"{c} {r:.1%}" for c, r in nulls.items()))
        if p["date_range"]:
            lines.append("   dates: " + ", ".join(f"{c} {lo}..{hi}" for c, (lo, hi) in p["date_range"].items()))
    events = report.get("events")
    if events:
        lo, hi = events["date_range"]
        lines.append(f"events (bronze): {events['events']} from {events['accounts']} accounts, {lo}..{hi}, "
                     f"{events['event_types_total']} types" + (f", quarantined {events['quarantined']}"
                                                               if events["quarantined"] else ""))
        lines.append("   by type: " + ", ".join(f"{t['event_type']} {t['events']}" for t in events["event_types"]))
    return "\n".join(lines)
