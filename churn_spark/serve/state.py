"""The snapshot the service answers from, and the poller that replaces it.

Requests read `ServiceState.snapshot` once and use that object to the end, so the swap (one reference
assignment, atomic in CPython) never drops or mixes a request. A reload loads aside and only then swaps;
when it fails the previous snapshot stays, the failure is counted, and one line is logged per new problem.
"""

from __future__ import annotations

import logging
import threading

from churn_spark.lakehouse import Lakehouse
from churn_spark.serve.metrics import ServiceMetrics
from churn_spark.serve.snapshot import Snapshot, Sources, current_sources, load_snapshot

log = logging.getLogger("churn_spark.serve")


def one_line(exc: BaseException) -> str:
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message.splitlines()[0]}" if message else type(exc).__name__


class ServiceState:
    """The current snapshot (None until the first load) and the background poll that keeps it fresh."""

    def __init__(self, lake: Lakehouse, metrics: ServiceMetrics, poll_interval_seconds: float) -> None:
        self.lake = lake
        self.metrics = metrics
        self.interval = poll_interval_seconds
        self.snapshot: Snapshot | None = None
        self._loaded: Sources | None = None
        self._last_problem: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll_once(self) -> bool:
        """Load and swap in a newer snapshot when the sources changed; True when it did."""
        try:
            sources = current_sources(self.lake)
            if sources == self._loaded:
                return False
            fresh = load_snapshot(self.lake, sources)
        except Exception as exc:  # any failure: keep serving what is loaded, say so once, count it
            self.metrics.failed()
            problem = one_line(exc)
            if problem != self._last_problem:
                kept = (f"still serving {self.snapshot.model_version} at {self.snapshot.as_of_date}"
                        if self.snapshot else "nothing loaded yet")
                log.warning("reload failed (%s): %s", kept, problem)
            self._last_problem = problem
            return False
        self.snapshot, self._loaded, self._last_problem = fresh, sources, None
        self.metrics.loaded(fresh.model_version, fresh.as_of_date, fresh.accounts, fresh.target_count)
        log.info("serving model %s, scores at %s: %d accounts, %d targets", fresh.model_version, fresh.as_of_date,
                 fresh.accounts, fresh.target_count)
        return True

    def _run(self) -> None:
        while True:
            self.poll_once()
            if self._stop.wait(self.interval):
                return

    def start(self) -> None:
        """First load and then a poll every interval, on a daemon thread (the server answers meanwhile)."""
        self._thread = threading.Thread(target=self._run, name="churn-serve-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
