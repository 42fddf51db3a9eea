"""Honest evaluation of uplift scores: Qini curve and coefficient, AUUC, uplift at k %, bootstrap intervals.

Input grain: one row per assignment (account, campaign) with `label` (1 = churned within the horizon after the
assignment), `treated` (1 = contacted, 0 = held out), optionally `propensity` (P(treated) recorded at assignment,
in (0, 1)) and a score, by default `uplift` (predicted p_control - p_treatment: the churn probability a contact
removes; higher = more worth contacting). Accounts are targeted by descending score.

**Ties are groups.** Rows with the same score enter the curve together (one point per distinct score, linear in
between), so no metric depends on an arbitrary tie-break or on partitioning; a null score is the last group.

**Formulas.** Over the groups g = 1..G of distinct scores, from the highest, with sums over the groups 1..g:

- n(g) rows, n_t(g) treated rows, N = n(G), x(g) = n(g) / N the share of accounts targeted;
- churn rates r_t(g) = sum(w y) / sum(w) over treated rows and r_c(g) over control rows, where
  w = 1 / propensity for a treated row and 1 / (1 - propensity) for a control row when `propensity` is given
  (inverse-propensity, Hajek: campaigns with different holdout shares are mixed fairly), w = 1 otherwise. With
  one propensity for all rows the weights cancel;
- d(g) = r_c(g) - r_t(g), the observed churn reduction in the top group (0 while an arm has no rows);
- **Qini curve** Q(g) = n_t(g) d(g). Without propensities it is Radcliffe's Qini in churn terms,
  Q = C(g) n_t(g) / n_c(g) - T(g) with C, T the control and treated churners: churners saved among the treated of
  the top group, the control arm scaled to the treated arm's size (= Radcliffe's R_t - R_c n_t / n_c with
  R = retained accounts);
- **uplift curve** U(g) = n(g) d(g): churners saved had every account of the top group been contacted;
- **Qini coefficient** = sum_g (x(g) - x(g-1)) (Q(g) + Q(g-1)) / 2 - Q(G) / 2, from (0, 0): the area between the
  Qini curve and the random-targeting line from (0, 0) to (1, Q(G)), over the share targeted. NOT normalised (by
  the perfect curve): in saved churners, comparable between scores on the same rows (model vs oracle);
- **AUUC** = sum_g (x(g) - x(g-1)) (U(g) + U(g-1)) / 2: the area under the uplift curve, not normalised; random
  targeting's is U(G) / 2 = N d(G) / 2;
- **uplift at k %** = r_c - r_t over the first ceil(k N) rows; the tie group across the cut enters with the share
  of its rows that fits (the mean over the orders within the tie); null when an arm has no rows there.

Bootstrap: accounts are resampled (`train.metrics.poisson_weights`: every row of an account gets its Poisson(1)
weight, which multiplies every sum above). Only one row per replicate reaches the driver.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from churn_spark.train.metrics import ACCOUNT, exact_sum, percentile_interval, poisson_weights, top_count

LABEL = "label"
TREATED = "treated"
PROPENSITY = "propensity"
UPLIFT = "uplift"
TRUE_UPLIFT = "true_uplift"
FRACTIONS = (0.10, 0.20, 0.30)
SUMS = ("n", "n_t", "w_t", "y_t", "w_c", "y_c")
"""Per score group: rows, treated rows, treated weight and weighted churners, control weight and churners."""


def fraction_tag(fraction: float) -> str:
    """0.1 -> `10pct`."""
    return f"{round(fraction * 100):d}pct"


def arm_weight(treated: Column, propensity: Column) -> Column:
    """Inverse-propensity weight of a row: 1 / e when treated, 1 / (1 - e) when held out."""
    t = treated.cast("double")
    return t / propensity + (F.lit(1.0) - t) / (F.lit(1.0) - propensity)


def row_weight(scored: DataFrame, propensity_col: str | None = PROPENSITY) -> Column:
    """`arm_weight` when `propensity_col` is a column of `scored`, else 1."""
    if propensity_col is None or propensity_col not in scored.columns:
        return F.lit(1.0)
    return arm_weight(F.col(TREATED), F.col(propensity_col).cast("double"))


def rate_difference(y_t: Column, w_t: Column, y_c: Column, w_c: Column) -> Column:
    """Control churn rate minus treated churn rate; null while an arm has no weight."""
    return F.when((w_t > 0) & (w_c > 0), y_c / w_c - y_t / w_t)


def score_groups(scored: DataFrame, score_col: str = UPLIFT, by: Sequence[str] = (), weight_col: str | None = None,
                 propensity_col: str | None = PROPENSITY) -> DataFrame:
    """One row per (`by`, distinct score) with the sums of `SUMS`; a row of weight b counts as b copies and rows
    of weight 0 are left out. `propensity_col` is used when the column exists."""
    b = F.col(weight_col).cast("double") if weight_col else F.lit(1.0)
    t, y, w = F.col(TREATED).cast("double"), F.col(LABEL).cast("double"), row_weight(scored, propensity_col)
    rows = scored.where(b > 0) if weight_col else scored
    return rows.groupBy(*by, score_col).agg(
        exact_sum(b).alias("n"), exact_sum(b * t).alias("n_t"),
        exact_sum(b * t * w).alias("w_t"), exact_sum(b * t * w * y).alias("y_t"),
        exact_sum(b * (1 - t) * w).alias("w_c"), exact_sum(b * (1 - t) * w * y).alias("y_c"))


def with_curve_points(groups: DataFrame, score_col: str = UPLIFT, by: Sequence[str] = ()) -> DataFrame:
    """`score_groups` plus the cumulative sums `cum_*`, `total` (N), and the curve point of each group: `x`,
    `rate_difference` d (0 while an arm is empty), `qini` Q = n_t d, `uplift_curve` U = n d, and the previous
    point (`x_prev`, `qini_prev`, `uplift_curve_prev`; 0 before the first group)."""
    order = Window.partitionBy(*by).orderBy(F.col(score_col).desc_nulls_last())
    upto = order.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    cum = {c: F.col(f"cum_{c}") for c in SUMS}
    d = F.coalesce(rate_difference(cum["y_t"], cum["w_t"], cum["y_c"], cum["w_c"]), F.lit(0.0))
    return (groups.withColumns({f"cum_{c}": F.sum(c).over(upto) for c in SUMS})
            .withColumn("total", F.sum("n").over(Window.partitionBy(*by)))
            .withColumn("rate_difference", d)
            .withColumns({"x": cum["n"] / F.col("total"), "qini": cum["n_t"] * F.col("rate_difference"),
                          "uplift_curve": cum["n"] * F.col("rate_difference")})
            .withColumns({f"{c}_prev": F.lag(c, 1, 0.0).over(order) for c in ("x", "qini", "uplift_curve")}))


def qini_curve(scored: DataFrame, score_col: str = UPLIFT, propensity_col: str | None = PROPENSITY) -> DataFrame:
    """The Qini and uplift curves, one row per distinct score (highest first): the score, `targeted` n(g),
    `fraction` x(g), `treated` n_t(g), `rate_difference` d(g), `qini` Q(g), `uplift_curve` U(g). Prepend (0, 0) to
    plot. One row per distinct score: bin the scores first for a plot of millions of rows."""
    points = with_curve_points(score_groups(scored, score_col, propensity_col=propensity_col), score_col)
    return points.select(score_col, F.col("cum_n").cast("long").alias("targeted"), F.col("x").alias("fraction"),
                         F.col("cum_n_t").cast("long").alias("treated"), "rate_difference", "qini", "uplift_curve")


def _trapezoid(c: str) -> Column:
    return (F.col("x") - F.col("x_prev")) * (F.col(c) + F.col(f"{c}_prev")) / 2


def _uplift_at(fraction: float) -> Column:
    """r_c - r_t over the first ceil(fraction * N) rows, the tie group across the cut taken in part (aggregate)."""
    cut = F.greatest(F.lit(1.0), F.ceil(F.round(F.col("total") * fraction, 9)).cast("double"))
    share = F.least(F.lit(1.0), F.greatest(F.lit(0.0), (cut - (F.col("cum_n") - F.col("n"))) / F.col("n")))
    part = {c: exact_sum(share * F.col(c)) for c in ("y_t", "w_t", "y_c", "w_c")}
    return rate_difference(part["y_t"], part["w_t"], part["y_c"], part["w_c"]).alias(
        f"uplift_at_{fraction_tag(fraction)}")


def uplift_metrics_frame(scored: DataFrame, score_col: str = UPLIFT, fractions: Sequence[float] = FRACTIONS,
                         by: Sequence[str] = (), weight_col: str | None = None,
                         propensity_col: str | None = PROPENSITY) -> DataFrame:
    """One row per group of `by` (per bootstrap replicate, say): `rows`, `treated_rows`, `uplift_overall` d(G),
    `qini_coefficient`, `auuc` and `uplift_at_<k>pct` (formulas: module docstring)."""
    points = with_curve_points(score_groups(scored, score_col, by, weight_col, propensity_col), score_col, by)
    return points.groupBy(*by).agg(
        F.max("total").cast("long").alias("rows"), F.sum("n_t").cast("long").alias("treated_rows"),
        F.max_by("rate_difference", "x").alias("uplift_overall"),
        (exact_sum(_trapezoid("qini")) - F.max_by("qini", "x") / 2).alias("qini_coefficient"),
        exact_sum(_trapezoid("uplift_curve")).alias("auuc"),
        *[_uplift_at(f) for f in fractions])


def uplift_by_decile(scored: DataFrame, score_col: str = UPLIFT, propensity_col: str | None = PROPENSITY) -> DataFrame:
    """One row per equal-count score decile (1 = highest scores, ties kept in the decile of their first row):
    `rows`, `treated_rows`, `mean_score`, the observed `uplift` r_c - r_t of the decile (null when an arm is
    absent): does the predicted order hold on the outcomes? For the report."""
    n = F.count(F.lit(1)).over(Window.partitionBy())
    tied_rank = F.rank().over(Window.orderBy(F.col(score_col).desc_nulls_last()))
    decile = (F.floor((tied_rank - 1) * 10 / n) + 1).cast("int")
    t, y, w = F.col(TREATED).cast("double"), F.col(LABEL).cast("double"), row_weight(scored, propensity_col)
    return (scored.withColumn("decile", decile).groupBy("decile")
            .agg(F.count(F.lit(1)).alias("rows"), F.sum(t).cast("long").alias("treated_rows"),
                 F.avg(score_col).alias("mean_score"),
                 rate_difference(exact_sum(t * w * y), exact_sum(t * w), exact_sum((1 - t) * w * y),
                                 exact_sum((1 - t) * w)).alias("uplift"))
            .orderBy("decile"))


def score_metric_names(fractions: Sequence[float] = FRACTIONS) -> list[str]:
    """The metrics of a score (the rest of `uplift_metrics` describes the rows)."""
    return ["qini_coefficient", "auuc", *[f"uplift_at_{fraction_tag(f)}" for f in fractions]]


def uplift_metrics(scored: DataFrame, score_col: str = UPLIFT, fractions: Sequence[float] = FRACTIONS,
                   propensity_col: str | None = PROPENSITY) -> dict[str, Any]:
    """`uplift_metrics_frame` of all rows as a dict (one small row reaches the driver)."""
    row = uplift_metrics_frame(scored, score_col, fractions, propensity_col=propensity_col).first()
    return row.asDict() if row is not None else {}


def oracle_uplift_metrics(scored: DataFrame, truth_col: str = TRUE_UPLIFT, fractions: Sequence[float] = FRACTIONS,
                          propensity_col: str | None = PROPENSITY) -> dict[str, Any]:
    """The same metrics with the true uplift (generated data) as the score, prefixed `oracle_`: what the perfect
    ranking scores on these rows' observed outcomes, the reference for the model's Qini (on few rows the outcomes'
    noise can put a model above it)."""
    got = uplift_metrics(scored, truth_col, fractions, propensity_col)
    return {f"oracle_{k}": got.get(k) for k in score_metric_names(fractions)}


def uplift_intervals(scored: DataFrame, replicates: int = 200, seed: int = 0, level: float = 0.95,
                     score_col: str = UPLIFT, fractions: Sequence[float] = FRACTIONS,
                     propensity_col: str | None = PROPENSITY, unit: str = ACCOUNT) -> dict[str, dict[str, float]]:
    """Percentile intervals of the score's metrics over a Poisson bootstrap of accounts (`unit`): all the
    assignments of an account are drawn together. `replicates` in each result counts the replicates where the
    metric is defined; the same seed gives the same intervals."""
    keep = [c for c in dict.fromkeys((unit, LABEL, TREATED, score_col, propensity_col)) if c and c in scored.columns]
    weighted = poisson_weights(scored.select(*keep), replicates, seed, unit)
    rows = uplift_metrics_frame(weighted, score_col, fractions, ("replicate",), "weight", propensity_col).collect()
    out: dict[str, dict[str, float]] = {}
    for metric in score_metric_names(fractions):
        values = [float(r[metric]) for r in rows if r[metric] is not None]
        low, high = percentile_interval(values, level)
        out[metric] = {"low": low, "high": high, "replicates": len(values)}
    return out


def true_saved(scored: DataFrame, truth_col: str, k: int, score_col: str = UPLIFT) -> float:
    """Sum of the true uplift over the first `k` rows by descending `score_col` (generated data): the expected
    churners saved by contacting them. A tie group across the cut gives its mean true uplift per row taken."""
    return true_saved_at_counts(scored, truth_col, [k], score_col)[0]


def true_saved_at_counts(scored: DataFrame, truth_col: str, ks: Sequence[int], score_col: str = UPLIFT) -> list[float]:
    """`true_saved` for several contact counts in one Spark job."""
    order = Window.orderBy(F.col(score_col).desc_nulls_last())
    groups = (scored.groupBy(score_col)
              .agg(F.count(F.lit(1)).cast("double").alias("n"), exact_sum(F.col(truth_col)).alias("truth"))
              .withColumn("above", F.sum("n").over(order.rowsBetween(Window.unboundedPreceding, -1))))
    above = F.coalesce(F.col("above"), F.lit(0.0))

    def saved(k: int) -> Column:
        share = F.least(F.lit(1.0), F.greatest(F.lit(0.0), (F.lit(float(k)) - above) / F.col("n")))
        return F.coalesce(F.sum(share * F.col("truth")), F.lit(0.0))

    row = groups.agg(*[saved(k).alias(f"k{i}") for i, k in enumerate(ks)]).first()
    return [float(row[f"k{i}"]) if row is not None else 0.0 for i in range(len(ks))]


def true_saved_at(scored: DataFrame, truth_col: str = TRUE_UPLIFT, fractions: Sequence[float] = FRACTIONS,
                  score_col: str = UPLIFT, rows: int | None = None) -> dict[str, float]:
    """`true_saved_at_<k>pct`: `true_saved` of the first ceil(k N) rows by `score_col` (N = `rows`, counted when
    not given): compare scores (uplift, churn risk, the truth itself) at the same number of contacts."""
    n = scored.count() if rows is None else rows
    got = true_saved_at_counts(scored, truth_col, [top_count(f, n) for f in fractions], score_col)
    return {f"true_saved_at_{fraction_tag(f)}": v for f, v in zip(fractions, got, strict=True)}


def evaluate_uplift(scored: DataFrame, score_col: str = UPLIFT, truth_col: str | None = None,
                    fractions: Sequence[float] = FRACTIONS, replicates: int = 200, seed: int = 0,
                    propensity_col: str | None = PROPENSITY) -> dict[str, Any]:
    """Every uplift metric of `score_col` on the test assignments, with `intervals` (0 replicates: none); with
    `truth_col` (generated data) also the oracle's metrics, the true churners saved by the score's and the oracle's
    top k %, and `qini_vs_oracle` = the model's Qini coefficient / the oracle's."""
    out = uplift_metrics(scored, score_col, fractions, propensity_col)
    if replicates > 0:
        out["intervals"] = uplift_intervals(scored, replicates, seed, score_col=score_col, fractions=fractions,
                                            propensity_col=propensity_col)
    if truth_col is not None:
        out.update(oracle_uplift_metrics(scored, truth_col, fractions, propensity_col))
        oracle_q = out.get("oracle_qini_coefficient")
        out["qini_vs_oracle"] = out["qini_coefficient"] / oracle_q if oracle_q else None
        out.update(true_saved_at(scored, truth_col, fractions, score_col, rows=int(out["rows"])))
        oracle = true_saved_at(scored, truth_col, fractions, truth_col, rows=int(out["rows"]))
        out.update({f"oracle_{k}": v for k, v in oracle.items()})
    return out
