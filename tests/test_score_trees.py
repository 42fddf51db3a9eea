"""A GBT's trees as SQL (score/trees.py): read from MLlib, evaluated on vectors, the occlusion's margin shift."""

from __future__ import annotations

import pytest
from pyspark.ml import Pipeline
from pyspark.ml.classification import GBTClassifier
from pyspark.ml.feature import OneHotEncoder, VectorAssembler
from pyspark.ml.linalg import Vectors
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from churn_spark.score.trees import (
    MAX_CASES,
    Split,
    ensemble,
    fits_in_generated_code,
    goes_left,
    margin_shift,
    parse_ensemble,
    slots_of,
    tree_sql,
)

# slot 0 <= 2.0 ? (slot 1 in {1.0} ? 0.5 : -0.5) : 1.5
TREE = Split(slot=0, threshold=2.0, categories=(), right=1.5,
             left=Split(slot=1, threshold=None, categories=(1.0,), left=0.5, right=-0.5))
# slot 2 <= 0.0 ? -1.0 : 1.0
OTHER = Split(slot=2, threshold=0.0, categories=(), left=-1.0, right=1.0)
VALUES = [[1.0, 1.0, 5.0], [1.0, 0.0, 5.0], [3.0, 1.0, -5.0], [2.0, 0.0, 0.0]]


def _evaluate(spark: SparkSession, sql: str) -> list[float]:
    rows = spark.createDataFrame([(i, v) for i, v in enumerate(VALUES)], "i int, v array<double>")
    return [r["x"] for r in rows.select("i", F.expr(sql).alias("x")).orderBy("i").collect()]


def test_a_tree_as_sql_follows_its_splits(spark: SparkSession) -> None:
    # row 3: slot 0 equal to the threshold goes left, as in MLlib
    assert _evaluate(spark, tree_sql(TREE, "v", {})) == [0.5, -0.5, 1.5, -0.5]


def test_fixed_slots_are_decided_when_the_expression_is_built(spark: SparkSession) -> None:
    assert tree_sql(TREE, "v", {0: 5.0}) == "1.5D"  # slot 0 > 2: the right leaf, no CASE left
    assert _evaluate(spark, tree_sql(TREE, "v", {1: 1.0})) == [0.5, 0.5, 1.5, 0.5]
    assert slots_of(TREE) == {0, 1} and slots_of(0.25) == set()
    assert goes_left(TREE, 2.0) and not goes_left(TREE, float("nan")) and not goes_left(TREE.left, 0.0)


def test_unbounded_thresholds_are_valid_sql(spark: SparkSession) -> None:
    tree = Split(slot=0, threshold=float("inf"), categories=(), left=-1.0, right=1.0)  # everything but NaN left
    assert _evaluate(spark, tree_sql(tree, "v", {})) == [-1.0, -1.0, -1.0, -1.0]


def test_margin_shift_sums_only_the_trees_that_read_the_fixed_slots(spark: SparkSession) -> None:
    trees = [(1.0, TREE), (0.1, OTHER)]
    # slot 0 at 5.0: TREE moves every row to 1.5 (rows 0-2 from 0.5, -0.5, 1.5; row 3 from -0.5); OTHER unchanged
    got = _evaluate(spark, str(margin_shift(trees, "v", {0: 5.0})))
    assert got == pytest.approx([1.0, 2.0, 0.0, 2.0])
    # slot 2 at 1.0 (> 0): OTHER gives 1.0 instead of 1.0, 1.0, -1.0, -1.0, weighted 0.1
    got = _evaluate(spark, str(margin_shift(trees, "v", {2: 1.0})))
    assert got == pytest.approx([0.0, 0.0, 0.2, 0.2])
    assert margin_shift(trees, "v", {3: 0.0}) is None  # no tree reads slot 3


def test_the_trees_are_read_from_a_fitted_model(spark: SparkSession) -> None:
    """One stump on x = 1, 2 | 3, 4 (labels 0, 0, 1, 1): MLlib splits halfway (2.5), and a log-loss GBT's
    first tree predicts the labels mapped to -1 / +1."""
    rows = spark.createDataFrame([(Vectors.dense([x]), float(x >= 3)) for x in (1.0, 2.0, 3.0, 4.0)],
                                 ["features", "label"])
    gbt = GBTClassifier(maxIter=1, maxDepth=1, minInstancesPerNode=1, subsamplingRate=1.0, seed=1).fit(rows)
    assert ensemble(gbt) == [(1.0, Split(slot=0, threshold=2.5, categories=(), left=-1.0, right=1.0))]


# TREE and a stump with an exponent threshold and an infinite leaf, as MLlib prints them (toDebugString)
DEBUG_TEXT = """GBTClassificationModel: uid = GBTClassifier_0, numTrees=2, numClasses=2, numFeatures=3
  Tree 0 (weight 1.0):
    If (feature 0 <= 2.0)
     If (feature 1 in {1.0})
      Predict: 0.5
     Else (feature 1 not in {1.0})
      Predict: -0.5
    Else (feature 0 > 2.0)
     Predict: 1.5
  Tree 1 (weight 0.1):
    If (feature 2 <= 1.0E-5)
     Predict: -Infinity
    Else (feature 2 > 1.0E-5)
     Predict: 0.47681168808847
"""


def test_an_ensemble_is_read_from_its_debug_text() -> None:
    other = Split(slot=2, threshold=1.0e-5, categories=(), left=float("-inf"), right=0.47681168808847)
    assert parse_ensemble(DEBUG_TEXT) == [(1.0, TREE), (0.1, other)]
    assert parse_ensemble(DEBUG_TEXT.split("  Tree 1")[0]) == [(1.0, TREE)]


def test_a_debug_text_it_cannot_follow_is_one_clear_error() -> None:
    no_else = DEBUG_TEXT.replace("    Else (feature 0 > 2.0)\n     Predict: 1.5\n", "")  # tree 0 loses a branch
    with pytest.raises(ValueError, match=r"unexpected line 8 .*'Tree 1 \(weight 0.1\):'"):
        parse_ensemble(no_else)
    with pytest.raises(ValueError, match="unexpected line 3 .*'If \\(feature 0 < 2.0\\)'"):
        parse_ensemble(DEBUG_TEXT.replace("feature 0 <= 2.0", "feature 0 < 2.0"))


def _node_by_node(node) -> Split | float:
    """The tree under an MLlib `Node` read through its JVM accessors: a reading independent of the debug text."""
    if node.getClass().getSimpleName() == "LeafNode":
        return float(node.prediction())
    split = node.split()
    continuous = split.getClass().getSimpleName() == "ContinuousSplit"
    return Split(slot=int(split.featureIndex()), threshold=float(split.threshold()) if continuous else None,
                 categories=() if continuous else tuple(float(c) for c in split.leftCategories()),
                 left=_node_by_node(node.leftChild()), right=_node_by_node(node.rightChild()))


def test_a_fitted_ensemble_with_categorical_splits_reads_as_its_nodes(spark: SparkSession) -> None:
    # x in 0..6 and a one-hot c in 0..2 (binary slots MLlib splits as 2-category features): churn when x >= 3
    # or c == 1, so the trees split on both kinds
    rows = spark.createDataFrame([(float(i % 7), float(i % 3), float(i % 7 >= 3 or i % 3 == 1)) for i in range(200)],
                                 ["x", "c", "label"])
    model = Pipeline(stages=[
        OneHotEncoder(inputCols=["c"], outputCols=["cv"], dropLast=False),
        VectorAssembler(inputCols=["x", "cv"], outputCol="features"),
        GBTClassifier(maxIter=3, maxDepth=3, minInstancesPerNode=1, seed=1)]).fit(rows)
    gbt = model.stages[-1]
    got = ensemble(gbt)
    assert got == [(w, _node_by_node(t._java_obj.rootNode())) for w, t in zip(gbt.treeWeights, gbt.trees, strict=True)]
    assert len(got) == 3 and any(s.categories for _, t in got for s in _splits(t))


def _splits(tree: Split | float) -> list[Split]:
    return [] if not isinstance(tree, Split) else [tree, *_splits(tree.left), *_splits(tree.right)]


def test_large_ensembles_are_left_to_rescoring() -> None:
    shift = margin_shift([(1.0, TREE), (0.1, OTHER)], "v", {0: 5.0})  # TREE unfixed: 2 CASE WHENs
    assert shift is not None and shift.count("CASE WHEN") == 2
    assert fits_in_generated_code([shift, None])
    half = MAX_CASES // 2
    assert fits_in_generated_code([shift] * half) and not fits_in_generated_code([shift] * (half + 1))
