"""Run a SparkApplication locally exactly as the operator would submit it, minus the cluster.

`local_plan` takes the operator's spark-submit arguments (`submit_args`) and changes only what a
laptop or a standalone cluster cannot have, each change listed in `LocalPlan.changes`:
the master (`local[2]` or `spark://…`) and client deploy mode; `local:///opt/churn-spark/…` image
paths -> the checkout; ConfigMap mounts -> files with the ConfigMap's data; `--lakehouse` -> a local
folder; the event log -> a local folder; the Delta/Kafka jars -> `--jars`, the files resolved once
into the shared Ivy cache (`jarcache`; the image bakes them in); the Prometheus JMX agent and
operator-made metrics conf (image- and cluster-only) dropped. Everything else — sparkConf,
hadoopConf, resources, arguments — is passed as is, so a manifest whose arguments or conf do not
fit the code fails here as it would in the cluster.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from churn_spark.errors import EnvironmentProblem
from churn_spark.k8s.manifests import App, ManifestError
from churn_spark.k8s.submit import submit_args, with_monitoring

IMAGE_HOME = "/opt/churn-spark/"


@dataclass
class LocalPlan:
    """A spark-submit command to run locally, its environment, and what differs from the cluster."""

    argv: list[str]
    env: dict[str, str]
    changes: list[str] = field(default_factory=list)


def repo_root() -> Path:
    """The checkout this package runs from (jobs/ and k8s/ sit beside churn_spark/)."""
    return Path(__file__).resolve().parents[2]


def spark_submit_executable() -> str:
    """The venv's `spark-submit` (pyspark ships it), else SPARK_HOME's, else PATH's."""
    candidates = [Path(sys.executable).parent / "spark-submit"]
    if os.environ.get("SPARK_HOME"):
        candidates.append(Path(os.environ["SPARK_HOME"]) / "bin" / "spark-submit")
    for c in candidates:
        if c.exists():
            return str(c)
    found = shutil.which("spark-submit")
    if not found:
        raise EnvironmentProblem("spark-submit not found: install pyspark into this environment")
    return found


def _materialize_config_maps(app: App, config_maps: dict[str, dict[str, str]], workdir: Path) -> dict[str, str]:
    """Write each ConfigMap volume the driver mounts to workdir; return mount path -> local folder."""
    volumes = {v["name"]: v for v in app.spec.get("volumes") or []}
    mapping: dict[str, str] = {}
    for mount in (app.spec.get("driver") or {}).get("volumeMounts") or []:
        cm = volumes.get(mount["name"], {}).get("configMap")
        if not cm:
            continue
        data = config_maps.get(cm["name"])
        if data is None:
            raise ManifestError(f"ConfigMap {cm['name']!r} mounted by {app.name} is not among the rendered objects")
        folder = workdir / "configmaps" / mount["name"]
        folder.mkdir(parents=True, exist_ok=True)
        items = cm.get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            (folder / item["path"]).write_text(data[item["key"]])
        mapping[mount["mountPath"].rstrip("/")] = str(folder)
    return mapping


def _local_value(value: str, paths: dict[str, str]) -> str:
    for prefix, local in sorted(paths.items(), key=lambda kv: -len(kv[0])):
        for scheme in ("local://", ""):
            if value == scheme + prefix or value.startswith(scheme + prefix + "/"):
                return local + value[len(scheme + prefix):]
    return value


def _split_confs(argv: list[str]) -> tuple[list[str], dict[str, str], list[str]]:
    """(options before the main file, --conf key -> value, [main file, *arguments])."""
    options: list[str] = []
    confs: dict[str, str] = {}
    i = 0
    while i < len(argv):
        if argv[i] == "--conf":
            key, _, value = argv[i + 1].partition("=")
            confs[key] = value
            i += 2
        elif argv[i].startswith("--"):
            options += argv[i:i + 2]
            i += 2
        else:
            return options, confs, argv[i:]
    raise ManifestError("no mainApplicationFile in the submit arguments")


def local_plan(app: App, *, workdir: str | Path, lakehouse: str | Path, master: str = "local[2]",
               config_maps: dict[str, dict[str, str]] | None = None, root: str | Path | None = None,
               driver_memory: str | None = None, extra_conf: dict[str, str] | None = None,
               ivy_cache: str | None = None) -> LocalPlan:
    """The local spark-submit command for `app` (see the module docstring for what changes)."""
    from churn_spark.jarcache import resolve_jars
    from churn_spark.session import maven_packages, packages_missing_from_classpath

    root = Path(root or repo_root()).resolve()
    work = Path(workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    changes: list[str] = []
    manifest = app.as_spark_application()
    monitoring = manifest["spec"].pop("monitoring", None)
    if monitoring:
        changes.append("monitoring: Prometheus JMX agent and operator metrics conf are cluster-only, not used")
    options, confs, main_and_args = _split_confs(submit_args(manifest, master=master))
    paths = {IMAGE_HOME.rstrip("/"): str(root)}
    paths.update(_materialize_config_maps(app, config_maps or {}, work))
    main = _local_value(main_and_args[0], paths)
    arguments = [_local_value(a, paths) for a in main_and_args[1:]]
    lake = str(Path(lakehouse).resolve()) if "://" not in str(lakehouse) else str(lakehouse)
    arguments += ["--lakehouse", lake]
    changes += [f"master: {master}, deploy mode client (was {app.spec.get('mode', 'cluster')})",
                f"image paths: {IMAGE_HOME} -> {root}/", f"lakehouse: {lake}"]
    changes += [f"mount {k} -> {v}" for k, v in paths.items() if k != IMAGE_HOME.rstrip("/")]
    options[options.index("--deploy-mode") + 1] = "client"
    if confs.get("spark.eventLog.enabled") == "true":
        events = work / "spark-events"
        events.mkdir(exist_ok=True)
        confs["spark.eventLog.dir"] = events.as_uri()
        changes.append(f"event log: {events}")
    cache = Path(ivy_cache or "~/.cache/churn-spark/ivy").expanduser()
    confs["spark.jars.ivy"] = str(cache)
    missing = packages_missing_from_classpath(maven_packages(with_kafka=True))
    if missing:  # resolved once into the cache, then plain files: spark-submit runs no Ivy resolution
        options += ["--jars", ",".join(resolve_jars(cache, missing))]
        changes.append(f"jars: --jars with {','.join(missing)} resolved in the Ivy cache {cache} "
                       "(the image bakes them in)")
    local_confs = {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}
    if driver_memory:
        local_confs["spark.driver.memory"] = driver_memory
    local_confs.update(extra_conf or {})
    for key, value in local_confs.items():
        if confs.get(key) != value:
            changes.append(f"conf {key}={value} (manifest: {confs.get(key, 'unset')})")
        confs[key] = value
    argv = [*options, *[x for k, v in confs.items() for x in ("--conf", f"{k}={v}")], main, *arguments]
    return LocalPlan(argv=argv, env=_local_env(app, changes), changes=changes)


def _local_env(app: App, changes: list[str]) -> dict[str, str]:
    """The process environment: the driver's literal env values; Secret references cannot resolve here."""
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": "127.0.0.1"}
    env.pop("PYSPARK_GATEWAY_PORT", None)
    env.pop("PYSPARK_GATEWAY_SECRET", None)
    driver: dict[str, Any] = app.spec.get("driver") or {}
    for var in driver.get("env") or []:
        if "value" in var:
            env[var["name"]] = str(var["value"])
        else:
            changes.append(f"env {var['name']}: from a Secret/ConfigMap reference, not set locally")
    for key, value in (driver.get("envVars") or {}).items():
        env[key] = str(value)
    if driver.get("envFrom"):
        changes.append("envFrom: Secret/ConfigMap references, not set locally")
    return env


def run_plan(plan: LocalPlan, *, cwd: str | Path | None = None, timeout: float | None = None,
             log_file: str | Path | None = None) -> int:
    """Run the plan with spark-submit; the exit code is the application's."""
    cmd = [spark_submit_executable(), *plan.argv]
    if log_file is None:
        return subprocess.run(cmd, env=plan.env, cwd=cwd, timeout=timeout, check=False).returncode
    with open(log_file, "w") as out:
        return subprocess.run(cmd, env=plan.env, cwd=cwd, timeout=timeout, check=False,
                              stdout=out, stderr=subprocess.STDOUT).returncode


__all__ = ["LocalPlan", "local_plan", "run_plan", "repo_root", "spark_submit_executable", "with_monitoring"]


def resolve_config_maps(docs: list[dict[str, Any]], root: str | Path | None = None) -> dict[str, dict[str, str]]:
    """ConfigMaps by name: those among `docs` (a rendered overlay) and, for plain manifests, the ones
    k8s/base generates (the same files `kubectl apply -k` would turn into ConfigMaps)."""
    from churn_spark.k8s.manifests import config_maps, generated_config_maps

    found = generated_config_maps(Path(root or repo_root()) / "k8s" / "base")
    found.update(config_maps(docs))
    return found
