"""Targeting: expected values by hand, selection equal to brute force over all subsets, global ranks."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from bruteforce import best_total
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from churn_spark.config import TargetingSettings
from churn_spark.score.ranking import with_global_rank
from churn_spark.score.targeting import churn_targets, contact_limit, with_expected_value

SCORED = "account_id string, churn_probability double, mrr decimal(18,2)"

# success 0.5, 10 months of value, 10 per contact; probabilities exact in binary so values are exact.
ACCOUNTS = [
    ("a1", 0.75, Decimal("100.00")),  # value 1000, EV 0.75*0.5*1000-10 = 365
    ("a2", 0.5, Decimal("20.00")),    # value 200,  EV 50-10 = 40
    ("a3", 0.125, Decimal("40.00")),  # value 400,  EV 25-10 = 15
    ("a4", 0.0625, Decimal("32.00")), # value 320,  EV 10-10 = 0 -> never targeted
    ("a5", 0.5, None),                # no MRR -> value 0, EV -10
    ("a6", 0.25, Decimal("40.00")),   # value 400,  EV 50-10 = 40 (ties a2; a2 first by id)
]


def _settings(**kw: object) -> TargetingSettings:
    base: dict[str, object] = {"cost_per_contact": 10.0, "success_rate": 0.5, "value_months": 10.0}
    return TargetingSettings(**{**base, **kw})  # type: ignore[arg-type]


def _brute_force(accounts: list[tuple[str, float, Decimal | None]], t: TargetingSettings) -> float:
    """Best total expected value over every feasible subset (computed in plain Python)."""
    ev = {a: p * t.success_rate * float(m or 0) * t.value_months - t.cost_per_contact for a, p, m in accounts}
    return best_total(ev, t)


def _targets(spark: SparkSession, accounts: list[tuple[str, float, Decimal | None]], t: TargetingSettings) -> DataFrame:
    return churn_targets(spark.createDataFrame(accounts, SCORED).repartition(3), t)


def test_expected_value_matches_hand_computation(spark: SparkSession) -> None:
    out = with_expected_value(spark.createDataFrame(ACCOUNTS, SCORED), _settings()).select(
        "account_id", "account_value", "contact_cost", "expected_value")
    expected = spark.createDataFrame(
        [("a1", 1000.0, 10.0, 365.0), ("a2", 200.0, 10.0, 40.0), ("a3", 400.0, 10.0, 15.0),
         ("a4", 320.0, 10.0, 0.0), ("a5", 0.0, 10.0, -10.0), ("a6", 400.0, 10.0, 40.0)],
        "account_id string, account_value double, contact_cost double, expected_value double")
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.parametrize(
    ("limits", "chosen"),
    [
        ({"max_contacts": None, "budget": None}, [("a1", 1), ("a2", 2), ("a6", 3), ("a3", 4)]),  # all positive EV
        ({"max_contacts": 10, "budget": 25.0}, [("a1", 1), ("a2", 2)]),                         # budget binds: 2
        ({"max_contacts": 1, "budget": 1000.0}, [("a1", 1)]),                                   # contacts bind
        ({"max_contacts": 3, "budget": 30.0}, [("a1", 1), ("a2", 2), ("a6", 3)]),               # both exactly 3
        ({"max_contacts": 0, "budget": None}, []),
    ],
)
def test_selection_is_the_brute_force_optimum(spark: SparkSession, limits: dict[str, object],
                                              chosen: list[tuple[str, int]]) -> None:
    t = _settings(**limits)
    out = _targets(spark, ACCOUNTS, t)
    got = out.select("account_id", "target_rank")
    assert_df_equality(got, spark.createDataFrame(chosen, "account_id string, target_rank long"),
                       ignore_row_order=True, ignore_nullable=True)
    total = out.agg(F.coalesce(F.sum("expected_value"), F.lit(0.0))).first()[0]
    assert total == pytest.approx(_brute_force(ACCOUNTS, t))


def test_all_negative_expected_values_target_nobody(spark: SparkSession) -> None:
    t = _settings(cost_per_contact=1000.0, max_contacts=5)
    out = _targets(spark, ACCOUNTS, t)
    assert_df_equality(out.select("account_id"), spark.createDataFrame([], "account_id string"), ignore_nullable=True)
    assert _brute_force(ACCOUNTS, t) == 0.0


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_random_cases_equal_brute_force_and_respect_budget(spark: SparkSession, seed: int) -> None:
    rng = random.Random(seed)
    accounts = [(f"r{i}", rng.random(), Decimal(rng.randint(0, 400)).quantize(Decimal("0.01"))) for i in range(9)]
    t = _settings(cost_per_contact=rng.choice([5.0, 20.0, 80.0]), success_rate=rng.choice([0.1, 0.3]),
                  max_contacts=rng.choice([None, 2, 4]), budget=rng.choice([None, 45.0, 200.0]))
    out = _targets(spark, accounts, t)
    rows = out.collect()  # at most 9 rows
    assert all(r["expected_value"] > 0 for r in rows)
    assert t.max_contacts is None or len(rows) <= t.max_contacts
    assert t.budget is None or len(rows) * t.cost_per_contact <= t.budget
    assert sum(r["expected_value"] for r in rows) == pytest.approx(_brute_force(accounts, t))


def test_contact_limit_divides_money_exactly() -> None:
    assert contact_limit(TargetingSettings(budget=100.0, cost_per_contact=0.1)) == 1000
    assert contact_limit(TargetingSettings(budget=99.0, cost_per_contact=25.0, max_contacts=10)) == 3
    assert contact_limit(TargetingSettings(budget=100.0, cost_per_contact=0.0)) is None
    assert contact_limit(TargetingSettings(max_contacts=7)) == 7


@pytest.mark.parametrize("descending", [True, False])
def test_global_rank_equals_a_single_window_row_number(spark: SparkSession, descending: bool) -> None:
    rows = [(f"k{i:02d}", float(i % 5) / 4) for i in range(23)] + [("z", 0.3)]  # many ties on the key
    df = spark.createDataFrame(rows, "account_id string, p double").repartition(4)
    got = with_global_rank(df, "p", "account_id", "rank", descending=descending, buckets=3, total_col="n")
    order = F.col("p").desc() if descending else F.col("p").asc()
    expected = df.withColumn("rank", F.row_number().over(Window.orderBy(order, "account_id")).cast("long")) \
        .withColumn("n", F.lit(24).cast("long"))
    assert_df_equality(got.select("account_id", "p", "rank", "n"), expected, ignore_row_order=True,
                       ignore_nullable=True)


def test_global_rank_of_no_rows_is_empty(spark: SparkSession) -> None:
    # no key at all: the quantile edges are null, every row (none) goes to bucket 0, and nothing fails
    df = spark.createDataFrame([], "account_id string, p double")
    assert with_global_rank(df, "p", "account_id", "rank", total_col="n").count() == 0
