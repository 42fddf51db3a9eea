#!/bin/sh
# The k8s_server tests' control plane by hand (churn_spark/k8s/testenv.py; docs/kubernetes-server.md):
#   tests/k8s/testenv.sh build   build or reuse etcd, kube-apiserver and kubectl in ~/.cache/churn-spark/k8s/<version>/
#   tests/k8s/testenv.sh up      also start etcd + kube-apiserver on 127.0.0.1 and print `export KUBECONFIG=...`;
#                                Ctrl-C stops both and removes their temporary folder
# `make test` builds them before pytest (python -m churn_spark.prefetch k8s).
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python3
cd "$root"
exec "$python" -m churn_spark.k8s.testenv "$@"
