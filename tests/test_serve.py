"""`churn-spark serve` end to end: the real service (the CLI, uvicorn on 127.0.0.1, a subprocess without a
JVM) over a tiny lakehouse scored by the real score job.

The lakehouse is test_score_job's (seven eligible accounts a1..a7 at D1 = 2023-07-01, a8 not eligible, the
LR model `v-lr` current, at most three contacts), scored once per module; besides it, a slice of another
model at a later date and an older slice of `v-lr`, which the service must not serve. Expected answers
are the rows the score job wrote, read back with Spark, or hand-written rows for the reload tests.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import test_score_job as case  # the score job's tiny lakehouse: its inputs, overrides and labels
import yaml
from conftest import TEST_SPARK
from featuredata import D, T, accounts, subs, write_inputs
from modeldata import register, train_on_stored
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from churn_spark import io, schemas
from churn_spark.config import Settings, with_overrides
from churn_spark.features.job import build_labels_and_features
from churn_spark.lakehouse import Lakehouse
from churn_spark.onnx.schema import Feature, FeatureSchema
from churn_spark.score.job import run_score
from churn_spark.serve.ids import normalized_account_id

pytestmark = pytest.mark.slow  # a real HTTP service in a subprocess: not in make test-fast

D0, D1, D2, LATER = case.D0, case.D1, dt.date(2023, 8, 1), dt.date(2023, 9, 1)
AT = dt.datetime(2023, 8, 2, 3, 0)
CLI = str(Path(sys.executable).parent / "churn-spark")
TOKEN_ENV = "CHURN_SERVE_TEST_TOKEN"


# --- the lakehouse, scored once --------------------------------------------------------------------


def _write_scores(spark: SparkSession, lh: Lakehouse, day: dt.date, version: str, rows: list[tuple[Any, ...]],
                  targets: list[tuple[Any, ...]] | None = None) -> None:
    """Hand rows through the pipeline's own slice writer: scores (account, p, decile, rank, r1, r2, r3) and,
    when given, the day's target list (account, p, value, expected value, cost, rank, r1)."""
    scores = spark.createDataFrame([(a, day, version, p, d, r, x, y, z, AT) for a, p, d, r, x, y, z in rows],
                                   schemas.CHURN_SCORES)
    io.write_slice(scores, lh.churn_scores, io.slice_predicate(equals={"as_of_date": day, "model_version": version}),
                   ["as_of_date"], schema=schemas.CHURN_SCORES)
    if targets is not None:
        df = spark.createDataFrame([(a, day, version, p, v, e, c, r, x, None, None, AT, "risk", None)
                                    for a, p, v, e, c, r, x in targets], schemas.CHURN_TARGETS)
        io.write_slice(df, lh.churn_targets, io.slice_predicate(equals={"as_of_date": day}), ["as_of_date"],
                       schema=schemas.CHURN_TARGETS)


@pytest.fixture(scope="module")
def lake(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    s = with_overrides(Settings(lakehouse=str(tmp_path_factory.mktemp("serve") / "lakehouse"), spark=TEST_SPARK),
                       case.OVERRIDES)
    ids = sorted(case.MRR)
    write_inputs(
        s,
        accounts(spark, [(a, T(2022, 12, 1), "DE" if i % 2 else "FR", "web", "retail") for i, a in enumerate(ids)],
                 ("country", "channel", "industry")),
        subs(spark, [(f"s-{a}", a, D(2023, 1, 1), D(2023, 5, 1) if a == "a8" else None, case.MRR[a]) for a in ids]),
        case._events(spark), None)
    lh = Lakehouse.from_settings(s)
    _, train_features = build_labels_and_features(spark, s, [D0])
    io.write_slice(train_features, lh.churn_features, io.slice_predicate(equals={"as_of_date": D0}), ["as_of_date"])
    model, meta = train_on_stored(spark, s, case.TRAIN_LABELS, [D0])
    register(spark, s, "v-lr", model, meta, current=True)
    # Not to be served: an older slice of the current model, and a later slice of another model.
    _write_scores(spark, lh, D0, "v-lr", [("a1", 0.25, 1, 1, "old", None, None)])
    _write_scores(spark, lh, LATER, "v-other", [("a1", 0.99, 1, 1, "other", None, None)])
    run_score(spark, s, D1)
    scores = spark.read.format("delta").load(lh.churn_scores).where(
        (F.col("as_of_date") == D1) & (F.col("model_version") == "v-lr"))
    targets = spark.read.format("delta").load(lh.churn_targets).where(F.col("as_of_date") == D1)
    return {"settings": s, "lake": lh, "meta": meta,
            "scores": {r["account_id"]: r.asDict() for r in scores.collect()},  # 7 rows
            "targets": sorted((r.asDict() for r in targets.collect()), key=lambda r: r["target_rank"])}


# --- the service, as the CLI starts it ---------------------------------------------------------------


@dataclass
class Service:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    token: str | None = None

    def get(self, path: str, token: str | None = None, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or self.token}"} if (token or self.token) else {}
        return httpx.get(self.url + path, params=params, headers=headers, timeout=10)

    def post(self, path: str, body: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.post(self.url + path, json=body, headers=headers, timeout=10)

    def metric(self, name: str) -> float:
        """A sample's value from /metrics: the name with its labels as Prometheus prints them (sorted)."""
        for line in self.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        return math.nan


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(predicate: Any, seconds: float, what: str) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if predicate():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


@contextmanager
def serving(root: str, workdir: Path, token: str | None = None, ready: bool = True) -> Iterator[Service]:
    """`churn-spark --config C --lakehouse ROOT serve --port P` until the block ends (SIGTERM, then kill)."""
    config = workdir / f"serve-{_free_port()}.yaml"
    serve: dict[str, Any] = {"poll_interval_seconds": 0.3}
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    if token is not None:
        serve["auth_token_env"] = TOKEN_ENV
        env[TOKEN_ENV] = token
    config.write_text(yaml.safe_dump({"serve": serve}))
    port = _free_port()
    log = config.with_suffix(".log")
    with open(log, "wb") as err:
        process = subprocess.Popen([CLI, "--config", str(config), "--lakehouse", root, "serve", "--port", str(port)],
                                   stdout=err, stderr=subprocess.STDOUT, env=env)
    service = Service(f"http://127.0.0.1:{port}", process, log, token)
    try:
        _wait(lambda: process.poll() is not None or service.get("/healthz").status_code == 200, 60, "healthz")
        assert process.poll() is None, log.read_text()
        if ready:
            _wait(lambda: service.get("/readyz").status_code == 200, 60, "readyz")
        yield service
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@pytest.fixture(scope="module")
def service(lake: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with serving(lake["lake"].root, tmp_path_factory.mktemp("service")) as svc:
        yield svc


def _copy(lake: dict[str, Any], tmp_path: Path) -> Lakehouse:
    """A copy of the scored lakehouse for a test that changes it (Delta logs hold relative paths)."""
    shutil.copytree(lake["lake"].root, tmp_path / "lakehouse")
    return Lakehouse(str(tmp_path / "lakehouse"))


def _account_json(row: dict[str, Any], targets: list[dict[str, Any]]) -> dict[str, Any]:
    """The answer for a stored score row: its fields, its non-null reasons, and its target row if any."""
    target = next((t for t in targets if t["account_id"] == row["account_id"]), None)
    return {"account_id": row["account_id"], "as_of_date": row["as_of_date"].isoformat(),
            "model_version": row["model_version"], "churn_probability": row["churn_probability"],
            "risk_decile": row["risk_decile"], "rank": row["rank"],
            "reasons": [row[r] for r in ("reason_1", "reason_2", "reason_3") if row[r] is not None],
            "scored_at": row["scored_at"].astimezone(dt.UTC).isoformat(),  # Spark gives local time
            "on_target_list": target is not None,
            "target_rank": target and target["target_rank"], "expected_value": target and target["expected_value"]}


# --- tests -------------------------------------------------------------------------------------------


def test_ids_follow_the_pipelines_normalisation() -> None:
    assert [normalized_account_id(x) for x in ("123.0", " 123 ", "1.23E2", "-7.00", "1.5", "a-1", "A1")] == [
        "123", "123", "123", "-7", "1.5", "a-1", "A1"]
    assert normalized_account_id("Ab1", "lower") == "ab1" and normalized_account_id("Ab1", "upper") == "AB1"
    assert [normalized_account_id(x) for x in ("", "   ", "a b", "a/b", "a\x07", "x" * 129)] == [None] * 6


def test_the_slim_image_installs_the_pinned_service_dependencies_and_no_spark() -> None:
    root = Path(__file__).resolve().parents[1]
    dockerfile = (root / "docker" / "Dockerfile.serve").read_text()
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    pinned = set(project["dependencies"]) | set(project["optional-dependencies"]["serve"])
    installed = set(re.findall(r'"([a-z-]+[<>=][^"]*)"', dockerfile))
    assert installed and installed <= pinned, installed - pinned  # the same pins as pyproject.toml
    assert {r for r in project["optional-dependencies"]["serve"] if not r.startswith("httpx")} <= installed
    assert "--no-deps" in dockerfile and not re.search(r"pyspark[=<>]|delta-spark|openjdk|apache/spark", dockerfile)
    assert "USER 10001:10001" in dockerfile


def test_the_service_process_loads_no_spark() -> None:
    code = ("import sys, churn_spark.cli, churn_spark.serve.job, uvicorn, fastapi, deltalake; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyspark', 'py4j', 'delta')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_account_answers_its_stored_row(lake: dict[str, Any], service: Service) -> None:
    assert sorted(lake["scores"]) == ["a1", "a2", "a3", "a4", "a5", "a6", "a7"]
    assert len(lake["targets"]) == 3  # scoring.targeting.max_contacts
    for account, row in lake["scores"].items():
        got = service.get(f"/v1/accounts/{account}")
        assert got.status_code == 200
        assert got.json() == _account_json(row, lake["targets"])
    on_list = [a for a in lake["scores"] if service.get(f"/v1/accounts/{a}").json()["on_target_list"]]
    assert sorted(on_list) == sorted(t["account_id"] for t in lake["targets"])
    # the slice of the current model at its latest date: not v-other's later one, not v-lr's older one
    assert service.get("/v1/accounts/a1").json()["as_of_date"] == "2023-07-01"
    assert service.get("/readyz").json() == {"status": "ready", "model_version": "v-lr", "as_of_date": "2023-07-01"}
    assert service.get("/healthz").json() == {"status": "ok"}
    assert service.get("/v1/accounts/%20a3%20").json()["account_id"] == "a3"  # trimmed like every input id


def test_target_list_is_paged_in_rank_order(lake: dict[str, Any], service: Service) -> None:
    want = [{"account_id": t["account_id"], "target_rank": t["target_rank"],
             "churn_probability": t["churn_probability"], "expected_value": t["expected_value"],
             "account_value": t["account_value"], "contact_cost": t["contact_cost"],
             "reasons": [t[r] for r in ("reason_1", "reason_2", "reason_3") if t[r] is not None],
             "targeting_mode": "risk", "uplift": None} for t in lake["targets"]]
    assert [w["target_rank"] for w in want] == [1, 2, 3]
    page = service.get("/v1/targets", limit=2, offset=1).json()
    assert page == {"as_of_date": "2023-07-01", "model_version": "v-lr", "total": 3, "limit": 2, "offset": 1,
                    "targets": want[1:3]}
    assert service.get("/v1/targets").json()["targets"] == want  # default limit 100
    assert service.get("/v1/targets", offset=3).json()["targets"] == []


@pytest.mark.parametrize(("params", "field"), [({"limit": 0}, "limit"), ({"limit": 1001}, "limit"),
                                               ({"limit": "ten"}, "limit"), ({"offset": -1}, "offset")])
def test_bad_paging_is_a_400_naming_the_parameter(service: Service, params: dict[str, Any], field: str) -> None:
    got = service.get("/v1/targets", **params)
    assert got.status_code == 400
    assert got.json()["detail"].startswith(f"{field}: ") and "\n" not in got.json()["detail"]


@pytest.mark.parametrize(("account", "status"), [("a8", 404), ("nobody", 404), ("a%20b", 400), ("%07", 400),
                                                 ("x" * 129, 400), ("%20%20", 400)])
def test_unknown_and_malformed_ids(service: Service, account: str, status: int) -> None:
    got = service.get(f"/v1/accounts/{account}")
    assert got.status_code == status
    assert set(got.json()) == {"detail"} and "Traceback" not in got.text
    if status == 404:
        assert got.json()["detail"] == f"account {account} is not scored at 2023-07-01 by model v-lr"


def test_metrics_count_requests_and_name_the_loaded_slice(service: Service) -> None:
    route = 'churn_serve_requests_total{method="GET",route="/v1/accounts/{account_id}",status="404"}'
    before = service.metric(route)
    for _ in range(3):
        service.get("/v1/accounts/nobody")
    assert service.metric(route) == (0 if math.isnan(before) else before) + 3
    assert service.metric('churn_serve_model_info{as_of_date="2023-07-01",model_version="v-lr"}') == 1
    assert service.metric("churn_serve_as_of_date_seconds") == dt.datetime(2023, 7, 1, tzinfo=dt.UTC).timestamp()
    assert service.metric("churn_serve_accounts") == 7 and service.metric("churn_serve_targets") == 3
    assert service.metric("churn_serve_reload_failures_total") == 0
    assert service.metric('churn_serve_request_duration_seconds_count{route="/v1/accounts/{account_id}"}') >= 3


def test_score_without_an_onnx_model_is_503(service: Service) -> None:
    got = service.post("/v1/score", {"features": {"mrr": 1.0}})
    assert (got.status_code, got.json()) == (503, {"detail": "model not exported to ONNX"})


def test_bearer_token_guards_everything_but_the_probes(lake: dict[str, Any], tmp_path: Path) -> None:
    with serving(lake["lake"].root, tmp_path, token="s3cret") as svc:
        assert svc.get("/v1/accounts/a1").status_code == 200
        for path in ("/v1/accounts/a1", "/v1/targets", "/metrics"):
            anonymous = httpx.get(svc.url + path, timeout=10)
            assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
            assert svc.get(path, token="s3cret-not").status_code == 401
        assert httpx.post(svc.url + "/v1/score", json={}, timeout=10).status_code == 401
        assert httpx.get(svc.url + "/healthz", timeout=10).status_code == 200
        assert httpx.get(svc.url + "/readyz", timeout=10).status_code == 200


def test_a_named_but_unset_token_variable_refuses_to_start(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"serve": {"auth_token_env": TOKEN_ENV}}))
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    done = subprocess.run([CLI, "--config", str(config), "--lakehouse", str(tmp_path), "serve", "--port",
                           str(_free_port())], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: serve.auth_token_env names {TOKEN_ENV}")


def test_not_ready_until_scores_exist(tmp_path: Path) -> None:
    with serving(str(tmp_path / "empty"), tmp_path, ready=False) as svc:
        assert svc.get("/healthz").status_code == 200
        assert svc.get("/readyz").status_code == 503
        assert svc.get("/v1/accounts/a1").json() == {"detail": "no scores loaded yet"}
        assert svc.get("/v1/targets").status_code == 503


class _Hammer:
    """Requests in a loop on a thread until stopped: every answer's status and (as-of, model) is kept."""

    def __init__(self, service: Service) -> None:
        self.service, self.seen, self.stop = service, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.service.url, timeout=10) as client:
            while not self.stop.is_set():
                for path in ("/v1/accounts/a1", "/v1/targets"):
                    got = client.get(path)
                    body = got.json()
                    self.seen.append((got.status_code, body.get("as_of_date"), body.get("model_version")))

    def __enter__(self) -> _Hammer:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        self.thread.join(30)


def test_reload_during_requests_swaps_without_a_failed_request(spark: SparkSession, lake: dict[str, Any],
                                                               tmp_path: Path) -> None:
    lh = _copy(lake, tmp_path)
    with serving(lh.root, tmp_path) as svc, _Hammer(svc) as hammer:
        # a newer slice of the current model (a1, a2 only), with its target list
        _write_scores(spark, lh, D2, "v-lr", [("a1", 0.9, 1, 1, "logins_7d", "mrr", None),
                                              ("a2", 0.1, 2, 2, None, None, None)],
                      [("a1", 0.9, 1200.0, 98.0, 10.0, 1, "logins_7d")])
        _wait(lambda: svc.get("/v1/accounts/a1").json()["as_of_date"] == "2023-08-01", 30, "the new slice")
        assert svc.get("/v1/accounts/a1").json() == {
            "account_id": "a1", "as_of_date": "2023-08-01", "model_version": "v-lr", "churn_probability": 0.9,
            "risk_decile": 1, "rank": 1, "reasons": ["logins_7d", "mrr"],
            "scored_at": AT.astimezone(dt.UTC).isoformat(), "on_target_list": True, "target_rank": 1,
            "expected_value": 98.0}
        assert svc.get("/v1/accounts/a2").json()["on_target_list"] is False
        assert svc.get("/v1/accounts/a3").status_code == 404  # not in the new slice
        # a promoted model: its own folder, its slice at D1, then the pointer (replaced atomically)
        shutil.copytree(f"{lh.models}/v-lr", f"{lh.models}/v-new")
        _write_scores(spark, lh, D1, "v-new", [("a1", 0.3, 1, 1, None, None, None)], [])
        pointer = Path(lh.models) / "current"
        pointer.with_suffix(".tmp").write_text(json.dumps({"version": "v-new", "reason": "test"}))
        os.replace(pointer.with_suffix(".tmp"), pointer)
        _wait(lambda: svc.get("/v1/accounts/a1").json()["model_version"] == "v-new", 30, "the promoted model")
        assert svc.get("/v1/accounts/a1").json()["churn_probability"] == 0.3
        assert svc.get("/v1/targets").json()["total"] == 0
    statuses = {s for s, _, _ in hammer.seen}
    assert statuses == {200}, f"{len(hammer.seen)} requests, statuses {statuses}"
    served = [(a, m) for _, a, m in hammer.seen]
    assert set(served) <= {("2023-07-01", "v-lr"), ("2023-08-01", "v-lr"), ("2023-07-01", "v-new")}
    first_new = served.index(("2023-08-01", "v-lr"))
    assert ("2023-07-01", "v-lr") not in served[first_new:]  # swapped once, never back
    assert len(hammer.seen) > 20


def test_a_failed_reload_keeps_the_previous_data(lake: dict[str, Any], tmp_path: Path) -> None:
    lh = _copy(lake, tmp_path)
    before = _account_json(lake["scores"]["a1"], lake["targets"])
    with serving(lh.root, tmp_path) as svc:
        # each bad pointer replaces the file whole, as a promotion does: a poll that read a half-written file
        # would log a third problem (an empty pointer), not the one under test
        pointer = Path(lh.models) / "current"
        pointer.with_suffix(".tmp").write_text("{not json")
        os.replace(pointer.with_suffix(".tmp"), pointer)
        _wait(lambda: svc.metric("churn_serve_reload_failures_total") >= 2, 30, "a failed reload")
        assert svc.metric("churn_serve_reload_failing") == 1
        assert svc.get("/v1/accounts/a1").json() == before
        assert svc.get("/readyz").status_code == 200
        # a promoted version without metadata.json is an incomplete write: refused too
        pointer.with_suffix(".tmp").write_text(json.dumps({"version": "v-missing"}))
        os.replace(pointer.with_suffix(".tmp"), pointer)
        _wait(lambda: "v-missing" in svc.log.read_text(), 30, "the second problem logged")
        assert svc.get("/v1/accounts/a1").json() == before
    lines = [x for x in svc.log.read_text().splitlines() if "reload failed" in x]
    assert len(lines) == 2, lines  # one line per problem, not one per poll
    assert "still serving v-lr at 2023-07-01" in lines[0] and "models/current is not a JSON pointer" in lines[0]
    assert "Traceback" not in svc.log.read_text()


def _export_by_hand(folder: Path) -> None:
    """A hand-built export in the exporter's format (churn_spark/onnx: one [N, 1] input per feature, output
    `churn_probability`, the schema file beside it): p = sigmoid(0.01 * mrr - 1), so mrr 100 -> 0.5 and
    mrr 300 -> sigmoid(2). Schema first, graph last, as the exporter writes them."""
    import onnx
    h, tp = onnx.helper, onnx.TensorProto
    nodes = [h.make_node("Mul", ["mrr", "w"], ["wx"]), h.make_node("Add", ["wx", "b"], ["z"]),
             h.make_node("Sigmoid", ["z"], ["churn_probability_raw"]),
             h.make_node("Identity", ["churn_probability_raw"], ["churn_probability"])]
    consts = [h.make_tensor(n, tp.DOUBLE, [1], [v]) for n, v in (("w", 0.01), ("b", -1.0))]
    outputs = [h.make_tensor_value_info(n, tp.DOUBLE, [None, 1])
               for n in ("churn_probability_raw", "churn_probability")]
    graph = h.make_graph(nodes, "logistic_on_mrr", [h.make_tensor_value_info("mrr", tp.DOUBLE, [None, 1])], outputs,
                         consts)
    schema = FeatureSchema(model_version="v-lr", model_type="lr", calibration={"method": "none"},
                           features=[Feature("mrr", "double", "numeric")], null_category="\u0000null",
                           ignored_fields=["account_id"])
    (folder / "model.onnx.json").write_bytes(schema.to_json())
    (folder / "model.onnx").write_bytes(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]).SerializeToString())


def test_score_uses_an_onnx_export_that_appears_after_start(lake: dict[str, Any], tmp_path: Path) -> None:
    lh = _copy(lake, tmp_path)
    with serving(lh.root, tmp_path) as svc:
        assert svc.post("/v1/score", {"mrr": 100.0}).status_code == 503
        _export_by_hand(Path(lh.models) / "v-lr")
        _wait(lambda: svc.post("/v1/score", {"mrr": 100.0}).status_code == 200, 30, "the ONNX model")
        assert svc.post("/v1/score", {"mrr": 100.0}).json() == {"model_version": "v-lr", "churn_probability": 0.5,
                                                                "reasons": None}  # a schema without reasons
        got = svc.post("/v1/score", {"features": {"mrr": 300, "account_id": "a1"}}).json()
        assert got["churn_probability"] == pytest.approx(1 / (1 + math.exp(-2)), abs=1e-12)
        refused = svc.post("/v1/score", {"mrr": "high", "ghost": 1})
        assert refused.status_code == 400
        assert refused.json() == {"detail": "feature row: wrongly typed fields: mrr (expected double, got str); "
                                            "unknown fields: ghost", "fields": ["mrr", "ghost"]}
        assert svc.post("/v1/score", {}).json()["fields"] == ["mrr"]
        assert svc.post("/v1/score", [1, 2]).status_code == 400
        assert svc.get("/v1/accounts/a1").json()["as_of_date"] == "2023-07-01"  # the stored scores unchanged


def test_score_of_the_exported_model_matches_the_score_job(spark: SparkSession, lake: dict[str, Any],
                                                           tmp_path: Path) -> None:
    """The real export (churn_spark/onnx) of v-lr, fed an account's stored feature row through the service,
    gives the probability and the reasons the score job wrote for that account."""
    from churn_spark.onnx.job import run_export

    lh = _copy(lake, tmp_path)
    run_export(spark, with_overrides(lake["settings"], {"lakehouse": lh.root}))
    features = spark.read.format("delta").load(lh.churn_features).where(F.col("as_of_date") == D1)
    names = list(lake["meta"]["feature_schema"])
    rows = {r["account_id"]: {n: r[n] for n in names} for r in features.select("account_id", *names).collect()}
    with serving(lh.root, tmp_path) as svc:
        for account in ("a1", "a5", "a7"):  # a busy account, a quiet one, one without events
            got = svc.post("/v1/score", json.loads(json.dumps(rows[account], default=float)))
            assert got.status_code == 200, got.text
            stored = lake["scores"][account]
            assert got.json()["churn_probability"] == pytest.approx(stored["churn_probability"], abs=1e-5)
            assert got.json()["reasons"] == [stored[r] for r in ("reason_1", "reason_2", "reason_3")
                                             if stored[r] is not None], account
        assert any(lake["scores"][a]["reason_1"] is not None for a in ("a1", "a5", "a7"))  # not all empty
