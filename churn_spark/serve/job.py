"""`churn-spark serve`: settings -> the loaded snapshot, its poller and uvicorn on host:port.

Thin, like the other jobs: the token is read here (the only environment variable the service reads,
named by `serve.auth_token_env`), everything else comes from the settings.
"""

from __future__ import annotations

import os

from churn_spark.config import Settings
from churn_spark.errors import ConfigError
from churn_spark.lakehouse import Lakehouse
from churn_spark.serve.app import create_app
from churn_spark.serve.metrics import ServiceMetrics
from churn_spark.serve.state import ServiceState


def auth_token(settings: Settings, environ: dict[str, str] | None = None) -> str | None:
    """The bearer token, None when auth is off; a named but unset variable is an error, never an open door."""
    name = settings.serve.auth_token_env
    if name is None:
        return None
    token = (os.environ if environ is None else environ).get(name, "").strip()
    if not token:
        raise ConfigError(f"serve.auth_token_env names {name}, which is not set or empty: set it (a Secret) or "
                          "remove serve.auth_token_env to serve without auth")
    return token


def run_serve(settings: Settings) -> None:
    """Serve until interrupted (SIGINT/SIGTERM: uvicorn finishes the requests in flight, then stops)."""
    import uvicorn

    state = ServiceState(Lakehouse.from_settings(settings), ServiceMetrics(), settings.serve.poll_interval_seconds)
    app = create_app(state, auth_token(settings), settings.inputs.id_case, settings.serve.max_page_size)
    uvicorn.run(app, host=settings.serve.host, port=settings.serve.port, access_log=False, log_config=None,
                timeout_graceful_shutdown=20)
