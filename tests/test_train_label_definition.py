"""Training plans its split from the churn definition recorded on the labels, never from today's config.

Tiny hand-built tables: 2 accounts x 6 monthly snapshots (2023-01 .. 2023-06), every one labelled.
`_train` (search, fit, report, registry) is replaced by a stub that keeps what `run_train` hands it:
these tests are about the reading of the labels and the split, and run in seconds.

With the recorded definition (horizon 1 month, no grace) a label window is `(D, D + 1 month]`:
test = June; validation = the last snapshot whose window ends by June 1 = May; train = the snapshots
whose window ends by May 1 = January .. April; refit = January .. May. Today's defaults (6 months +
30 days) would leave no validation snapshot at all.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from typing import Any

import pytest
from pyspark.sql import SparkSession

from churn_spark import io, schemas
from churn_spark.asof import add_months
from churn_spark.config import ChurnSettings, Settings, with_overrides
from churn_spark.errors import ConfigError, ContractError
from churn_spark.labels import with_definition
from churn_spark.lakehouse import Lakehouse
from churn_spark.train import job
from churn_spark.train.split import plan_time_split

pytestmark = pytest.mark.slow  # training plans over written label tables: not in make test-fast

JAN, FEB, MAR, APR, MAY, JUN = SNAPSHOTS = [add_months(dt.date(2023, 1, 1), i) for i in range(6)]
RULE = "null when as_of_date + horizon_months + grace_days is after data_end"
ONE_MONTH = ('{"censoring": "' + RULE + '", "grace_days": 0, "horizon_months": 1, "min_tenure_days": 0}')
TWO_MONTHS = ('{"censoring": "' + RULE + '", "grace_days": 0, "horizon_months": 2, "min_tenure_days": 0}')
FP_ONE, FP_TWO = (hashlib.sha256(d.encode()).hexdigest()[:16] for d in (ONE_MONTH, TWO_MONTHS))
MODEL = {"model.validation_snapshots": 1, "model.test_snapshots": 1}


def write_lake(spark: SparkSession, root: str, parts: list[tuple[ChurnSettings | None, list[dt.date]]]) -> None:
    """Labels written slice by slice as the features job does (None: the format before definitions), and
    a features row per labelled (account, D)."""
    lh = Lakehouse(root)
    for churn, days in parts:
        values = spark.createDataFrame([(a, d, (i + d.month) % 2, None, 400) for d in days
                                        for i, a in enumerate(("a1", "a2"))], schemas.CHURN_LABEL_VALUES)
        rows = values if churn is None else with_definition(values, churn, dt.date(2023, 8, 1))
        io.write_slice(rows, lh.churn_labels, io.slice_predicate(within={"as_of_date": days}), ["as_of_date"],
                       merge_schema=True)
    io.overwrite_table(spark.createDataFrame(
        [(a, d, "1", 0.5) for d in SNAPSHOTS for a in ("a1", "a2")],
        "account_id string, as_of_date date, feature_set_version string, usage double"), lh.churn_features,
        ["as_of_date"])


@pytest.fixture()
def handed(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What run_train passes to `_train` (the split and the lineage tables); `_train` itself is a stub."""
    got: dict[str, Any] = {}

    def stub(spark, settings, dataset, features, split, splits, stats, tables):  # type: ignore[no-untyped-def]
        got.update(split=split, tables=tables)
        return {"model_version": "stub"}

    monkeypatch.setattr(job, "_train", stub)
    return got


def settings_for(root: str, **churn: int) -> Settings:
    return with_overrides(Settings(lakehouse=root), {**MODEL, **{f"churn.{k}": v for k, v in churn.items()}})


def test_split_is_planned_from_the_recorded_definition_not_todays_config(spark, tmp_path, handed) -> None:
    root = str(tmp_path / "lake")
    write_lake(spark, root, [(ChurnSettings(horizon_months=1, grace_days=0), SNAPSHOTS)])
    today = settings_for(root, horizon_months=6, grace_days=30)  # the defaults, not what labelled the rows
    with pytest.raises(ConfigError):  # today's definition could not even plan this split
        plan_time_split(SNAPSHOTS, 6, 30, 1, 1, refit=True)

    result = job.run_train(spark, today)

    split = handed["split"]
    assert (split.train, split.validation, split.test, split.refit) == ((JAN, FEB, MAR, APR), (MAY,), (JUN,),
                                                                         (JAN, FEB, MAR, APR, MAY))
    assert (split.horizon_months, split.grace_days) == (1, 0)
    recorded = {"fingerprint": FP_ONE, "source": "recorded", "assumed_snapshots": [], "note": None,
                "definition": {"horizon_months": 1, "grace_days": 0, "min_tenure_days": 0, "censoring": RULE}}
    assert result["label_definition"] == recorded and result["model_version"] == "stub"
    assert handed["tables"]["labels"]["definition"] == recorded  # -> metadata.json lineage.tables.labels


def test_a_selection_mixing_definitions_is_refused_in_one_line(spark, tmp_path, handed) -> None:
    root = str(tmp_path / "lake")
    write_lake(spark, root, [(ChurnSettings(horizon_months=1, grace_days=0), [JAN, FEB, MAR]),
                             (ChurnSettings(horizon_months=2, grace_days=0), [APR, MAY, JUN])])  # a rerun of Q2
    with pytest.raises(ContractError) as err:
        job.run_train(spark, settings_for(root, horizon_months=1, grace_days=0))
    assert str(err.value) == (
        f"the labelled snapshots mix churn definitions: {FP_ONE} (horizon_months=1, grace_days=0, "
        "min_tenure_days=0) on 2023-01-01..2023-03-01 (3 snapshots); "
        f"{FP_TWO} (horizon_months=2, grace_days=0, min_tenure_days=0) on 2023-04-01..2023-06-01 (3 snapshots): "
        "relabel them with one definition (`churn-spark features --from/--to`) before training")
    assert handed == {}  # refused before any fit


def test_old_labels_without_a_definition_use_todays_config_and_say_so(spark, tmp_path, handed, caplog) -> None:
    root = str(tmp_path / "lake")
    write_lake(spark, root, [(None, SNAPSHOTS)])
    assert "definition" not in spark.read.format("delta").load(Lakehouse(root).churn_labels).columns

    with caplog.at_level(logging.WARNING, logger="churn_spark"):
        result = job.run_train(spark, settings_for(root, horizon_months=1, grace_days=0))

    split = handed["split"]
    assert (split.train, split.validation, split.test) == ((JAN, FEB, MAR, APR), (MAY,), (JUN,))
    note = ("gold.churn_labels records no churn definition for 2023-01-01..2023-06-01 (6 snapshots) (labelled "
            "before definitions were recorded): assumed today's churn settings (horizon_months=1, grace_days=0, "
            "min_tenure_days=0); rerun `churn-spark features` over them to record it")
    assert result["label_definition"] == {
        "fingerprint": FP_ONE, "source": "config", "note": note,
        "assumed_snapshots": [d.isoformat() for d in SNAPSHOTS],
        "definition": {"horizon_months": 1, "grace_days": 0, "min_tenure_days": 0, "censoring": RULE}}
    assert caplog.messages == [f"train: {note}"]


def test_old_slices_count_as_todays_config_beside_recorded_ones(spark, tmp_path, handed) -> None:
    root = str(tmp_path / "lake")
    # January .. March labelled before definitions were recorded; April .. June relabelled since, 2 months
    write_lake(spark, root, [(None, [JAN, FEB, MAR]), (ChurnSettings(horizon_months=2, grace_days=0), [APR, MAY, JUN])])

    with pytest.raises(ContractError) as err:  # today's config (1 month) is not what April .. June record
        job.run_train(spark, settings_for(root, horizon_months=1, grace_days=0))
    assert str(err.value) == (
        f"the labelled snapshots mix churn definitions: {FP_ONE} (horizon_months=1, grace_days=0, "
        "min_tenure_days=0) on 2023-01-01..2023-03-01 (3 snapshots), of which 2023-01-01..2023-03-01 "
        "(3 snapshots) record none (today's churn settings assumed); "
        f"{FP_TWO} (horizon_months=2, grace_days=0, min_tenure_days=0) on 2023-04-01..2023-06-01 (3 snapshots): "
        "relabel them with one definition (`churn-spark features --from/--to`) before training")

    # today's config = what April .. June record: one definition, the old slices assumed to share it
    result = job.run_train(spark, settings_for(root, horizon_months=2, grace_days=0))
    split = handed["split"]
    # 2-month windows: test June; validation: window ends by June 1 -> April; train: by April 1 -> Jan, Feb
    assert (split.train, split.validation, split.test, split.refit) == ((JAN, FEB), (APR,), (JUN,),
                                                                         (JAN, FEB, MAR, APR))
    assert result["label_definition"]["fingerprint"] == FP_TWO
    assert result["label_definition"]["source"] == "recorded+config"
    assert result["label_definition"]["assumed_snapshots"] == ["2023-01-01", "2023-02-01", "2023-03-01"]
