"""The HTTP API (docs/service.md): routes, bearer auth, one-line errors and request metrics.

Every answer is JSON built from the snapshot a request picked up at its start. Errors are one line in
`{"detail": ...}`: 400 malformed input, 401 missing/wrong token, 404 unknown account, 503 nothing loaded
(or no ONNX model), 500 an unexpected failure (logged as one line, never a stack trace to the caller).
"""

from __future__ import annotations

import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Body, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from churn_spark.config import IdCase
from churn_spark.onnx.schema import FeatureRowError
from churn_spark.serve.ids import normalized_account_id
from churn_spark.serve.metrics import ServiceMetrics
from churn_spark.serve.snapshot import REASONS, Snapshot
from churn_spark.serve.state import ServiceState, one_line

log = logging.getLogger("churn_spark.serve")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


class _Unavailable(Exception):
    """Nothing loaded yet: 503."""


def _snapshot(state: ServiceState) -> Snapshot:
    snap = state.snapshot
    if snap is None:
        raise _Unavailable("no scores loaded yet")
    return snap


class GuardMiddleware:
    """Times and counts every request by its route template, and turns an unexpected exception into a
    one-line 500 (Starlette's own handler would log a traceback and re-raise)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [500, False]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0], status[1] = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            log.error("%s %s failed: %s", scope["method"], scope["path"], one_line(exc))
            if not status[1]:
                await _error(500, "internal error")(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe(route, scope["method"], int(status[0]), time.perf_counter() - started)


def _account(snap: Snapshot, i: int) -> dict[str, Any]:
    s = snap.scores
    aid, scored_at = s["account_id"][i].as_py(), s["scored_at"][i].as_py()
    t = snap.target_index.get(aid)
    return {
        "account_id": aid, "as_of_date": snap.as_of_date.isoformat(), "model_version": snap.model_version,
        "churn_probability": s["churn_probability"][i].as_py(), "risk_decile": s["risk_decile"][i].as_py(),
        "rank": s["rank"][i].as_py(), "reasons": [r for c in REASONS if (r := s[c][i].as_py()) is not None],
        "scored_at": None if scored_at is None else scored_at.isoformat(),
        "on_target_list": t is not None,
        "target_rank": None if t is None else snap.targets.column("target_rank")[t].as_py(),
        "expected_value": None if t is None else snap.targets.column("expected_value")[t].as_py(),
    }


TARGET_FIELDS = ("account_id", "target_rank", "churn_probability", "expected_value", "account_value",
                 "contact_cost", "reasons", "targeting_mode", "uplift")


def _targets(snap: Snapshot, offset: int, limit: int) -> list[dict[str, Any]]:
    """One page of the target list in rank order (one Arrow slice converted at once)."""
    page = snap.targets.slice(offset, limit).to_pylist() if offset < snap.target_count else []
    for row in page:
        row["reasons"] = [r for c in REASONS if (r := row.pop(c)) is not None]
    return [{k: row[k] for k in TARGET_FIELDS} for row in page]


def bearer_guard(token: str | None) -> Callable[[Request], None]:
    """A dependency: with a token, the request must carry `Authorization: Bearer <token>` (constant-time)."""
    expected = token.encode() if token else None

    def check(request: Request) -> None:
        if expected is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise _Unauthorized()

    return check


class _Unauthorized(Exception):
    pass


def create_app(state: ServiceState, token: str | None = None, id_case: IdCase = "preserve",
               max_page_size: int = 1000) -> FastAPI:
    """The service over `state`, whose poller starts with the app (first load included: the port answers
    the probes meanwhile) and stops at shutdown."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        state.start()
        yield
        state.stop()

    app = FastAPI(title="churn-spark", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.add_middleware(GuardMiddleware, metrics=state.metrics)

    async def unavailable(_: Request, exc: Exception) -> Response:
        return _error(503, str(exc))

    async def unauthorized(_: Request, exc: Exception) -> Response:
        return _error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})

    async def invalid(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return _error(400, _validation_line(exc))

    app.add_exception_handler(_Unavailable, unavailable)
    app.add_exception_handler(_Unauthorized, unauthorized)
    app.add_exception_handler(RequestValidationError, invalid)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        snap = state.snapshot
        if snap is None:
            return _error(503, "no scores loaded yet")
        return JSONResponse({"status": "ready", "model_version": snap.model_version,
                             "as_of_date": snap.as_of_date.isoformat()})

    api = APIRouter(dependencies=[Depends(bearer_guard(token))])

    @api.get("/metrics")
    async def metrics() -> Response:
        return PlainTextResponse(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @api.get("/v1/accounts/{account_id}")
    async def account(account_id: str) -> JSONResponse:
        snap = _snapshot(state)
        key = normalized_account_id(account_id, id_case)
        if key is None:
            return _error(400, "malformed account id: 1-128 characters without spaces, control characters or "
                               "slashes")
        i = snap.index.get(key)
        if i is None:
            return _error(404, f"account {key} is not scored at {snap.as_of_date} by model {snap.model_version}")
        return JSONResponse(_account(snap, i))

    @api.get("/v1/targets")
    async def targets(limit: int = Query(100, ge=1, le=max_page_size), offset: int = Query(0, ge=0)) -> JSONResponse:
        snap = _snapshot(state)
        return JSONResponse({"as_of_date": snap.as_of_date.isoformat(), "model_version": snap.model_version,
                             "total": snap.target_count, "limit": limit, "offset": offset,
                             "targets": _targets(snap, offset, limit)})

    @api.post("/v1/score")
    def score(row: dict[str, Any] = Body(...)) -> JSONResponse:
        snap = _snapshot(state)
        if snap.scorer is None:
            return _error(503, snap.scorer_problem or "model not exported to ONNX")
        inner = row.get("features")
        features: dict[str, Any] = inner if set(row) == {"features"} and isinstance(inner, dict) else row
        try:
            (probability,), reasons = snap.scorer.score([features])
        except FeatureRowError as exc:  # the field names, for the caller to fix its row
            return JSONResponse({"detail": str(exc), "fields": exc.fields}, status_code=400)
        if not math.isfinite(probability):  # a graph that disagrees with Spark; JSON has no NaN either
            log.error("POST /v1/score: the ONNX model %s returned %s", snap.scorer.schema.model_version, probability)
            return _error(500, "the ONNX model returned a non-finite probability for this row")
        # reasons: LR models only (null for trees: occlusion needs K+1 scorings and Spark's baselines)
        return JSONResponse({"model_version": snap.scorer.schema.model_version,
                             "churn_probability": float(probability),
                             "reasons": None if reasons is None else reasons[0]})

    app.include_router(api)
    return app


def _validation_line(exc: RequestValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body")) or "request"
    more = f" ({len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}"
