"""The calibration part of the ONNX graph against the Spark stages, on a few hand-made rows: Platt and
isotonic, each followed by a seasonal shift (`model.seasonal_calibration`), including a row without a season.
Only the calibration subgraph is built (no model is trained), so this runs in `make test-fast`."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper
from pyspark.ml.linalg import Vectors
from pyspark.sql import SparkSession

from churn_spark.onnx.convert import OPSET, GraphBuilder, add_calibration
from churn_spark.onnx.schema import OUTPUT, RAW_OUTPUT
from churn_spark.train import pipeline as P

# (raw P(class 1), season_cos, season_sin); the last row has no season (NaN in ONNX, null in Spark)
ROWS = [(0.2, 1.0, 0.0), (0.2, -0.5, 0.866), (0.65, 0.0, -1.0), (0.9, float("nan"), float("nan"))]
SEASON = [0.5, -1.0, 0.0, 0.5]  # k_cos, k_sin, centre_cos, centre_sin


def _graph_probabilities(stage: P.Calibration) -> np.ndarray:
    g = GraphBuilder("calibration")
    add_calibration(g, "probability", stage)
    inputs = [helper.make_tensor_value_info("probability", TensorProto.FLOAT, [None, 2]),
              helper.make_tensor_value_info("season_cos", TensorProto.DOUBLE, [None, 1]),
              helper.make_tensor_value_info("season_sin", TensorProto.DOUBLE, [None, 1])]
    outputs = [helper.make_tensor_value_info(RAW_OUTPUT, TensorProto.DOUBLE, [None, 1]),
               helper.make_tensor_value_info(OUTPUT, TensorProto.DOUBLE, [None, 1])]
    model = helper.make_model(helper.make_graph(g.nodes, "calibration", inputs, outputs, g.initializers),
                              opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {"probability": np.array([[1 - p, p] for p, _, _ in ROWS], dtype=np.float32),
            "season_cos": np.array([[c] for _, c, _ in ROWS]), "season_sin": np.array([[s] for _, _, s in ROWS])}
    (out,) = session.run([OUTPUT], feed)
    return np.asarray(out).reshape(-1)


def _spark_probabilities(spark: SparkSession, stage: P.Calibration) -> list[float]:
    df = spark.createDataFrame(
        [(i, Vectors.dense([1 - p, p]), None if math.isnan(c) else c, None if math.isnan(s) else s)
         for i, (p, c, s) in enumerate(ROWS)], ["i", "probability", "season_cos", "season_sin"])
    return [r[0] for r in stage.transform(df).orderBy("i").select(P.OUTPUT_COL).collect()]


def test_platt_then_seasonal_shift_by_hand_in_spark_and_onnx(spark: SparkSession) -> None:
    stage = P.PlattCalibration(2.0, 0.0).with_season(SEASON)

    def by_hand(p: float, cos: float, sin: float) -> float:
        shift = 0.0 if math.isnan(cos) else 0.5 * cos - 1.0 * (sin - 0.5)
        return 1 / (1 + math.exp(-(2.0 * math.log(p / (1 - p)) + shift)))

    expected = [by_hand(*row) for row in ROWS]  # e.g. row 1: logit 2 ln(1/4) + 0.5 + 0.5 -> 1 / (1 + 16 e^-1)
    assert expected[0] == pytest.approx(1 / (1 + 16 * math.exp(-1.0)))
    assert _spark_probabilities(spark, stage) == pytest.approx(expected, abs=1e-9)
    # the raw probability passes the graph as float32 (the classifier's output): parity within float32's step
    assert _graph_probabilities(stage) == pytest.approx(expected, abs=1e-6)


def test_isotonic_with_a_tie_break_then_seasonal_shift_in_spark_and_onnx(spark: SparkSession) -> None:
    stage = P.IsotonicCalibration([0.1, 0.5, 0.8], [0.05, 0.3, 0.6], tieBreak=0.1).with_season(SEASON)
    spark_p = _spark_probabilities(spark, stage)
    # raw 0.9 is beyond the last knot (0.6) and has no season: 0.9 x 0.6 + 0.1 x 0.9 = 0.63. Raw 0.2 with cos 1,
    # sin 0: the ramp 0.05 + 0.25 x 0.1 / 0.4 = 0.1125, tie-broken 0.9 x 0.1125 + 0.1 x 0.2 = 0.12125, then the
    # log-odds + 0.5 x 1 - 1.0 x (0 - 0.5) = + 1.0
    assert spark_p[3] == pytest.approx(0.63, abs=1e-12)
    assert spark_p[0] == pytest.approx(1 / (1 + (1 - 0.12125) / 0.12125 * math.exp(-1.0)), abs=1e-9)
    assert _graph_probabilities(stage) == pytest.approx(spark_p, abs=1e-6)
