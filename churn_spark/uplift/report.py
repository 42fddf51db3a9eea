"""The uplift model's report: PNG plots and one self-contained HTML page, like the churn model's
(train/report.py, whose drawing and page helpers it uses).

Spark aggregates the scored test assignments into small tables: the Qini curve at `BINS` equal-count bins of
the score (the model's, and on generated data the true uplift's), the deciles of predicted uplift with each
arm's observed churn rate, and the churners saved by the first k % of contacts by uplift and by churn risk.
Only those reach the driver and matplotlib; the headline metrics come from `uplift/metrics.py`.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from churn_spark.train.metrics import top_count
from churn_spark.train.report import PAGE_STYLE, figure, figures_html, html_table, png
from churn_spark.uplift import metrics as M

BINS = 100
RISK = "churn_probability"
PLOTS = [("qini.png", "Qini curve"), ("deciles.png", "Observed uplift by decile of predicted uplift")]
HEADLINE = ("rows", "treated_rows", "uplift_overall", "qini_coefficient", "oracle_qini_coefficient",
            "qini_vs_oracle", "auuc", "oracle_auuc", "uplift_at_10pct", "uplift_at_20pct", "uplift_at_30pct")


def _rank_bin(score_col: str, bins: int) -> Column:
    """Equal-count bin of the score, 0 = highest; tied scores share a bin (percent_rank gives ties one rank).
    A global order over the test assignments (a few campaigns of accounts), like `uplift_by_decile`."""
    rank = F.percent_rank().over(Window.orderBy(F.col(score_col).desc_nulls_last()))
    return F.least(F.floor(rank * bins), F.lit(bins - 1)).cast("int")


def qini_points(scored: DataFrame, score_col: str = M.UPLIFT, bins: int = BINS) -> list[dict[str, float]]:
    """The Qini curve (`metrics.qini_curve`) at the ends of up to `bins` equal-count score bins, from (0, 0):
    `fraction` and `qini` per point. The last point is the curve's own end Q(G); binning only drops points."""
    binned = scored.withColumn("_bin", (-_rank_bin(score_col, bins)).cast("double"))
    rows = M.qini_curve(binned, "_bin").select("fraction", "qini").orderBy("fraction").collect()
    return [{"fraction": 0.0, "qini": 0.0}, *({"fraction": float(r["fraction"]), "qini": float(r["qini"])}
                                              for r in rows)]


def uplift_deciles(scored: DataFrame, score_col: str = M.UPLIFT) -> DataFrame:
    """One row per equal-count decile of the score (1 = highest; ties in the decile of their first row, as
    `metrics.uplift_by_decile`): `treated_rows`, `control_rows`, `mean_score`, each arm's observed churn rate
    (inverse-propensity weighted when `propensity` is a column; null for an empty arm) and the observed
    `uplift` = control rate - treated rate. Does the predicted order hold on the outcomes?"""
    upto = Window.orderBy(F.col(score_col).desc_nulls_last()).rowsBetween(Window.unboundedPreceding, -1)
    groups = (M.score_groups(scored, score_col).withColumn("score_sum", F.col("n") * F.col(score_col))
              .withColumn("total", F.sum("n").over(Window.partitionBy()))
        .withColumn("before", F.coalesce(F.sum("n").over(upto), F.lit(0.0))))
    treated, control = F.col("y_t") / F.col("w_t"), F.col("y_c") / F.col("w_c")
    return (groups.withColumn("decile", (F.floor(F.col("before") * 10 / F.col("total")) + 1).cast("int"))
            .groupBy("decile").agg(*[F.sum(c).alias(c) for c in (*M.SUMS, "score_sum")])
            .select("decile", F.col("n_t").cast("long").alias("treated_rows"),
                    (F.col("n") - F.col("n_t")).cast("long").alias("control_rows"),
                    (F.col("score_sum") / F.col("n")).alias("mean_score"),
                    F.when(F.col("w_t") > 0, treated).alias("treated_churn_rate"),
                    F.when(F.col("w_c") > 0, control).alias("control_churn_rate"),
                    M.rate_difference(F.col("y_t"), F.col("w_t"), F.col("y_c"), F.col("w_c")).alias("uplift"))
            .orderBy("decile"))


def targeting_comparison(scored: DataFrame, cost_per_contact: float, fractions: Sequence[float] = M.FRACTIONS,
                         truth_col: str | None = None) -> list[dict[str, Any]]:
    """Per fraction k: contacting the first ceil(k N) assignments by predicted uplift, and (with a `churn_probability`
    column) the same number by churn risk: expected saved churners (sum of the predicted uplift of the
    contacted), true saved churners (sum of `truth_col`, generated data) and money spent (contacts x cost).
    A tie group across the cut counts with the share that fits (`metrics.true_saved_at_counts`)."""
    n = scored.count()
    ks = [top_count(f, n) for f in fractions]
    orders = [M.UPLIFT, *([RISK] if RISK in scored.columns else [])]
    got = {(by, what): M.true_saved_at_counts(scored, col, ks, by)
           for by in orders for what, col in (("expected", M.UPLIFT), ("true", truth_col)) if col is not None}
    return [{"fraction": f, "contacts": k, "cost": round(k * cost_per_contact, 2),
             **{f"{'uplift' if by == M.UPLIFT else 'risk'}_{what}_saved": v[i] for (by, what), v in got.items()}}
            for i, (f, k) in enumerate(zip(fractions, ks, strict=True))]


def plot_qini(model: list[dict[str, float]], qini: float, oracle: list[dict[str, float]] | None,
              oracle_qini: float | None) -> bytes:
    """The model's Qini curve, the random line to the same end point and, on generated data, the oracle's."""
    fig, ax = figure()
    ax.plot([p["fraction"] for p in model], [p["qini"] for p in model], label=f"model (Qini {qini:.2f})")
    if oracle:
        label = "oracle (true uplift)" + (f", Qini {oracle_qini:.2f}" if oracle_qini is not None else "")
        ax.plot([p["fraction"] for p in oracle], [p["qini"] for p in oracle], color="tab:green", label=label)
    ax.plot([0, 1], [0, model[-1]["qini"]], "--", color="grey", label="random")
    ax.set(title="Qini curve", xlabel="fraction of assignments targeted (highest predicted uplift first)",
           ylabel="churners saved among the treated")
    ax.legend(loc="best")
    return png(fig)


def plot_deciles(deciles: list[dict[str, Any]]) -> bytes:
    """Observed uplift per decile of predicted uplift, each bar labelled with its treated / control counts."""
    fig, ax = figure()
    xs = [d["decile"] for d in deciles]
    ys = [d["uplift"] if d["uplift"] is not None else 0.0 for d in deciles]
    bars = ax.bar(xs, ys, color=["tab:blue" if y >= 0 else "tab:red" for y in ys])
    ax.bar_label(bars, labels=[f"{d['treated_rows']}/{d['control_rows']}" for d in deciles], fontsize=7)
    ax.plot(xs, [d["mean_score"] for d in deciles], "o--", color="tab:orange", label="mean predicted uplift")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.margins(y=0.12)
    ax.set(title="Uplift by decile (labels: treated/control rows)", xlabel="decile of predicted uplift (1 = highest)",
           ylabel="control churn rate - treated churn rate", xticks=xs)
    ax.legend(loc="upper right")
    return png(fig)


def _fmt(v: Any) -> Any:
    return "" if v is None else v


def render_html(ctx: dict[str, Any], images: dict[str, bytes]) -> str:
    """One page: headline metrics, the Qini curve, uplift by decile, and uplift vs risk targeting."""
    m, truth = ctx["metrics"], ctx.get("has_truth", False)
    intervals = m.get("intervals") or {}
    headline = [[k, _fmt(m[k]), f"{intervals[k]['low']:.4f} .. {intervals[k]['high']:.4f}" if k in intervals else ""]
                for k in HEADLINE if k in m]
    deciles = [[d["decile"], d["treated_rows"], d["control_rows"], d["mean_score"], _fmt(d["treated_churn_rate"]),
                _fmt(d["control_churn_rate"]), _fmt(d["uplift"])] for d in ctx["deciles"]]
    risk = any("risk_expected_saved" in r for r in ctx["targeting"])
    cols = ["expected_saved", *(["true_saved"] if truth else [])]
    header = ["contacts (share)", "money spent", *[f"by uplift: {c.replace('_', ' ')}" for c in cols],
              *([f"by churn risk: {c.replace('_', ' ')}" for c in cols] if risk else [])]
    targeting = [[f"{r['contacts']} ({r['fraction']:.0%})", r["cost"], *[r[f"uplift_{c}"] for c in cols],
                  *([r[f"risk_{c}"] for c in cols] if risk else [])] for r in ctx["targeting"]]
    risk_note = (f"churn risk = the probabilities of churn model {html.escape(str(ctx.get('churn_model_version')))}"
                 " at assigned_at (it may have seen later snapshots than these campaigns: a comparison only)"
                 if risk else "no churn model registered that reads these features: uplift targeting only")
    plots = dict(PLOTS)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Uplift model {html.escape(ctx['version'])}</title>
<style>{PAGE_STYLE}</style></head><body>
<h1>Uplift model {html.escape(ctx['version'])}</h1>
<p class="note">{html.escape(ctx['kind'])} ({html.escape(ctx['model_type'])}) trained {html.escape(ctx['trained_at'])}
on campaigns {html.escape(', '.join(ctx['split']['train']))}; evaluated on the later campaigns
{html.escape(', '.join(ctx['split']['test']))}, whose outcomes no training label window reaches. Uplift =
churn probability without the contact - with it (higher: more churners saved).</p>
<h2>Test metrics</h2>{html_table(headline, ['metric', 'value', '95 % interval (bootstrap over accounts)'])}
<h2>Qini curve</h2>
<p class="note">Churners saved among the treated of the top group (control arm scaled to the treated arm), against
the share targeted; the random line ends at the same point{', the oracle ranks by the true uplift' if truth else ''}.
</p>{figures_html(images, [("qini.png", plots["qini.png"])])}
<h2>Uplift by decile</h2>
{html_table(deciles, ['decile', 'treated rows', 'control rows', 'mean predicted uplift', 'treated churn rate',
                      'control churn rate', 'observed uplift'])}
{figures_html(images, [("deciles.png", plots["deciles.png"])])}
<h2>Targeting by uplift vs by churn risk at the same budget</h2>
<p class="note">The same number of test assignments contacted by each order; money spent = contacts x
{ctx['cost_per_contact']:.2f}; expected saved = the sum of the predicted uplift of those
contacted{'; true saved = the sum of their true uplift (intervention_truth)' if truth else ''}; {risk_note}.</p>
{html_table(targeting, header)}
</body></html>
"""


def build_report(ctx: dict[str, Any], scored: DataFrame, cost_per_contact: float,
                 truth_col: str | None = None) -> dict[str, bytes]:
    """All report files keyed by their name under the version's `report/`. `scored`: the test assignments with
    `label`, `treated`, `propensity`, the predicted `uplift`, optionally `churn_probability` and `truth_col`."""
    oracle = qini_points(scored, truth_col) if truth_col else None
    deciles = [r.asDict() for r in uplift_deciles(scored).collect()]
    full = {**ctx, "deciles": deciles, "cost_per_contact": cost_per_contact, "has_truth": truth_col is not None,
            "targeting": targeting_comparison(scored, cost_per_contact, truth_col=truth_col)}
    m = ctx["metrics"]
    images = {"qini.png": plot_qini(qini_points(scored), m["qini_coefficient"], oracle,
                                    m.get("oracle_qini_coefficient")),
              "deciles.png": plot_deciles(deciles)}
    return {**images, "report.html": render_html(full, images).encode()}
