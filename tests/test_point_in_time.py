"""Point-in-time property test: facts dated on or after D never change D's features or eligibility.

Random data from several seeds (random.Random) in one dataset (accounts are namespaced by seed);
each seed then adds, deletes and changes random events, tickets and subscriptions dated on or after
the latest snapshot D. Features and eligibility of every snapshot must stay exactly the same.
With an attribute history, the perturbation also changes attribute values from a day on or after D
(closing the interval valid at D there, adding future intervals) and today's values in `accounts`.
"""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession

from churn_spark import schemas
from churn_spark.config import Settings, with_overrides
from churn_spark.features.job import FeatureInputs, labels_and_features
from churn_spark.silver import daily_activity

SNAPSHOTS = [dt.date(2023, 2, 1), dt.date(2023, 3, 1)]
D = SNAPSHOTS[-1]
D_TIME = dt.datetime.combine(D, dt.time())
SEEDS = range(6)
TYPES = ["login", "export"]
SETTINGS = with_overrides(Settings(), {
    "features.windows_days": [7, 28, 90], "features.trend_windows_days": [7, 28],
    "features.per_seat_windows_days": [28],
    "features.change_windows_days": [28, 90], "churn.lookback_months": 3, "inputs.account_attributes": ["country"],
})
DATA_END = dt.date(2024, 6, 30)


def _day(rng: random.Random, lo: dt.date, hi: dt.date) -> dt.date:
    return lo + dt.timedelta(days=rng.randrange((hi - lo).days + 1))


def _time(rng: random.Random, lo: dt.date, hi: dt.date) -> dt.datetime:
    return dt.datetime.combine(_day(rng, lo, hi), dt.time()) + dt.timedelta(seconds=rng.randrange(86_400))


def base_data(seed: int) -> dict[str, list[tuple]]:
    rng = random.Random(seed)
    out: dict[str, list[tuple]] = {"accounts": [], "subs": [], "events": [], "tickets": [], "history": []}
    for i in range(5):
        acc = f"s{seed}a{i}"
        created = _day(rng, dt.date(2022, 1, 1), dt.date(2023, 2, 20))
        out["accounts"].append((acc, dt.datetime.combine(created, dt.time(9)), rng.choice(["DE", "FR", None])))
        frm = created  # country history: back-to-back intervals [valid_from, valid_to), the last one maybe open
        for _ in range(rng.randint(0, 3)):
            to = rng.choice([None, _day(rng, frm + dt.timedelta(days=1), dt.date(2023, 6, 1))])
            out["history"].append((acc, frm, to, rng.choice(["DE", "FR", None])))
            if to is None:
                break
            frm = to
        start = created
        for j in range(rng.randint(1, 3)):
            last_end = dt.date(2023, 8, 1)  # a renewal chain may start after it: then the subscription stays open
            end = None if start >= last_end else rng.choice([None, _day(rng, start + dt.timedelta(days=1), last_end)])
            out["subs"].append((f"{acc}s{j}", acc, rng.choice(["basic", "pro"]), start, end,
                                Decimal(rng.randint(10, 500)), rng.randint(1, 9), rng.choice([1, 12])))
            start = (end or start) + dt.timedelta(days=rng.randint(-20, 40))
        for k in range(rng.randint(0, 25)):
            when = _time(rng, dt.date(2022, 9, 1), dt.date(2023, 5, 1))
            out["events"].append((f"{acc}e{k}", acc, rng.choice(TYPES), when,
                                  rng.choice([None, round(rng.uniform(0, 10), 2)])))
        for k in range(rng.randint(0, 4)):
            opened = _time(rng, dt.date(2022, 9, 1), dt.date(2023, 4, 1))
            closed = rng.choice([None, opened + dt.timedelta(hours=rng.randint(1, 2000))])
            out["tickets"].append((f"{acc}t{k}", acc, opened, closed, rng.choice(["low", "high", "urgent"]),
                                   rng.choice(["great help, thanks", "this is awful", None, "ok"])))
    return out


def perturb(data: dict[str, list[tuple]], seed: int) -> dict[str, list[tuple]]:
    """Add, delete and change facts dated on or after D only."""
    rng = random.Random(1000 + seed)
    accs = [a[0] for a in data["accounts"]]
    later = dt.date(2023, 12, 31)
    events = [e for e in data["events"] if e[3] < D_TIME or rng.random() < 0.5]  # delete some future events
    events = [(e[0], e[1], rng.choice(TYPES + ["other"]), e[3], rng.random()) if e[3] >= D_TIME else e for e in events]
    events += [(f"new{seed}e{k}", rng.choice(accs), rng.choice(TYPES + ["other"]),
                D_TIME if k == 0 else _time(rng, D, later), rng.random()) for k in range(8)]
    tickets = []
    for t in data["tickets"]:
        if t[2] >= D_TIME and rng.random() < 0.5:
            continue  # delete a ticket opened on or after D
        if t[3] is None or t[3] >= D_TIME:  # closing (or not) on or after D is the future
            t = (*t[:3], rng.choice([None, D_TIME, _time(rng, D, later)]), *t[4:])
        tickets.append(t)
    tickets += [(f"new{seed}t{k}", rng.choice(accs), _time(rng, D, later), None, "urgent", "terrible")
                for k in range(3)]
    subs = []
    for s in data["subs"]:
        if s[3] > D and rng.random() < 0.5:
            continue  # delete a subscription starting after D
        if s[4] is None or s[4] > D:  # an end after D is the future: move it, or open it
            s = (*s[:4], rng.choice([None, _day(rng, D + dt.timedelta(days=1), later)]), *s[5:])
        if s[3] > D:
            s = (s[0], s[1], "enterprise", s[3], s[4], Decimal(999), 50, 12)
        subs.append(s)
    subs += [(f"new{seed}s{k}", rng.choice(accs), "pro", _day(rng, D + dt.timedelta(days=1), later), None,
              Decimal(123), 3, 1) for k in range(2)]
    history = []
    for acc in accs:  # each account's value changes on a day on or after D (D itself for the first)
        change = D if acc == accs[0] else _day(rng, D, later)
        rows = [h for h in data["history"] if h[0] == acc and h[1] < change]  # drop intervals starting later
        rows = [(h[0], h[1], change, h[3]) if h[2] is None or h[2] > change else h for h in rows]
        history += rows + [(acc, change, None, "US")]
    accounts = [(a[0], a[1], "XX") for a in data["accounts"]]  # today's values: the future of a past D
    return {"accounts": accounts, "subs": subs, "events": events, "tickets": tickets, "history": history}


def inputs_of(spark: SparkSession, datasets: list[dict[str, list[tuple]]], with_history: bool) -> FeatureInputs:
    rows = {k: [r for d in datasets for r in d[k]] for k in datasets[0]}
    bronze = [(*e, None, e[3], "test", e[3].date()) for e in rows["events"]]
    tickets = [(t[0], t[1], t[2], t[3], t[4], "email", t[5]) for t in rows["tickets"]]
    return FeatureInputs(
        accounts=spark.createDataFrame(rows["accounts"], "account_id string, created_at timestamp, country string"),
        subscriptions=spark.createDataFrame(rows["subs"], schemas.SUBSCRIPTIONS),
        tickets=spark.createDataFrame(tickets, schemas.SUPPORT_TICKETS),
        events=daily_activity(spark.createDataFrame(bronze, schemas.BRONZE_EVENTS)), rejected=None,
        attribute_history=spark.createDataFrame(
            rows["history"], "account_id string, valid_from date, valid_to date, country string",
        ) if with_history else None,
    )


def features_and_eligibility(inputs: FeatureInputs) -> tuple[DataFrame, DataFrame]:
    labels, features = labels_and_features(inputs, SETTINGS, SNAPSHOTS, DATA_END, TYPES)
    return features, labels.select("account_id", "as_of_date", "tenure_days")


@pytest.mark.parametrize("with_history", [False, True], ids=["static_attributes", "attribute_history"])
def test_future_facts_never_change_features_or_eligibility(spark, with_history):
    base = [base_data(s) for s in SEEDS]
    changed = [perturb(d, s) for d, s in zip(base, SEEDS, strict=True)]
    if not with_history:  # static attributes are today's values by definition: they stay as they were
        changed = [{**c, "accounts": b["accounts"]} for b, c in zip(base, changed, strict=True)]
    assert sum(len(b["events"]) for b in base) != sum(len(c["events"]) for c in changed)  # the future did change
    before_features, before_eligible = features_and_eligibility(inputs_of(spark, base, with_history))
    after_features, after_eligible = features_and_eligibility(inputs_of(spark, changed, with_history))
    before_rows = before_features.cache()
    assert_df_equality(after_eligible, before_eligible, ignore_row_order=True)
    assert_df_equality(after_features, before_rows, ignore_row_order=True)
    seen = {r["as_of_date"] for r in before_rows.select("as_of_date").distinct().collect()}
    assert seen == set(SNAPSHOTS)  # both snapshots have eligible accounts, so the comparison is not vacuous
    if with_history:  # the history gave values at D (not only nulls), so attributes were compared too
        assert before_rows.where("country is not null").count() > 0
    before_rows.unpersist()
