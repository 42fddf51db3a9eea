"""bench/uplift.py's scikit-learn T-learner (the independent comparison for `uplift_qini_vs_sklearn`) recovers a
hand-constructed effect, with a missing categorical value."""

from __future__ import annotations

import pandas as pd
import pytest

from bench.uplift import sklearn_t_learner


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
