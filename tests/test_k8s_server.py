"""The manifests against a real Kubernetes API server (etcd + kube-apiserver v1.37.2 built from the Go module proxy,
tests/k8s_server.py), with the Spark operator's CRDs from k8s/crds installed: strict server-side dry-runs of every
rendered overlay and every manifest file, a real apply read back field by field, what the ServiceAccounts may do,
and which broken objects the API server rejects versus which only `churn-spark k8s validate` does
(docs/kubernetes-server.md has the table)."""

from __future__ import annotations

import copy
import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_server import k8s_api  # noqa: F401 -- the session's API server fixture

from churn_spark.k8s.manifests import parse_documents, render_kustomization
from churn_spark.k8s.testenv import ETCD_VERSION, KUBERNETES_VERSION, ControlPlane, staging_modules, wrapper_go_mod
from churn_spark.k8s.validate import all_errors

pytestmark = pytest.mark.k8s_server

K8S = Path(__file__).resolve().parents[1] / "k8s"
CRDS = sorted((K8S / "crds").glob("sparkoperator.k8s.io_*.yaml"))
CRD_NAMES = ("sparkapplications.sparkoperator.k8s.io", "scheduledsparkapplications.sparkoperator.k8s.io")
OVERLAYS = {"dev": "churn-spark-dev", "prod": "churn-spark-prod"}
PLAIN_NAMESPACE = "churn-spark"  # the namespace the plain files in k8s/sparkapplications and k8s/service name
CHECKS_NAMESPACE = "churn-spark-checks"  # empty: the broken objects are dry-run creates, never updates
MANIFEST_FILES = sorted(f for folder in ("sparkapplications", "service") for f in (K8S / folder).glob("*.yaml")
                        if f.name != "kustomization.yaml")
FIELD_MANAGER = "--field-manager=churn-spark-tests"
DRY_RUN = ("apply", "--server-side", "--dry-run=server", "--validate=strict", FIELD_MANAGER, "-f", "-")
APPLY = ("apply", "--server-side", "--validate=strict", FIELD_MANAGER, "-f", "-")


def _ok(proc: Any) -> str:
    assert proc.returncode == 0, f"kubectl exited {proc.returncode}: {proc.stderr.strip()[-2000:]}"
    return str(proc.stdout)


def _yaml(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


def _established(crd: dict[str, Any]) -> bool:
    conditions = crd.get("status", {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


def _wait_established(api: ControlPlane, timeout: float = 60) -> None:
    """Until both CRDs are served (`kubectl wait` fails outright while a new CRD has no conditions yet)."""
    deadline = time.monotonic() + timeout
    while True:
        crds = json.loads(_ok(api.kubectl("get", *(f"crd/{n}" for n in CRD_NAMES), "-o", "json")))["items"]
        if all(_established(crd) for crd in crds):
            return
        assert time.monotonic() < deadline, "the operator's CRDs were not established in time"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def api(k8s_api: ControlPlane) -> ControlPlane:  # noqa: F811 -- the imported fixture
    """The API server with the operator's CRDs installed (established) and the manifests' namespaces."""
    _ok(k8s_api.kubectl("apply", "--server-side", FIELD_MANAGER, *(f"--filename={crd}" for crd in CRDS)))
    _wait_established(k8s_api)
    namespaces = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
                  for name in (PLAIN_NAMESPACE, CHECKS_NAMESPACE, *OVERLAYS.values())]
    _ok(k8s_api.kubectl(*APPLY, stdin=_yaml(namespaces)))
    return k8s_api


@pytest.fixture(scope="module")
def rendered(api: ControlPlane) -> dict[str, str]:
    """Each overlay as `kubectl apply -k` sends it: rendered by kubectl's own kustomize."""
    return {name: _ok(api.kubectl("kustomize", str(K8S / "overlays" / name))) for name in OVERLAYS}


def _read_back(api: ControlPlane, text: str) -> list[dict[str, Any]]:
    """The objects of `text` as the server stores them, in the same order."""
    got = json.loads(_ok(api.kubectl("get", "-f", "-", "-o", "json", stdin=text)))
    return list(got["items"]) if got.get("kind") == "List" else [got]


@pytest.fixture(scope="module")
def applied(api: ControlPlane, rendered: dict[str, str]) -> dict[str, list[tuple[dict[str, Any], dict[str, Any]]]]:
    """Both overlays and the plain files applied for real: (sent, read back) per object."""
    texts = {**rendered, "plain": "\n---\n".join(f.read_text() for f in MANIFEST_FILES)}
    out = {}
    for name, text in texts.items():
        _ok(api.kubectl(*APPLY, stdin=text))
        sent = parse_documents(text)
        read = _read_back(api, text)
        assert len(read) == len(sent)
        out[name] = list(zip(sent, read, strict=True))
    return out


def differences(sent: Any, read: Any, path: str = "") -> list[str]:
    """Every field of `sent` that `read` lacks or holds with another value (fields the server adds are fine)."""
    if isinstance(sent, dict):
        if not isinstance(read, dict):
            return [f"{path}: sent an object, read {read!r}"]
        return [d for k, v in sent.items()
                for d in ([f"{path}.{k}: pruned"] if k not in read else differences(v, read[k], f"{path}.{k}"))]
    if isinstance(sent, list):
        if not isinstance(read, list) or len(read) != len(sent):
            return [f"{path}: sent {sent!r}, read {read!r}"]
        return [d for i, (s, r) in enumerate(zip(sent, read, strict=True)) for d in differences(s, r, f"{path}[{i}]")]
    return [] if sent == read and type(sent) is type(read) else [f"{path}: sent {sent!r}, read {read!r}"]


def test_differences_finds_a_pruned_and_a_changed_field() -> None:
    sent = {"spec": {"a": 1, "b": [{"c": "x"}], "typo": True}}
    read = {"spec": {"a": 1, "b": [{"c": "y"}], "added": 3}, "status": {}}
    assert differences(sent, read) == [".spec.b[0].c: sent 'x', read 'y'", ".spec.typo: pruned"]
    assert differences({"n": 1}, {"n": "1"}) == [".n: sent 1, read '1'"]
    assert differences(sent, copy.deepcopy(sent)) == []


def test_kubectl_and_api_server_are_the_pinned_release_with_the_operator_crds(api: ControlPlane) -> None:
    versions = json.loads(_ok(api.kubectl("version", "-o", "json")))
    assert versions["clientVersion"]["gitVersion"] == KUBERNETES_VERSION
    assert versions["serverVersion"]["gitVersion"] == KUBERNETES_VERSION
    served = _ok(api.kubectl("api-resources", "--api-group=sparkoperator.k8s.io", "-o", "name")).split()
    assert sorted(served) == sorted(CRD_NAMES)
    etcd = subprocess.run([str(api.bin / "etcd"), "--version"], capture_output=True, text=True, check=True)
    assert etcd.stdout.splitlines()[0] == f"etcd Version: {ETCD_VERSION.lstrip('v')}"


def test_wrapper_module_pins_every_staging_module_to_the_release() -> None:
    go_mod = "require (\n\tk8s.io/api v0.0.0\n)\nreplace (\n\tk8s.io/api => ./staging/src/k8s.io/api\n" \
             "\tk8s.io/client-go => ./staging/src/k8s.io/client-go\n\tgithub.com/x/y => github.com/x/z v1.0.0\n)\n"
    assert staging_modules(go_mod) == ["k8s.io/api", "k8s.io/client-go"]
    text = wrapper_go_mod("example.local/w", "k8s.io/kubernetes", "v1.37.2", ["k8s.io/api"], "v0.37.2")
    assert text == ("module example.local/w\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes v1.37.2\n\n"
                    "replace (\n\tk8s.io/api => k8s.io/api v0.37.2\n)\n")


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_rendered_overlay_passes_a_strict_server_side_dry_run(api: ControlPlane, rendered: dict[str, str],
                                                              overlay: str) -> None:
    proc = api.kubectl(*DRY_RUN, stdin=rendered[overlay])
    _ok(proc)
    assert proc.stderr == ""  # no warning either (deprecated API, unknown field kept, ...)
    docs = parse_documents(rendered[overlay])
    lines = proc.stdout.splitlines()
    assert len(lines) == len(docs)
    for doc, line in zip(docs, lines, strict=True):
        assert line.endswith(f"/{doc['metadata']['name']} serverside-applied (server dry run)"), line
        assert doc["metadata"]["namespace"] == OVERLAYS[overlay]


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_kubectl_renders_an_overlay_as_the_projects_pinned_kustomize_does(rendered: dict[str, str],
                                                                         overlay: str) -> None:
    """What the project's checks validate (kustomize v5.5.0) is what `kubectl apply -k` sends."""
    assert parse_documents(render_kustomization(K8S / "overlays" / overlay)) == parse_documents(rendered[overlay])


@pytest.mark.parametrize("path", MANIFEST_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_manifest_file_passes_a_strict_server_side_dry_run(api: ControlPlane, path: Path) -> None:
    proc = api.kubectl(*DRY_RUN, stdin=path.read_text())
    _ok(proc)
    assert proc.stderr == ""
    assert len(proc.stdout.splitlines()) == len(parse_documents(path.read_text()))


@pytest.mark.parametrize("target", [*OVERLAYS, "plain"])
def test_applied_objects_read_back_with_no_field_pruned_or_changed(
        applied: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]], target: str) -> None:
    problems = [f"{sent['kind']}/{sent['metadata']['name']}{d}" for sent, read in applied[target]
                for d in differences(sent, read)]
    assert problems == []
    kinds = {sent["kind"] for sent, _ in applied[target]}
    assert {"SparkApplication", "ScheduledSparkApplication", "Role", "RoleBinding", "ServiceAccount", "Deployment",
            "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"} <= kinds


def _one(pairs: list[tuple[dict[str, Any], dict[str, Any]]], kind: str, name: str) -> tuple[dict[str, Any],
                                                                                             dict[str, Any]]:
    found = [(s, r) for s, r in pairs if s["kind"] == kind and s["metadata"]["name"].startswith(name)]
    assert len(found) == 1, f"{kind}/{name}*: {len(found)} objects"
    return found[0]


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_schedule_generated_configmap_and_rbac_round_trip_unchanged(
        applied: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]], overlay: str) -> None:
    pairs, namespace = applied[overlay], OVERLAYS[overlay]
    sent, read = _one(pairs, "ScheduledSparkApplication", "churn-nightly")
    assert read["spec"] == sent["spec"]  # the CRD defaults nothing and prunes nothing
    assert read["metadata"]["labels"] == sent["metadata"]["labels"]

    _, read_cm = _one(pairs, "ConfigMap", "churn-spark-config-")  # kustomize's content-hash suffix
    assert read_cm["data"] == {"config.yaml": (K8S / "overlays" / overlay / "config.yaml").read_text()}
    mounted = {v["configMap"]["name"] for v in read["spec"]["template"]["volumes"] if "configMap" in v}
    assert mounted == {read_cm["metadata"]["name"]}  # the hashed name reached the custom resource

    rbac = {d["kind"]: d for d in yaml.safe_load_all((K8S / "sparkapplications" / "rbac.yaml").read_text())}
    _, role = _one(pairs, "Role", "churn-spark-driver")
    assert role["rules"] == rbac["Role"]["rules"]
    _, binding = _one(pairs, "RoleBinding", "churn-spark-driver")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "churn-spark-driver"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "churn-spark", "namespace": namespace}]
    assert _one(pairs, "ServiceAccount", "churn-spark")[1]["automountServiceAccountToken"] is True
    assert _one(pairs, "ServiceAccount", "churn-serve")[1]["automountServiceAccountToken"] is False


def _can(api: ControlPlane, user: str, namespace: str | None, *verb_resource: str) -> bool:
    where = ["--all-namespaces"] if namespace is None else [f"--namespace={namespace}"]
    proc = api.kubectl("auth", "can-i", *verb_resource, f"--as={user}", *where)
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), proc.stderr
    return answer == "yes"


# From rbac.yaml's Role, by hand: what a Spark driver does with its executors, and nothing else.
DRIVER_MAY = [(verb, res) for res in ("pods", "services", "configmaps", "persistentvolumeclaims")
              for verb in ("create", "get", "list", "watch", "delete", "deletecollection")] + [("patch", "pods")]
DRIVER_MAY_NOT = [("get", "secrets"), ("list", "secrets"), ("update", "pods"), ("patch", "services"),
                  ("update", "configmaps"), ("create", "pods --subresource=exec"), ("get", "pods --subresource=log"),
                  ("create", "deployments.apps"), ("create", "sparkapplications.sparkoperator.k8s.io"),
                  ("create", "roles.rbac.authorization.k8s.io"), ("create", "rolebindings.rbac.authorization.k8s.io"),
                  ("create", "serviceaccounts --subresource=token"), ("create", "events")]
CLUSTER_WIDE = [("list", "pods"), ("create", "pods"), ("list", "nodes"), ("create", "namespaces"),
                ("create", "clusterroles.rbac.authorization.k8s.io"),
                ("create", "customresourcedefinitions.apiextensions.k8s.io")]


@pytest.mark.parametrize("target", [*OVERLAYS, "plain"])
def test_driver_service_account_may_run_executors_in_its_namespace_and_nothing_more(
        api: ControlPlane, applied: dict[str, Any], target: str) -> None:
    namespace = OVERLAYS.get(target, PLAIN_NAMESPACE)
    driver = f"system:serviceaccount:{namespace}:churn-spark"
    others = [ns for ns in (*OVERLAYS.values(), PLAIN_NAMESPACE, "default", "kube-system") if ns != namespace]
    wrong = [f"may not {v} {r}" for v, r in DRIVER_MAY if not _can(api, driver, namespace, v, *r.split())]
    wrong += [f"may {v} {r}" for v, r in DRIVER_MAY_NOT if _can(api, driver, namespace, v, *r.split())]
    wrong += [f"may create pods in {ns}" for ns in others if _can(api, driver, ns, "create", "pods")]
    wrong += [f"may {v} {r} cluster-wide" for v, r in CLUSTER_WIDE if _can(api, driver, None, v, r)]
    assert wrong == []


@pytest.mark.parametrize("target", [*OVERLAYS, "plain"])
def test_service_account_of_the_rest_service_may_do_nothing(api: ControlPlane, applied: dict[str, Any],
                                                            target: str) -> None:
    """The service never calls the Kubernetes API (no token mounted, no Role bound)."""
    namespace = OVERLAYS.get(target, PLAIN_NAMESPACE)
    serve = f"system:serviceaccount:{namespace}:churn-serve"
    asks = [("get", "configmaps"), ("get", "secrets"), ("list", "pods"), ("create", "pods"), ("get", "services"),
            ("list", "endpointslices.discovery.k8s.io"), ("get", "sparkapplications.sparkoperator.k8s.io")]
    granted = [f"{v} {r}" for v, r in asks if _can(api, serve, namespace, v, r)]
    granted += [f"{v} {r} cluster-wide" for v, r in CLUSTER_WIDE if _can(api, serve, None, v, r)]
    assert granted == []


# --- broken objects: what `kubectl apply` (the API server, with the CRD schema) says vs `churn-spark k8s validate`

def _base(file: str, index: int = 0) -> dict[str, Any]:
    doc = list(yaml.safe_load_all((K8S / file).read_text()))[index]
    doc["metadata"]["namespace"] = CHECKS_NAMESPACE
    return dict(doc)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set the field at `path` (keys split by /, list indexes as numbers, a ~ in a key stands for a /)."""
    def apply(doc: dict[str, Any]) -> None:
        *parents, last = [key.replace("~", "/") for key in path.split("/")]
        node: Any = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        node[int(last) if isinstance(node, list) else last] = value
    return apply


def _drop(path: str, *keys: str) -> Callable[[dict[str, Any]], None]:
    def apply(doc: dict[str, Any]) -> None:
        node = doc
        for key in path.split("/"):
            node = node[key]
        for key in keys:
            node.pop(key)
    return apply


def _root(doc: dict[str, Any]) -> None:
    for field in ("securityContext", "podSecurityContext"):
        doc["spec"]["driver"][field].update(runAsNonRoot=False, runAsUser=0)


def _both_node_selectors(doc: dict[str, Any]) -> None:
    doc["spec"]["nodeSelector"] = {"pool": "spark"}
    doc["spec"]["driver"]["nodeSelector"] = {"pool": "spark-drivers"}


def _second_volume_same_name(doc: dict[str, Any]) -> None:
    doc["spec"]["volumes"].append(copy.deepcopy(doc["spec"]["volumes"][0]))


RESOURCES = ("cores", "coreRequest", "coreLimit", "memory", "memoryOverhead")
APP, NIGHTLY, DEPLOYMENT, BINDING = ("sparkapplications/ingest.yaml", 0), ("sparkapplications/nightly.yaml", 0), \
    ("service/deployment.yaml", 0), ("sparkapplications/rbac.yaml", 2)


@dataclass(frozen=True)
class Broken:
    """One broken object: `api` is a piece of the API server's error (None: it accepts it), `validate` a piece of
    one of `validate.all_errors`' problems (None: it finds none). Outcomes observed on kube-apiserver v1.37.2."""

    id: str
    base: tuple[str, int]
    change: Callable[[dict[str, Any]], None]
    api: str | None
    validate: str | None


BROKEN = [
    # rejected by both: the CRD's schema (strict field validation) and ObjectMeta rules
    Broken("name-not-rfc1123", APP, _set("metadata/name", "Churn_Ingest"),
           'metadata.name: Invalid value: "Churn_Ingest": a lowercase RFC 1123 subdomain', "is not a DNS-1035 label"),
    Broken("unknown-field", APP, _set("spec/driver/memroy", "2g"),
           ".spec.driver.memroy: field not declared in schema", "('memroy' was unexpected)"),
    Broken("wrong-type", APP, _set("spec/executor/instances", "three"),
           ".spec.executor.instances: expected numeric (int or float), got string", "'three' is not of type 'integer'"),
    Broken("cores-below-minimum", APP, _set("spec/executor/cores", 0),
           "spec.executor.cores in body should be greater than or equal to 1", "0 is less than the minimum of 1"),
    Broken("enum", APP, _set("spec/mode", "local"),
           'spec.mode: Unsupported value: "local"', "'local' is not one of ['cluster', 'client']"),
    Broken("required-field", APP, _drop("spec", "mainApplicationFile"),
           "spec.mainApplicationFile: Required value", "'mainApplicationFile' is a required property"),
    Broken("api-version-not-served", APP, _set("apiVersion", "sparkoperator.k8s.io/v1beta1"),
           'no matches for kind "SparkApplication" in version "sparkoperator.k8s.io/v1beta1"', "no CRD schema"),
    # rejected only by churn-spark k8s validate: the operator's admission rules and the project's security rules
    Broken("name-digit-first", APP, _set("metadata/name", "1-churn-ingest"), None, "is not a DNS-1035 label"),
    Broken("name-with-dot", APP, _set("metadata/name", "churn.ingest"), None, "is not a DNS-1035 label"),
    Broken("name-too-long-for-driver-pod", APP, _set("metadata/name", "churn-ingest-" + "x" * 45), None,
           "name longer than 56: derived run/driver-pod names exceed 63"),
    Broken("scheduled-name-too-long-for-runs", NIGHTLY, _set("metadata/name", "churn-nightly-" + "x" * 24), None,
           "name longer than 36: derived run/driver-pod names exceed 63"),
    Broken("node-selector-at-both-levels", APP, _both_node_selectors, None, "nodeSelector on both"),
    Broken("driver-without-resources", APP, _drop("spec/driver", *RESOURCES), None, "driver: memory not set"),
    Broken("executor-without-resources", APP, _drop("spec/executor", *RESOURCES), None, "executor: memory not set"),
    Broken("plaintext-credential-in-sparkconf", APP,
           _set("spec/sparkConf/spark.hadoop.fs.s3a.secret.key", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"), None,
           "sparkConf spark.hadoop.fs.s3a.secret.key holds a literal secret"),
    Broken("root-security-context", APP, _root, None, "driver: runs as uid 0"),
    Broken("privilege-escalation", APP, _set("spec/executor/securityContext/allowPrivilegeEscalation", True), None,
           "executor: allowPrivilegeEscalation must be false"),
    Broken("denied-sparkconf-key", APP, _set("spec/sparkConf/spark.kubernetes.container.image", "other:1"), None,
           "spark.kubernetes.container.image is set by the operator (denied)"),
    Broken("sparkconf-namespace-differs", APP, _set("spec/sparkConf/spark.kubernetes.namespace", "default"), None,
           "spark.kubernetes.namespace differs from namespace"),
    Broken("unpinned-image", APP, _set("spec/image", "churn-spark:latest"), None, "is not pinned"),
    Broken("literal-secret-env", APP, _set("spec/driver/env/0", {"name": "DB_PASSWORD", "value": "hunter2"}), None,
           "env DB_PASSWORD has a literal value"),
    Broken("deployment-runs-as-root", DEPLOYMENT, _set("spec/template/spec/securityContext/runAsUser", 0), None,
           "runs as uid 0"),
    # rejected only by the API server: ObjectMeta and core-type rules the JSON schemas do not carry
    Broken("label-value", APP, _set("metadata/labels/app.kubernetes.io~component", "ingest once"),
           'metadata.labels: Invalid value: "ingest once"', None),
    Broken("annotation-key", APP, _set("metadata/annotations", {"bad key!": "x"}),
           'metadata.annotations: Invalid value: "bad key!"', None),
    Broken("deployment-selector-not-matching-template", DEPLOYMENT,
           _set("spec/selector/matchLabels/app.kubernetes.io~name", "other"),
           "`selector` does not match template `labels`", None),
    Broken("deployment-cpu-not-a-quantity", DEPLOYMENT,
           _set("spec/template/spec/containers/0/resources/limits/cpu", "2 cores"),
           "quantities must match the regular expression", None),
    Broken("deployment-port-name", DEPLOYMENT, _set("spec/template/spec/containers/0/ports/0/name", "http_port"),
           'ports[0].name: Invalid value: "http_port"', None),
    Broken("rolebinding-roleref-kind", BINDING, _set("roleRef/kind", "Rolle"),
           'roleRef.kind: Unsupported value: "Rolle"', None),
    # rejected by neither: they reach the cluster and fail there (the operator, spark-submit or the pod's creation)
    Broken("cron-schedule", NIGHTLY, _set("spec/schedule", "every night"), None, None),
    Broken("core-request-not-a-quantity", APP, _set("spec/driver/coreRequest", "half a core"), None, None),
    Broken("duplicate-volume-name", APP, _second_volume_same_name, None, None),
]


def _broken_doc(case: Broken) -> dict[str, Any]:
    doc = _base(*case.base)
    case.change(doc)
    return doc


@pytest.mark.parametrize("base", sorted({c.base for c in BROKEN}), ids=lambda b: b[0])
def test_unbroken_bases_pass_both(api: ControlPlane, base: tuple[str, int]) -> None:
    doc = _base(*base)
    _ok(api.kubectl(*DRY_RUN, stdin=_yaml([doc])))
    assert all_errors(doc) == []


@pytest.mark.parametrize("case", BROKEN, ids=lambda c: c.id)
def test_broken_object_is_rejected_by_whom_the_table_says(api: ControlPlane, case: Broken) -> None:
    doc = _broken_doc(case)
    proc = api.kubectl(*DRY_RUN, stdin=_yaml([doc]))
    if case.api is None:
        assert proc.returncode == 0, f"the API server now rejects it: {proc.stderr.strip()}"
    else:
        assert proc.returncode != 0, "the API server accepted it"
        assert case.api in proc.stderr
    problems = all_errors(doc)
    if case.validate is None:
        assert problems == [], "churn-spark k8s validate now rejects it: move it in the table and the docs"
    else:
        assert any(case.validate in p for p in problems), problems
