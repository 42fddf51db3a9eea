"""Every SparkApplication of the dev overlay runs end to end through the local runner — the operator's
spark-submit arguments and confs, against `local[2]` — on a small generated lakehouse, and the tables
it produced are checked. A manifest whose arguments or conf do not fit the code fails here."""

from __future__ import annotations

import datetime as dt
import glob
import json
import os
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from churn_spark.k8s.manifests import App, load_documents, select_app
from churn_spark.k8s.runner import local_plan, resolve_config_maps, run_plan

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
OVERLAY = ROOT / "k8s" / "overlays" / "dev"
ACCOUNTS = 200  # the dev generate manifest asks for 2,000; the only change made for test speed


@pytest.fixture(scope="module")
def overlay() -> list[dict[str, Any]]:
    return load_documents(OVERLAY)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("k8s-runner")


def _run(docs: list[dict[str, Any]], app: App, lake: Path) -> None:
    """Run one application through the runner; fail with the log's tail."""
    plan = local_plan(app, workdir=lake / "work", lakehouse=lake / "lakehouse", master="local[2]",
                      config_maps=resolve_config_maps(docs), driver_memory="2g",
                      extra_conf={"spark.ui.enabled": "false"})
    log = lake / f"{app.name}.log"
    code = run_plan(plan, cwd=lake, timeout=1200, log_file=log)
    tail = "\n".join(log.read_text().splitlines()[-40:])
    assert code == 0, f"{app.name} exited {code}:\n{tail}"


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
    args = list(app.spec["arguments"])
    args[args.index("--accounts") + 1] = str(ACCOUNTS)
    small = App(app.kind, app.name, app.namespace, app.labels, {**app.spec, "arguments": args})
    _run(overlay, small, lake)
    accounts = _delta(spark, lake, "raw/accounts")
    assert accounts.select("account_id").distinct().count() == ACCOUNTS
    assert [s["status"] for s in _summaries(lake, "generate")] == ["succeeded"]
    assert _summaries(lake, "generate")[0]["args"]["generate.start"] == _arg(app, "--start")


def test_ingest(overlay: list[dict[str, Any]], lake: Path, spark: SparkSession) -> None:
    app = select_app(overlay, "churn-ingest")
    _run(overlay, app, lake)
    landing = (spark.read.text(str(lake / "lakehouse" / "landing" / "events"))
               .select(F.get_json_object("value", "$.event_id").alias("event_id")).where("event_id is not null"))
    bronze = _delta(spark, lake, "bronze/events")
    quarantined = _delta(spark, lake, "bronze/events_quarantine").select("event_id").where("event_id is not null")
    bronze_ids = bronze.select("event_id")
    assert bronze_ids.count() > 0
    assert bronze_ids.count() == bronze_ids.distinct().count()  # exactly once
    assert bronze_ids.subtract(landing).count() == 0  # nothing invented
    assert landing.subtract(bronze_ids).subtract(quarantined).count() == 0  # nothing dropped silently
    summary = _summaries(lake, "ingest")[-1]
    assert (summary["status"], summary["args"]["source"], summary["args"]["once"]) == ("succeeded", "landing", True)


def test_features(overlay: list[dict[str, Any]], lake: Path, spark: SparkSession) -> None:
    app = select_app(overlay, "churn-features")
    _run(overlay, app, lake)
    expected = _months(dt.date.fromisoformat(_arg(app, "--from")), dt.date.fromisoformat(_arg(app, "--to")))
    for table in ("gold/churn_features", "gold/churn_labels"):
        dates = sorted(r[0] for r in _delta(spark, lake, table).select("as_of_date").distinct().collect())
        assert dates == expected, table
    features = _delta(spark, lake, "gold/churn_features").select("account_id")
    assert features.subtract(_delta(spark, lake, "raw/accounts").select("account_id")).count() == 0
    assert _summaries(lake, "features")[-1]["status"] == "succeeded"


def test_train(overlay: list[dict[str, Any]], lake: Path) -> None:
    app = select_app(overlay, "churn-train")
    _run(overlay, app, lake)
    pointer = json.loads((lake / "lakehouse" / "models" / "current").read_text())
    version = pointer["version"]
    assert (lake / "lakehouse" / "models" / version / "metadata.json").is_file()
    assert _summaries(lake, "train")[-1]["status"] == "succeeded"


def test_score(overlay: list[dict[str, Any]], lake: Path, spark: SparkSession) -> None:
    app = select_app(overlay, "churn-score")
    _run(overlay, app, lake)
    as_of = dt.date.fromisoformat(_arg(app, "--as-of"))
    scores = _delta(spark, lake, "gold/churn_scores")
    assert [r[0] for r in scores.select("as_of_date").distinct().collect()] == [as_of]
    assert scores.where("churn_probability < 0 or churn_probability > 1 or churn_probability is null").count() == 0
    assert scores.select("account_id").subtract(_delta(spark, lake, "raw/accounts").select("account_id")).count() == 0
    targets = _delta(spark, lake, "gold/churn_targets")
    assert [r[0] for r in targets.select("as_of_date").distinct().collect()] == [as_of]
    assert _summaries(lake, "score")[-1]["args"]["as_of"] == as_of.isoformat()


@pytest.mark.cluster
def test_score_on_a_standalone_cluster_matches_local(overlay: list[dict[str, Any]], lake: Path,
                                                     spark: SparkSession) -> None:
    """The same manifest against `spark://` (executors in their own JVMs) rewrites the same scores."""
    from chispa import assert_approx_df_equality

    from churn_spark.devcluster import start_cluster, stop_cluster

    app = select_app(overlay, "churn-score")
    as_of = _arg(app, "--as-of")
    cols = ["account_id", "model_version", "churn_probability"]
    local = spark.createDataFrame(
        _delta(spark, lake, "gold/churn_scores").where(f"as_of_date = '{as_of}'").select(*cols).collect(),
        _delta(spark, lake, "gold/churn_scores").select(*cols).schema)
    cluster = start_cluster(workers=1, cores=1, memory="2g", work_dir=str(lake / "cluster"))
    try:
        plan = local_plan(app, workdir=lake / "work", lakehouse=lake / "lakehouse", master=cluster.master_url,
                          config_maps=resolve_config_maps(overlay), driver_memory="1g",
                          extra_conf={"spark.ui.enabled": "false", "spark.executor.memory": "1g",
                                      "spark.executor.cores": "1"})
        log = lake / "churn-score-cluster.log"
        code = run_plan(plan, cwd=lake, timeout=1200, log_file=log)
        assert code == 0, "\n".join(log.read_text().splitlines()[-40:])
    finally:
        stop_cluster(cluster)
    remote = _delta(spark, lake, "gold/churn_scores").where(f"as_of_date = '{as_of}'").select(*cols)
    assert local.count() > 0
    assert_approx_df_equality(remote.orderBy("account_id"), local.orderBy("account_id"), 1e-9)
    assert _summaries(lake, "score")[-1]["status"] == "succeeded"


def test_nightly(overlay: list[dict[str, Any]], lake: Path, spark: SparkSession) -> None:
    app = select_app(overlay, "churn-nightly")
    assert app.kind == "ScheduledSparkApplication"
    before = {job: len(_summaries(lake, job)) for job in ("ingest", "features", "score")}
    _run(overlay, app, lake)
    month_start = dt.datetime.now(dt.UTC).date().replace(day=1)
    for job in ("ingest", "features", "score"):
        runs = _summaries(lake, job)
        assert len(runs) == before[job] + 1 and runs[-1]["status"] == "succeeded", job
    assert _summaries(lake, "features")[-1]["args"] == {"from": month_start.isoformat(), "to": month_start.isoformat()}
    assert _summaries(lake, "score")[-1]["args"]["as_of"] == month_start.isoformat()
    dates = {r[0] for r in _delta(spark, lake, "gold/churn_scores").select("as_of_date").distinct().collect()}
    assert month_start in dates
    assert os.listdir(lake / "work" / "spark-events")  # event logs for the history server
