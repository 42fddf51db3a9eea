"""spark-submit entrypoint: `churn-spark silver [--rebuild]` (same arguments)."""

from __future__ import annotations

import sys

from churn_spark.cli import run_entrypoint


def main(argv: list[str] | None = None) -> int:
    return run_entrypoint("silver", argv)


if __name__ == "__main__":
    sys.exit(main())
