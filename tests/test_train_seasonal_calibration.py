"""The seasonal shift after the calibrator (`model.seasonal_calibration`, docs/model.md "Calibration").

A constructed case where churn is seasonal and the model cannot see the season: 800 accounts x 19 monthly
snapshots (2022-01 .. 2023-07, July censored), features `usage` and the calendar columns `season_cos`,
`season_sin` (month m: cos and sin of 2 pi (m - 1) / 12), churn probability
sigmoid(logit(0.12) + 0.9 season_cos - 3 (usage - 0.5)): about 25 % in January, 5 % in July. The season columns
are excluded from the model (`model.exclude_features`), so its classifier learns one base rate. Horizon 1
month, no grace, one validation snapshot (2022-12: the calibrator learns December's rate) and six test
snapshots (2023-01 .. 2023-06: January's rate down to June's). Labels are stratified per snapshot (as in
tests/test_train_calibration.py), so a month's rate is its mean probability up to the grid.
"""

from __future__ import annotations

import datetime as dt
import math
import shutil

import pytest
from modeldata import stratified_usage_rows, write_labelled_lake
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from churn_spark.asof import add_months
from churn_spark.config import Settings, with_overrides
from churn_spark.lakehouse import Lakehouse
from churn_spark.train import pipeline as P
from churn_spark.train import registry as R
from churn_spark.train.job import run_train

pytestmark = pytest.mark.slow  # two training runs end to end

SNAPSHOTS = [add_months(dt.date(2022, 1, 1), i) for i in range(19)]
TEST = SNAPSHOTS[12:18]
OVERRIDES = {"churn.horizon_months": 1, "churn.grace_days": 0, "model.type": "lr", "model.calibration": "platt",
             "model.validation_snapshots": 1, "model.test_snapshots": 6, "model.params": {"regParam": 0.0},
             "model.exclude_features": ["season_cos", "season_sin"], "model.bootstrap_replicates": 0}


def _season(d: dt.date) -> tuple[float, float]:
    angle = 2 * math.pi * (d.month - 1) / 12
    return math.cos(angle), math.sin(angle)


def _rows() -> tuple[list[tuple], list[tuple]]:
    return stratified_usage_rows(SNAPSHOTS, 800, 9, lambda d: math.log(0.12 / 0.88) + 0.9 * _season(d)[0], _season)


def _observed_rates() -> dict[dt.date, float]:
    labels, _ = _rows()
    return {d: sum(y for _, day, y, _, _ in labels if day == d) / 800 for d in TEST}


@pytest.fixture(scope="module")
def lake(spark: SparkSession, tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("seasonal_lake") / "lakehouse")
    write_labelled_lake(spark, root, *_rows(), "usage double, season_cos double, season_sin double")
    return root


def _monthly_error(spark: SparkSession, lake: str, root: str, seasonal: bool) -> tuple[dict[dt.date, float], dict]:
    """Per test month: mean predicted minus observed churn rate of the registered model; and its metadata."""
    shutil.copytree(lake, root)
    s = with_overrides(Settings(lakehouse=root), {**OVERRIDES, "model.seasonal_calibration": seasonal})
    version = run_train(spark, s)["model_version"]
    model = R.load_model(spark, s, version).model
    features = spark.read.format("delta").load(Lakehouse(root).churn_features).where(F.col("as_of_date").isin(TEST))
    means = {r["as_of_date"]: r["p"] for r in P.predict(model, features).groupBy("as_of_date").agg(
        F.avg(P.OUTPUT_COL).alias("p")).collect()}
    observed = _observed_rates()
    return {d: means[d] - observed[d] for d in TEST}, R.load_metadata(spark, s, version)


def test_without_the_shift_every_month_gets_the_calibration_months_rate(spark: SparkSession, lake: str,
                                                                       tmp_path) -> None:
    """The control: calibrated on December, the season-blind model over-predicts the spring by > 8 points."""
    errors, meta = _monthly_error(spark, lake, str(tmp_path / "lakehouse"), seasonal=False)
    assert errors[TEST[5]] > 0.08 and errors[TEST[4]] > 0.08  # May, June: ~5-6 % observed
    assert "season" not in meta["calibration"]


def test_the_seasonal_shift_follows_the_season_of_each_test_month(spark: SparkSession, lake: str,
                                                                  tmp_path) -> None:
    errors, meta = _monthly_error(spark, lake, str(tmp_path / "lakehouse"), seasonal=True)
    assert max(abs(e) for e in errors.values()) < 0.02, errors
    season = meta["calibration"]["season"]
    # centred on the calibration snapshot, December 2022: cos(2 pi 11/12), sin(2 pi 11/12)
    assert (season["centre_cos"], season["centre_sin"]) == pytest.approx(_season(dt.date(2022, 12, 1)), abs=1e-12)
    assert season["k_cos"] == pytest.approx(0.9, abs=0.25) and abs(season["k_sin"]) < 0.25  # the generator's 0.9, 0


def test_without_calendar_columns_there_is_no_shift(spark: SparkSession, lake: str, tmp_path) -> None:
    """A features table without the season (features.season off, or built before it) trains as before: the
    calibration records no season instead of failing the run."""
    root = str(tmp_path / "lakehouse")
    shutil.copytree(lake, root)
    lh = Lakehouse(root)
    features = spark.read.format("delta").load(lh.churn_features).drop("season_cos", "season_sin")
    features.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(lh.churn_features)
    s = with_overrides(Settings(lakehouse=root), {**OVERRIDES, "model.seasonal_calibration": True,
                                                  "model.exclude_features": []})
    meta = R.load_metadata(spark, s, run_train(spark, s)["model_version"])
    assert meta["calibration"]["season"] is None
    assert "season" not in R.load_model(spark, s, meta["version"]).model.stages[-1].describe()
