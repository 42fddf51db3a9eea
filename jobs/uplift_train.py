"""spark-submit entrypoint: `churn-spark uplift train` (same arguments)."""

from __future__ import annotations

import sys

from churn_spark.cli import run_entrypoint


def main(argv: list[str] | None = None) -> int:
    return run_entrypoint("uplift", ["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
