"""Every manifest and every rendered overlay passes the operator's CRD schema, Kubernetes' core schemas,
the operator's admission rules and the security checks; and each check catches what it is for."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import re
import tomllib
from pathlib import Path
from typing import Any

import pyspark
import pytest
import yaml

from churn_spark.config import load_settings
from churn_spark.errors import EnvironmentProblem
from churn_spark.k8s.manifests import load_documents, spark_applications
from churn_spark.k8s.validate import (
    admission_errors,
    all_errors,
    core_errors,
    crd_errors,
    crd_folder,
    radanalytics_errors,
    security_errors,
)

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
MANIFEST_FILES = sorted(p for p in (K8S / "sparkapplications").glob("*.yaml") if p.stem != "kustomization") + [
    K8S / "overlays" / "dev" / "generate.yaml"] + sorted(
    p for p in (K8S / "service").glob("*.yaml") if p.stem != "kustomization")
SERVICE_KINDS = {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"}
OVERLAYS = {"base": K8S / "base", "dev": K8S / "overlays" / "dev", "prod": K8S / "overlays" / "prod"}
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
JOB_APPS = {"churn-ingest": "ingest_events.py", "churn-features": "build_features.py",
            "churn-train": "train.py", "churn-score": "score.py", "churn-nightly": "nightly.py",
            "churn-uplift-train": "uplift_train.py"}
NOT_ON_RADANALYTICS = {"churn-uplift-train"}  # k8s/radanalytics mirrors the four pipeline jobs, not uplift


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Each overlay rendered once with the real kustomize."""
    return {name: load_documents(path) for name, path in OVERLAYS.items()}


def _apps_file(name: str) -> dict[str, Any]:
    return yaml.safe_load((K8S / "sparkapplications" / name).read_text())


@pytest.mark.parametrize("path", MANIFEST_FILES, ids=lambda p: p.name)
def test_each_manifest_file_passes_every_check(path: Path) -> None:
    docs = load_documents(path)
    assert docs
    assert [e for d in docs for e in all_errors(d)] == []


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_each_rendered_overlay_passes_every_check(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = rendered[overlay]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds.count("SparkApplication") == (6 if overlay == "dev" else 5)
    assert {"ConfigMap", "Role", "RoleBinding", "ServiceAccount", "ScheduledSparkApplication"} <= set(kinds)
    assert [e for d in docs for e in all_errors(d)] == []


def test_radanalytics_manifests_pass_their_json_schemas() -> None:
    docs = load_documents(K8S / "radanalytics")
    kinds = sorted(d["kind"] for d in docs if d["apiVersion"] == "radanalytics.io/v1")
    assert kinds == ["SparkApplication"] * 4 + ["SparkCluster"]
    assert [e for d in docs for e in all_errors(d)] == []
    args = {d["metadata"]["name"]: d["spec"]["arguments"] for d in docs if d["kind"] == "SparkApplication"}
    for app in spark_applications(load_documents(K8S / "sparkapplications")):
        if app.kind == "SparkApplication" and app.name not in NOT_ON_RADANALYTICS:
            assert args[app.name].endswith(" ".join(app.spec["arguments"][2:])), app.name


@pytest.mark.parametrize("name", list(JOB_APPS))
def test_application_shape(name: str) -> None:
    apps = {a.name: a for a in spark_applications(load_documents(K8S / "sparkapplications"))}
    spec = apps[name].spec
    assert (spec["type"], spec["mode"], spec["sparkVersion"]) == ("Python", "cluster", pyspark.__version__)
    assert spec["image"] == f"churn-spark:{VERSION}"
    assert spec["mainApplicationFile"] == f"local:///opt/churn-spark/jobs/{JOB_APPS[name]}"
    assert (ROOT / "jobs" / JOB_APPS[name]).is_file()
    assert spec["arguments"][:2] == ["--config", "/etc/churn-spark/config.yaml"]
    mount = spec["driver"]["volumeMounts"][0]
    volume = {v["name"]: v for v in spec["volumes"]}[mount["name"]]
    assert (mount["mountPath"], volume["configMap"]["name"]) == ("/etc/churn-spark", "churn-spark-config")
    assert spec["restartPolicy"]["type"] == "OnFailure"
    assert 0 < spec["restartPolicy"]["onFailureRetries"] <= 3
    assert 0 < spec["restartPolicy"]["onSubmissionFailureRetries"] <= 5
    assert spec["timeToLiveSeconds"] > 0
    assert spec["monitoring"]["prometheus"]["jmxExporterJar"].startswith("/opt/churn-spark/monitoring/")
    assert spec["sparkConf"]["spark.eventLog.enabled"] == "true"
    assert spec["sparkConf"]["spark.eventLog.dir"].startswith("s3a://")
    assert spec["sparkConf"]["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    assert spec["hadoopConf"]["fs.s3a.impl"] == "org.apache.hadoop.fs.s3a.S3AFileSystem"
    for role in ("driver", "executor"):
        env = {e["name"]: e for e in spec[role]["env"]}
        assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "churn-spark-s3"
        assert "value" not in env["AWS_SECRET_ACCESS_KEY"]


def test_nightly_schedule() -> None:
    doc = _apps_file("nightly.yaml")
    spec = doc["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert (spec["successfulRunHistoryLimit"], spec["failedRunHistoryLimit"]) == (3, 5)
    assert len(spec["schedule"].split()) == 5
    assert len(doc["metadata"]["name"]) <= 63 - len("-driver") - 20
    assert spec["template"]["arguments"][2:4] == ["--as-of", "month-start"]


def test_driver_service_account_is_bound_to_the_role(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for overlay, docs in rendered.items():
        by_kind = {(d["kind"], d["metadata"]["name"]): d for d in docs}
        namespace = by_kind[("ServiceAccount", "churn-spark")]["metadata"]["namespace"]
        binding = by_kind[("RoleBinding", "churn-spark-driver")]
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "churn-spark", "namespace": namespace}]
        assert binding["roleRef"]["name"] == "churn-spark-driver"
        rules = {r: set(rule["verbs"]) for rule in by_kind[("Role", "churn-spark-driver")]["rules"]
                 for r in rule["resources"]}
        assert set(rules) == {"pods", "services", "configmaps", "persistentvolumeclaims"}
        assert {"create", "get", "list", "watch", "delete"} <= rules["pods"]
        assert not any("*" in v for v in rules.values()), overlay
        for app in spark_applications(docs):
            assert app.spec["driver"]["serviceAccount"] == "churn-spark"
            assert app.namespace == namespace


def test_overlays_set_namespace_image_executors_lakehouse_and_config(
        rendered: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    expected = {"base": ("churn-spark", "churn-spark", {2, 3}, "s3a://churn-lakehouse/"),
                "dev": ("churn-spark-dev", "registry.example.com/data/churn-spark", {1}, "s3a://churn-lakehouse-dev/"),
                "prod": ("churn-spark-prod", "registry.example.com/data/churn-spark", {6},
                         "s3a://churn-lakehouse-prod/")}
    for overlay, (namespace, image, executors, lake) in expected.items():
        docs = rendered[overlay]
        assert {d["metadata"]["namespace"] for d in docs} == {namespace}
        config_map = next(d for d in docs if d["kind"] == "ConfigMap")
        assert re.fullmatch(r"churn-spark-config-[a-z0-9]{10}", config_map["metadata"]["name"])
        apps = spark_applications(docs)
        assert {a.spec["image"] for a in apps} == {f"{image}:{VERSION}"}
        assert {a.spec["executor"]["instances"] for a in apps} == executors
        assert {a.spec["sparkConf"]["spark.eventLog.dir"] for a in apps} == {f"{lake}spark-events"}
        assert {a.spec["volumes"][0]["configMap"]["name"] for a in apps} == {config_map["metadata"]["name"]}
        config = tmp_path / f"{overlay}.yaml"
        config.write_text(config_map["data"]["config.yaml"])
        settings = load_settings(config)
        assert settings.lakehouse.startswith(lake)


def test_cluster_config_covers_the_manifest_snapshot_range() -> None:
    settings = load_settings(K8S / "base" / "config.yaml")
    args = _apps_file("features.yaml")["spec"]["arguments"]
    start, end = (dt.date.fromisoformat(args[args.index(f) + 1]) for f in ("--from", "--to"))
    assert (settings.churn.snapshots.start, settings.churn.snapshots.end) == (start, end)


# --- the checks themselves catch what they are for -------------------------------------------------


def _ingest() -> dict[str, Any]:
    return copy.deepcopy(_apps_file("ingest.yaml"))


def test_crd_check_catches_a_misspelt_field_and_a_wrong_type() -> None:
    doc = _ingest()
    doc["spec"]["driver"]["memoryOverHead"] = "1g"
    doc["spec"]["executor"]["instances"] = "two"
    errors = crd_errors(doc)
    assert any("memoryOverHead" in e for e in errors)
    assert any("spec.executor.instances" in e for e in errors)
    doc = _ingest()
    doc["spec"]["mode"] = "batch"
    assert any("spec.mode" in e for e in crd_errors(doc))


def test_core_check_catches_a_bad_rolebinding() -> None:
    binding = load_documents(K8S / "sparkapplications" / "rbac.yaml")[2]
    assert core_errors(binding) == []
    del binding["roleRef"]
    assert core_errors(binding)


def test_admission_check_catches_names_and_denied_conf() -> None:
    doc = _ingest()
    doc["metadata"]["name"] = "Churn_Ingest"
    doc["spec"]["sparkConf"]["spark.kubernetes.container.image"] = "other:1"
    doc["spec"]["sparkConf"]["spark.kubernetes.authenticate.driver.serviceAccountName"] = "default"
    doc["spec"]["sparkConf"]["spark.kubernetes.namespace"] = "elsewhere"
    errors = " | ".join(admission_errors(doc))
    for needle in ("DNS-1035", "spark.kubernetes.container.image", "serviceAccountName", "spark.kubernetes.namespace"):
        assert needle in errors
    nightly = _apps_file("nightly.yaml")
    nightly["metadata"]["name"] = "churn-nightly-ingest-features-and-score"  # 38 > 63 - 7 - 20
    assert admission_errors(nightly)


def test_security_check_catches_root_latest_plaintext_secrets_and_missing_limits() -> None:
    doc = _ingest()
    doc["spec"]["image"] = "churn-spark:latest"
    doc["spec"]["driver"]["securityContext"]["runAsUser"] = 0
    doc["spec"]["driver"]["securityContext"]["allowPrivilegeEscalation"] = True
    doc["spec"]["executor"]["securityContext"]["capabilities"] = {"drop": []}
    doc["spec"]["executor"]["env"].append({"name": "AWS_SECRET_ACCESS_KEY", "value": "abc"})
    doc["spec"]["hadoopConf"]["fs.s3a.secret.key"] = "abc"
    del doc["spec"]["executor"]["coreLimit"]
    errors = " | ".join(security_errors(doc))
    for needle in ("latest", "uid 0", "allowPrivilegeEscalation", "capabilities", "literal value",
                   "fs.s3a.secret.key", "coreLimit"):
        assert needle in errors, needle
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                  "data": {"config.yaml": "kafka:\n  sasl_password: hunter2\n"}}
    assert security_errors(config_map)


def test_the_service_is_deployed_in_every_overlay(rendered: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    images = {"base": "churn-spark-serve", "dev": "registry.example.com/data/churn-spark-serve",
              "prod": "registry.example.com/data/churn-spark-serve"}
    for overlay, docs in rendered.items():
        service = {d["kind"]: d for d in docs if d["metadata"]["name"] == "churn-serve"}
        assert set(service) >= SERVICE_KINDS, overlay
        pod = service["Deployment"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["image"] == f"{images[overlay]}:{VERSION}"
        assert container["args"][container["args"].index("serve"):] == ["serve", "--host", "0.0.0.0", "--port", "8080"]
        assert (container["readinessProbe"]["httpGet"]["path"], container["livenessProbe"]["httpGet"]["path"]) == (
            "/readyz", "/healthz")
        assert container["securityContext"]["readOnlyRootFilesystem"] is True and pod["securityContext"]["runAsNonRoot"]
        config_map = next(d for d in docs if d["kind"] == "ConfigMap")
        assert pod["volumes"][0]["configMap"]["name"] == config_map["metadata"]["name"]  # the hashed name
        config = tmp_path / f"{overlay}.yaml"
        config.write_text(config_map["data"]["config.yaml"])
        token_env = load_settings(config).serve.auth_token_env
        token = next(e for e in container["env"] if e["name"] == token_env)  # the config names the Secret's variable
        assert token["valueFrom"]["secretKeyRef"] == {"name": "churn-serve-token", "key": "token"}
        selector = service["Deployment"]["spec"]["selector"]["matchLabels"]
        for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
            spec = service[kind]["spec"]
            assert (spec.get("selector", {}).get("matchLabels") or spec.get("selector") or
                    spec["podSelector"]["matchLabels"]) == selector, kind
        assert service["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == "churn-serve"


def test_workload_check_catches_root_a_writable_root_missing_limits_probes_and_a_literal_token() -> None:
    doc = yaml.safe_load((K8S / "service" / "deployment.yaml").read_text())
    assert security_errors(doc) == []
    pod = doc["spec"]["template"]["spec"]
    container = pod["containers"][0]
    container["image"] = "churn-spark-serve:latest"
    container["securityContext"].update(readOnlyRootFilesystem=False, runAsUser=0)
    del container["resources"]["limits"]["memory"]
    del container["readinessProbe"]
    container["env"].append({"name": "CHURN_SERVE_TOKEN_COPY", "value": "s3cret"})
    errors = " | ".join(security_errors(doc))
    for needle in ("latest", "uid 0", "readOnlyRootFilesystem", "resources.limits.memory", "no readinessProbe",
                   "CHURN_SERVE_TOKEN_COPY has a literal value"):
        assert needle in errors, needle
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                  "data": {"config.yaml": "serve:\n  auth_token_env: CHURN_SERVE_TOKEN\n"}}
    assert security_errors(config_map) == []  # names the variable; the value is in a Secret
    config_map["data"]["config.yaml"] = "serve:\n  auth_token: s3cret\n"
    assert security_errors(config_map)


def test_radanalytics_check_catches_a_bad_enum_and_unknown_field() -> None:
    doc = load_documents(K8S / "radanalytics" / "ingest.yaml")[0]
    doc["spec"]["mode"] = "batch"
    doc["spec"]["sparkConf"] = {"a": "b"}
    errors = " | ".join(radanalytics_errors(doc))
    assert "mode" in errors and "sparkConf" in errors


# --- the CRD schemas ship with the repository ----------------------------------------------------


def test_crd_folder_is_the_in_repo_copy_and_the_env_var_overrides_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHURN_K8S_CRDS", raising=False)
    assert crd_folder() == ROOT / "k8s" / "crds"
    (tmp_path / "x.yaml").write_text("{}")
    monkeypatch.setenv("CHURN_K8S_CRDS", str(tmp_path))
    assert crd_folder() == tmp_path
    monkeypatch.setenv("CHURN_K8S_CRDS", str(tmp_path / "missing"))
    with pytest.raises(EnvironmentProblem, match="CHURN_K8S_CRDS") as err:
        crd_folder()
    assert "\n" not in str(err.value) and str(tmp_path / "missing") in str(err.value)


def test_crd_files_are_the_upstream_blobs_named_in_source_md() -> None:
    """Byte-identical to the releases SOURCE.md names: each file's git blob id is the one listed there."""
    folder = ROOT / "k8s" / "crds"
    listed = dict(re.findall(r"^\| `([^`]+)` \| .* \| `([0-9a-f]{40})` \|$", (folder / "SOURCE.md").read_text(),
                             re.MULTILINE))
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.suffix in (".yaml", ".json"))
    assert sorted(listed) == files
    for name, blob in listed.items():
        data = (folder / name).read_bytes()
        assert hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() == blob, name
