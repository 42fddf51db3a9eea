"""SparkApplication -> the spark-submit arguments the Kubernetes Spark operator builds for it.

Mirrors kubeflow/spark-operator v2.5 (`internal/controller/sparkapplication/submission.go` and the
Prometheus monitoring set-up that runs before it): the same options in the same order, so
`churn-spark k8s submit-args` shows what the operator will run and the local runner runs the same
thing. Fields the operator applies through its pod webhook instead of spark-submit (env lists,
envFrom, security contexts, ConfigMap volumes) are not arguments; the runner handles env and volumes.
"""

from __future__ import annotations

import copy
from typing import Any

DEFAULT_K8S_MASTER = "k8s://https://kubernetes.default.svc:443"
PROMETHEUS_DEFAULT_PORT = 8090
PROMETHEUS_CONFIG_MOUNT = "/etc/metrics/conf"
LABEL_APP_NAME = "sparkoperator.k8s.io/app-name"
LABEL_LAUNCHED = "sparkoperator.k8s.io/launched-by-spark-operator"
LABEL_MUTATED = "sparkoperator.k8s.io/mutated-by-spark-operator"
LABEL_SUBMISSION = "sparkoperator.k8s.io/submission-id"
VOLUME_TYPES = {"emptyDir": "emptyDir", "hostPath": "hostPath", "nfs": "nfs",
                "persistentVolumeClaim": "persistentVolumeClaim"}


def _conf(key: str, value: Any) -> list[str]:
    if isinstance(value, bool):
        value = str(value).lower()
    return ["--conf", f"{key}={value}"]


def with_monitoring(app: dict[str, Any]) -> dict[str, Any]:
    """A copy of `app` with the operator's Prometheus set-up applied (JMX agent, metrics conf, annotations)."""
    app = copy.deepcopy(app)
    spec, name = app["spec"], app["metadata"]["name"]
    mon = spec.get("monitoring")
    if not mon:
        return app
    prom = mon.get("prometheus")
    port = (prom or {}).get("port", PROMETHEUS_DEFAULT_PORT)
    java = ""
    if prom:
        config = prom.get("configFile") or f"{PROMETHEUS_CONFIG_MOUNT}/prometheus.yaml"
        java = f"-javaagent:{prom['jmxExporterJar']}={port}:{config}"
    conf = spec.setdefault("sparkConf", {})
    conf["spark.metrics.namespace"] = f"{app['metadata'].get('namespace', 'default')}.{name}"
    conf["spark.metrics.conf"] = mon.get("metricsPropertiesFile") or f"{PROMETHEUS_CONFIG_MOUNT}/metrics.properties"
    for role, flag in (("driver", "exposeDriverMetrics"), ("executor", "exposeExecutorMetrics")):
        if not mon.get(flag):
            continue
        pod = spec.setdefault(role, {})
        pod.setdefault("annotations", {}).update({"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
                                                  "prometheus.io/path": "/metrics"})
        if java:
            pod["javaOptions"] = f"{pod['javaOptions']} {java}" if pod.get("javaOptions") else java
    return app


def _deps(spec: dict[str, Any]) -> list[str]:
    deps = spec.get("deps") or {}
    args: list[str] = []
    for field, flag in (("jars", "--jars"), ("packages", "--packages"), ("excludePackages", "--exclude-packages"),
                        ("repositories", "--repositories"), ("pyFiles", "--py-files"), ("files", "--files"),
                        ("archives", "--archives")):
        if deps.get(field):
            args += [flag, ",".join(deps[field])]
    return args


def _volume_mounts(spec: dict[str, Any], role: str) -> list[str]:
    """Mounts of volume types spark-submit itself can create (others are left to the webhook)."""
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    args: list[str] = []
    for mount in (spec.get(role) or {}).get("volumeMounts") or []:
        vol = volumes.get(mount["name"], {})
        vtype = next((t for k, t in VOLUME_TYPES.items() if k in vol), None)
        if vtype is None:
            continue
        prefix = f"spark.kubernetes.{role}.volumes.{vtype}.{mount['name']}"
        args += _conf(f"{prefix}.mount.path", mount["mountPath"])
        if mount.get("subPath"):
            args += _conf(f"{prefix}.mount.subPath", mount["subPath"])
        if mount.get("readOnly"):
            args += _conf(f"{prefix}.mount.readOnly", "true")
        options = {"emptyDir": ("sizeLimit",), "hostPath": ("path", "type"), "nfs": ("path", "server", "readOnly"),
                   "persistentVolumeClaim": ("claimName", "readOnly")}[vtype]
        source = vol[next(k for k, t in VOLUME_TYPES.items() if t == vtype)] or {}
        for opt in options:
            if source.get(opt) not in (None, False, ""):
                args += _conf(f"{prefix}.options.{opt}", source[opt])
    return args


def _pod_confs(app: dict[str, Any], role: str) -> list[str]:
    spec, meta = app["spec"], app["metadata"]
    pod = spec.get(role) or {}
    spark = f"spark.{role}"
    k8s = f"spark.kubernetes.{role}"
    args = _conf(f"{k8s}.label.{LABEL_APP_NAME}", meta["name"]) + _conf(f"{k8s}.label.{LABEL_LAUNCHED}", "true")
    if not pod.get("template"):
        args += _conf(f"{k8s}.label.{LABEL_MUTATED}", "true")
    args += _conf(f"{k8s}.label.{LABEL_SUBMISSION}", app.get("status", {}).get("submissionID", ""))
    if role == "executor" and pod.get("instances") is not None:
        args += _conf("spark.executor.instances", pod["instances"])
    image = pod.get("image") or spec.get("image")
    if image:
        args += _conf(f"{k8s}.container.image", image)
    for field, key in (("cores", f"{spark}.cores"), ("coreRequest", f"{k8s}.request.cores"),
                       ("coreLimit", f"{k8s}.limit.cores"), ("memory", f"{spark}.memory"),
                       ("memoryOverhead", f"{spark}.memoryOverhead"),
                       ("serviceAccount", f"spark.kubernetes.authenticate.{role}.serviceAccountName")):
        if pod.get(field) is not None:
            args += _conf(key, pod[field])
    if role == "driver":
        if pod.get("javaOptions"):
            args += _conf("spark.driver.extraJavaOptions", pod["javaOptions"])
        if pod.get("kubernetesMaster"):
            args += _conf("spark.kubernetes.driver.master", pod["kubernetesMaster"])
    elif pod.get("deleteOnTermination") is not None:
        args += _conf("spark.kubernetes.executor.deleteOnTermination", pod["deleteOnTermination"])
    for key, value in {**(meta.get("labels") or {}), **(pod.get("labels") or {})}.items():
        args += _conf(f"{k8s}.label.{key}", value)
    for key, value in (pod.get("annotations") or {}).items():
        args += _conf(f"{k8s}.annotation.{key}", value)
    if role == "driver":
        for key, value in (pod.get("serviceLabels") or {}).items():
            args += _conf(f"{k8s}.service.label.{key}", value)
        for key, value in (pod.get("serviceAnnotations") or {}).items():
            args += _conf(f"{k8s}.service.annotation.{key}", value)
    for key, ref in (pod.get("envSecretKeyRefs") or {}).items():
        args += _conf(f"{k8s}.secretKeyRef.{key}", f"{ref['name']}:{ref['key']}")
    if role == "executor" and pod.get("javaOptions"):
        args += _conf("spark.executor.extraJavaOptions", pod["javaOptions"])
    return args


def _pod_env_and_secrets(spec: dict[str, Any], role: str) -> list[str]:
    pod = spec.get(role) or {}
    env_key = "spark.kubernetes.driverEnv" if role == "driver" else "spark.executorEnv"
    args: list[str] = []
    for key, value in (pod.get("envVars") or {}).items():
        args += _conf(f"{env_key}.{key}", value)
    for secret in pod.get("secrets") or []:
        args += _conf(f"spark.kubernetes.{role}.secrets.{secret['name']}", secret["path"])
    return args


def submit_args(manifest: dict[str, Any], *, master: str = DEFAULT_K8S_MASTER,
                submission_id: str = "") -> list[str]:
    """The spark-submit arguments (after the program name) the operator runs for `manifest`,
    a SparkApplication object (use `App.as_spark_application()` for a scheduled template)."""
    app = with_monitoring(manifest)
    app.setdefault("status", {})["submissionID"] = submission_id
    spec, meta = app["spec"], app["metadata"]
    namespace = meta.get("namespace", "default")
    args = ["--master", master, "--deploy-mode", spec.get("mode", "cluster")]
    if spec.get("mainClass"):
        args += ["--class", spec["mainClass"]]
    args += ["--name", meta["name"]]
    args += _deps(spec)
    args += _conf("spark.kubernetes.namespace", namespace)
    if spec.get("image"):
        args += _conf("spark.kubernetes.container.image", spec["image"])
    if spec.get("imagePullPolicy"):
        args += _conf("spark.kubernetes.container.image.pullPolicy", spec["imagePullPolicy"])
    if spec.get("imagePullSecrets"):
        args += _conf("spark.kubernetes.container.image.pullSecrets", ",".join(spec["imagePullSecrets"]))
    if spec.get("pythonVersion"):
        args += _conf("spark.kubernetes.pyspark.pythonVersion", spec["pythonVersion"])
    if spec.get("memoryOverheadFactor"):
        args += _conf("spark.kubernetes.memoryOverheadFactor", spec["memoryOverheadFactor"])
    args += _conf("spark.kubernetes.submission.waitAppCompletion", "false")
    for key, value in (spec.get("sparkConf") or {}).items():
        if key != "spark.kubernetes.driver.pod.name":
            args += _conf(key, value)
    for key, value in (spec.get("hadoopConf") or {}).items():
        args += _conf(f"spark.hadoop.{key}", value)
    driver_pod = (spec.get("driver") or {}).get("podName") or f"{meta['name']}-driver"
    args += _conf("spark.kubernetes.driver.pod.name", driver_pod)
    args += _pod_confs(app, "driver") + _pod_env_and_secrets(spec, "driver") + _volume_mounts(spec, "driver")
    args += _pod_confs(app, "executor") + _pod_env_and_secrets(spec, "executor") + _volume_mounts(spec, "executor")
    for key, value in (spec.get("nodeSelector") or {}).items():
        args += _conf(f"spark.kubernetes.node.selector.{key}", value)
    args += _dynamic_allocation(spec)
    if spec.get("proxyUser"):
        args += ["--proxy-user", spec["proxyUser"]]
    args.append(spec["mainApplicationFile"])
    args += [str(a) for a in spec.get("arguments") or []]
    return args


def _dynamic_allocation(spec: dict[str, Any]) -> list[str]:
    dyn = spec.get("dynamicAllocation") or {}
    if not dyn.get("enabled"):
        return []
    args = _conf("spark.dynamicAllocation.enabled", "true")
    for field in ("initialExecutors", "minExecutors", "maxExecutors"):
        if dyn.get(field) is not None:
            args += _conf(f"spark.dynamicAllocation.{field}", dyn[field])
    args += _conf("spark.dynamicAllocation.shuffleTracking.enabled", dyn.get("shuffleTrackingEnabled", True))
    if dyn.get("shuffleTrackingTimeout") is not None:
        args += _conf("spark.dynamicAllocation.shuffleTracking.timeout", dyn["shuffleTrackingTimeout"])
    return args
