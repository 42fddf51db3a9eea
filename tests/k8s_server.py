"""The session's one real Kubernetes API server (etcd + kube-apiserver on 127.0.0.1, churn_spark/k8s/testenv.py),
for the tests marked `k8s_server`. Import the fixture into a test module: `from k8s_server import k8s_api`."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from churn_spark.k8s.testenv import KUBERNETES_VERSION, ControlPlane, binaries_ready, start_control_plane


@pytest.fixture(scope="session")
def k8s_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """Started once per session (binaries built by `make prefetch`, else here); stopped, both process groups,
    at the session's end or when the start fails. Its logs stay in the session's tmp folder."""
    if shutil.which("go") is None and not binaries_ready():
        pytest.skip(f"Go is not installed: the k8s_server tests build etcd, kube-apiserver and kubectl "
                    f"{KUBERNETES_VERSION} from the Go module proxy")
    control_plane = start_control_plane(tmp_path_factory.mktemp("k8s-api"))
    try:
        yield control_plane
    finally:
        control_plane.stop()
