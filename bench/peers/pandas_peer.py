"""pandas in the race: the idiomatic single-node way, one snapshot at a time.

Dates become integer day numbers on read (pyarrow casts), then each snapshot is a boolean filter and
a groupby. Everything lives in memory: peak RSS is the honest price.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench.spec import ANY_TYPE, KEYS, RaceSpec, add_months

EPOCH = dt.date(1970, 1, 1)
FAR = (dt.date(9999, 12, 31) - EPOCH).days
US_PER_DAY = 86_400_000_000


def _day(d: dt.date) -> int:
    return (d - EPOCH).days


def _days(col: pa.ChunkedArray) -> np.ndarray:
    """A date or timestamp column as float day numbers (NaN for null); timestamps floor to the UTC day."""
    if pa.types.is_timestamp(col.type):
        col = pc.floor_temporal(col, unit="day").cast(pa.timestamp("us", tz=col.type.tz)).cast(pa.int64())
        return col.to_numpy(zero_copy_only=False).astype("float64") // US_PER_DAY
    return col.cast(pa.int32()).to_numpy(zero_copy_only=False).astype("float64")


def _micros(col: pa.ChunkedArray) -> np.ndarray:
    return col.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy(zero_copy_only=False).astype("float64")


def read(spec: RaceSpec) -> dict[str, pd.DataFrame]:
    acc = pq.read_table(spec.input_path("accounts"), columns=["account_id", "created_at"])
    subs = pq.read_table(spec.input_path("subscriptions"),
                         columns=["account_id", "subscription_id", "start_date", "end_date"])
    tk = pq.read_table(spec.input_path("support_tickets"), columns=["account_id", "opened_at", "closed_at"])
    ev = pq.read_table(spec.input_path("events"), columns=["account_id", "event_type", "event_time"])
    return {
        "accounts": pd.DataFrame({"account_id": acc["account_id"].to_pandas(), "created": _days(acc["created_at"])}),
        "subs": pd.DataFrame({"account_id": subs["account_id"].to_pandas(),
                              "subscription_id": subs["subscription_id"].to_pandas(),
                              "start": _days(subs["start_date"]), "end": _days(subs["end_date"])}),
        "tickets": pd.DataFrame({"account_id": tk["account_id"].to_pandas(), "opened": _micros(tk["opened_at"]),
                                 "closed": _micros(tk["closed_at"])}),
        "events": pd.DataFrame({"account_id": ev["account_id"].to_pandas().astype("category"),
                                "event_type": ev["event_type"].to_pandas().astype("category"),
                                "day": _days(ev["event_time"]).astype("int32")}),
    }


def periods(subs: pd.DataFrame, grace_days: int) -> pd.DataFrame:
    s = subs.assign(end_f=subs["end"].fillna(FAR)).sort_values(
        ["account_id", "start", "end", "subscription_id"], na_position="last")
    latest = s.groupby("account_id", sort=False)["end_f"].cummax().groupby(s["account_id"], sort=False).shift(1)
    new = (latest.isna() | (s["start"] - latest > grace_days)).astype(int)
    s = s.assign(period=new.groupby(s["account_id"], sort=False).cumsum())
    p = s.groupby(["account_id", "period"], sort=False).agg(period_start=("start", "min"), period_end=("end_f", "max"))
    p["period_end"] = p["period_end"].where(p["period_end"] < FAR)
    return p.reset_index()[["account_id", "period_start", "period_end"]]


def labels_at(day: dt.date, data: dict[str, pd.DataFrame], per: pd.DataFrame, spec: RaceSpec) -> pd.DataFrame:
    d, subs = _day(day), data["subs"]
    active = subs.loc[(subs["start"] <= d) & (subs["end"].isna() | (subs["end"] > d)), "account_id"].unique()
    elig = data["accounts"][data["accounts"]["account_id"].isin(active)]
    elig = elig.assign(tenure_days=(d - elig["created"]).astype("int32"))
    elig = elig[elig["tenure_days"] >= spec.min_tenure_days]
    cont = per[(per["period_start"] <= d) & (per["period_end"].isna() | (per["period_end"] > d))]
    out = elig.merge(cont, on="account_id", how="left")
    horizon = add_months(day, spec.horizon_months)
    censored = horizon + dt.timedelta(days=spec.grace_days) > spec.data_end_date
    churned = out["period_end"].notna() & (out["period_end"] <= _day(horizon))
    label = pd.Series(pd.NA if censored else churned.astype(int), index=out.index, dtype="Int32")
    churn_day = out["period_end"].where(churned & ~censored)
    return pd.DataFrame({"account_id": out["account_id"].to_numpy(), "as_of_date": day, "label": label.to_numpy(),
                         "churn_day": churn_day.to_numpy(), "tenure_days": out["tenure_days"].to_numpy()})


def activity_at(day: dt.date, events: pd.DataFrame, spec: RaceSpec) -> pd.DataFrame:
    d = _day(day)
    ev = events[(events["day"] < d) & (events["day"] >= d - spec.span_days[day.isoformat()])]
    parts = [(d - ev.groupby("account_id", observed=True)["day"].max()).astype("float64")
             .rename("days_since_last_event")]
    for w in spec.windows:
        inside = ev[ev["day"] >= d - w]
        parts.append(inside.groupby("account_id", observed=True).size().astype("float64")
                     .rename(f"{ANY_TYPE}_count_{w}d"))
        by_type = inside.groupby(["account_id", "event_type"], observed=True).size().unstack("event_type")
        for event_type, slug in spec.event_types.items():
            col = by_type[event_type] if event_type in by_type.columns else pd.Series(dtype="float64")
            parts.append(col.astype("float64").rename(f"{slug}_count_{w}d"))
    out = pd.concat(parts, axis=1)
    out.index = out.index.astype(str)
    return out


def tickets_open_at(day: dt.date, tickets: pd.DataFrame) -> pd.Series:
    t = _day(day) * US_PER_DAY
    open_ = tickets[(tickets["opened"] < t) & (tickets["closed"].isna() | (tickets["closed"] >= t))]
    return open_.groupby("account_id").size().astype("float64").rename("tickets_open")


def run(spec: RaceSpec) -> int:
    data = read(spec)
    per = periods(data["subs"], spec.grace_days)
    counts = spec.count_columns()
    frames = []
    for day in spec.snapshot_dates:
        lab = labels_at(day, data, per, spec).set_index("account_id")
        frame = lab.join(activity_at(day, data["events"], spec)).join(tickets_open_at(day, data["tickets"]))
        frame[[*counts, "tickets_open"]] = frame.reindex(columns=[*counts, "tickets_open"]).fillna(0.0)
        frames.append(frame.reset_index())
    out = pd.concat(frames, ignore_index=True)
    out["churn_date"] = pd.to_datetime(out.pop("churn_day"), unit="D").dt.date
    out = out[spec.output_columns()]
    out.to_parquet(spec.out + ".parquet", index=False)
    return len(out)


__all__ = ["KEYS", "run"]
