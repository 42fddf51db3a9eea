"""Checks a manifest must pass before it reaches a cluster, each returning a list of problems.

- `crd_errors`: the Spark operator's CRD `openAPIV3Schema` (kubeflow/spark-operator v2.5.2), strict:
  an unknown field is an error (the API server would silently prune it, hiding a typo).
- `core_errors`: Kubernetes' own schemas for core objects (the `kubernetes-validate` package ships
  them, so this works offline).
- `admission_errors`: what the operator's admission webhook rejects (DNS-1035 names, denied sparkConf
  keys, namespace conf) plus the length budget of the names the operator derives.
- `security_errors`: non-root, no privilege escalation, capabilities dropped, seccomp, requests and
  limits, pinned image tags, no plaintext secrets; for a Deployment's containers (the service) also a
  read-only root filesystem and readiness/liveness probes (`workload_security_errors`).
- `radanalytics_errors`: the radanalytics operator's JSON schemas, read the relaxed way they are meant.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from churn_spark.errors import EnvironmentProblem

K8S_VERSION = "1.30.0"
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_NAME = 63
SCHEDULED_RUN_SUFFIX = len("-") + 19  # runs are named <name>-<UnixNano>
DRIVER_POD_SUFFIX = len("-driver")
DENIED_SPARK_CONF = {
    "spark.master", "spark.kubernetes.driver.master",
    "spark.kubernetes.container.image", "spark.kubernetes.driver.container.image",
    "spark.kubernetes.executor.container.image",
    "spark.kubernetes.authenticate.driver.serviceAccountName",
    "spark.kubernetes.authenticate.executor.serviceAccountName",
    "spark.kubernetes.authenticate.oauthTokenFile", "spark.kubernetes.authenticate.oauthToken",
    "spark.kubernetes.authenticate.driver.oauthTokenFile", "spark.kubernetes.authenticate.driver.oauthToken",
    "spark.kubernetes.authenticate.executor.oauthTokenFile", "spark.kubernetes.authenticate.executor.oauthToken",
}
SECRET_WORDS = re.compile(r"(secret|password|passwd|token|credential|access[._-]?key|private[._-]?key|api[._-]?key)",
                          re.IGNORECASE)
CRD_DIR = Path("k8s", "crds")
CORE_KINDS = {("v1", "ServiceAccount"), ("v1", "ConfigMap"), ("rbac.authorization.k8s.io/v1", "Role"),
              ("rbac.authorization.k8s.io/v1", "RoleBinding"), ("v1", "Secret"), ("v1", "Namespace"),
              # the REST service (k8s/service)
              ("apps/v1", "Deployment"), ("v1", "Service"), ("autoscaling/v2", "HorizontalPodAutoscaler"),
              ("policy/v1", "PodDisruptionBudget"), ("networking.k8s.io/v1", "NetworkPolicy")}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


def crd_folder() -> Path:
    """$CHURN_K8S_CRDS if set, else the checkout's k8s/crds (see its SOURCE.md), else ./k8s/crds (a
    non-editable install run from a checkout)."""
    if os.environ.get("CHURN_K8S_CRDS"):
        candidates = [Path(os.environ["CHURN_K8S_CRDS"])]
    else:
        from churn_spark.k8s.runner import repo_root

        candidates = list(dict.fromkeys([repo_root() / CRD_DIR, Path.cwd().resolve() / CRD_DIR]))
    for folder in candidates:
        if any(folder.glob("*.yaml")):
            return folder
    raise EnvironmentProblem(f"no CRD schemas (*.yaml) in {' or '.join(map(str, candidates))}; run from a "
                             f"churn-spark checkout or set CHURN_K8S_CRDS to a folder laid out like its {CRD_DIR}")


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _strict(schema: Any) -> Any:
    """Reject unknown fields: objects with declared properties get additionalProperties: false."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> strict JSON schema of the whole object, from every CRD file in the folder."""
    schemas = {}
    for path in sorted(crd_folder().glob("*.yaml")):
        crd = yaml.load(path.read_text(), Loader=_LOADER)  # libyaml when present: the CRDs are ~1 MB each
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
            schema.setdefault("properties", {})["metadata"] = {"type": "object"}
            schemas[(f"{group}/{version['name']}", kind)] = _strict(schema)
    return schemas


def _errors(validator: jsonschema.protocols.Validator, doc: Any, label: str) -> list[str]:
    return [f"{label}: {'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))]


def _label(doc: dict[str, Any]) -> str:
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


@functools.cache
def _crd_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator | None:
    schema = crd_schemas().get((api_version, kind))
    return None if schema is None else jsonschema.Draft7Validator(schema)


def crd_errors(doc: dict[str, Any]) -> list[str]:
    validator = _crd_validator(doc.get("apiVersion", ""), doc.get("kind", ""))
    if validator is None:
        return [f"{_label(doc)}: no CRD schema for {doc.get('apiVersion')} {doc.get('kind')}"]
    return _errors(validator, doc, _label(doc))


def core_errors(doc: dict[str, Any], version: str = K8S_VERSION) -> list[str]:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{_label(doc)}: {str(exc).splitlines()[0]}"]
    return []


def _app_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc.get("kind") == "ScheduledSparkApplication":
        return [doc.get("spec", {}).get("template", {})]
    if doc.get("kind") == "SparkApplication" and str(doc.get("apiVersion", "")).startswith("sparkoperator.k8s.io/"):
        return [doc.get("spec", {})]
    return []


def admission_errors(doc: dict[str, Any]) -> list[str]:
    meta = doc.get("metadata") or {}
    name, label = str(meta.get("name", "")), _label(doc)
    problems = []
    if not DNS1035.match(name) or len(name) > MAX_NAME:
        problems.append(f"{label}: name {name!r} is not a DNS-1035 label of at most {MAX_NAME} characters")
    budget = MAX_NAME - DRIVER_POD_SUFFIX - (SCHEDULED_RUN_SUFFIX if doc.get("kind") == "ScheduledSparkApplication"
                                             else 0)
    if _app_specs(doc) and len(name) > budget:
        problems.append(f"{label}: name longer than {budget}: derived run/driver-pod names exceed {MAX_NAME}")
    namespace = meta.get("namespace")
    for spec in _app_specs(doc):
        conf = spec.get("sparkConf") or {}
        problems += [f"{label}: sparkConf {k} is set by the operator (denied)" for k in conf if k in DENIED_SPARK_CONF]
        if "spark.kubernetes.namespace" in conf and conf["spark.kubernetes.namespace"] != namespace:
            problems.append(f"{label}: sparkConf spark.kubernetes.namespace differs from namespace {namespace!r}")
        if spec.get("nodeSelector") and any((spec.get(r) or {}).get("nodeSelector") for r in ("driver", "executor")):
            problems.append(f"{label}: nodeSelector on both the application and driver/executor")
    return problems


def _image_problems(image: str | None, where: str) -> list[str]:
    if not image:
        return [f"{where}: no image"]
    tag = image.rsplit("@", 1)[0].rsplit("/", 1)[-1].partition(":")[2]
    if "@sha256:" not in image and (not tag or tag == "latest"):
        return [f"{where}: image {image!r} is not pinned (no tag, or 'latest')"]
    return []


def _pod_security(pod: dict[str, Any], where: str) -> list[str]:
    sc, psc = pod.get("securityContext") or {}, pod.get("podSecurityContext") or {}
    problems = []
    if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
        problems.append(f"{where}: runAsNonRoot not set")
    if any((c.get("runAsUser") == 0) for c in (sc, psc)):
        problems.append(f"{where}: runs as uid 0")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}: allowPrivilegeEscalation must be false")
    if sc.get("privileged"):
        problems.append(f"{where}: privileged")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        problems.append(f"{where}: capabilities not dropped (drop: [ALL])")
    seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        problems.append(f"{where}: seccompProfile must be RuntimeDefault")
    for field in ("memory", "memoryOverhead", "coreLimit"):
        if not pod.get(field):
            problems.append(f"{where}: {field} not set (requests and limits)")
    if pod.get("cores") is None and not pod.get("coreRequest"):
        problems.append(f"{where}: no CPU request (cores/coreRequest)")
    for var in pod.get("env") or []:
        if SECRET_WORDS.search(var.get("name", "")) and "value" in var:
            problems.append(f"{where}: env {var['name']} has a literal value; use valueFrom.secretKeyRef")
    for key, value in (pod.get("envVars") or {}).items():
        if SECRET_WORDS.search(key) and value:
            problems.append(f"{where}: envVars {key} is a literal secret")
    return problems


def _container_security(container: dict[str, Any], pod_sc: dict[str, Any], where: str) -> list[str]:
    """A plain pod's container (the service): the Spark checks' rules, plus a read-only root filesystem,
    requests and limits in `resources`, and readiness and liveness probes."""
    sc, problems = container.get("securityContext") or {}, _image_problems(container.get("image"), where)
    if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
        problems.append(f"{where}: runAsNonRoot not set")
    if any(c.get("runAsUser") == 0 for c in (sc, pod_sc)):
        problems.append(f"{where}: runs as uid 0")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}: allowPrivilegeEscalation must be false")
    if sc.get("privileged"):
        problems.append(f"{where}: privileged")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{where}: readOnlyRootFilesystem must be true")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        problems.append(f"{where}: capabilities not dropped (drop: [ALL])")
    if (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault",
                                                                                            "Localhost"):
        problems.append(f"{where}: seccompProfile must be RuntimeDefault")
    resources = container.get("resources") or {}
    problems += [f"{where}: resources.{kind}.{r} not set (requests and limits)" for kind in ("requests", "limits")
                 for r in ("cpu", "memory") if not (resources.get(kind) or {}).get(r)]
    problems += [f"{where}: no {probe}" for probe in ("readinessProbe", "livenessProbe") if not container.get(probe)]
    problems += [f"{where}: env {var['name']} has a literal value; use valueFrom.secretKeyRef"
                 for var in container.get("env") or [] if SECRET_WORDS.search(var.get("name", "")) and "value" in var]
    return problems


def workload_security_errors(doc: dict[str, Any]) -> list[str]:
    """Every container of a Deployment-like object's pod template (none for other kinds)."""
    if doc.get("kind") not in WORKLOAD_KINDS:
        return []
    pod = ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}
    containers = [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]
    problems = [] if containers else [f"{_label(doc)}: no containers"]
    for c in containers:
        problems += _container_security(c, pod.get("securityContext") or {}, f"{_label(doc)} {c.get('name')}")
    return problems


def security_errors(doc: dict[str, Any]) -> list[str]:
    label = _label(doc)
    problems = workload_security_errors(doc)
    for spec in _app_specs(doc):
        problems += _image_problems(spec.get("image"), label)
        for role in ("driver", "executor"):
            problems += _pod_security(spec.get(role) or {}, f"{label} {role}")
            if (spec.get(role) or {}).get("image"):
                problems += _image_problems(spec[role]["image"], f"{label} {role}")
        for section in ("sparkConf", "hadoopConf"):
            for key, value in (spec.get(section) or {}).items():
                if SECRET_WORDS.search(key) and "provider" not in key and value:
                    problems.append(f"{label}: {section} {key} holds a literal secret")
        if not (spec.get("driver") or {}).get("serviceAccount"):
            problems.append(f"{label}: driver has no dedicated serviceAccount")
    if doc.get("kind") == "Secret" and (doc.get("data") or doc.get("stringData")):
        problems.append(f"{label}: Secret with data committed to the manifests")
    if doc.get("kind") == "ConfigMap":
        for key, value in (doc.get("data") or {}).items():
            for line in str(value).splitlines():
                k, sep, v = line.partition(":")
                named_env = k.strip().endswith("_env")  # names a variable (serve.auth_token_env), holds no secret
                if sep and SECRET_WORDS.search(k) and not named_env and v.strip() not in ("", "null", "~"):
                    problems.append(f"{label}: {key} line {k.strip()!r} looks like a plaintext secret")
    return problems


def _relaxed(schema: Any) -> Any:
    """The radanalytics schemas are jsonschema2pojo input: honour `existingJavaType` over `type`, read
    numeric strings in bounds as numbers and drop null keywords, then validate as draft-07."""
    if isinstance(schema, list):
        return [_relaxed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _relaxed(v) for k, v in schema.items() if v is not None}
    if "existingJavaType" in out and "properties" not in out:
        java = out["existingJavaType"]
        out.pop("pattern", None)
        out["type"] = "object" if java.startswith("java.util.Map") else out.get("type")
    for bound in ("minimum", "maximum"):
        if isinstance(out.get(bound), str):
            out[bound] = float(out[bound])
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


RADANALYTICS_SCHEMAS = {"SparkApplication": "sparkApplication.json", "SparkCluster": "sparkCluster.json"}


def radanalytics_errors(doc: dict[str, Any]) -> list[str]:
    """Validate a radanalytics.io/v1 resource's spec against the operator's JSON schema."""
    file = RADANALYTICS_SCHEMAS.get(doc.get("kind", ""))
    if doc.get("apiVersion") != "radanalytics.io/v1" or file is None:
        return [f"{_label(doc)}: not a radanalytics.io/v1 SparkApplication or SparkCluster"]
    path = crd_folder() / "radanalytics" / file
    if not path.is_file():
        raise EnvironmentProblem(f"radanalytics schema not found: {path}")
    schema = _relaxed(json.loads(path.read_text()))
    schema.pop("$schema", None)
    jsonschema.Draft7Validator.check_schema(schema)
    problems = _errors(jsonschema.Draft7Validator(schema), doc.get("spec") or {}, _label(doc))
    name = str((doc.get("metadata") or {}).get("name", ""))
    if not DNS1035.match(name) or len(name) > MAX_NAME:
        problems.append(f"{_label(doc)}: name {name!r} is not a DNS-1035 label")
    return problems


def all_errors(doc: dict[str, Any]) -> list[str]:
    """Every applicable check for one object."""
    api, kind = doc.get("apiVersion", ""), doc.get("kind", "")
    if api == "radanalytics.io/v1":
        return radanalytics_errors(doc)
    problems = admission_errors(doc) + security_errors(doc)
    if api.startswith("sparkoperator.k8s.io/"):
        problems += crd_errors(doc)
    elif (api, kind) in CORE_KINDS:
        problems += core_errors(doc)
    else:
        problems.append(f"{_label(doc)}: unexpected kind {api} {kind}")
    return problems
