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
    assert {s.family for s in specs} == {"account", "calendar", "activity", "support"}


def test_clashing_event_types_and_attributes_are_config_errors():
    assert cat.event_type_slugs(["page-view", "page view"]) == {"page view": "page_view", "page-view": "page_view"}
    with pytest.raises(ConfigError, match="column prefix"):  # not variants of one type: tests/test_event_vocabulary.py
        cat.event_type_slugs(["café", "caf"])
    clash = Settings.model_validate({"inputs": {"account_attributes": ["mrr"]}})
    with pytest.raises(ConfigError, match="clash"):
        cat.feature_catalog(clash, ["login"], with_support=False)


def test_the_season_is_the_calendar_family_and_can_be_left_out():
    """Two columns after the account family, flagged `calendar` (never drift-checked, never a reason);
    `features.season: false` leaves them out of the catalogue, and so out of the table."""
    specs = cat.feature_catalog(Settings(), ["login"], with_support=False)
    names = [s.name for s in specs]
    assert [s.name for s in specs if s.calendar] == ["season_cos", "season_sin"] == cat.calendar_features(Settings())
    account = cat.account_specs(Settings().features, Settings().inputs.account_attributes)
    assert names.index("season_cos") == len(account)  # right after the account family
    off = Settings.model_validate({"features": {"season": False}})
    assert not [s for s in cat.feature_catalog(off, ["login"], with_support=False) if s.family == "calendar"]
    assert cat.calendar_features(off) == []


def test_only_tenure_grows_by_design():
    """Drift skips features flagged `grows_by_design` (docs/model.md#drift): tenure grows a month every month
    for every account; windowed counts and rates, contract values and days-since-last-event do not."""
    specs = cat.feature_catalog(Settings(), ["login"], with_support=True)
    assert [s.name for s in specs if s.grows_by_design] == ["tenure_days"]
    assert cat.grows_by_design(Settings()) == ["tenure_days"]
