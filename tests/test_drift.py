"""PSI: the formula by hand, then bins cut on the reference and shares from Spark, by hand."""

from __future__ import annotations

import math

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from churn_spark.score.drift import numeric_bin, population_stability, psi


def test_psi_formula_by_hand() -> None:
    # (0.25-0.5)*ln(0.25/0.5) + (0.75-0.5)*ln(0.75/0.5)
    assert psi({"0": 0.5, "1": 0.5}, {"0": 0.25, "1": 0.75}) == pytest.approx(
        0.25 * math.log(2) + 0.25 * math.log(1.5))
    assert psi({"a": 0.3, "b": 0.7}, {"a": 0.3, "b": 0.7}) == 0.0
    # A bin missing on one side is floored at 1e-4, not infinite.
    assert psi({"a": 1.0}, {"a": 0.5, "b": 0.5}) == pytest.approx(
        (0.5 - 1.0) * math.log(0.5) + (0.5 - 1e-4) * math.log(0.5 / 1e-4))


def test_numeric_bin_counts_edges_passed_and_keeps_nulls(spark: SparkSession) -> None:
    df = spark.createDataFrame([(1.0,), (5.0,), (7.5,), (None,)], "x double")
    got = df.select("x", numeric_bin(F.col("x"), [5.0, 7.0]).alias("bin"))
    expected = spark.createDataFrame([(1.0, "0"), (5.0, "1"), (7.5, "2"), (None, "null")], "x double, bin string")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_population_stability_by_hand(spark: SparkSession) -> None:
    # Reference x = 1..10: the approximate median is 5, so with 2 bins the edge is 5 -> shares 0.4 / 0.6.
    reference = spark.createDataFrame([(float(i), "de" if i <= 5 else "fr") for i in range(1, 11)],
                                      "x double, country string")
    # Current: 1, 2, 3 (bin 0), 9 (bin 1), one null -> shares 0.6 / 0.2 / 0.2; countries de, de, es, es, null.
    current = spark.createDataFrame([(1.0, "de"), (2.0, "de"), (3.0, "es"), (9.0, "es"), (None, None)],
                                    "x double, country string")
    got = population_stability(reference, current, ["x"], ["country"], bins=2)
    floor = 1e-4
    x = (0.6 - 0.4) * math.log(0.6 / 0.4) + (0.2 - 0.6) * math.log(0.2 / 0.6) + (0.2 - floor) * math.log(0.2 / floor)
    country = ((0.4 - 0.5) * math.log(0.4 / 0.5) + (floor - 0.5) * math.log(floor / 0.5)
               + (0.4 - floor) * math.log(0.4 / floor) + (0.2 - floor) * math.log(0.2 / floor))
    assert got == pytest.approx({"x": x, "country": country})
