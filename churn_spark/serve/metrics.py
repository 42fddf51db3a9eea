"""Prometheus metrics of the service, in a registry of its own (one per app: tests start several)."""

from __future__ import annotations

import datetime as dt

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServiceMetrics:
    """Request counts and latencies by route template (never the raw path: ids would explode the series),
    what is loaded, and reloads."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("churn_serve_requests", "HTTP requests by route template, method and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("churn_serve_request_duration_seconds", "Request latency by route template",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.model = Gauge("churn_serve_model_info", "1 for the loaded model version and scores as-of date",
                           ["model_version", "as_of_date"], registry=r)
        self.as_of = Gauge("churn_serve_as_of_date_seconds", "Loaded scores' as-of date, seconds since 1970 (UTC)",
                           registry=r)
        self.accounts = Gauge("churn_serve_accounts", "Accounts in the loaded scores slice", registry=r)
        self.targets = Gauge("churn_serve_targets", "Accounts on the loaded target list", registry=r)
        self.reloads = Counter("churn_serve_reloads", "Snapshots loaded and swapped in", registry=r)
        self.reload_failures = Counter("churn_serve_reload_failures", "Reload attempts that failed (the previous "
                                       "data is still served)", registry=r)
        self.reload_failing = Gauge("churn_serve_reload_failing", "1 while the latest reload attempt failed",
                                    registry=r)

    def loaded(self, model_version: str, as_of: dt.date, accounts: int, targets: int) -> None:
        self.model.clear()
        self.model.labels(model_version, as_of.isoformat()).set(1)
        self.as_of.set(dt.datetime.combine(as_of, dt.time(), dt.UTC).timestamp())
        self.accounts.set(accounts)
        self.targets.set(targets)
        self.reloads.inc()
        self.reload_failing.set(0)

    def failed(self) -> None:
        self.reload_failures.inc()
        self.reload_failing.set(1)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)
