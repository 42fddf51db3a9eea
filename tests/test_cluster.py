"""The whole pipeline on a real Spark standalone cluster (master + two 1-core workers on 127.0.0.1),
submitted the way the Spark operator would submit it.

Every SparkApplication of the dev overlay (generate, ingest, features, train, score, then the
scheduled nightly) runs through the runner's spark-submit translation (`churn_spark/k8s/runner.py`) against the
cluster, in the order the operator would run them, with the test's config in place of the ConfigMap's
and test-sized values for the arguments that set the data's size (TEST_ARGS); a manifest whose
arguments or confs do not fit the code fails here. Local mode hides what breaks in other JVMs and
Python workers, so the tables are compared with the same stages run in local mode.
Faults happen inside that one run, as they would under the operator: a worker (and its executor) is
killed while the features application runs (that application keeps Spark's code generation, so a
generated-code run is compared with the interpreted ones), and the nightly's driver is killed while
it writes scores, then the nightly is submitted again as the operator's retry would. The tables are
then compared with a local run that had no faults.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
from churn_spark.io import table_version
from churn_spark.k8s.manifests import App, load_documents, select_app
from churn_spark.k8s.runner import LocalPlan, local_plan, resolve_config_maps, spark_submit_executable

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


def _plan(cluster: StandaloneCluster, docs: list[dict[str, Any]], app: App, lakehouse: Path, config: Path,
          faulted: bool = False) -> LocalPlan:
    """One application through the runner's spark-submit translation against the cluster, with the test's
    config in place of the ConfigMap's: the manifest's own confs (driver and executor options, event log,
    jars) must work where executors are separate JVMs. One executor per application (each executor JVM
    costs ~8 CPU-s of start-up here), except for the `faulted` one, which gets one on each worker (a
    shuffle between executor JVMs, and an executor to lose) and keeps Spark's code generation."""
    maps = {m: {f: config.read_text() for f in files} for m, files in resolve_config_maps(docs).items()}
    sizing = {} if faulted else {"spark.cores.max": "1", **NO_CODEGEN}
    plan = local_plan(app, workdir=lakehouse.parent / "work", lakehouse=lakehouse, master=cluster.master_url,
                      config_maps=maps, driver_memory="1g",
                      extra_conf={"spark.ui.enabled": "false", "spark.executor.memory": "1g",
                                  "spark.executor.cores": "1", **with_jit(app), **sizing})
    plan.env["CHURN_RUN_DATE"] = RUN_DATE
    return plan


def _start(plan: LocalPlan, lakehouse: Path, name: str) -> subprocess.Popen[bytes]:
    """spark-submit of the plan in its own process group (a kill takes the driver JVM and its Python)."""
    work = lakehouse.parent / "work"
    with open(work / f"{name}.log", "ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen([spark_submit_executable(), *plan.argv], env=plan.env, cwd=work, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _finish(proc: subprocess.Popen[bytes], lakehouse: Path, name: str, expect_success: bool = True) -> int:
    code = proc.wait(timeout=900)
    if expect_success:
        log = lakehouse.parent / "work" / f"{name}.log"
        assert code == 0, f"{name} exited {code}:\n" + "\n".join(log.read_text().splitlines()[-40:])
    return code


@dataclass
class Faults:
    """What the faults injected into the cluster run did, for the tests that assert on them."""

    worker_killed_while_features_ran: bool
    features_exit: int
    nightly_killed_while_running: bool
    nightly_killed_exit: int
    scores_version_before_nightly: int
    scores_version_after_kill: int


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


def _table(spark: SparkSession, lakehouse: Path, name: str, version: int | None = None) -> DataFrame:
    """The table's stable columns (at `version`, else the latest); maps as sorted entry arrays (Spark cannot
    sort or compare maps)."""
    reader = spark.read.format("delta")
    df = (reader if version is None else reader.option("versionAsOf", version)).load(str(lakehouse / name))
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


def _scores_version(spark: SparkSession, lakehouse: Path) -> int:
    version = table_version(spark, str(lakehouse / "gold" / "churn_scores"))
    assert version is not None, "no scores table"
    return version


def _lose_a_worker_during(cluster: StandaloneCluster, proc: subprocess.Popen[bytes]) -> bool:
    """Kill the last worker (and its executor) once it runs tasks of `proc`'s job; start a replacement.
    True when the job was still running at the kill."""
    victim = len(cluster.worker_pids) - 1
    _wait_for(lambda: _executor_running(cluster, victim) or proc.poll() is not None, 300,
              "an executor on the victim worker")
    time.sleep(8)  # let it take tasks of the job
    running = proc.poll() is None
    kill_process_group(cluster.worker_pids[victim])
    start_worker(cluster, cores=1, memory="1536m")
    return running


@pytest.fixture(scope="module")
def runs(spark: SparkSession, cluster: StandaloneCluster, config_file: Path, overlay: list[dict[str, Any]],
         tmp_path_factory) -> tuple[Path, Path, Faults]:
    """The same pipeline twice: every application of the overlay on the cluster, with the two faults, and
    in local mode without faults."""
    root = tmp_path_factory.mktemp("runs")
    on_cluster, local = root / "cluster", root / "local"
    (root / "work").mkdir()
    assert _arg(select_app(overlay, "churn-score"), "--as-of") == SCORE_DATE, "the score manifest's date moved"

    def run(name: str, faulted: bool = False, during: Callable[[subprocess.Popen[bytes]], Any] | None = None,
            expect_success: bool = True) -> tuple[Any, int]:
        plan = _plan(cluster, overlay, _app(overlay, name), on_cluster, config_file, faulted)
        proc = _start(plan, on_cluster, name)
        seen = during(proc) if during else None
        return seen, _finish(proc, on_cluster, name, expect_success)

    for name in APPS[:2]:
        run(name)
    worker_killed, features_exit = run("churn-features", faulted=True,
                                       during=lambda proc: _lose_a_worker_during(cluster, proc))
    _wait_for(lambda: cluster.alive_workers() >= 2, 120, "a replacement worker")
    for name in ("churn-train", "churn-score"):
        run(name)
    scores = on_cluster / "gold" / "churn_scores"
    version_before, files_before = _scores_version(spark, on_cluster), {str(p) for p in scores.rglob("*.parquet")}

    def kill_while_writing_scores(proc: subprocess.Popen[bytes]) -> bool:
        _wait_for(lambda: _uncommitted_files(scores, files_before) or proc.poll() is not None, 600,
                  "the nightly to start writing scores")
        running = proc.poll() is None
        kill_process_group(proc.pid, signal.SIGKILL)
        return running

    nightly_killed, killed_exit = run("churn-nightly", during=kill_while_writing_scores, expect_success=False)
    version_after_kill = _scores_version(spark, on_cluster)
    run("churn-nightly")  # the operator's retry
    _run_local(spark, config_file, local)
    return on_cluster, local, Faults(worker_killed, features_exit, nightly_killed, killed_exit, version_before,
                                     version_after_kill)


def test_pipeline_on_cluster_equals_local_mode(spark: SparkSession, runs: tuple[Path, Path, Faults]) -> None:
    on_cluster, local, _ = runs
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
                                                           runs: tuple[Path, Path, Faults]) -> None:
    """What each application's run summary says it was asked to do, against its manifest (with TEST_ARGS);
    the nightly ran ingest, features and score for `month-start` of RUN_DATE, after the backfill, twice:
    the run whose driver was killed in its score step (which left no score summary) and the retry."""
    on_cluster, _, _ = runs
    generate = _app(overlay, "churn-generate")
    (gen,) = _summaries(on_cluster, "generate")
    assert (gen["status"], gen["args"]["generate.start"]) == ("succeeded", _arg(generate, "--start"))
    ingests, features, scores = (_summaries(on_cluster, j) for j in ("ingest", "features", "score"))
    assert [(r["status"], r["args"]["source"], r["args"]["once"]) for r in ingests] == [
        ("succeeded", "landing", True)] * 3
    feats = _app(overlay, "churn-features")
    nightly = {"from": MONTH_START, "to": MONTH_START}
    assert [r["args"] for r in features] == [{"from": _arg(feats, "--from"), "to": _arg(feats, "--to")},
                                             nightly, nightly]
    assert [r["args"]["as_of"] for r in scores] == [SCORE_DATE, MONTH_START]
    assert all(r["status"] == "succeeded" for r in [*features, *scores, *_summaries(on_cluster, "train")])
    assert os.listdir(on_cluster.parent / "work" / "spark-events")  # event logs for the history server


def test_ingest_on_the_cluster_took_every_landing_event_exactly_once(spark: SparkSession,
                                                                    runs: tuple[Path, Path, Faults]) -> None:
    on_cluster, _, _ = runs
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
    out = subprocess.run(["pgrep", "-g", str(cluster.worker_pids[worker]), "-f",
                          "CoarseGrainedExecutorBackend"], capture_output=True, text=True)
    return bool(out.stdout.strip())


def test_features_application_survives_losing_a_worker(spark: SparkSession,
                                                       runs: tuple[Path, Path, Faults]) -> None:
    """The worker killed while the features application ran (its executor with it): the application
    finished and wrote the same labels and features as the local run."""
    on_cluster, local, faults = runs
    assert faults.worker_killed_while_features_ran, "the features application ended before the worker was killed"
    assert faults.features_exit == 0, "features application did not survive the loss of a worker"
    configured = f"as_of_date <= '{LAST_SNAPSHOT}'"
    _assert_same_tables(spark, on_cluster, local, ["gold/churn_labels", "gold/churn_features"], configured)


def _uncommitted_files(table: Path, before: set[str]) -> bool:
    return any(p.suffix == ".parquet" and str(p) not in before for p in table.rglob("*.parquet"))


def test_driver_killed_while_writing_scores_leaves_table_intact(spark: SparkSession,
                                                                 runs: tuple[Path, Path, Faults]) -> None:
    """The nightly's driver SIGKILLed once its score step had written files: readers saw the previous
    version or a complete new one, never a partial write; the retry then completed the same tables as
    the undisturbed local run (the first test)."""
    on_cluster, local, faults = runs
    assert faults.nightly_killed_while_running and faults.nightly_killed_exit != 0
    before, after_kill = faults.scores_version_before_nightly, faults.scores_version_after_kill
    assert after_kill in (before, before + 1)
    seen = _table(spark, on_cluster, "gold/churn_scores", after_kill)
    # the previous version unchanged, or the complete table the undisturbed run wrote
    expected = (_table(spark, on_cluster, "gold/churn_scores", before) if after_kill == before
                else _table(spark, local, "gold/churn_scores"))
    assert_approx_df_equality(seen, expected, 1e-9, ignore_row_order=True, ignore_nullable=True)
    assert _scores_version(spark, on_cluster) > after_kill  # the retry committed


def _forget_last_ingest_commit(lakehouse: Path) -> None:
    """Drop the stream's last commit marker, as a driver crash between the sink write and the commit would."""
    commits = lakehouse / "_checkpoints" / "ingest" / "landing" / "commits"
    last = max((p for p in commits.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    last.unlink()
    (commits / f".{last.name}.crc").unlink(missing_ok=True)


def test_rerunning_jobs_on_the_cluster_is_idempotent(spark: SparkSession, cluster: StandaloneCluster,
                                                      config_file: Path, runs: tuple[Path, Path, Faults],
                                                      tmp_path) -> None:
    """Reruns happen in place: the landing checkpoint records absolute file paths (Spark's file source),
    so a lakehouse copied elsewhere is a new source, not a rerun (docs/operations.md, runbook). The
    nightly's retry after its driver was killed reruns ingest, features and score (the driver-kill test)."""
    on_cluster, _, _ = runs
    before = tmp_path / "before"
    subprocess.run(["cp", "-r", str(on_cluster), str(before)], check=True)
    _forget_last_ingest_commit(on_cluster)  # so the ingest rerun replays its last micro-batch
    _submit(cluster, "ingest_events", ["--once"], on_cluster, config_file)  # rerun on unchanged inputs
    replay = json.loads(sorted((on_cluster / "runs").glob("*-ingest-*.json"))[-1].read_text())["result"]
    assert replay["batches"] == 1 and replay["quarantined"] > 0 and replay["bronze_written"] == 0, replay
    _assert_same_tables(spark, on_cluster, before, ["bronze/events", "bronze/events_quarantine"])
