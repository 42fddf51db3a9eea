"""The evaluation report: PNG plots and one self-contained HTML page (images inlined as base64).

Spark aggregates the test scores into small tables (a 1,000-bin score histogram per label, the
decile calibration table); only those reach the driver and matplotlib. Curves drawn from the
histogram are exact up to the bin width; the headline metrics come from Spark (metrics.py).
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

BINS = 1000


@dataclass(frozen=True)
class ScoreHistogram:
    """Counts of positives and negatives per score bin [i/BINS, (i+1)/BINS)."""

    positives: np.ndarray
    negatives: np.ndarray

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(0.0, 1.0, len(self.positives) + 1)


def score_histogram(scored: DataFrame, score_col: str = "churn_probability", label_col: str = "label",
                    bins: int = BINS) -> ScoreHistogram:
    """Aggregate the scores into `bins` equal-width bins per label (a small result, safe to collect)."""
    b = F.least(F.floor(F.col(score_col) * bins), F.lit(bins - 1)).cast("int")
    rows = (scored.groupBy(b.alias("bin"))
            .agg(F.sum(F.col(label_col).cast("long")).alias("pos"), F.count(F.lit(1)).alias("n"))
            .collect())
    pos, neg = np.zeros(bins), np.zeros(bins)
    for r in rows:
        pos[r["bin"]] = r["pos"] or 0
        neg[r["bin"]] = r["n"] - (r["pos"] or 0)
    return ScoreHistogram(pos, neg)


def curves(hist: ScoreHistogram) -> dict[str, np.ndarray]:
    """ROC, precision-recall and cumulative gains points, thresholds from high to low scores."""
    tp = np.concatenate([[0.0], np.cumsum(hist.positives[::-1])])
    fp = np.concatenate([[0.0], np.cumsum(hist.negatives[::-1])])
    p, n = max(tp[-1], 1.0), max(fp[-1], 1.0)
    taken = tp + fp
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(taken > 0, tp / np.maximum(taken, 1.0), np.nan)
    return {"fpr": fp / n, "tpr": tp / p, "recall": tp / p, "precision": precision,
            "population": taken / max(taken[-1], 1.0), "gains": tp / p}


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes (public: the uplift report draws with the same helpers)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def figure() -> tuple[Figure, Any]:
    fig = Figure(figsize=(5.2, 4.0))
    return fig, fig.add_subplot(1, 1, 1)


def plot_roc(c: dict[str, np.ndarray], auc: float, oracle: float | None) -> bytes:
    fig, ax = figure()
    ax.plot(c["fpr"], c["tpr"], label=f"model (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="random")
    if oracle is not None:
        ax.set_title(f"ROC (true-probability AUC {oracle:.3f})")
    else:
        ax.set_title("ROC")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(loc="lower right")
    return png(fig)


def plot_pr(c: dict[str, np.ndarray], pr_auc: float, base_rate: float) -> bytes:
    fig, ax = figure()
    ok = ~np.isnan(c["precision"])
    ax.plot(c["recall"][ok], c["precision"][ok], label=f"model (AUC {pr_auc:.3f})")
    ax.axhline(base_rate, linestyle="--", color="grey", label=f"label rate {base_rate:.3f}")
    ax.set(title="Precision-recall", xlabel="recall", ylabel="precision", ylim=(0, 1.02))
    ax.legend(loc="upper right")
    return png(fig)


def plot_gains(c: dict[str, np.ndarray]) -> bytes:
    fig, ax = figure()
    ax.plot(c["population"], c["gains"], label="cumulative gains")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="random")
    ax.set(title="Cumulative gains and lift", xlabel="fraction of accounts contacted (highest scores first)",
           ylabel="fraction of churners reached")
    ax2 = ax.twinx()
    ok = c["population"] > 0.01
    ax2.plot(c["population"][ok], c["gains"][ok] / c["population"][ok], color="tab:orange", label="lift")
    ax2.set_ylabel("lift")
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(lines, [str(h.get_label()) for h in lines], loc="center right")
    return png(fig)


def plot_calibration(deciles: list[dict[str, Any]], ece: float | None = None,
                     in_the_large: float | None = None) -> bytes:
    """Reliability plot: observed churn rate against mean predicted probability per score decile."""
    fig, ax = figure()
    pred = [d["mean_predicted"] for d in deciles]
    obs = [d["observed_rate"] for d in deciles]
    top = max([*pred, *obs, 0.01]) * 1.05
    ax.plot([0, top], [0, top], "--", color="grey", label="perfect")
    ax.plot(pred, obs, "o-", label="deciles")
    title = "Calibration by score decile"
    if ece is not None and in_the_large is not None:
        title += f"\nECE {ece:.4f}, calibration-in-the-large {in_the_large:+.4f}"
    ax.set(title=title, xlabel="mean predicted probability", ylabel="observed churn rate")
    ax.legend(loc="upper left")
    return png(fig)


def plot_explanation(expl: dict[str, Any], top: int = 20) -> bytes:
    items = sorted(expl["values"].items(), key=lambda kv: abs(kv[1]), reverse=True)[:top][::-1]
    fig = Figure(figsize=(6.0, max(2.5, 0.28 * len(items) + 1)))
    ax = fig.add_subplot(1, 1, 1)
    ax.barh([k for k, _ in items], [v for _, v in items],
            color=["tab:red" if v > 0 else "tab:blue" for _, v in items])
    what = "coefficients (standardised features)" if expl["kind"] == "coefficients" else "feature importances"
    ax.set_title(f"Top {len(items)} {what}")
    ax.tick_params(axis="y", labelsize=7)
    return png(fig)


def plot_score_distribution(hist: ScoreHistogram, bins: int = 50) -> bytes:
    fig, ax = figure()
    step = len(hist.positives) // bins
    pos = hist.positives.reshape(bins, step).sum(axis=1)
    neg = hist.negatives.reshape(bins, step).sum(axis=1)
    centers = (np.arange(bins) + 0.5) / bins
    ax.bar(centers, neg / max(neg.sum(), 1), width=1 / bins, alpha=0.6, label="label 0 (stayed)")
    ax.bar(centers, pos / max(pos.sum(), 1), width=1 / bins, alpha=0.6, label="label 1 (churned)")
    used = np.nonzero(pos + neg)[0]
    if len(used):
        ax.set_xlim(0, min(1.0, (used.max() + 2) / bins))
    ax.set(title="Score distribution by label", xlabel="churn probability", ylabel="share of rows")
    ax.legend()
    return png(fig)


def html_table(rows: list[list[Any]], header: list[str]) -> str:
    def cell(v: Any) -> str:
        return html.escape(f"{v:.4f}" if isinstance(v, float) else str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


PLOTS = [("roc.png", "ROC curve"), ("pr.png", "Precision-recall"), ("gains.png", "Cumulative gains and lift"),
         ("calibration.png", "Calibration"), ("explanation.png", "What drives the score"),
         ("score_distribution.png", "Score distribution by label")]


def selection_html(table: list[dict[str, Any]], selection: dict[str, Any]) -> str:
    """Every candidate's metric on each expanding-window fold, and which one was kept."""
    if not table:
        return ""
    metric = selection.get("metric", "roc_auc")
    rows = [[t.get("family", ""), json.dumps(t["params"], sort_keys=True),
             ", ".join(f"{v:.4f}" for v in t[f"fold_{metric}"]), t[f"mean_{metric}"],
             ", ".join(str(n) for n in t.get("fold_trees", []))] for t in table]
    chosen = html.escape(str(selection.get("chosen", "")))
    return (f"<h2>Model selection ({html.escape(str(selection.get('configured', '')))}: {chosen} kept)</h2>"
            + html_table(rows, ["family", "parameters", f"{metric} per fold", "mean", "trees per fold"]))


def paired_text(paired: dict[str, Any] | None, metric: str) -> str:
    """One paragraph: the paired bootstrap of new minus current on the same test rows, if it ran."""
    if not paired:
        return ""
    better = "higher" if paired["higher_is_better"] else "lower"
    return (f'<p class="note">Against the current model on the same test rows ({html.escape(metric)}, {better} is '
            f'better): new minus current {paired["difference"]:+.4f}, 95 % interval {paired["low"]:+.4f} .. '
            f'{paired["high"]:+.4f}; the new model is not worse in {paired["p_new_not_worse"]:.0%} of '
            f'{paired["replicates"]} account resamples.</p>')


PAGE_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
th{background:#f3f3f3}td:first-child{text-align:left}figure{display:inline-block;margin:0.5em}
img{max-width:520px}.note{color:#555}"""
"""The CSS of a report page (this one and uplift/report.py's)."""


def figures_html(images: dict[str, bytes], plots: list[tuple[str, str]]) -> str:
    """The `(file name, title)` plots present in `images`, inlined as base64 PNGs with their captions."""
    return "".join(
        f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,'
        f'{base64.b64encode(images[name]).decode()}"><figcaption>{html.escape(title)}</figcaption></figure>'
        for name, title in plots if name in images)


def render_html(ctx: dict[str, Any], images: dict[str, bytes]) -> str:
    """One page: headline metrics, data period and counts per split, calibration table, the plots."""
    m = ctx["metrics"]
    intervals = m.get("intervals") or {}

    def interval(k: str) -> str:
        return f"{intervals[k]['low']:.4f} .. {intervals[k]['high']:.4f}" if k in intervals else ""

    headline = [[k, m[k], interval(k)] for k in (
        "roc_auc", "oracle_roc_auc", "pr_auc", "log_loss", "brier", "lift_at_5pct", "lift_at_10pct", "lift_at_20pct",
        "precision_at_10pct", "recall_at_10pct", "ece", "oracle_ece", "calibration_in_the_large",
        "oracle_calibration_in_the_large", "log_loss_raw", "brier_raw")
        if k in m]
    splits = [[name, s["from"], s["to"], s["snapshots"], s["rows"], s["label_rate"]]
              for name, s in ctx["splits"].items()]
    deciles = [[d["decile"], d["rows"], d["positives"], d["mean_predicted"], d["observed_rate"]]
               for d in ctx["deciles"]]
    figs = figures_html(images, PLOTS)
    promo = ctx.get("promotion", {})
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Churn model {html.escape(ctx['version'])}</title>
<style>{PAGE_STYLE}</style></head><body>
<h1>Churn model {html.escape(ctx['version'])}</h1>
<p class="note">{html.escape(ctx['model_type'].upper())} trained {html.escape(ctx['trained_at'])};
feature set {html.escape(str(ctx['feature_set_version']))}; {ctx['n_features']} model inputs;
probabilities {html.escape(ctx['calibration'])}. Metrics are on the test snapshots only, which no
training or validation label window overlaps (gap {html.escape(ctx['gap'])}).
Promotion: {html.escape(str(promo.get('promoted')))} &mdash; {html.escape(str(promo.get('reason', '')))}</p>
{paired_text(promo.get('paired_bootstrap'), promo.get('metric', ''))}
<h2>Test metrics</h2>{html_table(headline, ['metric', 'value', '95 % interval (bootstrap over accounts)'])}
{selection_html(ctx.get('search') or [], ctx.get('selection') or {})}
<h2>Data period, rows and label rate</h2>
{html_table(splits, ['split', 'first snapshot', 'last snapshot', 'snapshots', 'rows', 'label rate'])}
<h2>Calibration by decile (1 = highest scores)</h2>
{html_table(deciles, ['decile', 'rows', 'churners', 'mean predicted', 'observed rate'])}
<h2>Plots</h2>{figs}
</body></html>
"""


def build_report(ctx: dict[str, Any], hist: ScoreHistogram) -> dict[str, bytes]:
    """All report files, keyed by their name under the model's `report/` folder."""
    c = curves(hist)
    m = ctx["metrics"]
    images = {
        "roc.png": plot_roc(c, m["roc_auc"], m.get("oracle_roc_auc")),
        "pr.png": plot_pr(c, m["pr_auc"], m["label_rate"]),
        "gains.png": plot_gains(c),
        "calibration.png": plot_calibration(ctx["deciles"], m.get("ece"), m.get("calibration_in_the_large")),
        "explanation.png": plot_explanation(ctx["explanation"]),
        "score_distribution.png": plot_score_distribution(hist),
    }
    return {**images, "report.html": render_html(ctx, images).encode()}
