"""Delta/Kafka connector jars resolved once, then put on the classpath with no Ivy at start-up.

The first start runs Spark's own resolver (`spark-submit --packages`, into the Ivy cache folder) in a
subprocess whose output goes to a log file beside the cache, and records the jar files it resolved in
a small manifest keyed by the pyspark/delta-spark versions and the package list. Every later start
reads the manifest and sets `spark.jars` to those files: no resolution, no Ivy output. The driver
serves `spark.jars` to executors, so a standalone cluster's executors get them too.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from churn_spark.errors import EnvironmentProblem

log = logging.getLogger("churn_spark")

# Run by spark-submit after it resolved `--packages`: the JVM it runs in has `spark.jars` (the resolved
# files) as a system property; write it to the file named by the first argument.
RESOLVE_SCRIPT = """\
import sys
from pyspark.java_gateway import launch_gateway
gateway = launch_gateway()
jars = gateway.jvm.java.lang.System.getProperty("spark.jars") or ""
with open(sys.argv[1], "w") as out:
    out.write(jars)
gateway.close()
"""


def _key(packages: list[str]) -> str:
    ident = {"pyspark": metadata.version("pyspark"), "delta-spark": metadata.version("delta-spark"),
             "packages": sorted(packages)}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]


def manifest_path(ivy_cache: str | Path, packages: list[str]) -> Path:
    """The manifest recording the resolved jars of `packages` (one per version/package set)."""
    return Path(ivy_cache).expanduser() / f"churn-spark-jars-{_key(packages)}.json"


def cached_jars(ivy_cache: str | Path, packages: list[str]) -> list[str] | None:
    """The resolved jar files from the manifest, or None when there is none or a file went missing."""
    path = manifest_path(ivy_cache, packages)
    try:
        jars = json.loads(path.read_text())["jars"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not jars or not all(isinstance(j, str) and os.path.isfile(j) for j in jars):
        return None
    return list(jars)


def spark_submit() -> str:
    import pyspark

    home = os.environ.get("SPARK_HOME") or os.path.dirname(pyspark.__file__)
    return os.path.join(home, "bin", "spark-submit")


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One resolution at a time per cache folder (two first runs at once would race in Ivy)."""
    with open(folder / "churn-spark-resolve.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# Ivy's `local-m2-cache` resolver takes a module from ~/.m2 when its pom is there, and then fails on a jar
# that is not (left by an interrupted Maven download) without asking Maven Central.
M2_HINT = ("; a pom without its jar in ~/.m2/repository makes Ivy fail so: delete those folders there and "
           "the modules' entries in the Ivy cache (docs/development.md, 'The Spark/Delta pair')")


def _failure_line(log_file: Path) -> str:
    text = log_file.read_text(errors="replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = next((ln for ln in lines if re.search(r"unresolved dependency|Exception|Error", ln)),
                lines[-1] if lines else "no output")
    if "download failed" in line and "local-m2-cache" in text:
        return line + M2_HINT
    return line


def resolve_jars(ivy_cache: str | Path, packages: list[str], timeout_s: float = 600.0) -> list[str]:
    """The jar files of `packages` (and their dependencies): from the manifest, else resolved once now."""
    jars = cached_jars(ivy_cache, packages)
    if jars is not None:
        return jars
    cache = Path(ivy_cache).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache):
        jars = cached_jars(ivy_cache, packages)  # another process may have resolved them meanwhile
        if jars is not None:
            return jars
        key = _key(packages)
        log_file = cache / f"churn-spark-resolve-{key}.log"
        log.info("session: resolving %s once into %s (log %s)", ",".join(packages), cache, log_file)
        with tempfile.TemporaryDirectory(prefix="churn-spark-resolve-") as tmp:
            script, out = Path(tmp, "resolve.py"), Path(tmp, "jars.txt")
            script.write_text(RESOLVE_SCRIPT)
            env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK_GATEWAY_")}
            env.update({"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
                        "SPARK_LOCAL_IP": env.get("SPARK_LOCAL_IP", "127.0.0.1")})
            cmd = [spark_submit(), "--master", "local[1]", "--driver-memory", "512m",
                   "--conf", f"spark.jars.ivy={cache}", "--packages", ",".join(packages), str(script), str(out)]
            try:
                with open(log_file, "w") as log_out:
                    code = subprocess.run(cmd, env=env, stdout=log_out, stderr=subprocess.STDOUT,
                                          timeout=timeout_s, check=False).returncode
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise EnvironmentProblem(f"could not resolve the Spark connector jars ({exc}); see {log_file}") \
                    from exc
            found = out.read_text().strip() if out.exists() else ""
        jars = [re.sub(r"^file:(//)?", "", j) for j in found.split(",") if j]
        if code != 0 or not jars or not all(os.path.isfile(j) for j in jars):
            raise EnvironmentProblem(f"could not resolve {','.join(packages)} with Spark's Ivy: "
                                     f"{_failure_line(log_file)} (log: {log_file})")
        manifest = manifest_path(cache, packages)
        tmp_manifest = manifest.with_suffix(".json.partial")
        tmp_manifest.write_text(json.dumps({"pyspark": metadata.version("pyspark"),
                                            "delta-spark": metadata.version("delta-spark"),
                                            "packages": packages, "jars": jars}, indent=1))
        tmp_manifest.replace(manifest)
        log.info("session: %d jars recorded in %s", len(jars), manifest)
        return jars
