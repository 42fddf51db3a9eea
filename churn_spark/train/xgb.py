"""The optional `xgboost` family: xgboost.spark's `SparkXGBClassifier` as the Pipeline's classifier stage.

Imported only when `model.type` or `model.candidates` names `xgboost` (or a saved model holds the stage),
so the package stays an optional extra (`pip install 'churn-spark[xgboost]'`).

It is a pyspark.ml estimator: the Pipeline's encoding, class weights (`weightCol`), calibration,
PipelineModel save/load and scoring are the same as for the MLlib families. Training runs in Spark
barrier tasks on the executors (`num_workers` of them, each with `spark.task.cpus` threads);
prediction is a pandas UDF, so the executors' Python needs the package too (a local session's
workers run the driver's interpreter: `session.build_spark` sets PYSPARK_PYTHON).

The subclasses add what the rest of the project reads from any fitted classifier stage --
`numFeatures`, `predictRaw` and `featureImportances` -- so reason codes (occlusion), drift and the
report treat it as they treat MLlib's GBT.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import numpy as np
from pyspark.ml.linalg import DenseVector, Vector
from pyspark.sql import DataFrame
from xgboost.spark import SparkXGBClassifier, SparkXGBClassifierModel

LOG_TAG = "XGBoost-PySpark"  # xgboost.spark's logger: INFO by default, a line per fit and per prediction


def quiet_xgboost_log() -> None:
    """xgboost.spark's logger at WARNING unless someone chose a level (its executors' copies follow the driver's)."""
    logger = logging.getLogger(LOG_TAG)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)


class XGBoostClassificationModel(SparkXGBClassifierModel):
    """A fitted SparkXGBClassifier with the accessors of an MLlib classification model."""

    @property
    def numFeatures(self) -> int:  # noqa: N802 - MLlib's name, read by train.pipeline and score.reasons
        return int(self.get_booster().num_features())

    @property
    def featureImportances(self) -> DenseVector:  # noqa: N802
        """Total gain per vector slot, normalised to sum 1 (as MLlib's tree importances are); unused slots 0."""
        gains: dict[str, Any] = self.get_booster().get_score(importance_type="total_gain")  # keys f0, f1, ...
        values = [float(gains.get(f"f{i}", 0.0)) for i in range(self.numFeatures)]
        total = sum(values)
        return DenseVector([v / total for v in values] if total > 0 else values)

    def predictRaw(self, value: Vector) -> DenseVector:  # noqa: N802
        """[-margin, margin] of one vector, as the `raw_prediction` column holds it."""
        margin = float(self.get_booster().inplace_predict(np.asarray([value.toArray()]), predict_type="margin")[0])
        return DenseVector([-margin, margin])

    def _transform(self, dataset: DataFrame) -> DataFrame:
        quiet_xgboost_log()
        return super()._transform(dataset)


class XGBoostClassifier(SparkXGBClassifier):
    """SparkXGBClassifier whose fit returns :class:`XGBoostClassificationModel`.

    `num_workers` not configured: Spark's default parallelism (a local session's cores, a cluster's
    executor cores), so training uses the cores MLlib's estimators use.
    """

    @classmethod
    def _pyspark_model_cls(cls) -> type[XGBoostClassificationModel]:
        return XGBoostClassificationModel

    def _fit(self, dataset: DataFrame) -> XGBoostClassificationModel:
        quiet_xgboost_log()
        if self.isSet(self.num_workers):
            return cast(XGBoostClassificationModel, super()._fit(dataset))  # built by _pyspark_model_cls
        workers = max(1, dataset.sparkSession.sparkContext.defaultParallelism)
        resolved: Any = self.copy({self.num_workers: workers})
        return cast(XGBoostClassificationModel, resolved._fit(dataset))


def xgboost_estimator(seed: int) -> XGBoostClassifier:
    """The unconfigured estimator: seeded, quiet (no per-round log lines)."""
    return XGBoostClassifier(random_state=seed, verbose=False)
