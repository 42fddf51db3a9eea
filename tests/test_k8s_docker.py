"""The image definition agrees with the package: versions, copied files, hardening (no Docker engine here)."""

from __future__ import annotations

import glob
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pyspark
import pytest

from churn_spark.session import maven_packages

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines]


def _args() -> dict[str, str]:
    return dict(a.split("=", 1) for ins, a in _instructions() if ins == "ARG" and "=" in a)


def _pins() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return dict(d.split("==", 1) for d in deps if "==" in d)


def test_spark_and_delta_versions_match_pyproject_pins() -> None:
    pins, args = _pins(), _args()
    assert args["SPARK_VERSION"] == pins["pyspark"]
    assert args["DELTA_VERSION"] == pins["delta-spark"]
    # the Delta jar's Spark line (major.minor), from Delta 4.1 on in its artifact id, is cut from SPARK_VERSION
    assert 'spark_line="${SPARK_VERSION%.*}"' in DOCKERFILE.read_text()
    final_from = [a for ins, a in _instructions() if ins == "FROM"][-1]
    assert final_from == "apache/spark:${SPARK_VERSION}-python3"


def test_baked_jars_are_the_ones_the_session_would_resolve() -> None:
    """Every Maven package the session adds outside an image is fetched into the image."""
    args = _args()
    text = DOCKERFILE.read_text()
    for coord in maven_packages(with_kafka=True):
        group, artifact, version = coord.split(":")
        line = ".".join(args["SPARK_VERSION"].split(".")[:2])
        templated = artifact.replace(f"_{line}_", "_${spark_line}_").replace(
            args["SCALA_BINARY"], "${SCALA_BINARY}")
        assert re.search(rf"fetch {re.escape(group)} \"?{re.escape(templated)}\"? \"\$\{{\w+_VERSION\}}\"", text), coord
        assert version in (args["SPARK_VERSION"], args["DELTA_VERSION"])
    assert "fetch io.delta delta-storage" in text


def test_hadoop_aws_matches_the_hadoop_spark_ships() -> None:
    jars = os.path.join(os.path.dirname(pyspark.__file__), "jars")
    shipped = {re.sub(r"hadoop-client-api-(.+)\.jar", r"\1", os.path.basename(p))
               for p in glob.glob(os.path.join(jars, "hadoop-client-api-*.jar"))}
    assert shipped == {_args()["HADOOP_VERSION"]}
    assert "fetch org.apache.hadoop hadoop-aws" in DOCKERFILE.read_text()
    assert "fetch software.amazon.awssdk bundle" in DOCKERFILE.read_text()


def test_every_copied_file_exists_and_is_not_dockerignored() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = [ln[1:].rstrip("/") for ln in ignore if ln.startswith("!")]
    copies = [a for ins, a in _instructions() if ins == "COPY" and "--from=" not in a]
    assert copies
    for copy in copies:
        *sources, _dest = copy.split()
        for src in sources:
            assert (ROOT / src).exists(), f"COPY source {src} missing"
            assert any(src.rstrip("/") == a or src.startswith(a + "/") for a in allowed), f"{src} is dockerignored"


def test_runs_as_uid_185_with_the_package_at_a_fixed_path() -> None:
    ins = _instructions()
    assert ins[-1] == ("USER", "185")
    text = DOCKERFILE.read_text()
    assert "COPY jobs /opt/churn-spark/jobs" in text
    assert "chmod 1777 /tmp" in text
    jobs = {p.name for p in (ROOT / "jobs").glob("*.py")}
    assert {"ingest_events.py", "build_features.py", "train.py", "score.py", "nightly.py"} <= jobs


def test_build_script_refuses_latest(tmp_path: Path) -> None:
    proc = subprocess.run(["bash", str(ROOT / "docker" / "build.sh")], env={**os.environ, "TAG": "latest"},
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "pinned version" in proc.stderr


@pytest.mark.parametrize("name", ["ingest.yaml", "features.yaml", "train.yaml", "score.yaml", "nightly.yaml"])
def test_manifest_image_tag_is_the_package_version(name: str) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    text = (ROOT / "k8s" / "sparkapplications" / name).read_text()
    assert f"image: churn-spark:{version}\n" in text
