from __future__ import annotations

import datetime as dt

import pytest

from churn_spark.config import load_settings, with_overrides
from churn_spark.errors import ConfigError


def test_defaults_match_design() -> None:
    s = load_settings()
    assert (s.churn.lookback_months, s.churn.horizon_months, s.churn.grace_days, s.churn.min_tenure_days) == (
        18, 6, 30, 0)
    assert s.features.windows_days == [7, 28, 90, 182, 365, 548]
    assert s.lakehouse == "./lakehouse"
    assert (s.model.calibration, s.model.seasonal_calibration) == ("isotonic", "auto")


def test_yaml_file_then_cli_override_wins(tmp_path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lakehouse: /data/lake\nchurn:\n  horizon_months: 3\n  grace_days: 14\n")
    s = load_settings(cfg, {"lakehouse": "/other", "churn.grace_days": None})
    assert s.lakehouse == "/other"
    assert s.churn.horizon_months == 3
    assert s.churn.grace_days == 14


def test_example_config_is_valid() -> None:
    s = load_settings("conf/example.yaml")
    assert s.inputs.support_tickets.format == "delta"


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("churn:\n  horizon_months: 0\n", "churn.horizon_months"),
        ("churn:\n  grace_dayz: 3\n", "churn.grace_dayz: Extra inputs are not permitted"),
        ("inputs:\n  accounts:\n    format: excel\n    path: x\n", "inputs.accounts.format"),
        ("inputs:\n  accounts:\n    format: catalog\n", "needs 'table'"),
        ("features:\n  windows_days: [7, -1]\n", "features.windows_days"),
        ("generate:\n  start: 2024-01-01\n  end: 2023-01-01\n", "end must be after start"),
        ("- a\n- b\n", "must hold a mapping"),
    ],
)
def test_invalid_config_names_the_field(tmp_path, yaml_text: str, message: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file_is_one_line() -> None:
    with pytest.raises(ConfigError, match="config file not found: nope.yaml"):
        load_settings("nope.yaml")


def test_with_overrides_revalidates() -> None:
    s = with_overrides(load_settings(), {"churn.snapshots.start": "2023-01-01"})
    assert s.churn.snapshots.start == dt.date(2023, 1, 1)
    with pytest.raises(ConfigError, match="churn.snapshots.start"):
        with_overrides(s, {"churn.snapshots.start": "not-a-date"})


@pytest.mark.parametrize(
    ("yaml_text", "family", "shifted"),
    [
        ("", "gbt", True),  # auto: a tree ensemble rarely splits on the season, its calibrator's level would stay
        ("", "xgboost", True),
        ("", "lr", False),  # auto: logistic regression fits the season's terms itself
        ("model:\n  calibration: none\n", "gbt", False),  # nothing calibrated, nothing shifted
        ("model:\n  seasonal_calibration: true\n", "lr", True),
        ("model:\n  seasonal_calibration: false\n", "gbt", False),
    ],
)
def test_the_seasonal_shift_by_default_is_for_calibrated_tree_models(tmp_path, yaml_text: str, family: str,
                                                                       shifted: bool) -> None:
    from churn_spark.train.job import shifts_season

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml_text)
    s = load_settings(cfg)
    assert shifts_season(s.model, family) is shifted


def test_seasonal_calibration_accepts_auto_or_a_boolean_only(tmp_path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  seasonal_calibration: sometimes\n")
    with pytest.raises(ConfigError, match="model.seasonal_calibration"):
        load_settings(cfg)
