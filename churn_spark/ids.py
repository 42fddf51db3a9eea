"""Ids that join: one normalisation for every id column, and the share of rows whose account is unknown.

Exports name the same account `123` in one table, `123.0` (a double or decimal column) in another and
` 123 ` in a third; as plain strings they never join, and the account silently gets no activity.
`normalized_id` gives them one text; `account_references` measures what still does not join, so a
mismatch fails the run with one line (`check_account_references`) instead of producing zeros.
Low level: imports only pyspark, the config, the errors and the text rules (`idtext.py`); io, the jobs
and the check build on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DecimalType

from churn_spark.config import IdCase, InputsSettings
from churn_spark.errors import InputCheckError
from churn_spark.idtext import DOUBLE_EXPONENT, INTEGRAL_DECIMAL


def normalized_id(c: Column, case: IdCase = "preserve") -> Column:
    """The id as text every table agrees on: trimmed, integral numbers without a fraction or exponent
    (123, 123.0, "123.0", " 123 " and 1.23E2 all give "123"; 1.5 stays "1.5"), then `case` applied.

    Works on the text, never through a double, so large integer ids keep every digit. Null stays null;
    a blank id becomes "" (the contract checks reject it as missing).
    """
    text = F.trim(c.cast("string"))
    exact = text.try_cast(DecimalType(38, 6))  # null beyond 10^32: such an id is left as written
    normalized = (
        F.when(text.rlike(INTEGRAL_DECIMAL), F.regexp_extract(text, INTEGRAL_DECIMAL, 1))
        .when(text.rlike(DOUBLE_EXPONENT) & (exact == F.floor(exact)), F.floor(exact).cast("string"))
        .otherwise(text)
    )
    if case == "lower":
        return F.lower(normalized)
    if case == "upper":
        return F.upper(normalized)
    return normalized


def is_id_column(name: str) -> bool:
    """Whether a contract column is an id (`account_id`, `subscription_id`, ...): the contracts' naming."""
    return name.endswith("_id")


# --- unknown accounts ----------------------------------------------------------------------------


UNSUBSCRIBED = "accounts_without_subscriptions"


def account_references(accounts: DataFrame, referencing: Mapping[str, DataFrame],
                       subscriptions: DataFrame | None) -> dict[str, dict[str, Any]]:
    """Per referencing input: `rows` (weighted), `unknown_account` (rows whose `account_id` is not in
    `accounts`) and its `share`; plus `accounts_without_subscriptions` (accounts no subscription names).

    `referencing` maps a name to a frame with `account_id` and a `rows` column (the weight: 1 per row,
    or the `events` count of a daily activity row). Two small aggregates are collected (one row per input).
    """
    known = accounts.select("account_id").distinct().withColumn("__known", F.lit(True))
    refs = [df.select(F.lit(name).alias("input"), "account_id", F.col("rows").cast("long").alias("rows"))
            for name, df in referencing.items()]
    out: dict[str, dict[str, Any]] = {name: _share(0, 0) for name in referencing}
    if refs:
        union = refs[0]
        for df in refs[1:]:
            union = union.unionByName(df)
        counted = union.join(known, "account_id", "left").groupBy("input").agg(
            F.sum("rows").alias("rows"), F.sum(F.when(F.col("__known").isNull(), F.col("rows"))).alias("unknown"))
        for r in counted.collect():
            out[r["input"]] = _share(int(r["rows"] or 0), int(r["unknown"] or 0))
    if subscriptions is not None:
        subscribed = subscriptions.select("account_id").distinct().withColumn("__subscribed", F.lit(True))
        row = accounts.select("account_id").distinct().join(subscribed, "account_id", "left").agg(
            F.count("*").alias("rows"), F.count_if(F.col("__subscribed").isNull()).alias("unknown")).first()
        total, without = (int(row["rows"]), int(row["unknown"])) if row else (0, 0)
        out[UNSUBSCRIBED] = {"accounts": total, "without": without,
                             "share": round(without / total, 6) if total else 0.0}
    return out


def input_account_references(accounts: DataFrame, subscriptions: DataFrame, tickets: DataFrame | None,
                             activity: DataFrame | None) -> dict[str, dict[str, Any]]:
    """`account_references` of the inputs that name accounts: subscriptions and tickets (per row) and
    events (`activity`: rows with `account_id` and `events`, the number of events each stands for)."""
    one = F.lit(1).alias("rows")
    referencing = {"subscriptions": subscriptions.select("account_id", one)}
    if tickets is not None:
        referencing["support_tickets"] = tickets.select("account_id", one)
    if activity is not None:
        referencing["events"] = activity.select("account_id", F.col("events").alias("rows"))
    return account_references(accounts, referencing, subscriptions)


def _share(rows: int, unknown: int) -> dict[str, Any]:
    return {"rows": rows, "unknown_account": unknown, "share": round(unknown / rows, 6) if rows else 0.0}


def reference_problems(references: Mapping[str, Mapping[str, Any]], inputs: InputsSettings) -> list[str]:
    """The shares above their threshold, one phrase each (empty: the ids join well enough)."""
    limit = inputs.max_unknown_account_share
    unknown = [f"{name} {ref['share']:.2%} ({ref['unknown_account']} of {ref['rows']})"
               for name, ref in references.items() if name != UNSUBSCRIBED and ref["share"] > limit]
    problems = [f"rows whose account_id is not in accounts: {', '.join(unknown)} (inputs.max_unknown_account_share "
                f"{limit})"] if unknown else []
    unsubscribed, most = references.get(UNSUBSCRIBED), inputs.max_accounts_without_subscriptions_share
    if unsubscribed is not None and most is not None and unsubscribed["share"] > most:
        problems.append(f"accounts without subscriptions: {unsubscribed['share']:.2%} ({unsubscribed['without']} "
                        f"of {unsubscribed['accounts']}; inputs.max_accounts_without_subscriptions_share {most})")
    return problems


def check_account_references(references: Mapping[str, Mapping[str, Any]], inputs: InputsSettings) -> None:
    """Raise one line (InputCheckError, carrying the shares) when a share is above its threshold."""
    problems = reference_problems(references, inputs)
    if problems:
        raise InputCheckError("ids do not join: " + "; ".join(problems) + " -- compare the ids across inputs "
                              "(`churn-spark check`), set inputs.id_case, or raise the threshold",
                              {"account_references": dict(references)})
