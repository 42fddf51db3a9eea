"""The feature catalogue: docs/churn-definition.md table generated from it; names are unique and say their window."""

from __future__ import annotations

from pathlib import Path

import pytest

from churn_spark.config import Settings
from churn_spark.errors import ConfigError
from churn_spark.features import catalog as cat

README = Path(__file__).resolve().parents[1] / "docs" / "churn-definition.md"


def test_readme_feature_table_is_generated_from_the_catalogue():
    text = README.read_text()
    assert cat.readme_table() in text, "docs/churn-definition.md feature table is stale: paste readme_table()"


def test_catalogue_names_unique_and_windowed_names_carry_their_window():
    specs = cat.feature_catalog(Settings(), ["login", "Report Export"], with_support=True)
    names = [s.name for s in specs]
    assert len(names) == len(set(names))
    assert "report_export_count_28d" in names and "login_days_active_90d" in names
    for s in specs:
        if s.window_days is not None:
            assert f"{s.window_days}d" in s.name, s.name
    assert {s.family for s in specs} == {"account", "activity", "support"}


def test_clashing_event_types_and_attributes_are_config_errors():
    assert cat.event_type_slugs(["page-view", "page view"]) == {"page view": "page_view", "page-view": "page_view"}
    with pytest.raises(ConfigError, match="column prefix"):  # not variants of one type: tests/test_event_vocabulary.py
        cat.event_type_slugs(["café", "caf"])
    clash = Settings.model_validate({"inputs": {"account_attributes": ["mrr"]}})
    with pytest.raises(ConfigError, match="clash"):
        cat.feature_catalog(clash, ["login"], with_support=False)


def test_only_tenure_grows_by_design():
    """Drift skips features flagged `grows_by_design` (docs/model.md#drift): tenure grows a month every month
    for every account; windowed counts and rates, contract values and days-since-last-event do not."""
    specs = cat.feature_catalog(Settings(), ["login"], with_support=True)
    assert [s.name for s in specs if s.grows_by_design] == ["tenure_days"]
    assert cat.grows_by_design(Settings()) == ["tenure_days"]
