"""DuckDB SQL in the race: one SQL statement over the Parquet exports (snapshots as a VALUES table).

Events are range-joined to the snapshots whose span covers their day, then grouped by (account, D):
the way a SQL analyst writes point-in-time features. DuckDB runs it on all cores, out of core if needed.
"""

from __future__ import annotations

import datetime as dt

import duckdb

from bench.spec import ANY_TYPE, RaceSpec


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _parquet(spec: RaceSpec, table: str) -> str:
    return f"read_parquet({_lit(spec.input_path(table) + '/*.parquet')})"


def race_sql(spec: RaceSpec) -> str:
    """The whole computation as one query (labels, activity, open tickets, joined on the label rows)."""
    snaps = ", ".join(f"(DATE {_lit(d)}, {spec.span_days[d]})" for d in spec.snapshots)
    far = "DATE '9999-12-31'"
    order = "PARTITION BY account_id ORDER BY start_date, end_date NULLS LAST, subscription_id"
    counts = []
    for w in spec.windows:
        counts.append(f"count(*) FILTER (WHERE day >= as_of_date - {w})::DOUBLE AS {ANY_TYPE}_count_{w}d")
        counts += [f"count(*) FILTER (WHERE day >= as_of_date - {w} AND event_type = {_lit(t)})::DOUBLE "
                   f"AS {slug}_count_{w}d" for t, slug in spec.event_types.items()]
    filled = ", ".join(f"coalesce(a.{c}, 0)::DOUBLE AS {c}" for c in spec.count_columns())
    return f"""
WITH snaps(as_of_date, span_days) AS (VALUES {snaps}),
subs AS (SELECT account_id, subscription_id, start_date, end_date FROM {_parquet(spec, 'subscriptions')}),
ordered AS (
  SELECT *, max(coalesce(end_date, {far})) OVER ({order} ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
         AS latest_end
  FROM subs),
numbered AS (
  SELECT *, sum(CASE WHEN latest_end IS NULL OR start_date - latest_end > {spec.grace_days} THEN 1 ELSE 0 END)
            OVER ({order} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS period
  FROM ordered),
periods AS (
  SELECT account_id, min(start_date) AS period_start,
         nullif(max(coalesce(end_date, {far})), {far}) AS period_end
  FROM numbered GROUP BY account_id, period),
eligible AS (
  SELECT DISTINCT s.account_id, n.as_of_date FROM subs s JOIN snaps n
    ON s.start_date <= n.as_of_date AND (s.end_date IS NULL OR s.end_date > n.as_of_date)),
tenured AS (
  SELECT e.account_id, e.as_of_date, (e.as_of_date - CAST(a.created_at AS DATE))::INTEGER AS tenure_days
  FROM eligible e JOIN {_parquet(spec, 'accounts')} a ON a.account_id = e.account_id),
labels AS (
  SELECT t.account_id, t.as_of_date, t.tenure_days,
    CASE WHEN CAST(t.as_of_date + INTERVAL {spec.horizon_months} MONTH AS DATE) + {spec.grace_days}
              > DATE {_lit(spec.data_end)} THEN NULL
         WHEN p.period_end IS NOT NULL
              AND p.period_end <= CAST(t.as_of_date + INTERVAL {spec.horizon_months} MONTH AS DATE) THEN 1
         ELSE 0 END::INTEGER AS label,
    p.period_end
  FROM tenured t LEFT JOIN periods p ON p.account_id = t.account_id AND p.period_start <= t.as_of_date
       AND (p.period_end IS NULL OR p.period_end > t.as_of_date)
  WHERE t.tenure_days >= {spec.min_tenure_days}),
ev AS (SELECT account_id, event_type, CAST(event_time AS DATE) AS day FROM {_parquet(spec, 'events')}),
activity AS (
  SELECT ev.account_id, n.as_of_date, {', '.join(counts)},
         (n.as_of_date - max(day))::DOUBLE AS days_since_last_event
  FROM ev JOIN snaps n ON ev.day < n.as_of_date AND ev.day >= n.as_of_date - n.span_days
  GROUP BY ev.account_id, n.as_of_date),
open_tickets AS (
  SELECT t.account_id, n.as_of_date, count(*)::DOUBLE AS tickets_open
  FROM {_parquet(spec, 'support_tickets')} t JOIN snaps n
    ON t.opened_at < CAST(n.as_of_date AS TIMESTAMPTZ)
   AND (t.closed_at IS NULL OR t.closed_at >= CAST(n.as_of_date AS TIMESTAMPTZ))
  GROUP BY t.account_id, n.as_of_date)
SELECT l.account_id, l.as_of_date, l.label,
       CASE WHEN l.label = 1 THEN l.period_end END AS churn_date, l.tenure_days, {filled},
       a.days_since_last_event, coalesce(o.tickets_open, 0)::DOUBLE AS tickets_open
FROM labels l
LEFT JOIN activity a ON a.account_id = l.account_id AND a.as_of_date = l.as_of_date
LEFT JOIN open_tickets o ON o.account_id = l.account_id AND o.as_of_date = l.as_of_date
"""


def run(spec: RaceSpec, threads: int | None = None, memory_limit: str | None = None) -> int:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if memory_limit:
        con.execute(f"SET memory_limit = {_lit(memory_limit)}")
    con.execute(f"COPY ({race_sql(spec)}) TO {_lit(spec.out + '.parquet')} (FORMAT PARQUET)")
    rows = con.execute(f"SELECT count(*) FROM read_parquet({_lit(spec.out + '.parquet')})").fetchone()
    return int(rows[0]) if rows else 0


__all__ = ["dt", "run"]
