"""`churn-spark explore`: every exploration view as one self-contained HTML page (PNG plots inlined).

The page is for people who do not run notebooks; `notebooks/churn_exploration.ipynb` shows the same
views from the same functions. Inputs: `gold.churn_labels` and `gold.churn_features` (run `features`
first), the conformed accounts and subscriptions, and the model registry (a model is trained with the
training code when there is none yet, or when asked to).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import logging
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession

from churn_spark import asof
from churn_spark.config import Settings
from churn_spark.errors import ChurnSparkError
from churn_spark.explore import plots as P
from churn_spark.explore import views as V
from churn_spark.lakehouse import Lakehouse

log = logging.getLogger("churn_spark")

HEADLINE_METRICS = ("roc_auc", "oracle_roc_auc", "pr_auc", "log_loss", "brier", "lift_at_10pct",
                    "precision_at_10pct", "recall_at_10pct", "label_rate")


@dataclass(frozen=True)
class ExploreData:
    """The inputs of every view, as lazy DataFrames; `dataset` = features joined to non-null labels."""

    labels: DataFrame
    features: DataFrame
    accounts: DataFrame
    subscriptions: DataFrame
    dataset: DataFrame
    numeric_features: list[str]
    data_end: dt.date
    table_versions: dict[str, int]


def load_data(spark: SparkSession, settings: Settings) -> ExploreData:
    """Read the gold tables (at their current Delta version) and the conformed raw inputs."""
    from churn_spark.features.job import load_inputs, resolve_data_end
    from churn_spark.train.job import labelled_dataset, read_delta_at
    from churn_spark.train.pipeline import feature_columns

    lake = Lakehouse.from_settings(settings)
    labels, labels_v = read_delta_at(spark, lake.churn_labels, "gold.churn_labels")
    features, features_v = read_delta_at(spark, lake.churn_features, "gold.churn_features")
    inputs = load_inputs(spark, settings)
    return ExploreData(
        labels=labels, features=features, accounts=inputs.accounts, subscriptions=inputs.subscriptions,
        dataset=labelled_dataset(labels, features, settings.features.feature_set_version),
        numeric_features=feature_columns(features.schema, settings.model.exclude_features).numeric,
        data_end=resolve_data_end(settings, inputs.events),
        table_versions={"gold.churn_labels": labels_v, "gold.churn_features": features_v},
    )


def model_summary(spark: SparkSession, settings: Settings, retrain: bool = False) -> dict[str, Any]:
    """Metrics, split and explanation of the current registered model; trains one with the training
    code (`run_train`, which registers it) when there is none or `retrain` is set."""
    from churn_spark.train import registry as R
    from churn_spark.train.job import run_train

    pointer = R.read_pointer(spark, settings)
    trained_now = retrain or pointer is None
    if pointer is None or retrain:
        version = str(run_train(spark, settings)["model_version"])
    else:
        version = str(pointer["version"])
    meta = R.load_metadata(spark, settings, version)
    split = meta.get("lineage", {}).get("split", {})
    return {
        "version": version, "model_type": meta.get("model_type"), "trained_now": trained_now,
        "metrics": {k: meta["metrics"][k] for k in HEADLINE_METRICS if k in meta.get("metrics", {})},
        "splits": {k: split[k] for k in ("train", "validation", "test") if k in split},
        "explanation": meta.get("explanation"),
    }


@dataclass
class Exploration:
    """Every view as a small pandas frame (what the figures and tables are drawn from)."""

    by_snapshot: pd.DataFrame
    by_cohort: pd.DataFrame
    by_attribute: pd.DataFrame
    separation: pd.DataFrame
    key_features: list[str]
    quantiles: pd.DataFrame
    correlations: pd.DataFrame
    correlation_features: list[str]
    scatter: pd.DataFrame
    scatter_xy: tuple[str, str]
    definitions: pd.DataFrame
    configured_definition: tuple[int, int]
    model: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExploreOptions:
    """How much to show and sample: small on purpose (everything here reaches the driver)."""

    key_features: int = 6
    correlation_features: int = 10
    correlation_sample_rows: int = 20_000
    scatter_rows_per_class: int = 1_000
    horizons: tuple[int, ...] = (3, 6, 9, 12)
    grace_days: tuple[int, ...] = (0, 30, 90)
    seed: int = 11
    with_model: bool = True
    retrain: bool = False


def explore(spark: SparkSession, settings: Settings, options: ExploreOptions | None = None) -> Exploration:
    """Compute every view (Spark aggregates; only they and bounded samples are collected)."""
    opt = options or ExploreOptions()
    data = load_data(spark, settings)
    dataset = data.dataset.persist(StorageLevel.MEMORY_AND_DISK)  # read by four views
    try:
        return _explore(spark, settings, opt, replace(data, dataset=dataset))
    finally:
        dataset.unpersist()


def _explore(spark: SparkSession, settings: Settings, opt: ExploreOptions, data: ExploreData) -> Exploration:
    log.info("explore: views of %s (labels v%s, features v%s)", Lakehouse.from_settings(settings).root,
             *data.table_versions.values())
    by_snapshot = V.to_pandas(V.churn_rate_by_snapshot(data.labels))
    by_cohort = V.to_pandas(V.churn_rate_by_cohort(data.labels, data.accounts))
    by_attribute = V.to_pandas(V.churn_rate_by_attribute(data.labels, data.accounts,
                                                         settings.inputs.account_attributes))
    labelled = int(by_snapshot["labelled"].sum())
    churned = int(by_snapshot["churned"].sum())
    separation = V.to_pandas(V.feature_separation(data.dataset, data.numeric_features))
    key = V.top_features(separation, opt.key_features)
    corr_features = V.top_features(separation, opt.correlation_features)
    corr_sample = data.dataset.sample(V.sample_fraction(labelled, opt.correlation_sample_rows), opt.seed)
    correlations = V.to_pandas(V.feature_correlations(corr_sample, corr_features))
    x, y = scatter_pair(corr_features, data.numeric_features, correlations)
    scatter = V.scatter_sample(data.dataset, x, y, {0: labelled - churned, 1: churned},
                               opt.scatter_rows_per_class, opt.seed)
    snapshots = asof.snapshot_frame(spark, list(by_snapshot["as_of_date"]))
    variants = V.definition_variants(settings, opt.horizons, opt.grace_days)
    log.info("explore: labels under %d churn definitions", len(variants))
    definitions = V.label_rate_by_definition(data.subscriptions, data.accounts, snapshots, variants, data.data_end)
    ex = Exploration(
        by_snapshot=by_snapshot, by_cohort=by_cohort, by_attribute=by_attribute, separation=separation,
        key_features=key, quantiles=V.to_pandas(V.feature_quantiles(data.dataset, key)),
        correlations=correlations,
        correlation_features=corr_features, scatter=V.to_pandas(scatter), scatter_xy=(x, y),
        definitions=V.to_pandas(definitions),
        configured_definition=(settings.churn.horizon_months, settings.churn.grace_days),
        context={"lakehouse": Lakehouse.from_settings(settings).root, "data_end": data.data_end.isoformat(),
                 "table_versions": data.table_versions, "labelled_rows": labelled, "churned_rows": churned,
                 "numeric_features": len(data.numeric_features)},
    )
    if opt.with_model:
        try:
            ex.model = model_summary(spark, settings, opt.retrain)
        except ChurnSparkError as exc:  # e.g. too few labelled snapshots: the views still stand
            log.warning("explore: no model metrics (%s)", exc)
            ex.model = {"problem": str(exc)}
    return ex


def scatter_pair(ranked: list[str], numeric: list[str], correlations: pd.DataFrame | None = None,
                 max_abs_correlation: float = 0.8) -> tuple[str, str]:
    """x: the most separating feature; y: the next one in `ranked` (topped up from `numeric`) that is not
    a near-duplicate of x (|r| below `max_abs_correlation` in the correlation view; unknown pairs pass),
    else simply the next one. Two near-duplicates would only draw a diagonal."""
    candidates = list(dict.fromkeys([*ranked, *numeric]))
    if len(candidates) < 2:
        raise ChurnSparkError("gold.churn_features needs at least two numeric features to explore")
    x = candidates[0]
    r: dict[str, float] = {}
    if correlations is not None:
        for a, b, c in correlations[["feature_a", "feature_b", "correlation"]].itertuples(index=False):
            if x in (a, b) and c is not None and not pd.isna(c):
                r[b if a == x else a] = float(c)
    y = next((c for c in candidates[1:] if abs(r.get(c, 0.0)) < max_abs_correlation), candidates[1])
    return x, y


# --- figures and the page ------------------------------------------------------------------------


def overall_rate(ex: Exploration) -> float | None:
    labelled = ex.by_snapshot["labelled"].sum()
    return float(ex.by_snapshot["churned"].sum() / labelled) if labelled else None


def figures(ex: Exploration) -> dict[str, Figure | bytes]:
    """Each section's plot: a Figure, or PNG bytes where the library already renders one."""
    out: dict[str, Figure | bytes] = {
        "over_time": P.plot_churn_over_time(ex.by_snapshot),
        "cohort": P.plot_churn_by_cohort(ex.by_cohort),
        "attributes": P.plot_churn_by_attribute(ex.by_attribute, overall_rate(ex)),
        "distributions": P.plot_feature_distributions(ex.quantiles, ex.key_features),
        "correlations": P.plot_correlations(ex.correlations, ex.correlation_features),
        "scatter": P.plot_scatter(ex.scatter, *ex.scatter_xy),
        "definition": P.plot_definition_sensitivity(ex.definitions, ex.configured_definition),
    }
    if ex.model.get("explanation"):
        from churn_spark.train.report import plot_explanation

        out["model"] = plot_explanation(ex.model["explanation"])
    return out


def png(figure: Figure | bytes) -> bytes:
    return figure if isinstance(figure, bytes) else P.figure_png(figure)


SECTIONS: list[tuple[str, str, str, str]] = [
    ("over_time", "Churn rate over time",
     "The share of eligible accounts whose active period ends within the horizon, per snapshot. "
     "Recent snapshots are censored: their outcome window passes the end of the data, so they have no label.",
     "A trend or a step means the population or the product changed: train on recent snapshots and "
     "watch drift. Censored snapshots can be scored, never trained on."),
    ("cohort", "Churn rate by signup cohort",
     "Churn rate over the labelled snapshots of the accounts that signed up in each month.",
     "Young cohorts churning more is normal (tenure is a feature); a cohort far off its neighbours "
     "points to an acquisition campaign or a data problem worth a feature or a question."),
    ("attributes", "Churn rate by declared account attribute",
     "Churn rate per value of each attribute declared in `inputs.account_attributes` (dashed: all accounts).",
     "Values with very different rates and enough rows are useful categorical features; rare values "
     "with extreme rates are noise."),
    ("distributions", "Key features: churned vs retained",
     "The numeric features with the largest standardised mean difference between the classes, as box plots "
     "from quantiles computed in Spark.",
     "Separated boxes mean a feature carries signal on its own; overlapping boxes do not rule a feature out "
     "(interactions), but an expected signal that is absent deserves a check of the feature's definition."),
    ("correlations", "Correlation between features",
     "Pearson correlation between the most separating features, on a sample.",
     "Groups of near-duplicates (|r| > 0.9) add little: keep one per group for a linear model "
     "(`model.exclude_features`); trees cope, but importances get split across them."),
    ("scatter", "Two features together",
     "A stratified sample (churners are rarer, so each class is sampled separately) on the most separating "
     "feature and the next one that is not a near-duplicate of it (|r| < 0.8); counts are jittered.",
     "Visible separation promises a good model; a cloud where the colours overlap says no two features "
     "suffice and the model has to combine many weak signals."),
    ("definition", "How the churn definition changes the labels",
     "Labels recomputed with the library's label function over the same snapshots for several horizons "
     "and grace periods (circled: the configured definition).",
     "A longer horizon raises the churn rate but censors more recent snapshots; a longer grace period "
     "counts short lapses as renewals. Fix the definition with the business before training."),
    ("model", "A first model",
     "Test-set metrics of a model trained by the training code (time split with a gap), and what drives it.",
     "Compare ROC AUC with the oracle (generated data) and lift at 10% with the contact budget; "
     "then iterate on features and the definition, and re-run."),
]


def _table(df: pd.DataFrame, max_rows: int = 40) -> str:
    shown = df.head(max_rows)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if pd.isna(v) else f"{v:.4g}"
        return html.escape(str(v))

    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>"
                   for row in shown.itertuples(index=False))
    more = f"<p class='note'>{len(df) - max_rows} more rows not shown</p>" if len(df) > max_rows else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def section_tables(ex: Exploration) -> dict[str, str]:
    tables = {
        "definition": _table(ex.definitions),
        "distributions": _table(ex.separation.head(15)[["feature", "mean_churned", "mean_retained", "std",
                                                        "non_null_share", "separation"]]),
    }
    if ex.model.get("metrics"):
        metrics = pd.DataFrame({"metric": list(ex.model["metrics"]), "value": list(ex.model["metrics"].values())})
        splits = pd.DataFrame([{"split": k, **{c: v.get(c) for c in ("from", "to", "snapshots", "rows", "label_rate")}}
                               for k, v in ex.model.get("splits", {}).items()])
        trained = "trained for this report" if ex.model.get("trained_now") else "the current registered model"
        tables["model"] = (f"<p>Model <code>{html.escape(str(ex.model['version']))}</code> "
                           f"({html.escape(str(ex.model.get('model_type')))}, {trained}).</p>"
                           + _table(metrics) + (_table(splits) if len(splits) else ""))
    elif ex.model.get("problem"):
        tables["model"] = f"<p class='note'>No model metrics: {html.escape(ex.model['problem'])}</p>"
    return tables


def render_html(ex: Exploration, images: dict[str, bytes]) -> str:
    """One page, no external references: CSS inline, every plot a `data:image/png;base64` image."""
    tables = section_tables(ex)
    parts = []
    for key, title, tells, nxt in SECTIONS:
        if key not in images and key not in tables:
            continue
        img = (f'<img alt="{html.escape(title)}" src="data:image/png;base64,{base64.b64encode(images[key]).decode()}">'
               if key in images else "")
        parts.append(f'<section id="{key}"><h2>{html.escape(title)}</h2><p>{html.escape(tells)}</p>{img}'
                     f'{tables.get(key, "")}<p class="next"><b>What next:</b> {html.escape(nxt)}</p></section>')
    c = ex.context
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>churn-spark exploration</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1150px;color:#222}}
table{{border-collapse:collapse;margin:0.5em 0 1em;font-size:0.85em}}td,th{{border:1px solid #ccc;padding:3px 8px;
text-align:right}}th{{background:#f3f3f3}}td:first-child{{text-align:left}}img{{max-width:100%}}
section{{border-top:1px solid #ddd;margin-top:1.5em}}.note{{color:#555}}.next{{background:#f6f8fa;padding:0.5em}}
</style></head><body>
<h1>Churn exploration</h1>
<p class="note">Lakehouse {html.escape(str(c.get('lakehouse')))}; data up to {html.escape(str(c.get('data_end')))};
table versions {html.escape(str(c.get('table_versions')))}; {c.get('labelled_rows')} labelled account-snapshots,
{c.get('churned_rows')} churned; {c.get('numeric_features')} numeric features. Generated
{html.escape(dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC'))} by <code>churn-spark explore</code>.</p>
{''.join(parts)}
</body></html>
"""


def configured_row(ex: Exploration) -> dict[str, Any]:
    """The churn-definition view's row for the configured (horizon, grace): JSON-able."""
    h, g = ex.configured_definition
    rows = ex.definitions[(ex.definitions["horizon_months"] == h) & (ex.definitions["grace_days"] == g)]
    return {k: (None if pd.isna(v) else v.item() if hasattr(v, "item") else v)
            for k, v in rows.iloc[0].items()} if len(rows) else {}


def default_report_path(settings: Settings) -> str:
    return f"{Lakehouse.from_settings(settings).reports.rstrip('/')}/explore.html"


def run_explore(spark: SparkSession, settings: Settings, out: str | None = None,
                options: ExploreOptions | None = None) -> dict[str, Any]:
    """Compute the views, render the page and write it (local path or URI); returns a small summary."""
    from churn_spark.train.registry import write_bytes

    ex = explore(spark, settings, options)
    images = {k: png(f) for k, f in figures(ex).items()}
    page = render_html(ex, images)
    path = out or default_report_path(settings)
    write_bytes(spark, path, page.encode())
    log.info("explore: wrote %s (%d plots)", path, len(images))
    return {
        "report": path, "plots": len(images), "labelled_rows": ex.context["labelled_rows"],
        "churn_rate": overall_rate(ex), "key_features": ex.key_features, "scatter": list(ex.scatter_xy),
        "definitions": len(ex.definitions), "configured_definition": configured_row(ex),
        "model_version": ex.model.get("version"),
        "model_metrics": ex.model.get("metrics", {}), "model_problem": ex.model.get("problem"),
    }


