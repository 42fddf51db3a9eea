"""bench/uplift.py: its scikit-learn T-learner (the independent comparison for `uplift_qini_vs_sklearn`) recovers a
hand-constructed effect, with a missing categorical value; the uplift stage's figures from an `uplift train` result."""

from __future__ import annotations

import pandas as pd
import pytest

from bench.uplift import sklearn_t_learner, uplift_figures


def _cell(x: float, treated: int, rows: int, churners: int) -> list[dict[str, object]]:
    return [{"x": x, "plan": "pro" if x else None, "treated": treated, "label": int(i < churners)}
            for i in range(rows)]


def test_sklearn_t_learner_recovers_the_constructed_effect() -> None:
    # x = 1: control 3/5 = .6, treated 4/20 = .2 -> uplift .4; x = 0: 1/5 and 4/20 -> 0. Nearly unregularised
    # logistic regressions on a binary x (plan only repeats it) are saturated: their probabilities are the cell rates
    train = pd.DataFrame(_cell(1.0, 0, 5, 3) + _cell(1.0, 1, 20, 4) + _cell(0.0, 0, 5, 1) + _cell(0.0, 1, 20, 4))
    test = pd.DataFrame([{"x": 1.0, "plan": "pro"}, {"x": 0.0, "plan": None}])
    got = sklearn_t_learner(train, test, ["x"], ["plan"], 1e-6)
    assert list(got) == pytest.approx([0.4, 0.0], abs=1e-3)


def test_uplift_figures_put_each_targeting_per_1000_contacts() -> None:
    """20 test assignments: the top 10/20/30 % are 2, 4 and 6 contacts (ceil); saved churners per 1,000 contacts
    = 1000 x saved / contacts, for the model, churn risk and the oracle; Qini ratio as `uplift train` gave it."""
    metrics = {"rows": 20, "qini_coefficient": 1.5, "oracle_qini_coefficient": 2.0, "qini_vs_oracle": 0.75,
               "intervals": {"qini_coefficient": {"low": -0.5, "high": 3.0, "replicates": 200}},
               "true_saved_at_10pct": 0.5, "true_saved_at_20pct": 0.8, "true_saved_at_30pct": 0.9,
               "oracle_true_saved_at_10pct": 0.6, "oracle_true_saved_at_20pct": 1.0, "oracle_true_saved_at_30pct": 1.2}
    result = {"kind": "x_learner", "params": {"regParam": 10.0}, "metrics": metrics,
              "split": {"train": ["2023-01-01"], "test": ["2024-01-01"]}, "feature_selection": "top 20",
              "candidates": {"t_learner": {"qini_vs_oracle": 0.5}},
              "risk_targeting": {"true_saved_at_10pct": 0.2, "true_saved_at_20pct": 0.4, "true_saved_at_30pct": 0.3}}
    got = uplift_figures(result)
    assert got["true_saved_per_1000_contacts"] == {
        "10pct": {"contacts": 2, "uplift": 250.0, "risk": 100.0, "oracle": 300.0},
        "20pct": {"contacts": 4, "uplift": 200.0, "risk": 100.0, "oracle": 250.0},
        "30pct": {"contacts": 6, "uplift": 150.0, "risk": 50.0, "oracle": 200.0}}
    assert (got["uplift_qini_vs_oracle"], got["oracle_qini"], got["uplift_qini_interval"]["low"]) == (0.75, 2.0, -0.5)
    assert got["candidates_qini_vs_oracle"] == {"t_learner": 0.5} and got["test_rows"] == 20
    # without a churn model there is no risk side
    assert uplift_figures({**result, "risk_targeting": None})["true_saved_per_1000_contacts"]["10pct"]["risk"] is None
