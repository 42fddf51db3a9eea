"""Every SparkApplication of the dev overlay runs end to end through the local runner — the operator's
spark-submit arguments and confs, against `local[2]` — on a small generated lakehouse, and the tables
it produced are checked. A manifest whose arguments or conf do not fit the code fails here.

The applications run once, in the order the operator would run them, in one module fixture; each test
checks one application's output, so no test depends on another having run first."""

from __future__ import annotations

import datetime as dt
import glob
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import with_jit
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from churn_spark.k8s.manifests import App, load_documents, select_app
from churn_spark.k8s.runner import local_plan, resolve_config_maps, run_plan

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
OVERLAY = ROOT / "k8s" / "overlays" / "dev"
# The only changes made for test speed: 200 accounts (the dev generate manifest asks for 2,000), a small
# GBT and 3 occlusion candidates in the ConfigMap's config (the plumbing does not depend on their size),
# and the test JVMs' JIT options added to the manifests' own (conftest.with_jit).
ACCOUNTS = 200
SMALL_MODEL = {"params": {"maxIter": 5, "maxDepth": 3}}
SMALL = {"model": SMALL_MODEL, "scoring": {"reason_candidates": 3}}
RUN_DATE = "2024-11-20"  # the nightly's `month-start` resolves against this (CHURN_RUN_DATE), not the clock
APPS = ["churn-generate", "churn-ingest", "churn-features", "churn-train", "churn-score", "churn-nightly"]


@pytest.fixture(scope="module")
def overlay() -> list[dict[str, Any]]:
    return load_documents(OVERLAY)


def _small_config_maps(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """The overlay's ConfigMaps with SMALL merged into every config file's sections."""
    maps = resolve_config_maps(docs)
    for files in maps.values():
        for name, text in files.items():
            if name.endswith((".yaml", ".yml")):
                config = yaml.safe_load(text) or {}
                for section, values in SMALL.items():
                    config[section] = {**(config.get(section) or {}), **values}
                files[name] = yaml.safe_dump(config)
    return maps


def _run(docs: list[dict[str, Any]], app: App, lake: Path) -> None:
    """Run one application through the runner; fail with the log's tail."""
    plan = local_plan(app, workdir=lake / "work", lakehouse=lake / "lakehouse", master="local[2]",
                      config_maps=_small_config_maps(docs), driver_memory="2g",
                      extra_conf={"spark.ui.enabled": "false", **with_jit(app)})
    plan.env["CHURN_RUN_DATE"] = RUN_DATE
    log = lake / f"{app.name}.log"
    code = run_plan(plan, cwd=lake, timeout=1200, log_file=log)
    tail = "\n".join(log.read_text().splitlines()[-40:])
    assert code == 0, f"{app.name} exited {code}:\n{tail}"


@pytest.fixture(scope="module")
def lake(overlay: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every application of the overlay, run once in order on one lakehouse."""
    root = tmp_path_factory.mktemp("k8s-runner")
    for name in APPS:
        _run(overlay, _small(select_app(overlay, name)), root)
    return root


def _small(app: App) -> App:
    """The generate application with ACCOUNTS accounts; any other application as it is."""
    if app.name != "churn-generate":
        return app
    args = list(app.spec["arguments"])
    args[args.index("--accounts") + 1] = str(ACCOUNTS)
    return App(app.kind, app.name, app.namespace, app.labels, {**app.spec, "arguments": args})


def _summaries(lake: Path, job: str) -> list[dict[str, Any]]:
    files = sorted(glob.glob(str(lake / "lakehouse" / "runs" / f"*-{job}-*.json")))
    return [json.loads(Path(f).read_text()) for f in files]


def _arg(app: App, flag: str) -> str:
    args = app.spec["arguments"]
    return str(args[args.index(flag) + 1])


def _delta(spark: SparkSession, lake: Path, table: str) -> DataFrame:
    return spark.read.format("delta").load(str(lake / "lakehouse" / table))


def _months(start: dt.date, end: dt.date) -> list[dt.date]:
    out, d = [], start.replace(day=1)
    while d <= end:
        out.append(d)
        d = (d.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return out


def test_generate(overlay: list[dict[str, Any]], lake: Path, spark: SparkSession) -> None:
    app = select_app(overlay, "churn-generate")
    accounts = _delta(spark, lake, "raw/accounts")
    assert accounts.select("account_id").distinct().count() == ACCOUNTS
    assert [s["status"] for s in _summaries(lake, "generate")] == ["succeeded"]
    assert _summaries(lake, "generate")[0]["args"]["generate.start"] == _arg(app, "--start")


def test_ingest(overlay: list[dict[str, Any]], lake: Path, spark: SparkSession) -> None:
    landing = (spark.read.text(str(lake / "lakehouse" / "landing" / "events"))
               .select(F.get_json_object("value", "$.event_id").alias("event_id")).where("event_id is not null"))
    bronze = _delta(spark, lake, "bronze/events")
    quarantined = _delta(spark, lake, "bronze/events_quarantine").select("event_id").where("event_id is not null")
    bronze_ids = bronze.select("event_id")
    assert bronze_ids.count() > 0
    assert bronze_ids.count() == bronze_ids.distinct().count()  # exactly once
    assert bronze_ids.subtract(landing).count() == 0  # nothing invented
    assert landing.subtract(bronze_ids).subtract(quarantined).count() == 0  # nothing dropped silently
    summary = _summaries(lake, "ingest")[0]  # the ingest application's run (the nightly's comes after)
    assert (summary["status"], summary["args"]["source"], summary["args"]["once"]) == ("succeeded", "landing", True)


def test_features(overlay: list[dict[str, Any]], lake: Path, spark: SparkSession) -> None:
    app = select_app(overlay, "churn-features")
    expected = _months(dt.date.fromisoformat(_arg(app, "--from")), dt.date.fromisoformat(_arg(app, "--to")))
    for table in ("gold/churn_features", "gold/churn_labels"):
        dates = sorted(r[0] for r in _delta(spark, lake, table).select("as_of_date").distinct().collect())
        assert dates == expected, table
    features = _delta(spark, lake, "gold/churn_features").select("account_id")
    assert features.subtract(_delta(spark, lake, "raw/accounts").select("account_id")).count() == 0
    assert _summaries(lake, "features")[0]["status"] == "succeeded"


def test_train(overlay: list[dict[str, Any]], lake: Path) -> None:
    pointer = json.loads((lake / "lakehouse" / "models" / "current").read_text())
    version = pointer["version"]
    metadata = json.loads((lake / "lakehouse" / "models" / version / "metadata.json").read_text())
    # The ConfigMap's config reached the driver: the model has the (test-sized) configured parameters.
    assert {k: metadata["params"][k] for k in SMALL_MODEL["params"]} == SMALL_MODEL["params"]
    assert _summaries(lake, "train")[-1]["status"] == "succeeded"


def test_score(overlay: list[dict[str, Any]], lake: Path, spark: SparkSession) -> None:
    app = select_app(overlay, "churn-score")
    as_of = dt.date.fromisoformat(_arg(app, "--as-of"))
    scores = _delta(spark, lake, "gold/churn_scores").where(F.col("as_of_date") == as_of)
    assert scores.count() > 0
    assert scores.where("churn_probability < 0 or churn_probability > 1 or churn_probability is null").count() == 0
    assert scores.select("account_id").subtract(_delta(spark, lake, "raw/accounts").select("account_id")).count() == 0
    targets = _delta(spark, lake, "gold/churn_targets").where(F.col("as_of_date") == as_of)
    assert targets.count() > 0
    (run,) = [r for r in _summaries(lake, "score") if r["args"]["as_of"] == as_of.isoformat()]
    assert run["status"] == "succeeded"


def test_nightly(overlay: list[dict[str, Any]], lake: Path, spark: SparkSession) -> None:
    """The schedule's one application ran ingest, features and score for `month-start` of RUN_DATE, after
    the backfill applications (one run of each before it)."""
    app = select_app(overlay, "churn-nightly")
    assert app.kind == "ScheduledSparkApplication"
    month_start = "2024-11-01"
    for job in ("ingest", "features", "score"):
        runs = _summaries(lake, job)
        assert len(runs) == 2 and runs[-1]["status"] == "succeeded", job
    assert _summaries(lake, "features")[-1]["args"] == {"from": month_start, "to": month_start}
    assert _summaries(lake, "score")[-1]["args"]["as_of"] == month_start
    dates = {str(r[0]) for r in _delta(spark, lake, "gold/churn_scores").select("as_of_date").distinct().collect()}
    assert dates == {month_start, _arg(select_app(overlay, "churn-score"), "--as-of")}
    assert os.listdir(lake / "work" / "spark-events")  # event logs for the history server
