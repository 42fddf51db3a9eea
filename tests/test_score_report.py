"""The CLI's text view of a scoring summary: top of the target list, totals, drift verdict."""

from __future__ import annotations

from churn_spark.score.report import target_list_table


def test_target_list_table_lists_the_top_rows_and_the_totals() -> None:
    result = {
        "as_of_date": "2024-12-01", "model_version": "v1",
        "targets": {"count": 2, "total_expected_value": 1234.5, "total_cost": 50.0},
        "top_targets": [
            {"target_rank": 1, "account_id": "acc-1", "churn_probability": 0.91, "account_value": 12000.0,
             "expected_value": 2159.0, "reasons": ["days_since_last_event", "tickets_open"]},
            {"target_rank": 2, "account_id": "acc-2", "churn_probability": 0.5, "account_value": 1200.0,
             "expected_value": 95.0, "reasons": []},
        ],
        "drift": {"status": "ok", "score_psi": 0.31, "threshold": 0.2, "above_threshold": ["churn_probability"]},
    }
    assert target_list_table(result).splitlines() == [
        "Target list for 2024-12-01 (model v1): 2 accounts, expected value 1,234.50, cost 50.00",
        "rank  account_id     p(churn)       value  exp. value  reasons",
        "   1  acc-1             0.910   12,000.00    2,159.00  days_since_last_event, tickets_open",
        "   2  acc-2             0.500    1,200.00       95.00  ",
        "drift: score PSI 0.310; above 0.2: churn_probability",
    ]


def test_drift_unavailable_says_why() -> None:
    result = {"as_of_date": "2024-12-01", "model_version": "v0", "targets": {}, "top_targets": [],
              "drift": {"status": "unavailable", "reason": "model v0 has no stored drift reference"}}
    assert target_list_table(result).splitlines()[-1] == "drift: unavailable (model v0 has no stored drift reference)"
