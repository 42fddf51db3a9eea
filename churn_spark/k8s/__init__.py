"""Kubernetes support: load and render the manifests in k8s/, translate a SparkApplication into the
spark-submit invocation the Spark operator makes, validate manifests, and run them locally."""

from __future__ import annotations

from churn_spark.k8s.manifests import load_documents, spark_applications
from churn_spark.k8s.submit import submit_args

__all__ = ["load_documents", "spark_applications", "submit_args"]
