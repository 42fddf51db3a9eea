"""`python -m bench.service`: `churn-spark serve` under load on 127.0.0.1 (issue 24, item 4).

Bounded: a fixed number of requests sent open-loop at a fixed rate (request i is due at t0 + i / rate;
its latency counts from when it was due, so a stalled server cannot hide its queue), then it stops.

- `service_lookup_p99_ms`: `GET /v1/accounts/{id}` over random scored accounts at `--rate` (500/s). Then
  the same requests again, `models/current` rewritten halfway (same version, a new `promoted_at`), so
  the service reloads the whole slice during the run: `*_with_reload`, and `lookup_failed*` count every
  non-200 answer.
- `service_score_p99_ms`: `POST /v1/score` at `--score-rate` (100/s), stored feature rows of the source
  lakehouse through the model's real ONNX export (`churn_spark.onnx.job.run_export`, run here).
- `service_cpu_ms_per_lookup` / `_per_score`: the service process's CPU time (user + system) per request,
  the figure that does not depend on how busy the machine is (1000 / it = requests/s one core can serve).
- `service_rss_mb`: the service process's resident memory after the runs (`_loaded`: before them).

The lakehouse under `--workdir`: the models of `--source` (a lakehouse scored by the real jobs, default the
bench's `bench/work/full/lake`, read only) with the ONNX export, and either the source's own scores and
target list (`--accounts 0`) or a slice of N synthetic accounts for the same model version written with
the pipeline's slice writer (`io.write_slice`, the score tables' schemas): the service does not care where
the numbers came from, only how many rows it holds.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


# --- the lakehouse -----------------------------------------------------------------------------------


def prepare(source: Path, lake: Path, accounts: int) -> dict[str, Any]:
    """Models (with the ONNX export) and a scored slice under `lake`; returns what was written."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T
    from pyspark.sql.window import Window

    from churn_spark import io, schemas
    from churn_spark.config import Settings, SparkSettings
    from churn_spark.lakehouse import Lakehouse
    from churn_spark.onnx.job import run_export
    from churn_spark.session import build_spark

    shutil.rmtree(lake, ignore_errors=True)
    shutil.copytree(source / "models", lake / "models")
    settings = Settings(lakehouse=str(lake), spark=SparkSettings(master="local[2]", shuffle_partitions=4,
                                                                 show_progress=False))
    spark = build_spark(settings.spark, app_name="bench-service")
    version, lh = json.loads((lake / "models" / "current").read_text())["version"], Lakehouse.from_settings(settings)
    try:
        export = run_export(spark, settings)
    except Exception as exc:  # the lookups are still measured; the score figures are reported missing
        export = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    if accounts == 0:
        for table in ("churn_scores", "churn_targets"):
            shutil.copytree(source / "gold" / table, lake / "gold" / table)
    else:
        day = dt.date(2024, 12, 1)
        scores = (spark.range(accounts).select(
            F.format_string("acc-%07d", "id").alias("account_id"), F.lit(day).alias("as_of_date"),
            F.lit(version).alias("model_version"), F.rand(7).alias("churn_probability"))
            .withColumn("rank", F.row_number().over(Window.orderBy(F.desc("churn_probability"))))
            .withColumn("risk_decile", F.ceil(F.col("rank") * 10 / accounts).cast(T.IntegerType()))
            .withColumn("reason_1", F.lit("logins_28d")).withColumn("reason_2", F.lit("tickets_90d"))
            .withColumn("reason_3", F.lit(None).cast("string")).withColumn("scored_at", F.current_timestamp())
            .withColumn("rank", F.col("rank").cast(T.LongType())))
        scores = scores.select(*schemas.CHURN_SCORES.fieldNames())
        io.write_slice(spark.createDataFrame(scores.rdd, schemas.CHURN_SCORES), lh.churn_scores,
                       io.slice_predicate(equals={"as_of_date": day, "model_version": version}), ["as_of_date"],
                       schema=schemas.CHURN_SCORES)
        targets = (spark.read.format("delta").load(lh.churn_scores).where(F.col("rank") <= 2000).select(
            "account_id", "as_of_date", "model_version", "churn_probability",
            F.lit(1200.0).alias("account_value"), (F.col("churn_probability") * 240.0 - 25.0).alias("expected_value"),
            F.lit(25.0).alias("contact_cost"), F.col("rank").alias("target_rank"), "reason_1", "reason_2",
            "reason_3", "scored_at", F.lit("risk").alias("targeting_mode"), F.lit(None).cast("double").alias("uplift")))
        io.write_slice(spark.createDataFrame(targets.rdd, schemas.CHURN_TARGETS), lh.churn_targets,
                       io.slice_predicate(equals={"as_of_date": day}), ["as_of_date"], schema=schemas.CHURN_TARGETS)
    spark.stop()
    if "error" in export:
        return {"model_version": version, "onnx_export_error": export["error"]}
    return {"model_version": version, "model_type": export["model_type"], "onnx_bytes": export["bytes"],
            "onnx_inputs": export["inputs"]}


def feature_rows(source: Path, lake: Path, version: str, n: int) -> list[bytes]:
    """`n` stored feature rows of the source lakehouse's latest snapshot, as POST bodies (delta-rs)."""
    from deltalake import DeltaTable

    schema = json.loads((lake / "models" / version / "model.onnx.json").read_text())
    names = [f["name"] for f in schema["features"]]
    table = DeltaTable(str(source / "gold" / "churn_features"))
    latest = max(p["as_of_date"] for p in table.partitions())
    rows = table.to_pyarrow_table(columns=names, filters=[("as_of_date", "=", dt.date.fromisoformat(latest))]).slice(
        0, n).to_pylist()
    return [json.dumps(r, default=float).encode() for r in rows]


def account_ids(lake: Path) -> list[str]:
    from deltalake import DeltaTable

    return DeltaTable(str(lake / "gold" / "churn_scores")).to_pyarrow_table(columns=["account_id"]).column(
        "account_id").to_pylist()


# --- the service and the load ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_service(lake: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    cli = str(Path(sys.executable).parent / "churn-spark")
    config = log.with_suffix(".yaml")
    config.write_text("serve:\n  poll_interval_seconds: 1\n")
    with open(log, "wb") as out:
        proc = subprocess.Popen([cli, "--config", str(config), "--lakehouse", str(lake), "serve", "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"service not ready in 120 s: {log.read_text()[-2000:]}")


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    await reader.readexactly(length)
    return status


async def open_loop(port: int, requests: list[bytes], rate: float, connections: int,
                    midway: Any = None) -> tuple[list[float], int]:
    """Send `requests` at `rate`/s on keep-alive connections; latencies (s, from each request's due time)
    and the number of non-200 answers. `midway()` is called once, after half the requests are due."""
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
    latencies: list[float] = []
    failed = 0

    async def worker() -> None:
        nonlocal failed
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while (item := await queue.get()) is not None:
            due, request = item
            try:
                status = await _exchange(reader, writer, request)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                status = 0
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            latencies.append(time.perf_counter() - due)
            failed += status != 200
        writer.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    start = time.perf_counter() + 0.1
    for i, request in enumerate(requests):
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        queue.put_nowait((due, request))
        if midway is not None and i == len(requests) // 2:
            midway()
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return latencies, failed


def percentile_ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


def post(path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def touch_pointer(lake: Path) -> None:
    """Promote the current version again (a new `promoted_at`): the service reloads the same slice."""
    pointer = lake / "models" / "current"
    data = json.loads(pointer.read_text())
    data["promoted_at"] = dt.datetime.now(dt.UTC).isoformat()
    tmp = pointer.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, pointer)


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    import psutil

    parser = argparse.ArgumentParser(prog="python -m bench.service", description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=str(ROOT / "bench" / "work" / "full" / "lake"))
    parser.add_argument("--workdir", default=str(ROOT / "bench" / "work" / "service"))
    parser.add_argument("--accounts", type=int, default=100_000, help="synthetic scored accounts (0: the source's)")
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--lookups", type=int, default=15_000)
    parser.add_argument("--score-rate", type=float, default=100.0)
    parser.add_argument("--scores", type=int, default=3_000)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args(argv)
    source, work = Path(args.source).resolve(), Path(args.workdir).resolve()
    lake = work / f"lake-{args.accounts}"
    load_start = os.getloadavg()
    prepared = prepare(source, lake, args.accounts)
    ids = account_ids(lake)
    bodies = [] if "onnx_export_error" in prepared else feature_rows(source, lake, prepared["model_version"], 200)
    rng = random.Random(24)
    port = free_port()
    proc = start_service(lake, port, work / f"service-{args.accounts}.log")
    watched = psutil.Process(proc.pid)
    try:
        rss_loaded = watched.memory_info().rss
        lookups = [get(f"/v1/accounts/{rng.choice(ids)}") for _ in range(args.lookups)]
        t0, cpu0 = time.perf_counter(), sum(watched.cpu_times()[:2])
        lat, failed = asyncio.run(open_loop(port, lookups, args.rate, args.connections))
        lookup_s, lookup_cpu = time.perf_counter() - t0, sum(watched.cpu_times()[:2]) - cpu0
        # the same again, with a reload of the whole slice triggered halfway
        reload_lat, reload_failed = asyncio.run(open_loop(port, lookups, args.rate, args.connections,
                                                          lambda: touch_pointer(lake)))
        time.sleep(3)  # the poll interval is 1 s: the reload has finished
        reloads = metric(port, "churn_serve_reloads_total")
        scores = [post("/v1/score", rng.choice(bodies)) for _ in range(args.scores)] if bodies else []
        cpu0 = sum(watched.cpu_times()[:2])
        score_lat, score_failed = asyncio.run(open_loop(port, scores, args.score_rate, 4)) if scores else ([], 0)
        score_cpu = sum(watched.cpu_times()[:2]) - cpu0
        rss_after = watched.memory_info().rss
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    result = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(), "load_average_at_start": [round(x, 2) for x in load_start],
        "cpus": os.cpu_count(), "accounts_served": len(ids), "synthetic_accounts": args.accounts > 0, **prepared,
        "lookup_rate_per_s": args.rate, "lookups": args.lookups, "lookup_seconds": round(lookup_s, 2),
        "service_lookup_p50_ms": percentile_ms(lat, 0.50), "service_lookup_p99_ms": percentile_ms(lat, 0.99),
        "lookup_failed": failed, "service_cpu_ms_per_lookup": round(1000 * lookup_cpu / args.lookups, 3),
        "service_lookup_p50_ms_with_reload": percentile_ms(reload_lat, 0.50),
        "service_lookup_p99_ms_with_reload": percentile_ms(reload_lat, 0.99),
        "service_lookup_max_ms_with_reload": round(1000 * max(reload_lat), 1),
        "lookup_failed_with_reload": reload_failed, "reloads_during_lookups": reloads - 1,
        "score_rate_per_s": args.score_rate, "scores": args.scores,
        "service_score_p50_ms": percentile_ms(score_lat, 0.50) if score_lat else None,
        "service_score_p99_ms": percentile_ms(score_lat, 0.99) if score_lat else None,
        "score_failed": score_failed,
        "service_cpu_ms_per_score": round(1000 * score_cpu / len(scores), 3) if scores else None,
        "service_rss_mb_loaded": round(rss_loaded / 2**20, 1), "service_rss_mb": round(rss_after / 2**20, 1),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"service-{dt.datetime.now(dt.UTC):%Y%m%d%H%M%S}.json"
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
