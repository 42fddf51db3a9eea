"""The lakehouse layout (docs/tables.md): every table location is derived here and nowhere else."""

from __future__ import annotations

import os
from dataclasses import dataclass

from churn_spark.config import Settings, TableSource


def _is_uri(path: str) -> bool:
    return "://" in path


@dataclass(frozen=True)
class Lakehouse:
    """Table locations under one root: a local folder (the embedded default) or a URI (`s3a://…`)."""

    root: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Lakehouse:
        root = settings.lakehouse
        return cls(root if _is_uri(root) else os.path.abspath(os.path.expanduser(root)))

    @property
    def is_local(self) -> bool:
        return not _is_uri(self.root) or self.root.startswith("file:")

    def path(self, relative: str) -> str:
        """`relative` joined under the root; absolute paths and URIs are returned as they are."""
        if _is_uri(relative) or os.path.isabs(relative):
            return relative
        return f"{self.root.rstrip('/')}/{relative.lstrip('/')}"

    def source_path(self, source: TableSource) -> str:
        assert source.path is not None, "catalog sources have no path"
        return self.path(source.path)

    # raw
    @property
    def raw_accounts(self) -> str:
        return self.path("raw/accounts")

    @property
    def raw_subscriptions(self) -> str:
        return self.path("raw/subscriptions")

    @property
    def raw_support_tickets(self) -> str:
        return self.path("raw/support_tickets")

    @property
    def raw_churn_truth(self) -> str:
        return self.path("raw/churn_truth")

    @property
    def landing_events(self) -> str:
        return self.path("landing/events")

    # bronze
    @property
    def bronze_events(self) -> str:
        return self.path("bronze/events")

    @property
    def bronze_events_quarantine(self) -> str:
        return self.path("bronze/events_quarantine")

    # silver
    @property
    def silver_account_daily_activity(self) -> str:
        return self.path("silver/account_daily_activity")

    # gold
    @property
    def churn_labels(self) -> str:
        return self.path("gold/churn_labels")

    @property
    def churn_features(self) -> str:
        return self.path("gold/churn_features")

    @property
    def churn_scores(self) -> str:
        return self.path("gold/churn_scores")

    @property
    def churn_targets(self) -> str:
        return self.path("gold/churn_targets")

    # other
    @property
    def models(self) -> str:
        return self.path("models")

    @property
    def runs(self) -> str:
        return self.path("runs")

    @property
    def checkpoints(self) -> str:
        return self.path("_checkpoints")

    @property
    def reports(self) -> str:
        return self.path("reports")
