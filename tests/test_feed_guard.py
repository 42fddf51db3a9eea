"""The feed guard of scoring: D is refused when events stop more than `max_feed_lag_days` before it."""

from __future__ import annotations

import datetime as dt

import pytest

from churn_spark.errors import ContractError
from churn_spark.score.job import check_feed

D = dt.date(2024, 12, 1)
FRESH = {"latest_event_day": "2024-11-29", "latest_subscription_change": "2024-11-20"}  # 2 days before D


def test_a_lag_up_to_the_limit_is_scored() -> None:
    assert check_feed(FRESH, D, 2, False) == {**FRESH, "event_lag_days": 2, "max_feed_lag_days": 2,
                                              "stale": False, "allowed_stale": False}


def test_one_day_more_is_refused_with_one_line() -> None:
    with pytest.raises(ContractError) as err:
        check_feed(FRESH, D, 1, False)
    assert str(err.value) == ("feed is stale for 2024-12-01: the latest event day is 2024-11-29 (2 days before), "
                              "more than scoring.max_feed_lag_days=1; ingest the missing days or pass "
                              "--allow-stale-feed")


def test_no_events_at_all_is_refused() -> None:
    with pytest.raises(ContractError, match="no events in bronze.events"):
        check_feed({"latest_event_day": None, "latest_subscription_change": None}, D, 2, False)


def test_allow_stale_feed_scores_and_records_it() -> None:
    assert check_feed(FRESH, D, 1, True) == {**FRESH, "event_lag_days": 2, "max_feed_lag_days": 1,
                                             "stale": True, "allowed_stale": True}


def test_a_past_date_with_later_events_is_fresh() -> None:
    assert check_feed(FRESH, dt.date(2024, 6, 1), 2, False)["event_lag_days"] == -181
