"""churn-spark benchmarks: ratios measured in the same run (see bench/README.md)."""
