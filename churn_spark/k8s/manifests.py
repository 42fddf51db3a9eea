"""Manifests as data: YAML files, folders and rendered kustomize overlays -> plain dicts.

A kustomization folder is rendered with the real kustomize (installed once from the Go module proxy
into a cache folder, else a `kustomize` or `kubectl kustomize` on PATH), so what is checked and run is
exactly what `kubectl apply -k` would send.
"""

from __future__ import annotations

import copy
import fcntl
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from churn_spark.errors import ChurnSparkError, EnvironmentProblem

KUSTOMIZE_MODULE = "sigs.k8s.io/kustomize/kustomize/v5"
KUSTOMIZE_VERSION = "v5.5.0"
SPARK_OPERATOR_GROUP = "sparkoperator.k8s.io"
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


class ManifestError(ChurnSparkError):
    """A manifest that cannot be loaded, rendered or found."""


def cache_dir() -> Path:
    return Path(os.environ.get("CHURN_SPARK_CACHE", "~/.cache/churn-spark")).expanduser()


def _go_install_kustomize(target: Path) -> None:
    """`go install` the pinned kustomize into `target`'s folder (GOBIN), once, under a file lock."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():
            return
        env = {**os.environ, "GOBIN": str(target.parent), "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}
        proc = subprocess.run(["go", "install", f"{KUSTOMIZE_MODULE}@{KUSTOMIZE_VERSION}"], env=env,
                              capture_output=True, text=True, timeout=900, check=False)
        if proc.returncode != 0 or not target.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise EnvironmentProblem(f"go install kustomize {KUSTOMIZE_VERSION} failed: {tail[0]}")


def kustomize_command() -> list[str]:
    """The kustomize to render overlays with: $CHURN_KUSTOMIZE, the pinned cached build, or PATH's."""
    if os.environ.get("CHURN_KUSTOMIZE"):
        return [os.environ["CHURN_KUSTOMIZE"]]
    cached = cache_dir() / "bin" / f"kustomize-{KUSTOMIZE_VERSION}" / "kustomize"
    if not cached.exists() and shutil.which("go"):
        _go_install_kustomize(cached)
    if cached.exists():
        return [str(cached)]
    if shutil.which("kustomize"):
        return ["kustomize"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    raise EnvironmentProblem("kustomize not found: install Go (for `go install`), kustomize or kubectl")


def render_kustomization(folder: str | Path) -> str:
    """`kustomize build folder` as YAML text."""
    cmd = kustomize_command()
    args = [*cmd, str(folder)] if cmd[0] == "kubectl" else [*cmd, "build", str(folder)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise ManifestError(f"kustomize build {folder} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return proc.stdout


def is_kustomization(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and any((p / name).is_file() for name in KUSTOMIZATION_FILES)


def parse_documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if isinstance(doc, dict)]


def load_documents(path: str | Path) -> list[dict[str, Any]]:
    """Every Kubernetes object in a YAML file, a rendered kustomization folder, or a plain folder's files."""
    p = Path(path)
    if not p.exists():
        raise ManifestError(f"no manifest at {p}")
    if is_kustomization(p):
        return parse_documents(render_kustomization(p))
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix in (".yaml", ".yml") and f.stem != "kustomization")
        return [doc for f in files for doc in parse_documents(f.read_text())]
    return parse_documents(p.read_text())


@dataclass(frozen=True)
class App:
    """One SparkApplication spec to submit: a SparkApplication, or a ScheduledSparkApplication's template
    (named like one of its runs)."""

    kind: str
    name: str
    namespace: str
    labels: dict[str, str]
    spec: dict[str, Any]

    def as_spark_application(self) -> dict[str, Any]:
        return {"apiVersion": f"{SPARK_OPERATOR_GROUP}/v1beta2", "kind": "SparkApplication",
                "metadata": {"name": self.name, "namespace": self.namespace, "labels": dict(self.labels)},
                "spec": copy.deepcopy(self.spec)}


def _is_operator_kind(doc: dict[str, Any], kind: str) -> bool:
    return doc.get("kind") == kind and str(doc.get("apiVersion", "")).startswith(f"{SPARK_OPERATOR_GROUP}/")


def spark_applications(docs: list[dict[str, Any]]) -> list[App]:
    """The applications in `docs`, in order (Scheduled ones contribute their template)."""
    apps = []
    for doc in docs:
        meta = doc.get("metadata", {})
        if _is_operator_kind(doc, "SparkApplication"):
            spec = doc.get("spec", {})
        elif _is_operator_kind(doc, "ScheduledSparkApplication"):
            spec = doc.get("spec", {}).get("template", {})
        else:
            continue
        apps.append(App(doc["kind"], meta.get("name", ""), meta.get("namespace", "default"),
                        dict(meta.get("labels") or {}), copy.deepcopy(spec)))
    return apps


def select_app(docs: list[dict[str, Any]], name: str | None = None) -> App:
    """The one application in `docs`, or the one called `name`."""
    apps = spark_applications(docs)
    if name is not None:
        apps = [a for a in apps if a.name == name]
    if len(apps) != 1:
        names = ", ".join(a.name for a in spark_applications(docs)) or "none"
        what = f"named {name!r}" if name else "(pass --app NAME)"
        raise ManifestError(f"expected one SparkApplication {what}; found: {names}")
    return apps[0]


def config_maps(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """ConfigMap name -> data, for resolving the volumes an application mounts."""
    return {d["metadata"]["name"]: dict(d.get("data") or {}) for d in docs
            if d.get("kind") == "ConfigMap" and d.get("apiVersion") == "v1"}


def generated_config_maps(kustomization_dir: str | Path) -> dict[str, dict[str, str]]:
    """ConfigMap name -> data for a kustomization's `configMapGenerator` file entries (before hashing),
    so a plain manifest's ConfigMap volume resolves to the file the base generates it from."""
    folder = Path(kustomization_dir)
    kfile = next((folder / n for n in KUSTOMIZATION_FILES if (folder / n).is_file()), None)
    if kfile is None:
        return {}
    spec = yaml.safe_load(kfile.read_text()) or {}
    out: dict[str, dict[str, str]] = {}
    for gen in spec.get("configMapGenerator") or []:
        data = {}
        for entry in gen.get("files") or []:
            key, _, rel = entry.partition("=") if "=" in entry else (Path(entry).name, "", entry)
            data[key] = (folder / rel).read_text()
        for literal in gen.get("literals") or []:
            key, _, value = literal.partition("=")
            data[key] = value
        out[gen["name"]] = data
    return out
