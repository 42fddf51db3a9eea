"""One racer in its own process: `python -m bench.worker RACER SPEC_JSON RESULT_JSON`.

Its own process so the runner can read its peak memory (the whole process tree: a Spark racer's
JVM included) and a crash or out-of-memory stays contained. The time written to RESULT_JSON covers
the computation only: reading the inputs, computing, writing the result. A Spark racer's session
is started (and warmed up) before the clock starts, since JVM start-up is not the work.
"""

from __future__ import annotations

import importlib
import json
import resource
import sys
import time

from bench.spec import RaceSpec

SPARK_RACERS = ("ours", "naive_spark")
MODULES = {"ours": "bench.peers.ours", "naive_spark": "bench.peers.naive_spark",
           "duckdb": "bench.peers.duckdb_peer", "pandas": "bench.peers.pandas_peer"}


def race(racer: str, spec: RaceSpec) -> dict[str, object]:
    module = importlib.import_module(MODULES[racer])
    if racer in SPARK_RACERS:
        from bench.peers.ours import spark_settings
        from churn_spark.session import build_spark

        spark = build_spark(spark_settings(spec), app_name=f"churn-bench-{racer}")
        spark.range(10).count()
        start = time.perf_counter()
        rows = module.run(spec, spark)
        seconds = time.perf_counter() - start
        spark.stop()
    elif racer == "duckdb":
        threads = int(spec.master.removeprefix("local[").removesuffix("]") or 2)
        start = time.perf_counter()
        rows = module.run(spec, threads=threads)
        seconds = time.perf_counter() - start
    else:
        start = time.perf_counter()
        rows = module.run(spec)
        seconds = time.perf_counter() - start
    return {"racer": racer, "seconds": round(seconds, 3), "rows": int(rows)}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] not in MODULES:
        print(f"usage: python -m bench.worker {{{'|'.join(MODULES)}}} SPEC_JSON RESULT_JSON", file=sys.stderr)
        return 2
    result = race(args[0], RaceSpec.load(args[1]))
    # This process's own peak (Linux: KiB): a racer done in under a second can end between two
    # samples of the runner's poll; the runner keeps the larger of the two figures.
    result["own_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    with open(args[2], "w") as fh:
        json.dump(result, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
