"""Exploration for data scientists: views (Spark aggregates), figures and the `explore` HTML report.

The notebook `notebooks/churn_exploration.ipynb` and `churn-spark explore` both call these; neither
holds label, feature or model logic of its own.
"""

from __future__ import annotations

from churn_spark.explore.report import (
    Exploration,
    ExploreData,
    ExploreOptions,
    explore,
    figures,
    load_data,
    model_summary,
    render_html,
    run_explore,
)

__all__ = ["Exploration", "ExploreData", "ExploreOptions", "explore", "figures", "load_data", "model_summary",
           "render_html", "run_explore"]
