from __future__ import annotations

import json
import logging
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_SPARK
from pyspark.errors import PySparkException

from churn_spark import progress
from churn_spark.cli import entrypoint_argv, error_line, execute, main
from churn_spark.config import Settings, SparkSettings
from churn_spark.errors import EnvironmentProblem
from churn_spark.jarcache import cached_jars, manifest_path, resolve_jars
from churn_spark.session import (
    default_conf,
    delta_artifact,
    log4j_config,
    maven_packages,
    packages_missing_from_classpath,
)


def test_missing_config_is_one_line_and_exit_2(capsys) -> None:
    assert main(["--config", "does-not-exist.yaml", "train"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: config file not found: does-not-exist.yaml"


def test_invalid_config_value_names_the_field(tmp_path, capsys) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("churn:\n  grace_days: -3\n")
    assert main(["--config", str(cfg), "train"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: invalid config: churn.grace_days:")


def test_bad_flag_value_is_a_usage_error(capsys) -> None:
    assert main(["generate", "--accounts", "many"]) == 2
    assert "Invalid value for '--accounts'" in capsys.readouterr().err


def test_entrypoint_moves_global_flags_in_front() -> None:
    argv = ["--from", "2024-01-01", "--config", "/etc/c.yaml", "--to", "2024-02-01", "--lakehouse", "s3a://b/l"]
    assert entrypoint_argv("features", argv) == [
        "--config", "/etc/c.yaml", "--lakehouse", "s3a://b/l", "features", "--from", "2024-01-01", "--to", "2024-02-01"]


def _summaries(settings: Settings) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(settings.lakehouse, "runs").glob("*.json"))]


def test_execute_writes_a_run_summary(spark, settings: Settings) -> None:
    out = execute(settings, "probe", lambda s, cfg: {"rows": s.range(3).count(), "root": cfg.lakehouse}, {"x": 1},
                  spark=spark)
    assert out["status"] == "succeeded"
    (summary,) = _summaries(settings)
    assert summary["job"] == "probe" and summary["args"] == {"x": 1}
    assert summary["result"] == {"rows": 3, "root": settings.lakehouse}


def test_failed_job_records_failure_and_raises(spark, settings: Settings) -> None:
    def boom(s, cfg):  # type: ignore[no-untyped-def]
        raise RuntimeError("input table is empty\nsecond line")

    with pytest.raises(RuntimeError):
        execute(settings, "probe", boom, spark=spark)
    (summary,) = _summaries(settings)
    assert summary["status"] == "failed"
    assert summary["error"] == "RuntimeError: input table is empty"


# --- quiet, informative runs (issue 19, item 4) --------------------------------------------------


def _jvm_file_not_found(spark, path: str) -> None:  # type: ignore[no-untyped-def]
    spark._jvm.java.io.FileInputStream(path)  # raises inside the JVM: py4j's Py4JJavaError


def test_jvm_error_is_one_line_naming_the_java_cause(spark, settings: Settings, tmp_path, monkeypatch,
                                                     capsys) -> None:
    missing = str(tmp_path / "no-such-file")

    def job(s, cfg):  # type: ignore[no-untyped-def]
        _jvm_file_not_found(spark, missing)

    monkeypatch.setattr("churn_spark.session.build_spark", lambda *a, **k: spark)
    monkeypatch.setattr("churn_spark.generate.run_generate", job)
    assert main(["--lakehouse", settings.lakehouse, "generate"]) == 1
    expected = f"java.io.FileNotFoundException: {missing} (No such file or directory)"
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert errors == [f"error: {expected} (rerun with --debug for the traceback)"]
    (summary,) = _summaries(settings)
    assert summary["status"] == "failed" and summary["error"] == expected


def test_spark_analysis_error_prints_its_first_line(spark, tmp_path) -> None:
    with pytest.raises(PySparkException) as info:
        spark.read.format("delta").load(str(tmp_path / "no-table"))
    line = error_line(info.value)
    assert line.startswith("AnalysisException: [") and "no-table" in line and "\n" not in line


def test_quiet_prints_only_the_result_line(spark, settings: Settings, monkeypatch, capsys) -> None:
    monkeypatch.setattr("churn_spark.session.build_spark", lambda *a, **k: spark)
    monkeypatch.setattr("churn_spark.generate.run_generate", lambda s, cfg: {"rows": s.range(3).count()})
    assert main(["--quiet", "--lakehouse", settings.lakehouse, "generate"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert re.fullmatch(r"== generate: succeeded in \d+\.\ds\n", captured.out)
    assert main(["--lakehouse", settings.lakehouse, "generate"]) == 0  # without: stage lines and the result
    captured = capsys.readouterr()
    assert "   rows: 3" in captured.out.splitlines() and "generate: starting" in captured.err


def test_quiet_failure_is_the_error_line_alone(spark, settings: Settings, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr("churn_spark.session.build_spark", lambda *a, **k: spark)
    monkeypatch.setattr("churn_spark.generate.run_generate",
                        lambda s, cfg: _jvm_file_not_found(spark, str(tmp_path / "gone")))
    assert main(["--lakehouse", settings.lakehouse, "--quiet", "generate"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"error: java.io.FileNotFoundException: {tmp_path / 'gone'} (No such file or directory) "
        "(rerun with --debug for the traceback)"]


def test_entrypoint_keeps_global_switches() -> None:
    assert entrypoint_argv("train", ["--quiet", "--lakehouse", "/l", "--debug"]) == [
        "--lakehouse", "/l", "--debug", "--quiet", "train"]


def test_stage_line_has_elapsed_time_and_known_rows(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="churn_spark"), progress.stage("features", "events") as step:
        step.done(f"events aggregated {progress.rows(12_300_000)} -> {progress.rows(4_100)} rows")
    assert re.fullmatch(r"features: events aggregated 12\.3M -> 4\.1k rows \(\d\.\d s\)", caplog.messages[-1])


def _packages() -> list[str]:
    return packages_missing_from_classpath(maven_packages(with_kafka=True))


def test_a_started_session_has_no_ivy_and_logs_through_our_log4j(spark) -> None:
    conf = spark.sparkContext.getConf()
    assert conf.get("spark.jars.packages") is None
    if _packages():  # an image with the jars baked in needs none
        jars = conf.get("spark.jars").split(",")
        assert jars and all(Path(j.removeprefix("file:")).is_file() for j in jars)
        assert any(f"{delta_artifact()}-" in j for j in jars)
    options = conf.get("spark.driver.extraJavaOptions")
    assert "-Duser.timezone=UTC" in options and f"-Dlog4j.configurationFile={log4j_config()}" in options
    assert Path(log4j_config()).is_file()


def _fake_spark_submit(jars: list[str], code: int = 0, output: str = "") -> Any:
    calls: list[list[str]] = []

    def run(cmd, stdout=None, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(cmd)
        Path(cmd[-1]).write_text(",".join(f"file://{j}" for j in jars))  # what the resolver script writes
        stdout.write(output)
        return subprocess.CompletedProcess(cmd, code)

    run.calls = calls  # type: ignore[attr-defined]
    return run


def test_jars_are_resolved_once_then_read_from_the_manifest(tmp_path, monkeypatch) -> None:
    jars = [tmp_path / "jars" / "io.delta_delta-spark_2.13-4.0.0.jar", tmp_path / "jars" / "x.jar"]
    for j in jars:
        j.parent.mkdir(exist_ok=True)
        j.write_bytes(b"")
    fake = _fake_spark_submit([str(j) for j in jars])
    monkeypatch.setattr("churn_spark.jarcache.subprocess.run", fake)
    ivy = tmp_path / "ivy"
    packages = ["io.delta:delta-spark_2.13:4.0.0"]
    assert resolve_jars(ivy, packages) == [str(j) for j in jars]
    assert "--packages" in fake.calls[0] and f"spark.jars.ivy={ivy}" in fake.calls[0]
    assert resolve_jars(ivy, packages) == [str(j) for j in jars]  # second start: the manifest, no spark-submit
    assert len(fake.calls) == 1
    jars[1].unlink()  # a jar removed from the cache: resolve again rather than start without it
    assert cached_jars(ivy, packages) is None


def test_second_session_start_sets_jar_files_and_runs_no_ivy(tmp_path, monkeypatch) -> None:
    packages = _packages()
    if not packages:
        pytest.skip("the Delta/Kafka jars are baked into Spark's jars folder here")
    jars = [tmp_path / f"j{i}.jar" for i in range(2)]
    for j in jars:
        j.write_bytes(b"")
    manifest = manifest_path(tmp_path, packages)
    manifest.write_text(json.dumps({"packages": packages, "jars": [str(j) for j in jars]}))

    def no_ivy(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError(f"spark-submit/Ivy ran: {args}")

    monkeypatch.setattr("churn_spark.jarcache.subprocess.run", no_ivy)
    conf = default_conf(SparkSettings(ivy_cache=str(tmp_path)))
    assert "spark.jars.packages" not in conf
    assert conf["spark.jars"] == ",".join(str(j) for j in jars)


def _driver_options(tmp_path: Path, monkeypatch: Any, **settings: Any) -> str:
    """The driver JVM options `default_conf` sets, with the cache (and so the archive's place) under tmp_path."""
    monkeypatch.setenv("CHURN_SPARK_CACHE", str(tmp_path))
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    monkeypatch.setattr("churn_spark.session.packages_missing_from_classpath", lambda packages: [])
    return default_conf(SparkSettings(**settings))["spark.driver.extraJavaOptions"]


def test_the_driver_maps_the_class_archive_once_it_is_built(tmp_path, monkeypatch) -> None:
    from churn_spark.classcache import archive_path

    assert "SharedArchiveFile" not in _driver_options(tmp_path, monkeypatch)  # not built yet
    monkeypatch.setenv("CHURN_SPARK_CACHE", str(tmp_path))
    archive = archive_path()
    assert archive is not None and archive.is_relative_to(tmp_path)
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"")
    options = _driver_options(tmp_path, monkeypatch).split()
    assert [o for o in options if "SharedArchiveFile" in o] == [f"-XX:SharedArchiveFile={archive}"]
    assert "-Xlog:cds*=off" in options  # a stale archive is skipped without a JVM warning on every run
    assert "SharedArchiveFile" not in _driver_options(tmp_path, monkeypatch, class_sharing=False)
    own = _driver_options(tmp_path, monkeypatch, java_options="-XX:SharedArchiveFile=/elsewhere.jsa -Xss4m").split()
    assert [o for o in own if "SharedArchiveFile" in o] == ["-XX:SharedArchiveFile=/elsewhere.jsa"]


def test_a_new_class_archive_removes_the_ones_no_jvm_will_map(tmp_path, monkeypatch) -> None:
    """Building the archive (its JVM run replaced by writing the file the option names) records whose pyspark
    it is and removes the archives of a reinstalled or deleted pyspark; another venv's, another JVM's of this
    same installation, and one with no record, stay."""
    import pyspark

    from churn_spark import classcache

    monkeypatch.setenv("CHURN_SPARK_CACHE", str(tmp_path))
    cds, ours = tmp_path / "cds", Path(pyspark.__file__).parent / "jars"
    installed = ours.stat().st_mtime_ns
    other_venv = tmp_path / "other-venv" / "jars"
    other_venv.mkdir(parents=True)
    owners = {"reinstalled": (ours, installed - 1), "deleted": (tmp_path / "gone" / "jars", 1),
              "other-venv": (other_venv, 1), "other-jvm": (ours, installed), "unrecorded": None}
    cds.mkdir()
    for name, owner in owners.items():
        (cds / f"{name}.jsa").write_bytes(b"old")
        if owner is not None:
            (cds / f"{name}.owner").write_text(f"{owner[0]}\n{owner[1]}\n")

    def dump_classes(argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        target = re.search(r"-XX:ArchiveClassesAtExit=([^\"\s]+)", argv[2])
        assert target is not None
        Path(target.group(1)).write_bytes(b"new")
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(classcache.subprocess, "run", dump_classes)
    built = classcache.ensure_archive()
    assert built.read_bytes() == b"new" and built.with_suffix(".owner").read_text() == f"{ours}\n{installed}\n"
    assert sorted(p.name for p in cds.iterdir()) == sorted(
        [built.name, built.with_suffix(".owner").name, "other-venv.jsa", "other-venv.owner", "other-jvm.jsa",
         "other-jvm.owner", "unrecorded.jsa"])


def _resolution_failure(tmp_path: Path, monkeypatch: Any, output: str, package: str) -> str:
    """The one-line error of a resolution whose spark-submit printed `output` and exited 1."""
    monkeypatch.setattr("churn_spark.jarcache.subprocess.run", _fake_spark_submit([], code=1, output=output))
    with pytest.raises(EnvironmentProblem) as info:
        resolve_jars(tmp_path, [package])
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "churn-spark-resolve-") in message
    assert not list(tmp_path.glob("churn-spark-jars-*.json"))
    return message


def test_failed_resolution_is_one_line_naming_the_log(tmp_path, monkeypatch) -> None:
    message = _resolution_failure(tmp_path, monkeypatch, ":: loading settings\n:: problems summary ::\n"
                                  "Exception in thread \"main\" java.lang.RuntimeException: [unresolved dependency: "
                                  "io.delta#delta-spark_2.13;9.9.9: not found]\n", "io.delta:delta-spark_2.13:9.9.9")
    assert "unresolved dependency: io.delta#delta-spark_2.13;9.9.9" in message
    assert "~/.m2" not in message


def test_a_jar_missing_beside_its_pom_in_m2_names_the_cure(tmp_path, monkeypatch) -> None:
    message = _resolution_failure(tmp_path, monkeypatch, "\tfound io.airlift#aircompressor;2.0.2 in local-m2-cache\n"
                                  "\t\t[NOT FOUND  ] io.airlift#aircompressor;2.0.2!aircompressor.jar (0ms)\n"
                                  "Exception in thread \"main\" java.lang.RuntimeException: "
                                  "[download failed: io.airlift#aircompressor;2.0.2!aircompressor.jar]\n",
                                  "io.delta:delta-spark_4.2_2.13:4.4.0")
    assert "download failed: io.airlift#aircompressor;2.0.2!aircompressor.jar" in message
    assert "~/.m2/repository" in message


def test_java_options_reach_the_driver_jvm_we_launch(spark) -> None:  # type: ignore[no-untyped-def]
    """The test session is built with `spark.java_options` (tests/conftest.py): the JVM runs with them."""
    args = list(spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
    assert all(option in args for option in shlex.split(TEST_SPARK.java_options))
    assert any(a.startswith("-Dlog4j.configurationFile=") for a in args)  # the driver options we build
    assert "-Duser.timezone=UTC" in args  # added to our own options, not replacing them


@pytest.mark.parametrize(("delta", "spark", "artifact"), [
    ("4.0.0", "4.0.0", "delta-spark_2.13"),          # 4.0.x: the one jar, no Spark line in its name
    ("4.4.0", "4.2.0", "delta-spark_4.2_2.13"),      # from 4.1 on: one jar per Spark line
    ("4.1.0", "4.0.1", "delta-spark_4.0_2.13"),
])
def test_the_delta_jar_names_the_spark_line_from_delta_4_1(monkeypatch, delta, spark, artifact) -> None:
    import churn_spark.session as session

    monkeypatch.setattr(session, "delta_version", lambda: delta)
    monkeypatch.setattr(session, "spark_version", lambda: spark)
    assert session.maven_packages(with_kafka=True) == [
        f"io.delta:{artifact}:{delta}", f"org.apache.spark:spark-sql-kafka-0-10_2.13:{spark}"]
