"""The uplift model's report (uplift/report.py): its small Spark tables (Qini curve points at score bins,
uplift by decile, targeting by uplift vs by churn risk) against hand computations, the page on a tiny scored
table, and `run_uplift_train` writing the page beside the registered version."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_SPARK
from pyspark.sql import DataFrame, SparkSession

from churn_spark.config import Settings
from churn_spark.uplift import report as UR

PNG = b"\x89PNG\r\n\x1a\n"
SECTIONS = ("<h2>Qini curve</h2>", "<h2>Uplift by decile</h2>",
            "<h2>Targeting by uplift vs by churn risk at the same budget</h2>")


def _curve_rows(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame([  # no propensity column: every row weighs 1
        ("a", 0.9, 1, 0), ("b", 0.7, 0, 1), ("c", 0.5, 1, 1), ("d", 0.5, 0, 0), ("e", 0.1, 1, 0), ("f", 0.0, 0, 0),
    ], "account_id string, uplift double, treated int, label int")


def _points(got: list[dict[str, float]]) -> list[float]:
    """fraction, qini, fraction, qini, ... (pytest.approx compares flat lists)."""
    return [v for p in got for v in (p["fraction"], p["qini"])]


def test_qini_points_are_the_curve_at_each_score_bin(spark: SparkSession) -> None:
    # cumulative by descending uplift, Q = treated rows x (control rate - treated rate), 0 while an arm is empty:
    # a (1 of 6): 1 treated, no control -> 0; + b: 1 t (0 churned), 1 c (1 churned) -> 1 x (1 - 0) = 1;
    # + the tie c, d: 2 t (1), 2 c (1) -> 0; + e: 3 t (1), 2 c (1) -> 3 x (1/2 - 1/3) = 0.5; + f: 3 t, 3 c -> 0
    want = [0.0, 0.0, 1 / 6, 0.0, 2 / 6, 1.0, 4 / 6, 0.0, 5 / 6, 0.5, 1.0, 0.0]
    assert _points(UR.qini_points(_curve_rows(spark))) == pytest.approx(want)
    # 3 equal-count bins of the percent rank (0, .2, .4, .4, .8, 1 -> bins 0, 0, 1, 1, 2, 2): only the bins' ends
    assert _points(UR.qini_points(_curve_rows(spark), bins=3)) == pytest.approx(
        [0.0, 0.0, 2 / 6, 1.0, 4 / 6, 0.0, 1.0, 0.0])


def test_uplift_deciles_count_each_arm_and_keep_ties_together(spark: SparkSession) -> None:
    rows = [  # (uplift, treated, label); one propensity for all: the inverse-propensity weights cancel
        (0.9, 1, 0), (0.9, 0, 1), (0.9, 0, 0),  # rows 1-3: decile 1
        (0.8, 1, 1),  # row 4: decile floor(3 x 10 / 20) + 1 = 2, no control row
        (0.7, 1, 0), (0.6, 0, 1),  # rows 5, 6: both decile 3
        *[(0.0, 1, int(i < 2)) for i in range(7)], *[(0.0, 0, int(i < 3)) for i in range(7)],  # a tie: decile 4
    ]
    scored = spark.createDataFrame([(f"a{i}", u, t, y, 0.8) for i, (u, t, y) in enumerate(rows)],
                                   "account_id string, uplift double, treated int, label int, propensity double")
    got = [r.asDict() for r in UR.uplift_deciles(scored).collect()]
    want: list[dict[str, Any]] = [
        {"decile": 1, "treated_rows": 1, "control_rows": 2, "mean_score": 0.9, "treated_churn_rate": 0.0,
         "control_churn_rate": 0.5, "uplift": 0.5},
        {"decile": 2, "treated_rows": 1, "control_rows": 0, "mean_score": 0.8, "treated_churn_rate": 1.0,
         "control_churn_rate": None, "uplift": None},
        {"decile": 3, "treated_rows": 1, "control_rows": 1, "mean_score": 0.65, "treated_churn_rate": 0.0,
         "control_churn_rate": 1.0, "uplift": 1.0},
        {"decile": 4, "treated_rows": 7, "control_rows": 7, "mean_score": 0.0, "treated_churn_rate": 2 / 7,
         "control_churn_rate": 3 / 7, "uplift": 1 / 7},
    ]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g == {k: (pytest.approx(v) if v is not None else None) for k, v in w.items()}


def _targeting_rows(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame([  # predicted uplift, churn risk, true uplift
        ("u1", 0.4, 0.1, 0.3), ("u2", 0.2, 0.9, 0.1), ("u3", -0.1, 0.8, -0.2), ("u4", 0.0, 0.3, 0.05),
    ], "account_id string, uplift double, churn_probability double, true_uplift double")


def test_uplift_and_risk_targeting_at_the_same_number_of_contacts(spark: SparkSession) -> None:
    got = UR.targeting_comparison(_targeting_rows(spark), 10.0, (0.25, 0.5), "true_uplift")
    # 1 contact: by uplift u1 (predicted .4, true .3), by risk u2 (.2, .1); 2 contacts: u1 + u2 (.6, .4) and
    # u2 + u3 (.2 - .1, .1 - .2): the riskiest include a sleeping dog
    want = [{"fraction": 0.25, "contacts": 1, "cost": 10.0, "uplift_expected_saved": 0.4, "uplift_true_saved": 0.3,
             "risk_expected_saved": 0.2, "risk_true_saved": 0.1},
            {"fraction": 0.5, "contacts": 2, "cost": 20.0, "uplift_expected_saved": 0.6, "uplift_true_saved": 0.4,
             "risk_expected_saved": 0.1, "risk_true_saved": -0.1}]
    assert got == [{k: pytest.approx(v) for k, v in w.items()} for w in want]
    # without churn risk and truth (observed campaigns, no churn model): the uplift list's expectation only
    only = UR.targeting_comparison(_targeting_rows(spark).drop("churn_probability", "true_uplift"), 10.0, (0.5,))
    assert only == [{"fraction": 0.5, "contacts": 2, "cost": 20.0, "uplift_expected_saved": pytest.approx(0.6)}]


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


@pytest.mark.slow  # renders and writes the report page with its figures
def test_the_page_has_the_three_sections_and_the_side_by_side(spark: SparkSession) -> None:
    outcomes = spark.createDataFrame([("u1", 1, 0), ("u2", 0, 1), ("u3", 1, 1), ("u4", 0, 0)],
                                     "account_id string, treated int, label int")
    scored = _targeting_rows(spark).join(outcomes, "account_id")
    ctx = {"version": "uplift-t-learner-v1", "kind": "t_learner", "model_type": "lr", "trained_at": "2026-12-05",
           "split": {"train": ["2022-07-01"], "test": ["2023-04-01"]}, "churn_model_version": "v7",
           "metrics": {"qini_coefficient": 0.25, "oracle_qini_coefficient": 0.5, "rows": 4}}
    files = UR.build_report(ctx, scored, 10.0, "true_uplift")
    page = files["report.html"].decode()
    assert all(s in page for s in SECTIONS)
    assert files["qini.png"].startswith(PNG) and files["deciles.png"].startswith(PNG)
    assert _images(page) == [files["qini.png"], files["deciles.png"]]
    # the 30 % row: ceil(1.2) = 2 contacts, 20 spent, uplift u1 + u2 (.6, true .4), risk u2 + u3 (.1, -.1)
    assert ("<tr><td>2 (30%)</td><td>20.0000</td><td>0.6000</td><td>0.4000</td><td>0.1000</td><td>-0.1000</td></tr>"
            in page)
    assert "churn model v7" in page


@pytest.mark.slow
def test_uplift_train_writes_the_report_beside_the_version(spark: SparkSession, tmp_path: Path) -> None:
    from churn_spark.generate import run_generate
    from churn_spark.ingest import run_ingest
    from churn_spark.uplift.job import run_uplift_train

    settings = Settings.model_validate({
        "lakehouse": str(tmp_path / "lake"), "spark": TEST_SPARK.model_dump(),
        "inputs": {"interventions": {"format": "delta", "path": "raw/interventions"}},
        "generate": {"accounts": 300, "start": "2022-01-01", "end": "2023-12-31", "seed": 23,
                     "events_per_account_month": 1.0, "event_files": 1, "history_months": 6,
                     "campaigns": {"dates": ["2022-07-01", "2022-10-01", "2023-04-01"], "share": 0.6,
                                   "propensity": 0.7}},
        # 3-month horizon: the test campaign 2023-04-01 is labelled; both earlier ones' windows end before it
        "churn": {"horizon_months": 3, "grace_days": 10},
        "uplift": {"learner": "t_learner", "compare": [], "param_grid": {"regParam": [1.0]},
                   "bootstrap_replicates": 0, "min_rows_per_arm": 10,
                   "features": ["tenure_days", "mrr", "quantity", "product_id"]},
    })
    run_generate(spark, settings)
    run_ingest(spark, settings, once=True)
    result = run_uplift_train(spark, settings)
    report = Path(result["report"])
    assert report == tmp_path / "lake" / "models" / "uplift" / result["version"] / "report" / "report.html"
    page = report.read_text()
    assert all(s in page for s in SECTIONS)
    assert "true saved" in page  # generated data: intervention_truth's true uplift beside the expectation
    images = _images(page)
    assert len(images) == 2 and all(i.startswith(PNG) and len(i) > 5000 for i in images)
    assert (report.parent / "qini.png").read_bytes() == images[0]
