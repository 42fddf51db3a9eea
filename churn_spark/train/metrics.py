"""Evaluation metrics of churn scores, computed with Spark on the test snapshots.

Input grain: one row per (account, snapshot) with `label` (0/1) and a score column
(`churn_probability` by default). Ranking metrics (top-k %, deciles) order rows by score, ties
broken by the key columns so the result is deterministic; "top k %" is the first ceil(k * n) rows.
Only small aggregates leave Spark.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from pyspark.ml.evaluation import BinaryClassificationEvaluator
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from churn_spark.schemas import KEYS

SCORE = "churn_probability"
LABEL = "label"
TOP_FRACTIONS = (0.05, 0.10, 0.20)
TIE_BREAK = KEYS
LOG_LOSS_EPS = 1e-15


def _area(scored: DataFrame, metric: Literal["areaUnderROC", "areaUnderPR"], score_col: str, label_col: str) -> float:
    evaluator = BinaryClassificationEvaluator(rawPredictionCol=score_col, labelCol=label_col,
                                              metricName=metric, numBins=0)
    data = scored.select(F.col(score_col).cast("double").alias(score_col),
                         F.col(label_col).cast("double").alias(label_col))
    return float(evaluator.evaluate(data))


def roc_auc(scored: DataFrame, score_col: str = SCORE, label_col: str = LABEL) -> float:
    """Area under the ROC curve (exact: no down-sampling; tied scores count one half)."""
    return _area(scored, "areaUnderROC", score_col, label_col)


def pr_auc(scored: DataFrame, score_col: str = SCORE, label_col: str = LABEL) -> float:
    """Area under the precision-recall curve as MLlib defines it: trapezoids over the distinct
    thresholds, starting at (recall 0, precision at the highest threshold)."""
    return _area(scored, "areaUnderPR", score_col, label_col)


def clipped(p: Column, eps: float = LOG_LOSS_EPS) -> Column:
    return F.least(F.greatest(p, F.lit(eps)), F.lit(1 - eps))


def log_loss_term(label: Column, p: Column) -> Column:
    """-(y log p + (1 - y) log(1 - p)) with p clipped away from 0 and 1."""
    q = clipped(p)
    y = label.cast("double")
    return -(y * F.log(q) + (F.lit(1.0) - y) * F.log(F.lit(1.0) - q))


def exact_mean(c: Column) -> Column:
    """Mean of `c` summed as decimal(38,18): an exact, associative sum, so the result does not depend on
    how rows are partitioned or in which order partial sums arrive (same data -> same metric, to the bit)."""
    return (F.sum(c.cast("decimal(38,18)")).cast("double") / F.count(c)).alias("__mean")


def probability_errors(scored: DataFrame, score_col: str = SCORE, label_col: str = LABEL) -> dict[str, float]:
    """Log loss and Brier score (mean squared error of the probability), in one pass."""
    row = scored.agg(
        exact_mean(log_loss_term(F.col(label_col), F.col(score_col))).alias("log_loss"),
        exact_mean(F.pow(F.col(score_col) - F.col(label_col).cast("double"), 2)).alias("brier"),
    ).first()
    assert row is not None
    return {"log_loss": float(row["log_loss"]), "brier": float(row["brier"])}


def top_count(fraction: float, n: int) -> int:
    """Rows in the top `fraction` of n: ceil(fraction * n), robust to float noise (0.1 * 30 is 3)."""
    return max(1, math.ceil(round(fraction * n, 9))) if n else 0


def with_score_rank(scored: DataFrame, score_col: str = SCORE, tie_break: Sequence[str] = TIE_BREAK) -> DataFrame:
    """Adds `score_rank` 1..n, highest score first.

    A global order: one partition sorts the test rows (a few snapshots of accounts), which keeps the
    top-k counts exact; the curves in the report use binned aggregates instead.
    """
    keys = [F.col(c).asc() for c in tie_break if c in scored.columns]
    return scored.withColumn("score_rank", F.row_number().over(Window.orderBy(F.col(score_col).desc(), *keys)))


def top_fraction_metrics(scored: DataFrame, fractions: Sequence[float] = TOP_FRACTIONS, score_col: str = SCORE,
                         label_col: str = LABEL) -> dict[str, float]:
    """Precision, recall and lift of the top k % by score: `precision_at_10pct`, `recall_at_10pct`, ..."""
    n = scored.count()
    cuts = {f: top_count(f, n) for f in fractions}
    y = F.col(label_col).cast("double")
    row = with_score_rank(scored, score_col).agg(
        F.sum(y).alias("positives"),
        *[F.sum(F.when(F.col("score_rank") <= k, y).otherwise(0.0)).alias(f"pos_{i}")
          for i, k in enumerate(cuts.values())],
    ).first()
    assert row is not None
    positives = float(row["positives"] or 0.0)
    base = positives / n if n else 0.0
    out: dict[str, float] = {}
    for i, (f, k) in enumerate(cuts.items()):
        tag = f"{round(f * 100):d}pct"
        hits = float(row[f"pos_{i}"] or 0.0)
        precision = hits / k if k else 0.0
        out[f"precision_at_{tag}"] = precision
        out[f"recall_at_{tag}"] = hits / positives if positives else 0.0
        out[f"lift_at_{tag}"] = precision / base if base else 0.0
    return out


def calibration_by_decile(scored: DataFrame, score_col: str = SCORE, label_col: str = LABEL) -> DataFrame:
    """One row per score decile (1 = highest scores): rows, positives, mean predicted, observed rate."""
    n = scored.count()
    ranked = with_score_rank(scored, score_col)
    decile = (F.floor((F.col("score_rank") - 1) * 10 / F.lit(max(n, 1))) + 1).cast("int")
    return (
        ranked.withColumn("decile", decile)
        .groupBy("decile")
        .agg(F.count(F.lit(1)).alias("rows"), F.sum(F.col(label_col).cast("long")).alias("positives"),
             exact_mean(F.col(score_col)).alias("mean_predicted"),
             F.avg(F.col(label_col).cast("double")).alias("observed_rate"))
        .orderBy("decile")
    )


def oracle_roc_auc(scored: DataFrame, truth: DataFrame, label_col: str = LABEL) -> dict[str, Any]:
    """AUC of the generator's true probabilities on the same (account, snapshot) rows as `scored`;
    also the model's AUC restricted to the rows that have a truth value, for a like-for-like gap."""
    joined = scored.select(*KEYS, label_col, SCORE).join(
        truth.select(*KEYS, F.col("churn_probability").alias("true_probability")), list(KEYS))
    rows = joined.count()
    if rows == 0:
        return {}
    return {"oracle_roc_auc": roc_auc(joined, "true_probability", label_col),
            "oracle_rows": rows,
            "roc_auc_on_oracle_rows": roc_auc(joined, SCORE, label_col)}


def evaluate(scored: DataFrame, truth: DataFrame | None = None) -> dict[str, Any]:
    """All headline metrics of `scored` (label, churn_probability, keys); oracle ones when `truth` is given."""
    counts = scored.agg(F.count(F.lit(1)).alias("rows"), F.sum(F.col(LABEL).cast("long")).alias("pos")).first()
    assert counts is not None
    out: dict[str, Any] = {"rows": int(counts["rows"]), "positives": int(counts["pos"] or 0)}
    out["label_rate"] = out["positives"] / out["rows"] if out["rows"] else 0.0
    out["roc_auc"] = roc_auc(scored)
    out["pr_auc"] = pr_auc(scored)
    out.update(probability_errors(scored))
    out.update(top_fraction_metrics(scored))
    if truth is not None:
        out.update(oracle_roc_auc(scored, truth))
    return out
