"""The race's contract: which labels and feature subset every racer computes, on which data.

A :class:`RaceSpec` is written to JSON by the runner and read by each racer (a subprocess), so
every racer gets exactly the same snapshots, `data_end`, event types and definitions. The
definitions are those of docs/churn-definition.md (labels) and `churn_spark/features/catalog.py`:

- `label`, `churn_date`, `tenure_days` as in `gold.churn_labels` (eligible accounts only);
- `<slug>_count_<w>d` for the any-type prefix `events` and every event type, w in `windows`:
  events whose UTC day is in `[D - w, D)`, 0 when none;
- `days_since_last_event`: D minus the last event day before D, null when that day is older than
  the snapshot's span (`span_days`: the longest window, trend span or lookback of the job's config);
- `tickets_open`: tickets opened before D and not closed before D, 0 when none.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

KEYS = ["account_id", "as_of_date"]
LABEL_COLUMNS = ["label", "churn_date", "tenure_days"]
ANY_TYPE = "events"


def add_months(day: dt.date, months: int) -> dt.date:
    """Calendar months, clamped to the month's last day (Spark's `add_months`)."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    return dt.date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


@dataclass(frozen=True)
class RaceSpec:
    """Everything a racer needs; `data_dir` holds Parquet exports, `out` is where the result goes."""

    data_dir: str
    out: str
    snapshots: list[str]
    data_end: str
    event_types: dict[str, str]  # event_type -> column slug (same as the catalogue's)
    windows: list[int] = field(default_factory=lambda: [28, 90])
    span_days: dict[str, int] = field(default_factory=dict)
    horizon_months: int = 6
    grace_days: int = 30
    min_tenure_days: int = 0
    master: str = "local[2]"
    driver_memory: str = "2g"
    shuffle_partitions: int = 4

    @property
    def snapshot_dates(self) -> list[dt.date]:
        return [dt.date.fromisoformat(s) for s in self.snapshots]

    @property
    def data_end_date(self) -> dt.date:
        return dt.date.fromisoformat(self.data_end)

    def input_path(self, table: str) -> str:
        return str(Path(self.data_dir) / table)

    def count_columns(self) -> list[str]:
        return [f"{slug}_count_{w}d" for slug in [ANY_TYPE, *self.event_types.values()] for w in self.windows]

    def output_columns(self) -> list[str]:
        return [*KEYS, *LABEL_COLUMNS, *self.count_columns(), "days_since_last_event", "tickets_open"]

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> RaceSpec:
        return cls(**json.loads(Path(path).read_text()))


def span_days(as_of: dt.date, windows: list[int], trend_windows: list[int], lookback_months: int) -> int:
    """How far back D's features look: the longest window, twice the longest trend window, the lookback."""
    lookback = (as_of - add_months(as_of, -lookback_months)).days
    return max([*windows, *(2 * w for w in trend_windows), lookback])
