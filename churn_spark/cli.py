"""The `churn-spark` command line (docs/architecture.md): thin, typed, one clear line per error.

Each command turns its flags into config overrides, builds the one session, calls the library's
job function, writes a run summary under `runs/` and prints a short version of it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import click
import typer

from churn_spark import __version__
from churn_spark.config import Settings, load_settings, with_overrides
from churn_spark.errors import ChurnSparkError, ConfigError
from churn_spark.lakehouse import Lakehouse
from churn_spark.runs import new_run_id, write_run_summary

log = logging.getLogger("churn_spark")

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="churn-spark: churn labels, point-in-time features, MLlib training and scoring on Spark + Delta.",
)

JobFn = Callable[[Any, Settings], dict[str, Any]]


DATE_KEYWORDS = ("today", "yesterday", "month-start")


RUN_DATE_ENV = "CHURN_RUN_DATE"


def resolve_date(value: str | None, today: dt.date | None = None, option: str = "date") -> str | None:
    """An ISO date as given, or a keyword resolved in UTC: a schedule (ScheduledSparkApplication, cron)
    cannot template dates, so `today`, `yesterday` and `month-start` (first day of the current month)
    name the run date instead. `$CHURN_RUN_DATE` (an ISO date) stands in for today: to rerun a missed
    night as it would have run, or to pin the date in a test. Anything else fails with one line naming
    `option`."""
    if value is None:
        return None
    if value not in DATE_KEYWORDS:
        try:
            return dt.date.fromisoformat(value).isoformat()
        except ValueError as exc:
            raise ConfigError(f"{option} {value!r} is not a date: use YYYY-MM-DD, "
                              f"{', '.join(DATE_KEYWORDS[:-1])} or {DATE_KEYWORDS[-1]} ({exc})") from exc
    pinned = os.environ.get(RUN_DATE_ENV)
    try:
        day = today or (dt.date.fromisoformat(pinned) if pinned else dt.datetime.now(dt.UTC).date())
    except ValueError as exc:
        raise ChurnSparkError(f"{RUN_DATE_ENV} must be an ISO date (YYYY-MM-DD), got {pinned!r}") from exc
    resolved = {"today": day, "yesterday": day - dt.timedelta(days=1), "month-start": day.replace(day=1)}[value]
    return resolved.isoformat()


def _settings(ctx: typer.Context) -> Settings:
    return ctx.obj["settings"]


@app.callback()
def _global(
    ctx: typer.Context,
    config: str = typer.Option(None, "--config", help="YAML config file (see conf/example.yaml)."),
    lakehouse: str = typer.Option(None, "--lakehouse", help="Lakehouse root: a folder or a URI (s3a://...)."),
    master: str = typer.Option(None, "--master", help="Spark master URL (default: spark-submit's, else local[*])."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="For schedulers: no stage lines or progress bars, "
                                                            "only the one-line result (and errors)."),
) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, stream=sys.stderr,
                        format="[churn-spark %(asctime)s] %(message)s", datefmt="%H:%M:%S", force=True)
    for name in ("py4j", "py4j.clientserver", "py4j.java_gateway"):  # "Closing down clientserver connection"
        logging.getLogger(name).setLevel(logging.WARNING)
    settings = load_settings(config, {"lakehouse": lakehouse, "spark.master": master})
    # Spark's console progress bar is for a terminal; in a log file or under --quiet it is noise.
    if quiet or ("show_progress" not in settings.spark.model_fields_set and not sys.stderr.isatty()):
        settings = with_overrides(settings, {"spark.show_progress": False})
    ctx.obj = {"settings": settings, "debug": debug, "quiet": quiet}


def _quiet(ctx: typer.Context) -> bool:
    return bool((ctx.obj or {}).get("quiet"))


def error_line(exc: BaseException) -> str:
    """One line naming the cause: for an error raised in the JVM, the innermost Java exception and its
    message (`java.io.FileNotFoundException: /x (No such file or directory)`), not py4j's
    `An error occurred while calling o123.load`; otherwise `Type: first line of the message`."""
    from py4j.protocol import Py4JJavaError

    if isinstance(exc, Py4JJavaError):
        try:
            cause = exc.java_exception
            for _ in range(20):  # the innermost cause names what went wrong (a Spark job wraps it)
                if cause.getCause() is None or cause.getCause().equals(cause):
                    break
                cause = cause.getCause()
            text = str(cause.toString())
        except Exception:  # the JVM is gone: py4j's own message is all there is
            text = ""
        if text.strip():
            return text.strip().splitlines()[0]
    try:
        message = str(exc).strip()
    except Exception:
        message = ""
    return f"{type(exc).__name__}: {message.splitlines()[0]}" if message else type(exc).__name__


def _print_summary(job: str, summary: dict[str, Any], quiet: bool = False) -> None:
    typer.echo(f"== {job}: {summary.get('status', 'ok')} in {summary.get('duration_s', 0):.1f}s")
    if quiet:
        return
    for key, value in summary.get("result", {}).items():
        if isinstance(value, dict | list) and len(str(value)) > 300:
            continue
        typer.echo(f"   {key}: {value}")


def execute(settings: Settings, job: str, fn: JobFn, args: dict[str, Any] | None = None,
            spark: Any = None, quiet: bool = False, show: bool = True) -> dict[str, Any]:
    """Run one job function with a session, timing and a run summary (also on failure; an error that
    carries a `result`, e.g. InputCheckError's measurements, records it). `show`: print the summary."""
    from churn_spark.session import build_spark

    run_id = new_run_id(job)
    lake = Lakehouse.from_settings(settings)
    started = time.time()
    summary: dict[str, Any] = {
        "run_id": run_id, "job": job, "args": args or {}, "version": __version__,
        "started_at": dt.datetime.now(dt.UTC).isoformat(), "lakehouse": lake.root,
    }
    log.info("%s: starting (run %s)", job, run_id)
    try:
        spark = spark or build_spark(settings.spark, app_name=f"churn-spark-{job}")
        summary["result"] = fn(spark, settings)
        summary["status"] = "succeeded"
    except BaseException as exc:
        summary["status"] = "failed"
        summary["error"] = error_line(exc)
        if isinstance(getattr(exc, "result", None), dict):
            summary["result"] = exc.result  # type: ignore[attr-defined]
        raise
    finally:
        summary["duration_s"] = round(time.time() - started, 2)
        summary["finished_at"] = dt.datetime.now(dt.UTC).isoformat()
        path = write_run_summary(lake, run_id, summary)
        log.info("%s: %s, run summary %s", job, summary["status"], path)
    if show:
        _print_summary(job, summary, quiet)
    return summary


def _run(ctx: typer.Context, job: str, fn: JobFn, overrides: dict[str, Any] | None = None,
         args: dict[str, Any] | None = None) -> dict[str, Any]:
    settings = with_overrides(_settings(ctx), overrides or {})
    return execute(settings, job, fn, args, quiet=_quiet(ctx))


@app.command()
def generate(
    ctx: typer.Context,
    accounts: int = typer.Option(None, "--accounts", help="Number of accounts."),
    start: str = typer.Option(None, "--start", help="First day of generated activity (YYYY-MM-DD)."),
    end: str = typer.Option(None, "--end", help="Last day of generated activity (YYYY-MM-DD)."),
    seed: int = typer.Option(None, "--seed", help="Random seed (same seed -> same tables)."),
) -> None:
    """Generate raw inputs, ground truth and landing event files."""
    from churn_spark.generate import run_generate

    overrides = {"generate.accounts": accounts, "generate.start": start, "generate.end": end, "generate.seed": seed}
    _run(ctx, "generate", run_generate, overrides, {k: v for k, v in overrides.items() if v is not None})


@app.command()
def ingest(
    ctx: typer.Context,
    source: str = typer.Option(None, "--source", help="landing, kafka, files (a backfill: --path, --format) or "
                                                      "table (a backfill: --table) (default: config)."),
    once: bool = typer.Option(False, "--once", help="Drain what is there, then stop (availableNow; "
                                                    "always so for files and table)."),
    bootstrap_servers: str = typer.Option(None, "--bootstrap-servers", help="Kafka brokers (default: config)."),
    topic: str = typer.Option(None, "--topic", help="Kafka topic (default: config)."),
    path: str = typer.Option(None, "--path", help="Backfill folder or file of events (implies --source files)."),
    file_format: str = typer.Option(None, "--format", help="Backfill file format: parquet, csv or json "
                                                           "(JSON lines) (default: config, parquet)."),
    table: str = typer.Option(None, "--table", help="Backfill catalog table, e.g. db.events (implies --source table)."),
) -> None:
    """Ingest events into bronze Delta, exactly once: stream the landing folder or Kafka, or backfill
    history from files (Parquet, CSV, JSON lines) or a catalog table. Rejects go to quarantine."""
    from churn_spark.ingest import run_ingest

    def job(spark: Any, settings: Settings) -> dict[str, Any]:
        return run_ingest(spark, settings, once=once)

    chosen: str | None = source or ("files" if path else "table" if table else None)
    overrides = {"ingest.source": chosen, "ingest.kafka.bootstrap_servers": bootstrap_servers,
                 "ingest.kafka.topic": topic, "ingest.backfill.path": path, "ingest.backfill.format": file_format,
                 "ingest.backfill.table": table}
    backfill = {k: v for k, v in {"path": path, "format": file_format, "table": table}.items() if v is not None}
    _run(ctx, "ingest", job, overrides, {"source": chosen, "once": once, "topic": topic, **backfill})


@app.command("replay-kafka")
def replay_kafka(
    ctx: typer.Context,
    bootstrap_servers: str = typer.Option(None, "--bootstrap-servers", help="Kafka brokers (default: config)."),
    topic: str = typer.Option(None, "--topic", help="Kafka topic (default: config)."),
    path: str = typer.Option(None, "--from", help="Folder of JSON-lines files (default: the landing folder)."),
) -> None:
    """Replay the landing JSON-lines event files into a Kafka topic (the demo-with-Kafka path)."""
    from churn_spark.ingest import replay_to_kafka

    def job(spark: Any, settings: Settings) -> dict[str, Any]:
        return replay_to_kafka(spark, settings, path)

    overrides = {"ingest.kafka.bootstrap_servers": bootstrap_servers, "ingest.kafka.topic": topic}
    _run(ctx, "replay-kafka", job, overrides, {"topic": topic, "from": path})


@app.command()
def silver(
    ctx: typer.Context,
    rebuild: bool = typer.Option(False, "--rebuild", help="Recompute the whole table from bronze.events "
                                                          "(after a bronze repair, or to check the incremental one)."),
) -> None:
    """Bring silver.account_daily_activity up to date with bronze.events (only the days that changed)."""
    from churn_spark.silver import run_silver

    def job(spark: Any, settings: Settings) -> dict[str, Any]:
        return run_silver(spark, settings, rebuild=rebuild)

    _run(ctx, "silver", job, None, {"rebuild": rebuild})


@app.command()
def features(
    ctx: typer.Context,
    date_from: str = typer.Option(None, "--from", help="First snapshot date (YYYY-MM-DD|today|yesterday|month-start)."),
    date_to: str = typer.Option(None, "--to", help="Last snapshot date (YYYY-MM-DD|today|yesterday|month-start)."),
) -> None:
    """Compute churn labels and point-in-time features for the snapshots in [from, to]."""
    from churn_spark.features.job import run_features, summary_table

    start, end = resolve_date(date_from, option="--from"), resolve_date(date_to, option="--to")
    overrides = {"churn.snapshots.start": start, "churn.snapshots.end": end}
    summary = _run(ctx, "features", run_features, overrides, {"from": start, "to": end})
    if not _quiet(ctx):
        typer.echo(summary_table(summary.get("result", {})))


@app.command()
def check(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON document (for scripts)."),
) -> None:
    """Run every input check and print a data-quality report (counts, rejected rows and why, null rates,
    date ranges, unknown account ids, duplicates, event types and volumes); writes no table. Exit 2 when
    a check fails."""
    import json

    from churn_spark.check import report_text, run_check
    from churn_spark.errors import InputCheckError

    def show(report: dict[str, Any]) -> None:
        typer.echo(json.dumps(report, indent=2, default=str) if as_json else report_text(report))

    try:
        summary = execute(_settings(ctx), "check", run_check, {"json": as_json}, quiet=True, show=not as_json)
    except InputCheckError as exc:
        show(exc.result)
        raise
    show(summary["result"])


@app.command()
def train(ctx: typer.Context) -> None:
    """Train, evaluate on later snapshots and register an MLlib model."""
    from churn_spark.train.job import run_train

    _run(ctx, "train", run_train)


@app.command()
def score(
    ctx: typer.Context,
    as_of: str = typer.Option(..., "--as-of", help="Snapshot date to score (YYYY-MM-DD|today|yesterday|month-start)."),
    model_version: str = typer.Option(None, "--model-version", help="Registered model version (default: current)."),
    allow_stale_feed: bool = typer.Option(False, "--allow-stale-feed",
                                          help="Score although events stop more than scoring.max_feed_lag_days "
                                               "before the date (recorded in the summary)."),
) -> None:
    """Score eligible accounts at a date and write the budget-constrained target list."""
    from churn_spark.score.job import run_score

    as_of = resolve_date(as_of, option="--as-of") or as_of
    day = dt.date.fromisoformat(as_of)

    def job(spark: Any, settings: Settings) -> dict[str, Any]:
        return run_score(spark, settings, day, model_version, allow_stale_feed)

    summary = _run(ctx, "score", job, None, {"as_of": as_of, "model_version": model_version,
                                             "allow_stale_feed": allow_stale_feed})
    if not _quiet(ctx):
        _print_target_list(summary)


def _print_target_list(summary: dict[str, Any]) -> None:
    """The top of the target list (a run summary's `top_targets` is too long for the generic printer)."""
    from churn_spark.score.report import target_list_table

    if summary.get("status") == "succeeded" and "targets" in summary.get("result", {}):
        typer.echo(target_list_table(summary["result"]))


@app.command()
def explore(
    ctx: typer.Context,
    out: str = typer.Option(None, "--out", help="HTML file to write (default: <lakehouse>/reports/explore.html)."),
    retrain: bool = typer.Option(False, "--retrain", help="Train (and register) a new model for the model "
                                                          "section instead of showing the current one."),
) -> None:
    """Write the exploration views (churn rates, features, churn definition, a first model) as one
    self-contained HTML report with the plots inline."""
    from churn_spark.explore import ExploreOptions, run_explore

    def job(spark: Any, settings: Settings) -> dict[str, Any]:
        return run_explore(spark, settings, out, ExploreOptions(retrain=retrain))

    _run(ctx, "explore", job, None, {"out": out, "retrain": retrain})


@app.command()
def demo(ctx: typer.Context) -> None:
    """Generate a small dataset and run every stage on it, printing the summary."""
    from churn_spark.demo import run_demo

    summaries = run_demo(_settings(ctx), functools.partial(execute, quiet=_quiet(ctx)))
    for summary in summaries:
        if summary.get("job") == "score" and not _quiet(ctx):
            _print_target_list(summary)
        if summary.get("job") == "targeting-comparison" and summary.get("status") == "succeeded":
            _print_targeting_comparison(summary["result"])


def _print_targeting_comparison(result: dict[str, Any]) -> None:
    """Risk vs uplift targeting at the same limits: contacts, cost and the churners the uplift model expects
    each list to save."""
    typer.echo(f"target lists of {result['as_of_date']}, valued by the uplift model:")
    for mode in ("risk", "uplift"):
        t = result[mode]
        typer.echo(f"  {mode:<6} {t['contacts']:>5} contacts, cost {t['cost']:>10.2f}, "
                   f"expected saved churners {t['expected_saved_churners']:.2f}")


@app.command()
def serve(
    ctx: typer.Context,
    host: str = typer.Option(None, "--host", help="Listen address (default: serve.host, 127.0.0.1)."),
    port: int = typer.Option(None, "--port", help="Listen port (default: serve.port, 8080)."),
) -> None:
    """Serve the latest scores and target list of the current model over REST (docs/service.md): no JVM,
    reloads when a newer slice or model is promoted; runs until interrupted."""
    from churn_spark.serve.job import run_serve

    run_serve(with_overrides(_settings(ctx), {"serve.host": host, "serve.port": port}))


uplift_app = typer.Typer(no_args_is_help=True,
                         help="Uplift: which accounts a retention contact saves, learned from campaign logs.")
app.add_typer(uplift_app, name="uplift")


@uplift_app.command("train")
def uplift_train(
    ctx: typer.Context,
    learner: str = typer.Option(None, "--learner", help="x_learner, t_learner or transformed_outcome: the one "
                                                        "registered (default: uplift.learner)."),
    family: str = typer.Option(None, "--family", help="MLlib family of the learner's models: lr or gbt "
                                                      "(default: uplift.family)."),
    test_dates: int = typer.Option(None, "--test-dates", min=1, help="Latest campaign dates held out for the test "
                                                                     "(default: uplift.test_dates)."),
) -> None:
    """Fit an uplift model on earlier campaigns (inputs.interventions), evaluate it on the latest ones (Qini,
    AUUC, uplift at 10/20/30 %), register it and promote it when its Qini is not worse."""
    from churn_spark.uplift.job import run_uplift_train

    overrides = {"uplift.learner": learner, "uplift.family": family, "uplift.test_dates": test_dates}
    _run(ctx, "uplift-train", run_uplift_train, overrides, {k: v for k, v in overrides.items() if v is not None})


model_app = typer.Typer(no_args_is_help=True, help="Registered models: export for serving without Spark.")
app.add_typer(model_app, name="model")


@model_app.command("export")
def model_export(
    ctx: typer.Context,
    fmt: str = typer.Option("onnx", "--format", help="Export format: onnx (models/<version>/model.onnx and "
                                                     "model.onnx.json, its feature schema)."),
    model_version: str = typer.Option(None, "--model-version", help="Registered model version (default: current)."),
) -> None:
    """Export a registered model (encoding, classifier and calibration) as one ONNX graph (docs/model.md)."""
    from churn_spark.onnx.job import run_export

    def job(spark: Any, settings: Settings) -> dict[str, Any]:
        return run_export(spark, settings, model_version, fmt)

    _run(ctx, "model-export", job, None, {"format": fmt, "model_version": model_version})


k8s_app = typer.Typer(no_args_is_help=True,
                      help="Kubernetes: the operator's spark-submit for a manifest; run it locally.")
app.add_typer(k8s_app, name="k8s")


def _k8s_app(path: str, name: str | None) -> tuple[Any, list[dict[str, Any]]]:
    from churn_spark.k8s.manifests import load_documents, select_app

    docs = load_documents(path)
    return select_app(docs, name), docs


@k8s_app.command("submit-args")
def k8s_submit_args(
    manifest: str = typer.Argument(..., help="SparkApplication YAML, or a kustomize folder (rendered)."),
    app_name: str = typer.Option(None, "--app", help="Which application, when there are several."),
) -> None:
    """Print the spark-submit command the Spark operator runs for a SparkApplication."""
    import shlex

    from churn_spark.k8s.submit import submit_args

    selected, _ = _k8s_app(manifest, app_name)
    typer.echo(shlex.join(["spark-submit", *submit_args(selected.as_spark_application())]))


@k8s_app.command("validate")
def k8s_validate(
    paths: list[str] = typer.Argument(..., help="Manifest files, folders or kustomize overlays (rendered)."),
) -> None:
    """Check manifests: operator CRD schema, Kubernetes schemas, admission rules, security."""
    from churn_spark.k8s.manifests import load_documents
    from churn_spark.k8s.validate import all_errors

    problems = [e for path in paths for doc in load_documents(path) for e in all_errors(doc)]
    for problem in problems:
        typer.echo(problem, err=True)
    if problems:
        raise ChurnSparkError(f"{len(problems)} problem(s) in {', '.join(paths)}")
    typer.echo(f"ok: {', '.join(paths)}")


@k8s_app.command("run")
def k8s_run(
    ctx: typer.Context,
    manifest: str = typer.Argument(..., help="SparkApplication YAML, or a kustomize overlay folder (rendered)."),
    app_name: str = typer.Option(None, "--app", help="Which application, when there are several."),
    master: str = typer.Option("local[2]", "--master", help="local[N] or spark://host:port."),
    workdir: str = typer.Option(None, "--workdir", help="Scratch folder (default: <lakehouse>/../k8s-run)."),
    driver_memory: str = typer.Option(None, "--driver-memory", help="Override the manifest's driver memory."),
    conf: list[str] = typer.Option([], "--conf", help="KEY=VALUE to override locally (e.g. spark.executor.memory=1g "
                                                      "for a small standalone cluster); repeatable."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the local command and the changes; do not run."),
) -> None:
    """Run a SparkApplication locally as the operator would submit it (lakehouse: the global --lakehouse)."""
    import shlex

    from churn_spark.k8s.runner import local_plan, resolve_config_maps, run_plan, spark_submit_executable

    selected, docs = _k8s_app(manifest, app_name)
    lake = Lakehouse.from_settings(_settings(ctx)).root
    work = workdir or f"{lake.rstrip('/')}/../k8s-run"
    bad = [c for c in conf if "=" not in c]
    if bad:
        raise ChurnSparkError(f"--conf needs KEY=VALUE, got {bad[0]!r}")
    plan = local_plan(selected, workdir=work, lakehouse=lake, master=master, config_maps=resolve_config_maps(docs),
                      driver_memory=driver_memory, extra_conf=dict(c.split("=", 1) for c in conf))
    for change in plan.changes:
        typer.echo(f"   local: {change}", err=True)
    typer.echo(shlex.join([spark_submit_executable(), *plan.argv]), err=dry_run is False)
    if dry_run:
        return
    code = run_plan(plan)
    if code != 0:
        raise ChurnSparkError(f"{selected.name}: spark-submit exited {code}")
    typer.echo(f"== {selected.name}: succeeded")


def main(argv: list[str] | None = None) -> int:
    """Console entrypoint: one clear line and a non-zero exit on any error."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        app(args=args, prog_name="churn-spark", standalone_mode=False)
        return 0
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return 2
    except click.exceptions.Abort:
        return 130
    except ChurnSparkError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except Exception as exc:  # a failed job must exit non-zero with one readable line
        if debug:
            traceback.print_exc()
        typer.echo(f"error: {error_line(exc)} (rerun with --debug for the traceback)", err=True)
        return 1


GLOBAL_FLAGS = ("--config", "--lakehouse", "--master")
GLOBAL_SWITCHES = ("--debug", "--quiet")


def entrypoint_argv(command: str, argv: list[str]) -> list[str]:
    """Move global flags (given anywhere, as a SparkApplication's `arguments` may) before `command`."""
    parser = argparse.ArgumentParser(add_help=False)
    for flag in GLOBAL_FLAGS:
        parser.add_argument(flag)
    for switch in GLOBAL_SWITCHES:
        parser.add_argument(switch, action="store_true")
    known, rest = parser.parse_known_args(argv)
    front = [x for flag in GLOBAL_FLAGS if (v := getattr(known, flag[2:])) for x in (flag, v)]
    front += [switch for switch in GLOBAL_SWITCHES if getattr(known, switch[2:])]
    return [*front, command, *rest]


def run_entrypoint(command: str, argv: list[str] | None = None) -> int:
    """For `jobs/*.py`: the same arguments as `churn-spark COMMAND`, global flags accepted anywhere."""
    return main(entrypoint_argv(command, list(sys.argv[1:] if argv is None else argv)))
