"""Time-based splits of the labelled snapshots: train, then validation, then test, never random rows.

A snapshot D's label looks at `(D, D + horizon + grace]` (a period ending near the horizon is only
known to be churn once the grace period has passed without a renewal). Two snapshots' label windows
overlap unless the earlier window ends on or before the later snapshot, so every training snapshot
must satisfy `window_end(D) <= first validation snapshot`, and every validation snapshot
`window_end(V) <= first test snapshot`. The gap therefore costs `horizon + grace` of snapshots on
each side; that is the price of an honest test. `horizon` and `grace` are those the labels were
computed with, as recorded on gold.churn_labels (`labels.definition_of_snapshots`), not today's config.

Once the search and the calibration have used the validation snapshots, the registered model can be
refitted on every snapshot whose label window ends by the first test snapshot (`refit`: training,
the gap before validation and validation itself). That roughly doubles the training data and moves
it closer to the test period, and the test stays as honest: no refit label window reaches it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from churn_spark.asof import add_months
from churn_spark.errors import ConfigError


def label_window_end(day: dt.date, horizon_months: int, grace_days: int) -> dt.date:
    """Last date the label of snapshot `day` depends on."""
    return add_months(day, horizon_months) + dt.timedelta(days=grace_days)


Snapshots = tuple[dt.date, ...]


@dataclass(frozen=True)
class TimeSplit:
    """Snapshot dates per role, and the expanding-window folds used by the hyperparameter search."""

    train: Snapshots
    validation: Snapshots
    test: Snapshots
    folds: tuple[tuple[Snapshots, Snapshots], ...]  # (fit on, evaluate on), in time order
    horizon_months: int
    grace_days: int
    refit: Snapshots = ()  # the final model's snapshots; empty: the final model is the one fitted on `train`

    @property
    def final(self) -> Snapshots:
        """Snapshots the registered model is fitted on."""
        return self.refit or self.train

    def as_dict(self) -> dict[str, Any]:
        """Small JSON-able description: first/last date and count per role."""
        def rng(days: Snapshots) -> dict[str, Any]:
            return {"from": days[0].isoformat(), "to": days[-1].isoformat(), "snapshots": len(days),
                    "dates": [d.isoformat() for d in days]}

        refit = {"refit": rng(self.refit)} if self.refit else {}
        return {"train": rng(self.train), "validation": rng(self.validation), "test": rng(self.test), **refit,
                "gap": f"{self.horizon_months} months + {self.grace_days} days",
                "folds": [{"fit": rng(fit), "evaluate": rng(ev)} for fit, ev in self.folds]}


def plan_time_split(
    snapshots: Sequence[dt.date],
    horizon_months: int,
    grace_days: int,
    validation_snapshots: int,
    test_snapshots: int,
    train_end: dt.date | None = None,
    refit: bool = False,
) -> TimeSplit:
    """Test = the last `test_snapshots` labelled snapshots; validation = the last `validation_snapshots`
    whose label window ends by the first test snapshot; train = the snapshots whose label window ends
    by the first validation snapshot (and not after `train_end`, if set); with `refit`, refit = the
    snapshots whose label window ends by the first test snapshot (and not after `train_end`)."""
    days = sorted(set(snapshots))
    if len(days) < test_snapshots:
        raise ConfigError(f"need at least {test_snapshots} labelled snapshots for model.test_snapshots, "
                          f"found {len(days)}")
    test = tuple(days[-test_snapshots:])

    def before(limit: dt.date) -> list[dt.date]:
        return [d for d in days if label_window_end(d, horizon_months, grace_days) <= limit]

    validation = tuple(before(test[0])[-validation_snapshots:])
    if len(validation) < validation_snapshots:
        raise ConfigError(
            f"not enough labelled snapshots: {validation_snapshots} validation snapshot(s) need a label window "
            f"({horizon_months} months + {grace_days} days) ending by the first test snapshot {test[0]}; "
            f"found {len(validation)} among {len(days)} labelled snapshots")
    train = tuple(d for d in before(validation[0]) if train_end is None or d <= train_end)
    if not train:
        raise ConfigError(f"no training snapshot: none has its label window ending by the first validation "
                          f"snapshot {validation[0]} (labelled snapshots: {days[0]} .. {days[-1]})")
    folds = tuple(
        (tuple(d for d in before(v) if train_end is None or d <= train_end), (v,))
        for v in validation
    )
    final = tuple(d for d in before(test[0]) if train_end is None or d <= train_end) if refit else ()
    return TimeSplit(train, validation, test, folds, horizon_months, grace_days, final)


def filter_snapshots(df: DataFrame, snapshots: Sequence[dt.date]) -> DataFrame:
    """Rows of `df` whose `as_of_date` is one of `snapshots`."""
    return df.where(F.col("as_of_date").isin(list(snapshots)))


def with_latest_snapshot_held_out(df: DataFrame, snapshots: Sequence[dt.date], column: str) -> DataFrame:
    """`df` with boolean `column` true on the rows of the latest of `snapshots`: the rows a boosted fit
    watches to stop growing trees. Held out by time, like every other evaluation here: the trees are
    judged on the period after the rows they learn from, as the fit itself will be."""
    return df.withColumn(column, F.col("as_of_date") == F.lit(max(snapshots)))
