from __future__ import annotations

import numpy as np
import pytest
from pyspark.sql import SparkSession

from churn_spark.train import report as RP


def test_score_histogram_and_curves_by_hand(spark: SparkSession) -> None:
    df = spark.createDataFrame([(0.05, 0), (0.10, 1), (0.30, 0), (0.55, 1), (0.60, 1), (0.99, 0), (1.0, 1)],
                               "churn_probability double, label int")
    hist = RP.score_histogram(df, bins=4)  # bins [0,.25) [.25,.5) [.5,.75) [.75,1]; 1.0 goes into the last
    assert hist.positives.tolist() == [1, 0, 2, 1] and hist.negatives.tolist() == [1, 1, 0, 1]
    c = RP.curves(hist)
    # thresholds from the top bin down: (tp, fp) = (0,0) (1,1) (3,1) (3,2) (4,3)
    assert c["tpr"].tolist() == pytest.approx([0, .25, .75, .75, 1])
    assert c["fpr"].tolist() == pytest.approx([0, 1 / 3, 1 / 3, 2 / 3, 1])
    assert c["precision"][1:].tolist() == pytest.approx([.5, .75, .6, 4 / 7])
    assert c["population"].tolist() == pytest.approx([0, 2 / 7, 4 / 7, 5 / 7, 1])


def test_report_files_are_pngs_and_one_self_contained_page() -> None:
    hist = RP.ScoreHistogram(np.array([0, 1, 2, 5] * 250, dtype=float), np.array([9, 5, 2, 1] * 250, dtype=float))
    ctx = {
        "version": "v1", "model_type": "gbt", "trained_at": "2024-01-01T00:00:00", "feature_set_version": "1",
        "n_features": 3, "calibration": "not calibrated", "gap": "6 months + 30 days",
        "metrics": {"roc_auc": 0.71, "pr_auc": 0.4, "log_loss": 0.5, "brier": 0.2, "lift_at_10pct": 2.0,
                    "label_rate": 0.3, "oracle_roc_auc": 0.74,
                    "intervals": {"roc_auc": {"low": 0.6512, "high": 0.7634, "replicates": 200}}},
        "splits": {"train": {"from": "2022-07-01", "to": "2023-01-01", "snapshots": 7, "rows": 100,
                             "label_rate": 0.25}},
        "deciles": [{"decile": i, "rows": 10, "positives": 10 - i, "mean_predicted": (10 - i) / 10,
                     "observed_rate": (10 - i) / 10} for i in range(1, 11)],
        "explanation": {"kind": "importances", "values": {"usage": 0.7, "plan=pro": 0.3}},
        "promotion": {"promoted": True, "reason": "not worse", "metric": "roc_auc",
                      "paired_bootstrap": {"difference": 0.0123, "low": -0.0042, "high": 0.0301,
                                           "p_new_not_worse": 0.93, "replicates": 200, "higher_is_better": True}},
    }
    files = RP.build_report(ctx, hist)
    assert sorted(files) == sorted([name for name, _ in RP.PLOTS] + ["report.html"])
    assert all(files[name].startswith(b"\x89PNG") for name, _ in RP.PLOTS)
    page = files["report.html"].decode()
    assert page.count("data:image/png;base64,") == 6
    assert "0.7100" in page and "0.7400" in page and "2022-07-01" in page and "not worse" in page
    assert "0.6512 .. 0.7634" in page  # the ROC AUC row carries its interval
    assert "new minus current +0.0123, 95 % interval -0.0042 .. +0.0301" in page and "93% of 200" in page
