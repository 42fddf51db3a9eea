"""The registered model is calibrated on out-of-time predictions of models fitted the way it is.

A constructed case where churn becomes more common: 1,000 accounts x 7 monthly snapshots (2023-01 ..
2023-07), one feature `usage`, churn probability sigmoid(base - 3 (usage - 0.5)) with the base rate
about 10 % in January .. April and about 40 % in May and June (July censored). Horizon 1 month, no grace:
train January .. April, validation May, test June, refit January .. May.

The old way (kept below as the control) weighted every fit by the *training* snapshots' label rate and
attached the Platt scaling fitted for the train-only model to the refitted one: the refit, weighted for
10 % churn on rows with 16 %, leans to churn, and the attached scaling no longer matches it.
Unweighted fits (the default) have the same trap in another form (the second control): each fit's raw
probabilities carry its own training rate, 10 % for the fold, 16 % for the refit, so a calibrator fitted
on the fold's predictions over-predicts with the refit unless both are centred on their fit's prior.
"""

from __future__ import annotations

import datetime as dt
import math

import pytest
from modeldata import stratified_usage_rows, write_labelled_lake
from pyspark.sql import DataFrame, SparkSession

from churn_spark.asof import add_months
from churn_spark.config import Settings, with_overrides
from churn_spark.lakehouse import Lakehouse
from churn_spark.train import pipeline as P
from churn_spark.train import registry as R
from churn_spark.train.job import run_train, with_class_weight
from churn_spark.train.split import filter_snapshots

pytestmark = pytest.mark.slow  # two training runs end to end

SNAPSHOTS = [add_months(dt.date(2023, 1, 1), i) for i in range(7)]
TRAIN, MAY, JUNE = SNAPSHOTS[:4], SNAPSHOTS[4], SNAPSHOTS[5]
OVERRIDES = {"churn.horizon_months": 1, "churn.grace_days": 0, "model.type": "lr",
             "model.validation_snapshots": 1, "model.test_snapshots": 1, "model.params": {"regParam": 0.0}}


def _rows() -> tuple[list[tuple], list[tuple]]:
    """Stratified labels (`modeldata.stratified_usage_rows`): a month's churn rate is its mean p."""
    return stratified_usage_rows(SNAPSHOTS, 1000, 5, lambda d: math.log(0.4 / 0.6) if d >= MAY
                                 else math.log(0.1 / 0.9))


def _observed_rate(day: dt.date) -> float:
    labels, _ = _rows()
    values = [y for _, d, y, _, _ in labels if d == day]
    return sum(values) / len(values)


@pytest.fixture(scope="module")
def lake(spark: SparkSession, tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("calibration_lake") / "lakehouse")
    write_labelled_lake(spark, root, *_rows(), "usage double")
    return root


def _dataset(spark: SparkSession, root: str) -> DataFrame:
    lh = Lakehouse(root)
    labels = spark.read.format("delta").load(lh.churn_labels).where("label is not null").drop("churn_date")
    features = spark.read.format("delta").load(lh.churn_features)
    return features.join(labels.drop("tenure_days"), ["account_id", "as_of_date"])


def _mean_predicted(model, rows: DataFrame) -> float:  # type: ignore[no-untyped-def]
    return P.predict(model, rows).agg({"churn_probability": "avg"}).first()[0]


def test_old_way_was_visibly_off_on_this_case(spark: SparkSession, lake: str) -> None:
    """The control: the previous training code's steps, by hand, over-predict June by more than 8 points."""
    data = _dataset(spark, lake)
    train_rate = sum(_observed_rate(d) for d in TRAIN) / len(TRAIN)
    columns = P.FeatureColumns(["usage"], [])
    pipeline, _ = P.build_pipeline(columns, "lr", {"regParam": 0.0}, seed=7, weighted=True)
    train_model = pipeline.fit(with_class_weight(filter_snapshots(data, TRAIN), train_rate))
    platt = P.fit_platt(P.predict(train_model, filter_snapshots(data, [MAY])))
    refit = pipeline.fit(with_class_weight(filter_snapshots(data, [*TRAIN, MAY]), train_rate))
    old = P.with_calibration(refit, platt)
    assert _mean_predicted(old, filter_snapshots(data, [JUNE])) - _observed_rate(JUNE) > 0.08


def test_unweighted_fits_without_centring_were_visibly_off_too(spark: SparkSession, lake: str) -> None:
    """The second control: unweighted fold fit, Platt on its raw May predictions, attached to the unweighted
    refit as they are: June over-predicted by more than 8 points."""
    data = _dataset(spark, lake)
    pipeline, _ = P.build_pipeline(P.FeatureColumns(["usage"], []), "lr", {"regParam": 0.0}, seed=7, weighted=False)
    platt = P.fit_platt(P.predict(pipeline.fit(filter_snapshots(data, TRAIN)), filter_snapshots(data, [MAY])))
    uncentred = P.with_calibration(pipeline.fit(filter_snapshots(data, [*TRAIN, MAY])), platt)
    assert _mean_predicted(uncentred, filter_snapshots(data, [JUNE])) - _observed_rate(JUNE) > 0.08


@pytest.mark.parametrize(("method", "class_weights"), [("platt", False), ("isotonic", False), ("platt", True)])
def test_registered_model_is_calibrated_on_the_test_snapshot(spark: SparkSession, lake: str, method: str,
                                                             class_weights: bool,
                                                             tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    root = str(tmp_path / "lakehouse")
    shutil.copytree(lake, root)
    s = with_overrides(Settings(lakehouse=root), {**OVERRIDES, "model.calibration": method,
                                                  "model.class_weights": class_weights})
    result = run_train(spark, s)
    june = filter_snapshots(_dataset(spark, root), [JUNE])
    registered = R.load_model(spark, s, result["model_version"]).model
    in_the_large = _mean_predicted(registered, june) - _observed_rate(JUNE)
    assert abs(in_the_large) < 0.03
    # The summary's metric is the same quantity, computed by the job on the test snapshot.
    assert result["metrics"]["calibration_in_the_large"] == pytest.approx(in_the_large, abs=1e-9)
    meta = R.load_metadata(spark, s, result["model_version"])
    assert meta["calibration"]["method"] == method and meta["calibration"]["rows"] == 1000  # May's rows only
    # the stage sits at the refit's prior: logit of January .. May's churn rate unweighted, even when balanced
    refit_rate = sum(_observed_rate(d) for d in [*TRAIN, MAY]) / 5
    expected_prior = 0.0 if class_weights else math.log(refit_rate / (1 - refit_rate))
    assert meta["calibration"]["prior_logit"] == pytest.approx(expected_prior, abs=1e-9)
    assert isinstance(registered.stages[-1], P.IsotonicCalibration if method == "isotonic" else P.PlattCalibration)
