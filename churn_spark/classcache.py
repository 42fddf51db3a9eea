"""A JVM class-data-sharing archive of the classes a Spark + Delta + MLlib job loads, built once.

Every Spark JVM starts by loading and verifying some ten thousand classes, and on small data that start
is a large share of a job's CPU. Java's dynamic CDS archive (`-XX:ArchiveClassesAtExit`, then
`-XX:SharedArchiveFile`) maps those classes from one file instead: measured here, a `generate` run of
120 accounts in local mode took 24-25 CPU-s with the archive and 31-34 without. The test suite starts
dozens of driver and executor JVMs, so it uses the archive when `make prefetch` has built it. The
archive belongs to one JVM build and one Spark installation: its name carries both, and a JVM that
finds it does not match starts without it (never fails; the jobs' JVMs say nothing, `-Xlog:cds*=off`).
Every driver JVM this package launches maps it when it exists (`spark.class_sharing`, session.py).
Building one removes the archives of a pyspark installation that is gone or was reinstalled since.

    python -m churn_spark.prefetch cds      # build it (about two minutes; once per JVM, Spark and venv)
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# A small pipeline in one JVM: generate, ingest, features, train (a few GBT trees) and score, so the
# classes of Delta writes and merges, streaming, window aggregations and MLlib all land in the archive.
_WORKLOAD = """
import sys, tempfile
from pathlib import Path
from churn_spark.cli import execute
from churn_spark.config import load_settings
from churn_spark.demo import stage_functions
from churn_spark.session import build_spark
root = Path(tempfile.mkdtemp(prefix="churn-cds-"))
config = root / "config.yaml"
config.write_text('''
lakehouse: %(lakehouse)s
spark: {shuffle_partitions: 2, log_level: ERROR, show_progress: false, class_sharing: false,
        java_options: "%(options)s"}
generate: {accounts: 60, start: 2023-07-01, end: 2024-12-31, seed: 5, events_per_account_month: 2,
           event_files: 1, history_months: 6}
churn: {horizon_months: 1, lookback_months: 3, snapshots: {start: 2024-03-01, end: 2024-09-01}}
features: {windows_days: [28], trend_windows_days: [28], per_seat_windows_days: [28], change_windows_days: [90]}
model: {type: gbt, validation_snapshots: 1, test_snapshots: 2, bootstrap_replicates: 0,
        params: {maxIter: 2, maxDepth: 2}}
scoring: {reason_candidates: 2, drift_top_features: 2}
''')
settings = load_settings(config)
spark = build_spark(settings.spark, app_name="churn-cds")
for name, fn in stage_functions(score_date="2024-12-01"):
    execute(settings, name, fn, spark=spark, quiet=True, show=False)
from pyspark import SparkContext
jvm = SparkContext._gateway.proc
spark.stop()
SparkContext._gateway.shutdown()
jvm.stdin.close()  # the JVM exits when its stdin closes, and writes the archive on the way out
sys.exit(jvm.wait(timeout=300))
"""


def _java_home() -> Path | None:
    java = os.environ.get("JAVA_HOME")
    if java:
        return Path(java)
    found = shutil.which("java")
    return Path(found).resolve().parent.parent if found else None


def _pyspark_jars() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "jars"


def _installed(jars: Path) -> int:
    """When the jars were installed: a reinstall (new jar files) needs a new archive."""
    return jars.stat().st_mtime_ns if jars.exists() else 0


def archive_path() -> Path | None:
    """Where the archive of this JVM build and this pyspark lives (None without Java)."""
    home = _java_home()
    if home is None:
        return None
    import pyspark

    release = home / "release"
    build = release.read_text() if release.exists() else str(home)
    installed = _installed(_pyspark_jars())
    key = hashlib.sha256(f"{build}\n{pyspark.__version__}\n{pyspark.__file__}\n{installed}".encode()).hexdigest()[:16]
    cache = Path(os.environ.get("CHURN_SPARK_CACHE", "~/.cache/churn-spark")).expanduser() / "cds"
    return cache / f"spark-{pyspark.__version__}-{key}.jsa"


def _owner_record(archive: Path) -> Path:
    return archive.with_suffix(".owner")


def _owner(jars: Path) -> str:
    """What an archive's `.owner` record says: the pyspark jars folder it was built from and when that was
    installed."""
    return f"{jars}\n{_installed(jars)}\n"


def stale_archives(current: Path, jars: Path) -> list[Path]:
    """Archives beside `current` that no JVM will map again: their pyspark installation is gone, or it is
    `jars` (this one) installed again since. Each archive is ~250 MB and every venv and reinstall makes
    one, so they are removed when a new one is built. Another JVM build's archive of this same installation
    stays (switching JAVA_HOME back finds it), and so does one with no owner record (built before the
    record existed): nothing says whose it is."""
    stale = []
    for other in sorted(current.parent.glob("*.jsa")):
        record = _owner_record(other)
        if other == current or not record.exists():
            continue
        owner, _, installed = record.read_text().strip().partition("\n")
        if not Path(owner).exists() or (Path(owner) == jars and installed != str(_installed(jars))):
            stale.append(other)
    return stale


def sharing_options() -> str:
    """The JVM option that maps the archive, when it has been built; empty otherwise."""
    path = archive_path()
    return f"-XX:SharedArchiveFile={shlex.quote(str(path))}" if path is not None and path.exists() else ""


def ensure_archive() -> Path:
    """Build the archive once (a small pipeline in one JVM that dumps its classes at exit)."""
    path = archive_path()
    if path is None:
        raise RuntimeError("no Java found: set JAVA_HOME or put java on PATH")
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="churn-cds-") as tmp:
        partial = Path(tmp) / "classes.jsa"
        code = _WORKLOAD % {"lakehouse": Path(tmp) / "lakehouse", "options": f"-XX:ArchiveClassesAtExit={partial}"}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
        if done.returncode != 0 or not partial.exists():
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
            raise RuntimeError(f"the class-data-sharing archive was not written:\n{tail}")
        shutil.move(str(partial), str(path))
    jars = _pyspark_jars()
    _owner_record(path).write_text(_owner(jars))
    for old in stale_archives(path, jars):
        old.unlink(missing_ok=True)
        _owner_record(old).unlink(missing_ok=True)
    return path
