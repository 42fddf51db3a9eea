"""The whole pipeline on a real Spark standalone cluster (master + two 1-core workers on 127.0.0.1),
submitted the way the Spark operator would submit it.

Every SparkApplication of the dev overlay (generate, ingest, features, train, score, then the
scheduled nightly) runs through the runner's spark-submit translation (`k8s/runner.py`) against the
cluster, in the order the operator would run them, with the test's config in place of the ConfigMap's
and test-sized values for the arguments that set the data's size (TEST_ARGS); a manifest whose
arguments or confs do not fit the code fails here. Local mode hides what breaks in other JVMs and
Python workers, so the tables are compared with the same stages run in local mode.
Faults: a worker (and its executor) killed during the features job, and the driver killed while
it writes scores.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from chispa import assert_approx_df_equality, assert_df_equality
from conftest import JIT, NO_CODEGEN, with_jit
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import MapType

from churn_spark.cli import execute
from churn_spark.config import Settings, load_settings, with_overrides
from churn_spark.devcluster import (
    StandaloneCluster,
    kill_process_group,
    start_cluster,
    start_worker,
    stop_cluster,
    submit_argv,
)
from churn_spark.k8s.manifests import App, load_documents, select_app
from churn_spark.k8s.runner import local_plan, resolve_config_maps, run_plan

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

# Plumbing settings: small data, few snapshots, a small GBT and few occlusion candidates. What is
# compared (every table, every metric) does not depend on the sizes, only the run time does.
CONFIG = """
spark:
  shuffle_partitions: 2
  show_progress: false
  log_level: ERROR
generate:
  accounts: 120
  start: 2023-07-01
  end: 2024-12-31
  seed: 11
  events_per_account_month: 4
  event_files: 2
  history_months: 6
inputs:
  account_attributes: [country, channel, industry]
churn:
  horizon_months: 1
  lookback_months: 3
  snapshots: {start: 2024-01-01, end: 2024-09-01}
features:
  windows_days: [28, 90]
  trend_windows_days: [28]
  per_seat_windows_days: [28]
  change_windows_days: [90]
model:
  type: gbt
  seed: 3
  validation_snapshots: 1
  test_snapshots: 2
  params: {maxIter: 4, maxDepth: 2}
scoring:
  reason_candidates: 3
  drift_top_features: 3
  targeting: {max_contacts: 20}
"""
OVERLAY = Path(__file__).resolve().parents[1] / "k8s" / "overlays" / "dev"
APPS = ["churn-generate", "churn-ingest", "churn-features", "churn-train", "churn-score", "churn-nightly"]
_SIZE = yaml.safe_load(CONFIG)
# The manifests' own values for the data's size and period, replaced by CONFIG's (the flags must exist).
TEST_ARGS = {
    "churn-generate": {"--accounts": str(_SIZE["generate"]["accounts"]), "--start": str(_SIZE["generate"]["start"]),
                       "--end": str(_SIZE["generate"]["end"]), "--seed": str(_SIZE["generate"]["seed"])},
    "churn-features": {"--from": str(_SIZE["churn"]["snapshots"]["start"]),
                       "--to": str(_SIZE["churn"]["snapshots"]["end"])},
}
SCORE_DATE = "2024-12-01"  # the score manifest's --as-of (checked in the fixture)
RUN_DATE = "2024-11-20"  # the nightly's `month-start` resolves against this (CHURN_RUN_DATE), not the clock
MONTH_START = "2024-11-01"
LAST_SNAPSHOT = "2024-09-01"  # churn.snapshots.end of CONFIG
# Columns that differ by construction between two runs (wall-clock times, file paths, versions).
VOLATILE = {"ingested_at", "source", "scored_at", "model_version", "ingest_date"}
TABLES = ["raw/accounts", "raw/subscriptions", "raw/support_tickets", "raw/churn_truth", "bronze/events",
          "bronze/events_quarantine", "gold/churn_labels", "gold/churn_features", "gold/churn_scores",
          "gold/churn_targets"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[StandaloneCluster]:
    c = start_cluster(workers=2, cores=1, memory="1536m", work_dir=str(tmp_path_factory.mktemp("cluster")))
    yield c
    stop_cluster(c)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "cluster.yaml"
    path.write_text(CONFIG)
    return path


def _submit(cluster: StandaloneCluster, job: str, args: list[str], lakehouse: Path, config: Path,
            background: bool = False) -> subprocess.Popen[bytes]:
    argv = submit_argv(cluster.master_url, job, ["--config", str(config), "--lakehouse", str(lakehouse), *args],
                       {"spark.executor.memory": "1g", "spark.ui.enabled": "false"}, java_options=JIT)
    log = open(lakehouse.parent / f"{lakehouse.name}-{job}.log", "ab")  # noqa: SIM115 - closed by the caller's wait
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    if not background:
        assert proc.wait(timeout=900) == 0, f"{job} failed on the cluster: see {log.name}"
    return proc


def _app(docs: list[dict[str, Any]], name: str) -> App:
    """Application `name` of the overlay with TEST_ARGS' values in place of its own."""
    app = select_app(docs, name)
    args = [str(a) for a in app.spec.get("arguments", [])]
    for flag, value in TEST_ARGS.get(name, {}).items():
        assert flag in args, f"{name} has no {flag} argument any more: update TEST_ARGS"
        args[args.index(flag) + 1] = value
    return App(app.kind, app.name, app.namespace, app.labels, {**app.spec, "arguments": args})


def _submit_app(cluster: StandaloneCluster, docs: list[dict[str, Any]], app: App, lakehouse: Path,
                config: Path) -> None:
    """One application through the runner's spark-submit translation against the cluster, with the test's
    config in place of the ConfigMap's: the manifest's own confs (driver and executor options, event log,
    jars) must work where executors are separate JVMs."""
    maps = {m: {f: config.read_text() for f in files} for m, files in resolve_config_maps(docs).items()}
    work = lakehouse.parent / "work"
    plan = local_plan(app, workdir=work, lakehouse=lakehouse, master=cluster.master_url, config_maps=maps,
                      driver_memory="1g", extra_conf={"spark.ui.enabled": "false", "spark.executor.memory": "1g",
                                                      "spark.executor.cores": "1", **with_jit(app), **NO_CODEGEN})
    plan.env["CHURN_RUN_DATE"] = RUN_DATE
    log = work / f"{app.name}.log"
    code = run_plan(plan, cwd=work, timeout=900, log_file=log)
    assert code == 0, f"{app.name} exited {code}:\n" + "\n".join(log.read_text().splitlines()[-40:])


def _run_local(spark: SparkSession, config: Path, lakehouse: Path) -> Settings:
    """The same stages in this process: the backfill, then the nightly's ingest, features and score."""
    from churn_spark.demo import stage_functions
    from churn_spark.features.job import run_features
    from churn_spark.ingest import run_ingest
    from churn_spark.score.job import run_score

    settings = load_settings(config, {"lakehouse": str(lakehouse)})
    for name, fn in stage_functions(score_date=SCORE_DATE):
        execute(settings, name, fn, spark=spark)
    night = with_overrides(settings, {"churn.snapshots.start": MONTH_START, "churn.snapshots.end": MONTH_START})
    execute(night, "ingest", lambda sp, s: run_ingest(sp, s, once=True), spark=spark)
    execute(night, "features", run_features, spark=spark)
    execute(night, "score", lambda sp, s: run_score(sp, s, dt.date.fromisoformat(MONTH_START), None), spark=spark)
    return settings


def _table(spark: SparkSession, lakehouse: Path, name: str) -> DataFrame:
    """The table's stable columns; maps as sorted entry arrays (Spark cannot sort or compare maps)."""
    df = spark.read.format("delta").load(str(lakehouse / name))
    types = {f.name: f.dataType for f in df.schema.fields}
    return df.select(*[F.array_sort(F.map_entries(c)).alias(c) if isinstance(types[c], MapType) else F.col(c)
                       for c in sorted(c for c in df.columns if c not in VOLATILE)])


def _assert_same_tables(spark: SparkSession, left: Path, right: Path, tables: list[str], where: str = "true") -> None:
    for name in tables:
        a, b = _table(spark, left, name).where(where), _table(spark, right, name).where(where)
        assert a.columns == b.columns, name
        doubles = [f.name for f in a.schema.fields if f.dataType.typeName() in ("double", "float")]
        if doubles:
            assert_approx_df_equality(a, b, 1e-9, ignore_row_order=True, ignore_nullable=True)
        else:
            assert_df_equality(a, b, ignore_row_order=True, ignore_nullable=True)


def _metrics(lakehouse: Path) -> dict[str, float]:
    current = json.loads((lakehouse / "models" / "current").read_text())
    meta = json.loads((lakehouse / "models" / current["version"] / "metadata.json").read_text())
    return {k: v for k, v in meta["metrics"].items() if isinstance(v, float)}


@pytest.fixture(scope="module")
def overlay() -> list[dict[str, Any]]:
    return load_documents(OVERLAY)


@pytest.fixture(scope="module")
def runs(spark: SparkSession, cluster: StandaloneCluster, config_file: Path, overlay: list[dict[str, Any]],
         tmp_path_factory) -> tuple[Path, Path]:
    """The same pipeline twice: every application of the overlay on the cluster, and in local mode."""
    root = tmp_path_factory.mktemp("runs")
    on_cluster, local = root / "cluster", root / "local"
    assert _arg(select_app(overlay, "churn-score"), "--as-of") == SCORE_DATE, "the score manifest's date moved"
    for name in APPS:
        _submit_app(cluster, overlay, _app(overlay, name), on_cluster, config_file)
    _run_local(spark, config_file, local)
    return on_cluster, local


def test_pipeline_on_cluster_equals_local_mode(spark: SparkSession, runs: tuple[Path, Path]) -> None:
    on_cluster, local = runs
    _assert_same_tables(spark, on_cluster, local, TABLES)
    cluster_metrics, local_metrics = _metrics(on_cluster), _metrics(local)
    assert cluster_metrics.keys() == local_metrics.keys() and "roc_auc" in cluster_metrics
    for key, value in cluster_metrics.items():
        assert value == pytest.approx(local_metrics[key], abs=1e-6), key


def _arg(app: App, flag: str) -> str:
    args = [str(a) for a in app.spec["arguments"]]
    return args[args.index(flag) + 1]


def _summaries(lakehouse: Path, job: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((lakehouse / "runs").glob(f"*-{job}-*.json"))]


def test_every_application_ran_with_its_manifest_arguments(overlay: list[dict[str, Any]],
                                                           runs: tuple[Path, Path]) -> None:
    """What each application's run summary says it was asked to do, against its manifest (with TEST_ARGS);
    the nightly ran ingest, features and score for `month-start` of RUN_DATE, after the backfill."""
    on_cluster, _ = runs
    generate = _app(overlay, "churn-generate")
    (gen,) = _summaries(on_cluster, "generate")
    assert (gen["status"], gen["args"]["generate.start"]) == ("succeeded", _arg(generate, "--start"))
    ingests, features, scores = (_summaries(on_cluster, j) for j in ("ingest", "features", "score"))
    assert [(r["status"], r["args"]["source"], r["args"]["once"]) for r in ingests] == [
        ("succeeded", "landing", True)] * 2
    feats = _app(overlay, "churn-features")
    assert [r["args"] for r in features] == [{"from": _arg(feats, "--from"), "to": _arg(feats, "--to")},
                                             {"from": MONTH_START, "to": MONTH_START}]
    assert [r["args"]["as_of"] for r in scores] == [SCORE_DATE, MONTH_START]
    assert all(r["status"] == "succeeded" for r in [*features, *scores, *_summaries(on_cluster, "train")])
    assert os.listdir(on_cluster.parent / "work" / "spark-events")  # event logs for the history server


def test_ingest_on_the_cluster_took_every_landing_event_exactly_once(spark: SparkSession,
                                                                    runs: tuple[Path, Path]) -> None:
    on_cluster, _ = runs
    landing = (spark.read.text(str(on_cluster / "landing" / "events"))
               .select(F.get_json_object("value", "$.event_id").alias("event_id")).where("event_id is not null"))
    bronze = spark.read.format("delta").load(str(on_cluster / "bronze" / "events")).select("event_id")
    quarantined = (spark.read.format("delta").load(str(on_cluster / "bronze" / "events_quarantine"))
                   .select("event_id").where("event_id is not null"))
    assert bronze.count() > 0 and bronze.count() == bronze.distinct().count()  # exactly once
    assert bronze.subtract(landing).count() == 0  # nothing invented
    assert landing.subtract(bronze).subtract(quarantined).count() == 0  # nothing dropped silently


def _wait_for(predicate, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _executor_running(cluster: StandaloneCluster, worker: int) -> bool:
    out = subprocess.run(["pgrep", "-g", str(os.getpgid(cluster.worker_pids[worker])), "-f",
                          "CoarseGrainedExecutorBackend"], capture_output=True, text=True)
    return bool(out.stdout.strip())


def test_features_job_survives_losing_a_worker(spark: SparkSession, cluster: StandaloneCluster,
                                               config_file: Path, runs: tuple[Path, Path], tmp_path) -> None:
    on_cluster, _ = runs
    lake = tmp_path / "lake"
    subprocess.run(["cp", "-r", str(on_cluster), str(lake)], check=True)
    for table in ("gold/churn_labels", "gold/churn_features"):
        subprocess.run(["rm", "-rf", str(lake / table)], check=True)
    proc = _submit(cluster, "build_features", [], lake, config_file, background=True)
    victim = len(cluster.worker_pids) - 1
    _wait_for(lambda: _executor_running(cluster, victim), 300, "an executor on the victim worker")
    time.sleep(8)  # let it take tasks of the features job
    kill_process_group(cluster.worker_pids[victim])
    survived = proc.wait(timeout=900) == 0
    start_worker(cluster, cores=1, memory="1536m")  # back to two workers for the next test
    _wait_for(lambda: cluster.alive_workers() >= 2, 120, "a replacement worker")
    assert survived, "features job did not survive the loss of a worker"
    # The configured snapshots; the score job added the slice of its own date to both tables since.
    configured = f"as_of_date <= '{LAST_SNAPSHOT}'"
    assert _table(spark, lake, "gold/churn_features").where(f"not ({configured})").count() == 0
    _assert_same_tables(spark, lake, on_cluster, ["gold/churn_labels", "gold/churn_features"], configured)


def _uncommitted_files(table: Path, before: set[str]) -> bool:
    return any(p.suffix == ".parquet" and str(p) not in before for p in table.rglob("*.parquet"))


def test_driver_killed_while_writing_scores_leaves_table_intact(spark: SparkSession, cluster: StandaloneCluster,
                                                                 config_file: Path, runs: tuple[Path, Path],
                                                                 tmp_path) -> None:
    on_cluster, _ = runs
    lake = tmp_path / "lake"
    subprocess.run(["cp", "-r", str(on_cluster), str(lake)], check=True)
    scores = lake / "gold" / "churn_scores"
    before_version = spark.sql(f"DESCRIBE HISTORY delta.`{scores}`").agg({"version": "max"}).first()[0]
    before_rows = _table(spark, lake, "gold/churn_scores")
    files_before = {str(p) for p in scores.rglob("*.parquet")}
    proc = _submit(cluster, "score", ["--as-of", SCORE_DATE], lake, config_file, background=True)
    _wait_for(lambda: _uncommitted_files(scores, files_before) or proc.poll() is not None, 600,
              "the score job to start writing")
    kill_process_group(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    after_version = spark.sql(f"DESCRIBE HISTORY delta.`{scores}`").agg({"version": "max"}).first()[0]
    after_rows = _table(spark, lake, "gold/churn_scores")
    # Readers see either the previous version or a complete new one, never a partial write.
    assert after_version in (before_version, before_version + 1)
    assert_approx_df_equality(after_rows, before_rows, 1e-12, ignore_row_order=True, ignore_nullable=True)
    # A rerun completes and gives the same slice as the undisturbed run (here in the test's own driver:
    # the first test already shows that a cluster run and a local run write the same tables).
    from churn_spark.score.job import run_score

    run_score(spark, load_settings(config_file, {"lakehouse": str(lake)}), dt.date.fromisoformat(SCORE_DATE))
    _assert_same_tables(spark, lake, on_cluster, ["gold/churn_scores", "gold/churn_targets"])


def _forget_last_ingest_commit(lakehouse: Path) -> None:
    """Drop the stream's last commit marker, as a driver crash between the sink write and the commit would."""
    commits = lakehouse / "_checkpoints" / "ingest" / "landing" / "commits"
    last = max((p for p in commits.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    last.unlink()
    (commits / f".{last.name}.crc").unlink(missing_ok=True)


def test_rerunning_jobs_on_the_cluster_is_idempotent(spark: SparkSession, cluster: StandaloneCluster,
                                                      config_file: Path, runs: tuple[Path, Path], tmp_path) -> None:
    """Reruns happen in place: the landing checkpoint records absolute file paths (Spark's file source),
    so a lakehouse copied elsewhere is a new source, not a rerun (docs/operations.md, runbook). The
    features job's rerun on the cluster is shown by the lost-worker test (same tables again)."""
    on_cluster, _ = runs
    before = tmp_path / "before"
    subprocess.run(["cp", "-r", str(on_cluster), str(before)], check=True)
    _forget_last_ingest_commit(on_cluster)  # so the ingest rerun replays its last micro-batch
    _submit(cluster, "ingest_events", ["--once"], on_cluster, config_file)  # rerun on unchanged inputs
    replay = json.loads(sorted((on_cluster / "runs").glob("*-ingest-*.json"))[-1].read_text())["result"]
    assert replay["batches"] == 1 and replay["quarantined"] > 0 and replay["bronze_written"] == 0, replay
    _assert_same_tables(spark, on_cluster, before, ["bronze/events", "bronze/events_quarantine"])
