"""Wide event vocabularies (features/vocabulary.py): slugs, variant folding, collisions, features.event_type_map,
features.max_event_types ranked in the first build's range with the rest pooled into `other`, and the
vocabulary frozen with the feature-set version. Expected values are hand-computed from the rows below.

One snapshot D = 2023-03-01, lookback 1 month: the ranking range is [2023-02-01, 2023-03-01).
Events in that range: Login/login 3, export 2, Share 2, invite 1; outside it export has 4 more (January)
and Share 5 more (on or after D). Ranked in the range with max_event_types = 2: login 3, then export and
share tie at 2 (export first by name): login and export keep columns, share and invite pool into `other`.
Ranked over all days it would be share 7, export 6: the range matters.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from chispa import assert_df_equality
from conftest import TEST_SPARK
from featuredata import D, T, accounts, events, subs, write_inputs
from pyspark.sql import DataFrame, SparkSession

from churn_spark import io
from churn_spark.config import Settings, with_overrides
from churn_spark.errors import ConfigError
from churn_spark.features import catalog as cat
from churn_spark.features import vocabulary as vocab
from churn_spark.features.activity import activity_features
from churn_spark.features.job import (
    EVENT_VOCABULARY_PROPERTY,
    bronze_daily_activity,
    frozen_event_types,
    labels_and_features,
    load_inputs,
    record_event_types,
    resolve_event_types,
    run_features,
    without_new_event_types,
)
from churn_spark.lakehouse import Lakehouse
from churn_spark.silver import daily_activity

D1, D2 = D(2023, 3, 1), D(2023, 4, 1)
SMALL: dict[str, Any] = {
    "features.windows_days": [7, 28], "features.trend_windows_days": [7], "features.per_seat_windows_days": [7],
    "features.change_windows_days": [28], "churn.lookback_months": 1, "inputs.support_tickets.enabled": False,
    "features.max_event_types": 2,
}
EVENTS = [
    ("e1", "a1", "Login", T(2023, 2, 10, 9)), ("e2", "a1", "login", T(2023, 2, 20, 9)),
    ("e3", "a2", "LOGIN", T(2023, 2, 25, 9)),
    ("e4", "a1", "export", T(2023, 2, 27, 9), 1.5), ("e5", "a2", "export", T(2023, 2, 27, 10), 2.0),
    *[(f"x{i}", "a2", "export", T(2023, 1, 5 + i, 9)) for i in range(4)],  # before the range
    ("e6", "a2", "Share", T(2023, 2, 23, 9)), ("e7", "a2", "Share", T(2023, 2, 28, 23, 59)),
    *[(f"s{i}", "a1", "Share", T(2023, 3, 1 + i, 9)) for i in range(5)],  # on or after D: outside the range
    ("e8", "a1", "invite", T(2023, 2, 28, 9), 4.0),
]


def settings_for(tmp_path: Any, **extra: Any) -> Settings:
    return with_overrides(Settings(lakehouse=str(tmp_path / "lake"), spark=TEST_SPARK), {**SMALL, **extra})


def daily(spark: SparkSession, rows: list[tuple[Any, ...]]) -> DataFrame:
    return daily_activity(events(spark, rows))


def test_variants_of_one_type_fold_into_one_slug_family():
    raws = ["Page View", "page view", "page_view", "PAGE-VIEW", " Login ", "Report.Export"]
    assert vocab.event_families(raws, {}) == {
        "Page View": "page_view", "page view": "page_view", "page_view": "page_view", "PAGE-VIEW": "page_view",
        " Login ": "login", "Report.Export": "report_export"}
    assert vocab.folds(vocab.event_families(raws, {})) == {
        "login": [" Login "], "page_view": ["PAGE-VIEW", "Page View", "page view", "page_view"],
        "report_export": ["Report.Export"]}


def test_collisions_are_one_error_listing_every_colliding_type():
    raws = ["café", "caf", "Events", "page_view", "Page View", "日本", "中国", "days"]
    with pytest.raises(ConfigError) as error:
        vocab.event_families(raws, {})
    message = str(error.value)
    assert "'caf', 'café' -> 'caf'" in message  # same slug, but not a case/punctuation variant
    assert "'中国', '日本' -> 'unnamed'" in message
    assert "'Events' -> 'events' (reserved" in message and "'days' -> 'days' (reserved" in message
    assert "Page View" not in message  # a variant of page_view: folded, not a collision
    # the map separates them: an exact raw key names the family before any slugging
    assert vocab.event_families(["café", "caf"], {"café": "Cafe Visit"}) == {"café": "cafe_visit", "caf": "caf"}


def test_event_type_map_folds_raw_types_into_families_before_slugging(spark: SparkSession):
    mapping = {"Sign Up": "signup", "register_form": "SignUp", "debug_ping": "other"}
    raws = ["Sign Up", "sign up", "Register Form", "register-form", "signup", "debug_ping", "Login"]
    # "Sign Up" is an exact key (its variant "sign up" is not: it slugs to sign_up); register_form is a
    # slug key (every variant); "signup" reaches the family by its own slug; other pools explicitly
    assert vocab.event_families(raws, mapping) == {
        "Sign Up": "signup", "sign up": "sign_up", "Register Form": "signup", "register-form": "signup",
        "signup": "signup", "debug_ping": "other", "Login": "login"}
    rows = [("m1", "a1", "Sign Up", T(2023, 2, 27, 9), 1.0), ("m2", "a1", "Register Form", T(2023, 2, 27, 10), 2.0),
            ("m3", "a1", "register-form", T(2023, 2, 20, 9)), ("m4", "a1", "debug_ping", T(2023, 2, 28, 9)),
            ("m5", "a1", "Login", T(2023, 2, 28, 9))]
    members = vocab.event_families([r[2] for r in rows], mapping)
    s = with_overrides(Settings(), SMALL)
    got = activity_features(daily(spark, rows), [D1], members, s.features, s.churn).select(
        "account_id", "signup_count_7d", "signup_value_sum_7d", "signup_days_active_7d", "signup_count_28d",
        "other_count_28d", "login_count_28d", "events_count_28d")
    want = spark.createDataFrame([("a1", 2.0, 3.0, 1.0, 3.0, 1.0, 1.0, 5.0)],
                                 "account_id string, signup_count_7d double, signup_value_sum_7d double, "
                                 "signup_days_active_7d double, signup_count_28d double, other_count_28d double, "
                                 "login_count_28d double, events_count_28d double")
    assert_df_equality(got, want, ignore_nullable=True)


def test_max_event_types_keeps_the_most_frequent_in_range_and_pools_the_rest(spark: SparkSession, tmp_path):
    s = settings_for(tmp_path)
    resolved = resolve_event_types(s, daily(spark, EVENTS), [D1])
    assert (resolved.source, resolved.types, resolved.new) == ("discovered", ["export", "login", "other"], [])
    assert resolved.members == {"Login": "login", "login": "login", "LOGIN": "login", "export": "export",
                                "Share": "other", "invite": "other"}
    assert resolved.ranked_over == ["2023-02-01", "2023-03-01"]
    assert resolved.folds == {"login": ["LOGIN", "Login", "login"], "other": ["Share", "invite"]}
    got = activity_features(daily(spark, EVENTS), [D1], resolved.members, s.features, s.churn).select(
        "account_id", "login_count_28d", "export_count_28d", "export_value_sum_28d", "other_count_28d",
        "other_value_sum_28d", "other_days_active_28d", "other_count_7d", "events_count_28d")
    want = spark.createDataFrame([
        ("a1", 2.0, 1.0, 1.5, 1.0, 4.0, 1.0, 1.0, 4.0),  # other: invite on 02-28
        ("a2", 1.0, 1.0, 2.0, 2.0, 0.0, 2.0, 2.0, 4.0),  # other: Share on 02-23 and 02-28 (Jan exports: outside)
    ], "account_id string, login_count_28d double, export_count_28d double, export_value_sum_28d double, "
       "other_count_28d double, other_value_sum_28d double, other_days_active_28d double, other_count_7d double, "
       "events_count_28d double")
    assert_df_equality(got, want, ignore_row_order=True, ignore_nullable=True)
    names = [spec.name for spec in cat.feature_catalog(s, resolved.members, with_support=False)]
    assert [n for n in names if n.endswith("_count_28d")] == [
        "events_count_28d", "export_count_28d", "login_count_28d", "other_count_28d"]


def test_ties_break_by_name_and_no_cap_keeps_every_family():
    families = {"b": "b", "a": "a", "c": "c", "Z": "z"}
    volumes = {"b": 5, "a": 5, "c": 5, "Z": 9}
    assert vocab.capped_families(families, volumes, 2) == {"b": "other", "a": "a", "c": "other", "Z": "z"}
    assert vocab.capped_families(families, volumes, None) == families
    assert vocab.capped_families(families, volumes, 0) == {r: "other" for r in families}


@pytest.mark.slow  # features runs on a written lakehouse
def test_frozen_vocabulary_keeps_its_columns_when_another_type_becomes_frequent(spark: SparkSession, tmp_path):
    s = settings_for(tmp_path)
    path = Lakehouse.from_settings(s).churn_features
    spark.range(1).write.format("delta").save(path)  # stands in for gold.churn_features after its first write
    first = resolve_event_types(s, daily(spark, EVENTS), [D1])
    record_event_types(spark, s, first)
    stored = json.loads(io.table_properties(spark, path)[EVENT_VOCABULARY_PROPERTY.format(version="1")])
    assert stored == {"members": first.members, "max_event_types": 2, "event_type_map": {},
                      "ranked_over": ["2023-02-01", "2023-03-01"]}
    # March: invite becomes the most frequent type, a variant of it and a new type arrive; cap and map change
    march = [(f"i{i}", "a1", "invite", T(2023, 3, 2 + i, 9)) for i in range(9)] + [
        ("v1", "a2", "INVITE", T(2023, 3, 20, 9)), ("w1", "a2", "webinar", T(2023, 3, 21, 9))]
    later = with_overrides(s, {"features.max_event_types": 5, "features.event_type_map": {"Webinar": "seminar"}})
    second = resolve_event_types(later, daily(spark, EVENTS + march), [D2])
    assert (second.source, second.types, second.new) == ("recorded", first.types, ["webinar"])
    assert second.members == {**first.members, "INVITE": "other"}  # a variant of a pooled type stays pooled
    assert second.ranked_over == first.ranked_over
    assert frozen_event_types(spark, later) == ["export", "login", "other"]
    columns = [spec.name for spec in cat.feature_catalog(later, second.members, with_support=False)]
    assert columns == [spec.name for spec in cat.feature_catalog(s, first.members, with_support=False)]
    # the new type's events are dropped before the features (not even in the any-type counts)
    kept = without_new_event_types(daily(spark, EVENTS + march), second).select("event_type").distinct()
    assert_df_equality(kept, spark.createDataFrame([(t,) for t in sorted(second.members)], "event_type string"),
                       ignore_row_order=True, ignore_nullable=True)


def test_a_pinned_list_folds_variants_and_pools_into_other_only_when_pinned(spark: SparkSession, tmp_path):
    pinned = resolve_event_types(settings_for(tmp_path, **{"features.event_types": ["login", "Share"]}),
                                 daily(spark, EVENTS), [D1])
    assert (pinned.source, pinned.types) == ("config", ["login", "share"])
    assert pinned.members == {"Login": "login", "login": "login", "LOGIN": "login", "Share": "share"}
    with_other = resolve_event_types(settings_for(tmp_path, **{"features.event_types": ["login", "other"]}),
                                     daily(spark, EVENTS), [D1])
    assert with_other.members == {"Login": "login", "login": "login", "LOGIN": "login", "export": "other",
                                  "Share": "other", "invite": "other", "other": "other"}


@pytest.mark.slow  # one features run on a written lakehouse (silver synced from bronze)
def test_features_job_folds_caps_reports_and_silver_equals_bronze(spark: SparkSession, tmp_path):
    s = settings_for(tmp_path, **{"churn.snapshots.start": D1, "churn.snapshots.end": D1,
                                  "churn.horizon_months": 1, "inputs.account_attributes": []})
    write_inputs(s, accounts(spark, [("a1", T(2022, 1, 1)), ("a2", T(2022, 1, 1))]),
                 subs(spark, [("s1", "a1", D(2022, 1, 1), None), ("s2", "a2", D(2022, 1, 1), None)]),
                 events(spark, EVENTS), None)
    result = run_features(spark, s)
    assert {k: result[k] for k in ("event_types", "event_types_source", "new_event_types", "event_type_folds",
                                   "event_types_ranked_over")} == {
        "event_types": ["export", "login", "other"], "event_types_source": "discovered", "new_event_types": [],
        "event_type_folds": {"login": ["LOGIN", "Login", "login"], "other": ["Share", "invite"]},
        "event_types_ranked_over": ["2023-02-01", "2023-03-01"]}
    stored = spark.read.format("delta").load(Lakehouse.from_settings(s).churn_features)
    got = stored.select("account_id", "login_count_28d", "export_count_28d", "other_count_28d", "other_count_7d")
    want = spark.createDataFrame([("a1", 2.0, 1.0, 1.0, 1.0), ("a2", 1.0, 1.0, 2.0, 2.0)],
                                 "account_id string, login_count_28d double, export_count_28d double, "
                                 "other_count_28d double, other_count_7d double")
    assert_df_equality(got, want, ignore_row_order=True, ignore_nullable=True)
    # silver keeps raw types; the families are applied when the features read it: same as from bronze
    from_silver = load_inputs(spark, s)
    members = resolve_event_types(s, from_silver.events, [D1]).members
    from_bronze = replace(from_silver, events=bronze_daily_activity(spark, s))
    _, features_s = labels_and_features(from_silver, s, [D1], D(2023, 3, 5), members)
    _, features_b = labels_and_features(from_bronze, s, [D1], D(2023, 3, 5), members)
    assert_df_equality(features_s, features_b, ignore_row_order=True)
    assert_df_equality(features_s.select(*got.columns), want, ignore_row_order=True, ignore_nullable=True)
