"""Racers for the peer benchmark: ours, DuckDB SQL, pandas and the naive Spark loop.

Each module has `run(spec) -> int` (rows written to `spec.out`), computing the labels and feature
subset of :mod:`bench.spec` from the Parquet exports in `spec.data_dir`.
"""
