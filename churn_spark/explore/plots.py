"""Figures for the exploration views: pandas aggregates in, a matplotlib `Figure` out.

Figures are built with the object-oriented API (no pyplot, no global state), so the same builder
serves the notebook (displayed as PNG) and the HTML report (inlined as base64 PNG).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

CHURNED, RETAINED = "tab:red", "tab:blue"


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _grid(n: int, cols: int, width: float, height: float) -> tuple[Figure, list]:
    rows = max(1, math.ceil(n / cols))
    fig = Figure(figsize=(width, height * rows))
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(max(n, 1))]
    return fig, axes


def plot_churn_over_time(by_snapshot: pd.DataFrame) -> Figure:
    """Bars: labelled and censored rows per snapshot; line: churn rate of the labelled rows."""
    fig = Figure(figsize=(10, 4))
    ax = fig.add_subplot(1, 1, 1)
    x = pd.to_datetime(by_snapshot["as_of_date"])
    width = 20
    ax.bar(x, by_snapshot["labelled"], width=width, color="0.75", label="labelled rows")
    ax.bar(x, by_snapshot["censored"], width=width, bottom=by_snapshot["labelled"], color="0.9",
           hatch="//", edgecolor="0.6", label="censored rows (no label yet)")
    ax.set_ylabel("eligible accounts")
    rate = ax.twinx()
    rate.plot(x, by_snapshot["churn_rate"], color=CHURNED, marker="o", label="churn rate")
    rate.set_ylabel("churn rate within the horizon")
    rate.set_ylim(0, max(0.05, float(np.nanmax(by_snapshot["churn_rate"].astype(float).to_numpy(), initial=0))) * 1.2)
    ax.set_title("Churn rate and eligible accounts per snapshot")
    handles = ax.get_legend_handles_labels()[0] + rate.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    return fig


def plot_churn_by_cohort(by_cohort: pd.DataFrame) -> Figure:
    """Churn rate per signup month; the cohort's account count is written on each bar."""
    fig = Figure(figsize=(10, 4))
    ax = fig.add_subplot(1, 1, 1)
    labels = [pd.Timestamp(d).strftime("%Y-%m") for d in by_cohort["signup_month"]]
    bars = ax.bar(range(len(labels)), by_cohort["churn_rate"].astype(float).fillna(0.0), color=CHURNED, alpha=0.7)
    for bar, n in zip(bars, by_cohort["accounts"], strict=True):
        ax.annotate(str(int(n)), (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                    va="bottom", fontsize=6)
    ax.set_ylabel("churn rate (labelled snapshots)")
    ax.set_xlabel("signup month (number on the bar: accounts)")
    ax.set_title("Churn rate by signup cohort")
    step = max(1, len(labels) // 24)
    ax.set_xticks(range(0, len(labels), step), labels[::step], rotation=60, fontsize=7)
    return fig


def plot_churn_by_attribute(by_attribute: pd.DataFrame, overall_rate: float | None) -> Figure:
    """One panel per declared attribute: churn rate per value (row counts in the tick labels)."""
    attributes = list(dict.fromkeys(by_attribute["attribute"]))
    fig, axes = _grid(len(attributes), 3, 12, 3.2)
    for ax, attribute in zip(axes, attributes, strict=False):
        part = by_attribute[by_attribute["attribute"] == attribute].sort_values("churn_rate")
        ticks = [f"{v} ({int(n)})" for v, n in zip(part["value"], part["labelled"], strict=True)]
        ax.barh(ticks, part["churn_rate"].astype(float).fillna(0.0), color=CHURNED, alpha=0.7)
        if overall_rate is not None:
            ax.axvline(overall_rate, color="0.3", linestyle="--", linewidth=1, label="all accounts")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_title(attribute)
        ax.set_xlabel("churn rate")
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle("Churn rate by declared account attribute (labelled rows per value)")
    fig.tight_layout()
    return fig


def _box(row: pd.Series, label: str) -> dict[str, object]:
    return {"label": label, "whislo": row["q05"], "q1": row["q25"], "med": row["q50"], "q3": row["q75"],
            "whishi": row["q95"], "mean": row["mean"], "fliers": []}


def plot_feature_distributions(quantiles: pd.DataFrame, features: Sequence[str]) -> Figure:
    """Box plots from Spark's quantiles (whiskers 5th-95th percentile, triangle = mean), churned vs retained."""
    fig, axes = _grid(len(features), 3, 12, 3.0)
    for ax, name in zip(axes, features, strict=False):
        part = quantiles[quantiles["feature"] == name].set_index("label")
        stats = [_box(part.loc[lbl], text) for lbl, text in ((0, "retained"), (1, "churned")) if lbl in part.index]
        if stats and all(pd.notna(s["med"]) for s in stats):
            boxes = ax.bxp(stats, showmeans=True, patch_artist=True)
            for patch, s in zip(boxes["boxes"], stats, strict=True):
                patch.set_facecolor(CHURNED if s["label"] == "churned" else RETAINED)
                patch.set_alpha(0.5)
        ax.set_title(name, fontsize=9)
    fig.suptitle("Key features: churned vs retained (box 25-75%, whiskers 5-95%)")
    fig.tight_layout()
    return fig


def correlation_matrix(pairs: pd.DataFrame, features: Sequence[str]) -> pd.DataFrame:
    """The symmetric matrix (diagonal 1) from the pairwise view."""
    m = pd.DataFrame(np.eye(len(features)), index=list(features), columns=list(features))
    for a, b, c in pairs[["feature_a", "feature_b", "correlation"]].itertuples(index=False):
        m.loc[a, b] = m.loc[b, a] = np.nan if c is None else c
    return m


def plot_correlations(pairs: pd.DataFrame, features: Sequence[str]) -> Figure:
    """Heatmap of Pearson correlations between the key features (on a sample)."""
    m = correlation_matrix(pairs, features)
    size = max(5.0, 0.55 * len(features) + 3)
    fig = Figure(figsize=(size + 1.5, size))
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(m.to_numpy(dtype=float), cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(features)), list(features), rotation=75, fontsize=7)
    ax.set_yticks(range(len(features)), list(features), fontsize=7)
    for (i, j), v in np.ndenumerate(m.to_numpy(dtype=float)):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if abs(v) > 0.6 else "black")
    fig.colorbar(image, ax=ax, shrink=0.8, label="Pearson correlation")
    ax.set_title("Correlation between key features")
    return fig


def is_discrete(values: pd.Series, max_levels: int = 40) -> bool:
    """Whole numbers with few levels (counts): points would hide each other without jitter."""
    v = values.dropna().astype(float)
    return bool(len(v)) and bool((v == v.round()).all()) and v.nunique() <= max_levels


def jittered(values: pd.Series, seed: int) -> pd.Series:
    """Discrete values spread by up to +-0.3 (deterministic), others unchanged."""
    if not is_discrete(values):
        return values
    rng = np.random.default_rng(seed)
    return values.astype(float) + rng.uniform(-0.3, 0.3, len(values))


def plot_scatter(sample: pd.DataFrame, x: str, y: str) -> Figure:
    """Two separating features, a stratified sample of each class (count features jittered)."""
    fig = Figure(figsize=(7, 5.5))
    ax = fig.add_subplot(1, 1, 1)
    for lbl, color, text in ((0, RETAINED, "retained"), (1, CHURNED, "churned")):
        part = sample[sample["label"] == lbl]
        ax.scatter(jittered(part[x], 1), jittered(part[y], 2), s=10, alpha=0.5, color=color,
                   label=f"{text} ({len(part)})")
    for axis, col in ((ax.set_xscale, x), (ax.set_yscale, y)):
        values = sample[col].abs()
        if len(values) and values.max() > 100 * max(float(values.median()), 1.0):
            axis("symlog")
    ax.set_xlabel(x + (" (jittered)" if is_discrete(sample[x]) else ""))
    ax.set_ylabel(y + (" (jittered)" if is_discrete(sample[y]) else ""))
    ax.legend(fontsize=8)
    ax.set_title("Two features, churned vs retained (stratified sample)")
    return fig


def plot_definition_sensitivity(variants: pd.DataFrame, configured: tuple[int, int]) -> Figure:
    """Churn rate, labelled share and class balance as the horizon grows, one line per grace period."""
    fig = Figure(figsize=(13, 4))
    panels = [("churn_rate", "churn rate of labelled rows"), ("labelled_share", "labelled share (rest censored)"),
              ("retained_per_churner", "retained rows per churner")]
    axes = [fig.add_subplot(1, 3, i + 1) for i in range(3)]
    for grace, part in variants.groupby("grace_days"):
        part = part.sort_values("horizon_months")
        for ax, (col, _) in zip(axes, panels, strict=True):
            ax.plot(part["horizon_months"], part[col].astype(float), marker="o", label=f"grace {grace} d")
    h, g = configured
    chosen = variants[(variants["horizon_months"] == h) & (variants["grace_days"] == g)]
    for ax, (col, title) in zip(axes, panels, strict=True):
        if len(chosen):
            ax.scatter(chosen["horizon_months"], chosen[col].astype(float), s=160, facecolors="none",
                       edgecolors="black", zorder=5, label="configured")
        ax.set_xlabel("horizon (months)")
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=7)
    fig.suptitle("How the churn definition changes the labels (same snapshots, library's label function)")
    fig.tight_layout()
    return fig
