"""Silver: `silver.account_daily_activity`, bronze events per (account, UTC day, event type), kept in
step with `bronze.events` incrementally (`sync_silver`) so the features read days, not raw events."""

from churn_spark.silver.daily import VALUE_SCALE, daily_activity
from churn_spark.silver.job import read_silver, run_silver, silver_event_types, sync_silver

__all__ = ["VALUE_SCALE", "daily_activity", "read_silver", "run_silver", "silver_event_types", "sync_silver"]
