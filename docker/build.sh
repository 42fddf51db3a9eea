#!/usr/bin/env bash
# Build (and optionally push) the image the SparkApplications in k8s/ run.
#   docker/build.sh                                              -> churn-spark:<package version>
#   IMAGE=registry.example.com/data/churn-spark docker/build.sh --push
# The tag defaults to the package version in pyproject.toml (the manifests pin the same tag); never `latest`.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE="${IMAGE:-churn-spark}"
TAG="${TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)}"
PUSH=false
BUILD_ARGS=()
for arg in "$@"; do
  if [[ "$arg" == "--push" ]]; then PUSH=true; else BUILD_ARGS+=("$arg"); fi
done
if [[ -z "$TAG" || "$TAG" == "latest" ]]; then
  echo "error: set TAG to a pinned version, not '${TAG:-<empty>}'" >&2
  exit 2
fi
docker build -f docker/Dockerfile -t "${IMAGE}:${TAG}" "${BUILD_ARGS[@]}" .
if [[ "$PUSH" == true ]]; then
  docker push "${IMAGE}:${TAG}"
fi
echo "built ${IMAGE}:${TAG}"
