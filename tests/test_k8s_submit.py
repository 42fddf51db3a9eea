"""SparkApplication -> spark-submit translation (the operator's), the local plan, date keywords, nightly."""

from __future__ import annotations

import datetime as dt
import importlib.util
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from churn_spark.cli import main, resolve_date
from churn_spark.errors import ChurnSparkError
from churn_spark.k8s.manifests import App, generated_config_maps, load_documents, select_app
from churn_spark.k8s.runner import local_plan, resolve_config_maps
from churn_spark.k8s.submit import submit_args

ROOT = Path(__file__).resolve().parents[1]


def _app(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "Python", "mode": "cluster", "image": "img:1", "sparkVersion": "4.0.0",
        "mainApplicationFile": "local:///opt/churn-spark/jobs/score.py", "arguments": ["--as-of", "2024-12-01"],
        "sparkConf": {"spark.a": "1"}, "hadoopConf": {"fs.s3a.impl": "S3A"},
        "driver": {"cores": 1, "memory": "2g", "memoryOverhead": "1g", "serviceAccount": "sa"},
        "executor": {"instances": 2, "memory": "4g"},
    }
    base.update(spec)
    return {"apiVersion": "sparkoperator.k8s.io/v1beta2", "kind": "SparkApplication",
            "metadata": {"name": "churn-score", "namespace": "ns"}, "spec": base}


def test_submit_args_follow_the_operator_order_and_mapping() -> None:
    label = "spark.kubernetes.{}.label.sparkoperator.k8s.io/{}"
    expected = [
        "--master", "k8s://https://kubernetes.default.svc:443", "--deploy-mode", "cluster", "--name", "churn-score",
        "--conf", "spark.kubernetes.namespace=ns", "--conf", "spark.kubernetes.container.image=img:1",
        "--conf", "spark.kubernetes.submission.waitAppCompletion=false",
        "--conf", "spark.a=1", "--conf", "spark.hadoop.fs.s3a.impl=S3A",
        "--conf", "spark.kubernetes.driver.pod.name=churn-score-driver",
        "--conf", label.format("driver", "app-name") + "=churn-score",
        "--conf", label.format("driver", "launched-by-spark-operator") + "=true",
        "--conf", label.format("driver", "mutated-by-spark-operator") + "=true",
        "--conf", label.format("driver", "submission-id") + "=",
        "--conf", "spark.kubernetes.driver.container.image=img:1",
        "--conf", "spark.driver.cores=1", "--conf", "spark.driver.memory=2g",
        "--conf", "spark.driver.memoryOverhead=1g",
        "--conf", "spark.kubernetes.authenticate.driver.serviceAccountName=sa",
        "--conf", label.format("executor", "app-name") + "=churn-score",
        "--conf", label.format("executor", "launched-by-spark-operator") + "=true",
        "--conf", label.format("executor", "mutated-by-spark-operator") + "=true",
        "--conf", label.format("executor", "submission-id") + "=",
        "--conf", "spark.executor.instances=2", "--conf", "spark.kubernetes.executor.container.image=img:1",
        "--conf", "spark.executor.memory=4g",
        "local:///opt/churn-spark/jobs/score.py", "--as-of", "2024-12-01",
    ]
    assert submit_args(_app()) == expected


def test_deps_env_and_monitoring_translate_like_the_operator() -> None:
    args = submit_args(_app(deps={"packages": ["a:b:1", "c:d:2"], "pyFiles": ["x.zip"]},
                            monitoring={"exposeDriverMetrics": True,
                                        "prometheus": {"jmxExporterJar": "/j.jar", "port": 8090}},
                            driver={"memory": "1g", "javaOptions": "-Dx=1", "envVars": {"A": "b"}}))
    joined = shlex.join(args)
    assert "--packages a:b:1,c:d:2 --py-files x.zip" in joined
    assert "--conf spark.kubernetes.driverEnv.A=b" in joined
    assert "'spark.driver.extraJavaOptions=-Dx=1 -javaagent:/j.jar=8090:/etc/metrics/conf/prometheus.yaml'" in joined
    assert "--conf spark.metrics.conf=/etc/metrics/conf/metrics.properties" in joined
    assert "--conf spark.kubernetes.driver.annotation.prometheus.io/port=8090" in joined
    assert "spark.executor.extraJavaOptions" not in joined  # executor metrics not exposed


def test_local_plan_maps_image_paths_configmap_lakehouse_and_event_log(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    spec = _app(sparkConf={"spark.eventLog.enabled": "true", "spark.eventLog.dir": "s3a://b/ev"},
                arguments=["--config", "/etc/churn-spark/config.yaml", "--as-of", "2024-12-01"],
                monitoring={"exposeDriverMetrics": True, "prometheus": {"jmxExporterJar": "/j.jar"}},
                volumes=[{"name": "cfg", "configMap": {"name": "cm", "items": [{"key": "c", "path": "config.yaml"}]}}])
    spec["spec"]["driver"].update(
        volumeMounts=[{"name": "cfg", "mountPath": "/etc/churn-spark"}],
        env=[{"name": "PLAIN", "value": "yes"},
             {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}])
    app = App("SparkApplication", "churn-score", "ns", {}, spec["spec"])
    plan = local_plan(app, workdir=tmp_path / "w", lakehouse=tmp_path / "lake", master="local[2]",
                      config_maps={"cm": {"c": "lakehouse: s3a://x\n"}}, root=ROOT, driver_memory="1g")
    argv = plan.argv
    assert argv[:4] == ["--master", "local[2]", "--deploy-mode", "client"]
    main_at = argv.index(str(ROOT / "jobs" / "score.py"))
    config = tmp_path / "w" / "configmaps" / "cfg" / "config.yaml"
    lake = str(tmp_path / "lake")
    assert argv[main_at + 1:] == ["--config", str(config), "--as-of", "2024-12-01", "--lakehouse", lake]
    assert config.read_text() == "lakehouse: s3a://x\n"
    confs = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv[:main_at]) if a == "--conf")
    assert confs["spark.eventLog.dir"] == (tmp_path / "w" / "spark-events").as_uri()
    assert confs["spark.driver.memory"] == "1g"
    assert confs["spark.hadoop.fs.s3a.impl"] == "S3A"
    assert "spark.metrics.conf" not in confs and "javaagent" not in confs.get("spark.driver.extraJavaOptions", "")
    assert plan.env["PLAIN"] == "yes" and "AWS_SECRET_ACCESS_KEY" not in plan.env
    assert any("AWS_SECRET_ACCESS_KEY" in c and "not set locally" in c for c in plan.changes)


def test_plain_manifest_resolves_its_configmap_from_the_base_generator() -> None:
    generated = generated_config_maps(ROOT / "k8s" / "base")
    assert generated["churn-spark-config"]["config.yaml"] == (ROOT / "k8s" / "base" / "config.yaml").read_text()
    docs = load_documents(ROOT / "k8s" / "sparkapplications" / "score.yaml")
    assert "churn-spark-config" in resolve_config_maps(docs, ROOT)


def test_date_keywords_resolve_in_utc() -> None:
    today = dt.date(2026, 11, 28)
    assert resolve_date("today", today) == "2026-11-28"
    assert resolve_date("yesterday", dt.date(2026, 3, 1)) == "2026-02-28"
    assert resolve_date("month-start", today) == "2026-11-01"
    assert resolve_date("2024-12-01", today) == "2024-12-01"
    assert resolve_date(None, today) is None


@pytest.mark.parametrize("value", ["2024-13-01", "12/01/2024", "tomorrow", ""])
def test_a_date_that_is_neither_iso_nor_a_keyword_is_one_line_naming_the_option(value: str) -> None:
    with pytest.raises(ChurnSparkError, match=rf"^--as-of '{re.escape(value)}' is not a date: use YYYY-MM-DD, "
                                              "today, yesterday or month-start"):
        resolve_date(value, option="--as-of")


def test_score_with_an_impossible_date_exits_2_with_that_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["score", "--as-of", "2024-13-01"]) == 2  # before any Spark session or lakehouse
    assert capsys.readouterr().err.startswith("error: --as-of '2024-13-01' is not a date")


def test_run_date_env_pins_today_for_the_keywords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHURN_RUN_DATE", "2024-03-01")
    assert resolve_date("month-start") == "2024-03-01"
    assert resolve_date("yesterday") == "2024-02-29"
    assert resolve_date("2023-01-01") == "2023-01-01"
    monkeypatch.setenv("CHURN_RUN_DATE", "March")
    with pytest.raises(ChurnSparkError, match="CHURN_RUN_DATE must be an ISO date"):
        resolve_date("today")


def _nightly() -> Any:
    spec = importlib.util.spec_from_file_location("nightly", ROOT / "jobs" / "nightly.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_nightly_runs_ingest_features_score_for_one_date() -> None:
    stages = _nightly().stages(["--config", "c.yaml", "--as-of", "2024-12-01", "--source", "landing",
                                "--lakehouse", "/l"])
    common = ["--config", "c.yaml", "--lakehouse", "/l"]
    assert stages == [("ingest", [*common, "--once", "--source", "landing"]),
                      ("features", [*common, "--from", "2024-12-01", "--to", "2024-12-01"]),
                      ("score", [*common, "--as-of", "2024-12-01"])]
    month_start = dt.datetime.now(dt.UTC).date().replace(day=1).isoformat()
    assert _nightly().stages([])[2] == ("score", ["--as-of", month_start])


def test_cli_submit_args_prints_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["k8s", "submit-args", str(ROOT / "k8s" / "overlays" / "prod"), "--app", "churn-train"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("spark-submit --master k8s://https://kubernetes.default.svc:443 --deploy-mode cluster")
    assert "--conf spark.kubernetes.namespace=churn-spark-prod" in out
    assert "--conf spark.executor.instances=6" in out
    assert out.endswith("local:///opt/churn-spark/jobs/train.py --config /etc/churn-spark/config.yaml")
    assert main(["k8s", "submit-args", str(ROOT / "k8s" / "overlays" / "prod")]) == 2  # several apps, no --app


def test_select_app_names_the_choices() -> None:
    docs = load_documents(ROOT / "k8s" / "sparkapplications")
    assert select_app(docs, "churn-nightly").kind == "ScheduledSparkApplication"


def test_cli_validate_passes_the_overlays_and_fails_a_bad_manifest(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["k8s", "validate", str(ROOT / "k8s" / "overlays" / "dev"), str(ROOT / "k8s" / "radanalytics")]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "k8s" / "sparkapplications" / "score.yaml").read_text().replace(
        "image: churn-spark:0.1.0", "image: churn-spark:latest"))
    assert main(["k8s", "validate", str(bad)]) == 2
    assert "not pinned" in capsys.readouterr().err
