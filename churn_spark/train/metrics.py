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


def calibration_errors(deciles: Sequence[dict[str, Any]]) -> dict[str, float]:
    """From the ten rows of `calibration_by_decile`: `ece`, the expected calibration error over equal-count
    deciles (sum of |mean predicted - observed rate| weighted by each decile's share of rows), and
    `calibration_in_the_large`, mean predicted minus observed rate over all rows (> 0: over-predicts).
    Targeting spends money on p x value: both say in probability units how far p is off."""
    n = sum(d["rows"] for d in deciles)
    if not n:
        return {"ece": 0.0, "calibration_in_the_large": 0.0}
    ece = sum(d["rows"] / n * abs(d["mean_predicted"] - d["observed_rate"]) for d in deciles)
    mean_predicted = sum(d["rows"] * d["mean_predicted"] for d in deciles) / n
    observed = sum(d["positives"] for d in deciles) / n
    return {"ece": ece, "calibration_in_the_large": mean_predicted - observed}


def oracle_metrics(scored: DataFrame, truth: DataFrame, label_col: str = LABEL) -> dict[str, Any]:
    """The generator's true probabilities scored like a model on the same (account, snapshot) rows as `scored`:
    their AUC, the ceiling of any model's, and their `ece` and calibration-in-the-large, the floor the labels'
    own noise puts under any model's (equal-count deciles of a few thousand rows read a few thousandths off
    even for the truth); also the model's AUC restricted to the rows that have a truth value, for a
    like-for-like gap."""
    joined = scored.select(*KEYS, label_col, SCORE).join(
        truth.select(*KEYS, F.col("churn_probability").alias("true_probability")), list(KEYS)).persist()
    try:  # persisted: the count, the AUCs and the deciles read it (each would read the truth table and join again)
        rows = joined.count()
        if rows == 0:
            return {}
        deciles = [r.asDict() for r in calibration_by_decile(joined, "true_probability", label_col).collect()]
        calibration = calibration_errors(deciles)
        return {"oracle_roc_auc": roc_auc(joined, "true_probability", label_col),
                "oracle_rows": rows,
                "roc_auc_on_oracle_rows": roc_auc(joined, SCORE, label_col),
                "oracle_ece": calibration["ece"],
                "oracle_calibration_in_the_large": calibration["calibration_in_the_large"]}
    finally:
        joined.unpersist()


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
        out.update(oracle_metrics(scored, truth))
    return out


# Bootstrap intervals. The resampling unit is the account: the snapshots of one account are not independent, so
# resampling rows would give intervals that are too narrow. Poisson bootstrap: in each replicate every account gets a
# weight ~ Poisson(1) (how many times it is drawn), shared by all its rows. All replicates are computed in one Spark
# job over (row, replicate) pairs; only one row of metrics per replicate reaches the driver.

ACCOUNT = KEYS[0]
LIFT_FRACTION = 0.10
RANKING_METRICS = ("roc_auc", "pr_auc", "lift_at_10pct")
CALIBRATION_METRICS = ("ece", "calibration_in_the_large")
"""Computed in the same pass as the ranking metrics (the deciles need the same order)."""
ERROR_METRICS = ("log_loss", "brier")
"""Probability errors: lower is better."""
POISSON_CDF = tuple(sum(math.exp(-1) / math.factorial(j) for j in range(k + 1)) for k in range(13))
"""P(Poisson(1) <= k) for k = 0..12; a weight above 13 (probability 1e-11) is drawn as 13."""


def poisson_weights(df: DataFrame, replicates: int, seed: int = 0, unit: str = ACCOUNT) -> DataFrame:
    """`df` once per `replicate` 0..replicates-1 with a `weight` ~ Poisson(1) per (replicate, unit): every row of an
    account gets the account's weight. The weight is the inverse CDF of a uniform hashed from (seed, replicate, unit),
    so a seed gives the same weights in any run and on any partitioning."""
    bits = F.shiftrightunsigned(F.xxhash64(F.lit(seed), F.col("replicate"), F.col(unit)), 11)  # 53 uniform bits
    u = bits.cast("double") / float(2**53)  # uniform in [0, 1)
    draw = F.when(u < POISSON_CDF[0], 0)
    for k, p in enumerate(POISSON_CDF[1:], start=1):
        draw = draw.when(u < p, k)
    return (df.withColumn("replicate", F.explode(F.sequence(F.lit(0), F.lit(replicates - 1))))
            .withColumn("weight", draw.otherwise(len(POISSON_CDF))))


def exact_decimal_sum(c: Column) -> Column:
    """Sum as decimal(38,18): exact and associative, so the same whatever the partitioning."""
    return F.sum(c.cast("decimal(38,18)"))


def exact_sum(c: Column) -> Column:
    """`exact_decimal_sum` back to double."""
    return exact_decimal_sum(c).cast("double")


def _ranking_by_replicate(weighted: DataFrame, score_col: str = SCORE, label_col: str = LABEL,
                          weight_col: str = "weight", by: Sequence[str] = ("replicate",)) -> DataFrame:
    """`roc_auc`, `pr_auc` and `lift_at_10pct` per `replicate` (per group of `by`), a row of weight w counting as w
    copies of itself (rows of weight 0 are not in the resample). With every weight 1: `roc_auc`, `pr_auc` and
    `top_fraction_metrics`.

    Over the distinct scores s of a replicate, from the highest: tp, fp = positive, negative weight scored >= s,
    tp0, fp0 = scored > s, P, N, W = positive, negative, total weight.
    - ROC AUC (weighted Mann-Whitney) = 1 - sum over positive rows of w * (fp0 + fp) / 2 / (P * N): the negatives
      ranked above a positive, ties counting one half.
    - PR AUC, as MLlib: trapezoids over the distinct thresholds from (recall 0, precision at the highest one). At s
      the recall rises by (tp - tp0) / P and the precision goes from tp0 / (tp0 + fp0) (at the highest threshold:
      precision(s)) to precision(s) = tp / (tp + fp), so PR AUC = sum over positive rows of
      w * (precision before s + precision(s)) / 2 / P.
    - Lift at 10 %: rows in score order, ties by the key columns (as `with_score_rank`); the top cut =
      max(1, ceil(0.1 * W)) copies; a row across the cut gives only the copies that fit (cut - weight ranked above
      it): with integer weights, the top ceil(10 %) rows of the resample. Lift = (hits / cut) / (P / W).
    - `ece` and `calibration_in_the_large` (as `calibration_errors` of `calibration_by_decile`): copy k = 0..W-1 in
      the same order is in decile floor(10 k / W) + 1, so a row's copies (k = above .. above + w - 1) may fall into
      two deciles and count in each with the copies that fall there. Since a decile's share times |mean predicted -
      observed rate| is |predicted sum - positives| / W, ece = sum over deciles of that; in the large = sum of
      w (p - y) / W.
    Undefined metrics (a replicate without positives or negatives) are null.
    """
    w = F.col(weight_col).cast("double")
    by_score = Window.partitionBy(*by).orderBy(F.col(score_col).desc())
    at_or_above = by_score.rangeBetween(Window.unboundedPreceding, Window.currentRow)
    tied = by_score.rangeBetween(Window.currentRow, Window.currentRow)
    keys = [F.col(c).asc() for c in TIE_BREAK if c in weighted.columns]
    in_rank_order = (Window.partitionBy(*by).orderBy(F.col(score_col).desc(), *keys)
                     .rowsBetween(Window.unboundedPreceding, Window.currentRow))
    pos, neg = F.col("__pos"), F.col("__neg")
    tp, fp = F.sum(pos).over(at_or_above), F.sum(neg).over(at_or_above)
    rows = (weighted.where(w > 0)
            .withColumns({"__w": w, "__pos": w * F.col(label_col).cast("double")})
            .withColumn("__neg", F.col("__w") - pos)
            .withColumn("__above", F.sum("__w").over(in_rank_order) - F.col("__w"))  # first: one sort serves all
            .withColumns({"__tp": tp, "__fp": fp, "__tp0": tp - F.sum(pos).over(tied),
                          "__fp0": fp - F.sum(neg).over(tied),
                          "__total": F.sum("__w").over(Window.partitionBy(*by))}))
    precision = F.col("__tp") / (F.col("__tp") + F.col("__fp"))  # > 0: the row itself has weight
    before = F.when(F.col("__tp0") + F.col("__fp0") > 0,
                    F.col("__tp0") / (F.col("__tp0") + F.col("__fp0"))).otherwise(precision)
    cut = F.greatest(F.lit(1.0), F.ceil(F.round(F.col("__total") * LIFT_FRACTION, 9)).cast("double"))
    taken = F.least(F.col("__w"), F.greatest(F.lit(0.0), cut - F.col("__above")))
    above, total, decile = F.col("__above"), F.col("__total"), F.col("__decile")

    def decile_of(copy: Column) -> Column:
        return (F.floor(copy * 10 / total) + 1).cast("int")  # copy and W are whole numbers: exact in doubles

    def after(d: Column) -> Column:
        return F.ceil(d * total / 10)  # the first copy past decile d

    first = decile_of(above)
    in_decile = F.least(above + F.col("__w"), after(decile)) - F.greatest(above, after(decile - 1))
    row_terms = {"__loss": pos * (F.col("__fp0") + F.col("__fp")) / 2, "__pr": pos * (precision + before) / 2,
                 "__hit": F.col(label_col).cast("double") * taken, "__cut": cut}
    # A row's own terms count once (in its first decile), its copies in every decile they reach. Sums that do not
    # depend on partitioning: counts and half counts (weights, churners, losses, hits, copies) are whole multiples of
    # 1/2, exact in double sums; the probability sums are kept as decimals over both levels (decimal(38, 18) sums
    # are slow: only where needed).
    once = [F.sum(F.when(decile == first, F.col(c))).alias(c) for c in ("__pos", "__neg", "__w", "__loss", "__hit")]
    by_decile = (rows.withColumns(row_terms)
                 .withColumn("__decile", F.explode(F.sequence(first, decile_of(above + F.col("__w") - 1))))
                 .withColumn("__copies", in_decile)
                 .groupBy(*by, "__decile")
                 .agg(*once, exact_decimal_sum(F.when(decile == first, F.col("__pr"))).alias("__pr"),
                      F.max("__cut").alias("cut"),
                      exact_decimal_sum(F.col("__copies") * F.col(score_col)).alias("__predicted"),
                      F.sum(F.col("__copies") * F.col(label_col).cast("double")).alias("__positive")))
    gap = F.col("__predicted") - F.col("__positive").cast("decimal(38,18)")
    sums = by_decile.groupBy(*by).agg(
        *[F.sum(c).cast("double").alias(name) for c, name in (
            ("__pos", "p"), ("__neg", "n"), ("__w", "w"), ("__loss", "losses"), ("__pr", "pr"), ("__hit", "hits"))],
        F.max("cut").alias("cut"),
        F.sum(F.abs(gap)).cast("double").alias("__gap"), F.sum(gap).cast("double").alias("__excess"))
    p, n, w = F.col("p"), F.col("n"), F.col("w")
    return sums.select(
        *by,
        F.when((p > 0) & (n > 0), 1 - F.col("losses") / (p * n)).alias("roc_auc"),
        F.when(p > 0, F.col("pr") / p).alias("pr_auc"),
        F.when(p > 0, F.col("hits") * w / (F.col("cut") * p)).alias("lift_at_10pct"),
        (F.col("__gap") / w).alias("ece"),
        (F.col("__excess") / w).alias("calibration_in_the_large"))


def _by_replicate(weighted: DataFrame, metric: str, score_col: str = SCORE, label_col: str = LABEL,
                  weight_col: str = "weight", by: Sequence[str] = ("replicate",)) -> DataFrame:
    """`metric` per `replicate` (per group of `by`): columns *by, metric. Log loss and Brier are weighted means;
    the ranking metrics are those of `_ranking_by_replicate`."""
    if metric in ERROR_METRICS:
        w = F.col(weight_col).cast("double")
        y, p = F.col(label_col).cast("double"), F.col(score_col)
        term = log_loss_term(y, p) if metric == "log_loss" else F.pow(p - y, 2)
        return weighted.groupBy(*by).agg(F.when(F.sum(w) > 0, exact_sum(w * term) / F.sum(w)).alias(metric))
    return _ranking_by_replicate(weighted, score_col, label_col, weight_col, by).select(*by, metric)


def _percentile_interval(values: Sequence[float], level: float) -> tuple[float, float]:
    """The (1 - level) / 2 and (1 + level) / 2 quantiles, interpolated linearly between order statistics (numpy's
    default); NaN without values."""
    s = sorted(values)
    if not s:
        return math.nan, math.nan

    def quantile(q: float) -> float:
        h = (len(s) - 1) * q
        i = math.floor(h)
        return s[i] + (h - i) * (s[min(i + 1, len(s) - 1)] - s[i])

    return quantile((1 - level) / 2), quantile((1 + level) / 2)


percentile_interval = _percentile_interval
"""Public name for other metric modules (uplift/metrics.py) that report bootstrap intervals the same way."""


def bootstrap_intervals(scored: DataFrame, replicates: int = 200, seed: int = 0, level: float = 0.95,
                        score_col: str = SCORE, label_col: str = LABEL) -> dict[str, dict[str, float]]:
    """Percentile intervals of ROC AUC, PR AUC, lift at 10 %, `ece` and calibration-in-the-large over an
    account-level Poisson bootstrap: how much the test metrics could move with another draw of accounts.
    `replicates` in each result counts the replicates where the metric is defined (both classes drawn for the
    ranking ones); the same seed gives the same intervals. `ece` is an absolute error, biased upwards under
    resampling: its interval need not hold the point estimate (calibration-in-the-large, a mean, is not biased)."""
    weighted = poisson_weights(scored.select(*KEYS, label_col, score_col), replicates, seed)
    rows = _ranking_by_replicate(weighted, score_col, label_col).collect()
    out: dict[str, dict[str, float]] = {}
    for metric in (*RANKING_METRICS, *CALIBRATION_METRICS):
        values = [float(r[metric]) for r in rows if r[metric] is not None]
        low, high = _percentile_interval(values, level)
        out[metric] = {"low": low, "high": high, "replicates": len(values)}
    return out


def paired_bootstrap_difference(new_scored: DataFrame, current_scored: DataFrame, metric: str = "roc_auc",
                                replicates: int = 200, seed: int = 0, level: float = 0.95, score_col: str = SCORE,
                                label_col: str = LABEL) -> dict[str, float]:
    """new - current of `metric` on the same test rows (joined on the keys; the label is new_scored's), with its
    percentile interval over an account-level Poisson bootstrap in which each replicate weights both models' rows
    alike: the sampling noise common to both cancels, so the interval is usually much tighter than two separate ones.

    `p_new_not_worse` is the share of replicates where new is not worse: new >= current, or new <= current for
    log_loss and brier (`higher_is_better` False). Metrics: roc_auc, pr_auc, lift_at_10pct, log_loss, brier.
    """
    if metric not in (*RANKING_METRICS, *ERROR_METRICS):
        raise ValueError(f"unknown metric {metric!r}: expected one of {RANKING_METRICS + ERROR_METRICS}")
    pair = (new_scored.select(*KEYS, label_col, F.col(score_col).alias("new"))
            .join(current_scored.select(*KEYS, F.col(score_col).alias("current")), list(KEYS)))
    # one row per (test row, model): both models are ranked in one shuffle and sort, partitioned by (replicate,
    # model); a weight depends only on (seed, replicate, account), so both models' rows get the same weights
    stacked = pair.select(*KEYS, label_col, F.inline(F.array(
        *[F.struct(F.lit(m).alias("model"), F.col(m).alias(score_col)) for m in ("new", "current")])))
    # replicate -1 is the test set itself (every weight 1): the observed metrics come in the same job
    weighted = stacked.withColumns({"replicate": F.lit(-1), "weight": F.lit(1)}).unionByName(
        poisson_weights(stacked, replicates, seed))
    value = {(r["replicate"], r["model"]): r[metric]
             for r in _by_replicate(weighted, metric, score_col, label_col, by=("replicate", "model")).collect()}
    differences = [value[i, "new"] - value[i, "current"] for i in range(replicates)
                   if value.get((i, "new")) is not None and value.get((i, "current")) is not None]
    higher_is_better = metric not in ERROR_METRICS
    not_worse = sum((d >= 0) if higher_is_better else (d <= 0) for d in differences)
    new, current = (math.nan if value.get((-1, m)) is None else float(value[-1, m]) for m in ("new", "current"))
    low, high = _percentile_interval(differences, level)
    return {"new": new, "current": current, "difference": new - current, "low": low, "high": high,
            "p_new_not_worse": not_worse / len(differences) if differences else math.nan,
            "replicates": len(differences), "higher_is_better": higher_is_better}
