"""Targeting by incremental value (`scoring.targeting.mode: uplift`): expected values by hand, selection equal
to brute force, accounts a contact would not help never contacted, risk mode unchanged, the targets table
written over one created before the mode and uplift columns, and the seam to the uplift model in score/job."""

from __future__ import annotations

import datetime as dt
import json
import math
import random
from decimal import Decimal
from typing import Any

import pytest
from bruteforce import best_total
from chispa import assert_approx_df_equality, assert_df_equality
from featuredata import T, accounts, events, subs, write_inputs
from modeldata import register, train_on_stored
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType
from pyspark.sql.utils import AnalysisException

from churn_spark import io, schemas
from churn_spark.config import Settings, TargetingSettings, with_overrides
from churn_spark.errors import ConfigError, ContractError, NotAvailableError
from churn_spark.features.job import build_labels_and_features
from churn_spark.lakehouse import Lakehouse
from churn_spark.score.job import (
    MRR,
    NO_UPLIFT_MODEL,
    predicted_uplift,
    registered_uplift_model,
    run_score,
    uplift_pointer_path,
    uplift_version_path,
    with_predicted_uplift,
    write_targets,
)
from churn_spark.score.targeting import churn_targets, with_expected_value
from churn_spark.train import registry as R
from churn_spark.uplift import learners as L
from churn_spark.uplift.job import run_targeting_comparison

D = dt.date
Row = tuple[str, float, Decimal | None, float | None]
SCORED = "account_id string, churn_probability double, mrr decimal(18,2), uplift double"

# success 0.5 (ignored in uplift mode), 10 months of value, 10 per contact; values exact in binary.
ACCOUNTS: list[Row] = [
    ("u1", 0.75, Decimal("100.00"), 0.25),     # value 1000, uplift EV 250-10 = 240; risk EV 375-10 = 365
    ("u2", 0.875, Decimal("100.00"), -0.125),  # sleeping dog: uplift EV -135; risk EV 437.5-10 = 427.5 (risk's top)
    ("u3", 0.125, Decimal("40.00"), 0.5),      # persuadable, low risk: uplift EV 200-10 = 190; risk EV 25-10 = 15
    ("u4", 0.5, Decimal("20.00"), 0.0),        # no effect: uplift EV -10; risk EV 50-10 = 40
    ("u5", 0.5, Decimal("-80.00"), -0.5),      # credit (value -800): uplift EV +390 but uplift < 0 -> never
    ("u6", 0.25, Decimal("32.00"), 0.0625),    # value 320, uplift EV 20-10 = 10; risk EV 40-10 = 30
    ("u7", 0.5, Decimal("50.00"), None),       # no uplift predicted: never in uplift mode; risk EV 125-10 = 115
    ("u8", 0.25, None, 0.5),                   # no MRR -> value 0, uplift EV -10; risk EV -10
]


def _settings(**kw: object) -> TargetingSettings:
    base: dict[str, object] = {"cost_per_contact": 10.0, "success_rate": 0.5, "value_months": 10.0, "mode": "uplift"}
    return TargetingSettings(**{**base, **kw})  # type: ignore[arg-type]


def _brute_force(accounts: list[Row], t: TargetingSettings) -> float:
    """Best total over every feasible subset of the accounts with a positive uplift (plain Python)."""
    ev = {a: u * float(m or 0) * t.value_months - t.cost_per_contact for a, _, m, u in accounts
          if u is not None and u > 0}
    return best_total(ev, t)


def _targets(spark: SparkSession, accounts: list[Row], t: TargetingSettings) -> DataFrame:
    return churn_targets(spark.createDataFrame(accounts, SCORED).repartition(3), t)


def test_uplift_expected_value_matches_hand_computation(spark: SparkSession) -> None:
    out = with_expected_value(spark.createDataFrame(ACCOUNTS, SCORED), _settings()).select(
        "account_id", "targeting_mode", "uplift", "account_value", "contact_cost", "expected_value")
    expected = spark.createDataFrame(
        [("u1", "uplift", 0.25, 1000.0, 10.0, 240.0), ("u2", "uplift", -0.125, 1000.0, 10.0, -135.0),
         ("u3", "uplift", 0.5, 400.0, 10.0, 190.0), ("u4", "uplift", 0.0, 200.0, 10.0, -10.0),
         ("u5", "uplift", -0.5, -800.0, 10.0, 390.0), ("u6", "uplift", 0.0625, 320.0, 10.0, 10.0),
         ("u7", "uplift", None, 500.0, 10.0, None), ("u8", "uplift", 0.5, 0.0, 10.0, -10.0)],
        "account_id string, targeting_mode string, uplift double, account_value double, contact_cost double, "
        "expected_value double")
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.parametrize(
    ("limits", "chosen"),
    [
        # budget for 5 contacts left, yet u2, u5 (negative uplift; u5's EV is the largest), u4 (zero) and u7
        # (none predicted) are never contacted
        ({"max_contacts": 5, "budget": None}, [("u1", 1), ("u3", 2), ("u6", 3)]),
        ({"max_contacts": None, "budget": None}, [("u1", 1), ("u3", 2), ("u6", 3)]),
        ({"max_contacts": 10, "budget": 25.0}, [("u1", 1), ("u3", 2)]),  # the budget binds: 2 contacts
        ({"max_contacts": 1, "budget": 1000.0}, [("u1", 1)]),            # the contact count binds
        ({"max_contacts": 0, "budget": None}, []),
    ],
)
def test_uplift_selection_is_the_brute_force_optimum(spark: SparkSession, limits: dict[str, object],
                                                     chosen: list[tuple[str, int]]) -> None:
    t = _settings(**limits)
    out = _targets(spark, ACCOUNTS, t)
    assert_df_equality(out.select("account_id", "target_rank"),
                       spark.createDataFrame(chosen, "account_id string, target_rank long"),
                       ignore_row_order=True, ignore_nullable=True)
    total = out.agg(F.coalesce(F.sum("expected_value"), F.lit(0.0))).first()[0]
    assert total == pytest.approx(_brute_force(ACCOUNTS, t))


def test_free_contacts_still_skip_accounts_the_contact_would_not_help(spark: SparkSession) -> None:
    """With no cost, zero uplift gives EV 0 and negative uplift on a negative value a positive EV: neither is
    contacted; every account with a positive uplift and value is."""
    out = _targets(spark, ACCOUNTS, _settings(cost_per_contact=0.0, budget=500.0))
    expected = spark.createDataFrame([("u1", 250.0, 1), ("u3", 200.0, 2), ("u6", 20.0, 3)],
                                     "account_id string, expected_value double, target_rank long")
    assert_df_equality(out.select("account_id", "expected_value", "target_rank"), expected,
                       ignore_row_order=True, ignore_nullable=True)


@pytest.mark.parametrize("seed", [11, 12, 13, 14, 15])
def test_random_uplift_cases_equal_brute_force_and_respect_budget(spark: SparkSession, seed: int) -> None:
    rng = random.Random(seed)

    def uplift() -> float | None:
        return None if rng.random() < 0.1 else round(rng.uniform(-0.3, 0.5), 3)

    accounts: list[Row] = [(f"r{i}", rng.random(), Decimal(rng.randint(-50, 400)).quantize(Decimal("0.01")),
                            uplift()) for i in range(9)]
    t = _settings(cost_per_contact=rng.choice([0.0, 5.0, 20.0, 80.0]), success_rate=rng.choice([0.1, 0.3]),
                  max_contacts=rng.choice([None, 2, 4]), budget=rng.choice([None, 45.0, 200.0]))
    rows = _targets(spark, accounts, t).collect()  # at most 9 rows
    assert all(r["expected_value"] > 0 and r["uplift"] > 0 and r["targeting_mode"] == "uplift" for r in rows)
    assert t.max_contacts is None or len(rows) <= t.max_contacts
    assert t.budget is None or len(rows) * t.cost_per_contact <= t.budget
    assert sum(r["expected_value"] for r in rows) == pytest.approx(_brute_force(accounts, t))


def test_risk_mode_is_unchanged_and_ignores_an_uplift_column(spark: SparkSession) -> None:
    """Risk mode ranks p x success x value - cost as before (the sleeping dog u2 first), records its mode and
    a null uplift even when the scored rows carry one."""
    out = _targets(spark, ACCOUNTS, _settings(mode="risk", max_contacts=3))
    expected = spark.createDataFrame(
        [("u2", "risk", None, 427.5, 1), ("u1", "risk", None, 365.0, 2), ("u7", "risk", None, 115.0, 3)],
        "account_id string, targeting_mode string, uplift double, expected_value double, target_rank long")
    assert_df_equality(out.select(*expected.columns), expected, ignore_row_order=True, ignore_nullable=True)
    assert TargetingSettings().mode == "risk"


def test_uplift_mode_needs_an_uplift_column(spark: SparkSession) -> None:
    scored = spark.createDataFrame([("a", 0.5, Decimal("1.00"))], "account_id string, churn_probability double, "
                                                                  "mrr decimal(18,2)")
    with pytest.raises(ContractError, match="^scoring.targeting.mode is uplift but the scored rows have no `uplift`"):
        churn_targets(scored, _settings())
    with pytest.raises(ConfigError, match=r"^invalid config: scoring.targeting.mode: Input should be 'risk' or"):
        with_overrides(Settings(), {"scoring.targeting.mode": "persuadables"})


# --- the targets table and the seam in score/job.py ----------------------------------------------------------

AT = dt.datetime(2024, 1, 1, 6, 0)
OLD_TARGETS = StructType([f for f in schemas.CHURN_TARGETS.fields if f.name not in ("targeting_mode", "uplift")])
SCORED_ROWS = (f"account_id string, as_of_date date, model_version string, churn_probability double, "
               f"reason_1 string, reason_2 string, reason_3 string, scored_at timestamp, {MRR} decimal(18,2)")


def _scored(spark: SparkSession, as_of: dt.date, with_uplift: bool) -> DataFrame:
    """Scored rows of `as_of` as `write_targets` gets them: u1..u8 of ACCOUNTS, reasons on u1 only."""
    rows = [(a, as_of, "v1", p, "logins_28d" if a == "u1" else None, None, None, AT, m, u) for a, p, m, u in ACCOUNTS]
    df = spark.createDataFrame(rows, SCORED_ROWS + ", uplift double")
    return df if with_uplift else df.drop("uplift")


def _lake_settings(settings: Settings, mode: str) -> Settings:
    return with_overrides(settings, {
        "scoring.targeting.mode": mode, "scoring.targeting.max_contacts": 2, "scoring.targeting.cost_per_contact": 10.0,
        "scoring.targeting.success_rate": 0.5, "scoring.targeting.value_months": 10.0})


def _seed_old_table(spark: SparkSession, path: str) -> None:
    """A targets table as written before `targeting_mode` and `uplift` existed: one slice of 2023-12-01."""
    old = spark.createDataFrame([("a0", D(2023, 12, 1), "v0", 0.5, 100.0, 15.0, 10.0, 1, None, None, None, AT)],
                                OLD_TARGETS)
    io.write_slice(old, path, "as_of_date = '2023-12-01'", ["as_of_date"], schema=OLD_TARGETS)


@pytest.mark.slow  # writes the targets table twice
def test_targets_are_written_over_a_table_created_before_the_new_columns(spark: SparkSession,
                                                                          settings: Settings) -> None:
    path = Lakehouse.from_settings(settings).churn_targets
    _seed_old_table(spark, path)
    risk = write_targets(_scored(spark, D(2024, 1, 1), False), _lake_settings(settings, "risk"), D(2024, 1, 1), path)
    uplift = write_targets(_scored(spark, D(2024, 2, 1), True), _lake_settings(settings, "uplift"), D(2024, 2, 1),
                           path, uplift_version="up-1")
    table = spark.read.format("delta").load(path)
    assert table.columns == [f.name for f in schemas.CHURN_TARGETS.fields]
    expected = spark.createDataFrame(
        [("a0", D(2023, 12, 1), None, None, 0.5, 15.0, 1),  # the old slice: untouched, null in the new columns
         ("u2", D(2024, 1, 1), "risk", None, 0.875, 427.5, 1), ("u1", D(2024, 1, 1), "risk", None, 0.75, 365.0, 2),
         ("u1", D(2024, 2, 1), "uplift", 0.25, 0.75, 240.0, 1), ("u3", D(2024, 2, 1), "uplift", 0.5, 0.125, 190.0, 2)],
        "account_id string, as_of_date date, targeting_mode string, uplift double, churn_probability double, "
        "expected_value double, target_rank long")
    assert_df_equality(table.select(*expected.columns), expected, ignore_row_order=True, ignore_nullable=True)
    assert risk["targets"]["mode"] == "risk" and "expected_saved_churners" not in risk["targets"]
    assert (risk["targets"]["count"], risk["targets"]["total_expected_value"]) == (2, 792.5)
    assert {k: uplift["targets"][k] for k in ("mode", "count", "total_expected_value", "total_cost",
                                              "expected_saved_churners", "uplift_model_version")} == {
        "mode": "uplift", "count": 2, "total_expected_value": 430.0, "total_cost": 20.0,
        "expected_saved_churners": 0.75, "uplift_model_version": "up-1"}
    # u7 has no predicted uplift: never contacted, and counted
    assert (uplift["targets"]["accounts_with_uplift"], uplift["targets"]["accounts_without_uplift"]) == (7, 1)
    assert [(t["account_id"], t["uplift"], t["reasons"]) for t in uplift["top_targets"]] == [
        ("u1", 0.25, ["logins_28d"]), ("u3", 0.5, [])]


UPLIFT_SCHEMA = "account_id string, as_of_date date, {x} double, treated int, propensity double, label int"


def _cells(x: float, control_churners: int, treated_churners: int) -> list[tuple[float, int, int]]:
    """5 control and 20 treated assignments at feature value x (propensity .8); the transformed outcome
    Z = 5 for a control churner, -1.25 for a treated one, 0 otherwise, so the cell's mean Z (its uplift) is
    (5 c - 1.25 t) / 25."""
    return ([(x, 0, int(i < control_churners)) for i in range(5)]
            + [(x, 1, int(i < treated_churners)) for i in range(20)])


def _register_uplift(spark: SparkSession, settings: Settings, version: str, feature: str,
                     cells: list[tuple[float, int, int]]) -> L.UpliftModel:
    """A real transformed-outcome learner (unregularised linear regression on one feature, solved exactly by the
    normal equations) fitted on `cells`, saved as uplift model `version` and made current."""
    rows = spark.createDataFrame([(f"t{i}", D(2023, 1, 1), x, t, 0.8, y) for i, (x, t, y) in enumerate(cells)],
                                 UPLIFT_SCHEMA.format(x=feature))
    model = L.fit_transformed_outcome(rows, L.uplift_feature_columns(rows.schema), "lr", {"regParam": 0.0})
    L.save_uplift_model(spark, model, uplift_version_path(settings, version))
    R.write_bytes(spark, uplift_pointer_path(settings), json.dumps({"version": version}).encode())
    return model


@pytest.mark.slow  # fits, registers and loads an uplift model
def test_a_registered_uplift_model_is_loaded_and_predicts_per_account(spark: SparkSession, settings: Settings,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    models = Lakehouse.from_settings(settings).models
    # logins 2: (3 * 5 - 4 * 1.25) / 25 = .4; logins 0: (1 * 5 - 4 * 1.25) / 25 = 0 (a binary feature: saturated)
    _register_uplift(spark, settings, "up-7", "logins_28d", _cells(2.0, 3, 4) + _cells(0.0, 1, 4))
    assert uplift_pointer_path(settings) == f"{models}/uplift/current"
    model = registered_uplift_model(spark, settings)
    assert model.version == "up-7"
    scored = spark.createDataFrame([("a", 0.5), ("b", 0.25), ("c", 0.1)], "account_id string, churn_probability double")
    features = spark.createDataFrame([("a", 2), ("b", 0)], "account_id string, logins_28d int")
    expected = spark.createDataFrame([("a", 0.5, 0.4), ("b", 0.25, 0.0), ("c", 0.1, None)],
                                     "account_id string, churn_probability double, uplift double")
    got = with_predicted_uplift(scored, predicted_uplift(features, model)).orderBy("account_id")
    assert_approx_df_equality(got, expected, 1e-9, ignore_nullable=True)
    monkeypatch.delattr(L, "load_uplift_model")  # an installation without it
    with pytest.raises(NotAvailableError, match=r"^scoring.targeting.mode is uplift but this installation has no "
                                                r"churn_spark.uplift.learners.load_uplift_model$"):
        registered_uplift_model(spark, settings)


def test_uplift_mode_without_a_registered_uplift_model_fails_in_one_line_before_writing(
        spark: SparkSession, settings: Settings) -> None:
    lake = Lakehouse.from_settings(settings)
    _seed_old_table(spark, lake.churn_targets)
    version = io.table_version(spark, lake.churn_targets)
    with pytest.raises(NotAvailableError) as err:
        run_score(spark, _lake_settings(settings, "uplift"), D(2024, 1, 1))
    assert str(err.value) == NO_UPLIFT_MODEL == (
        "scoring.targeting.mode is uplift but no uplift model is registered: run churn-spark uplift train")
    assert io.table_version(spark, lake.churn_targets) == version
    written: dict[str, Any] = {p: io.table_exists(spark, p) for p in
                               (lake.churn_scores, lake.churn_features, lake.churn_labels)}
    assert written == dict.fromkeys(written, False)


E2E_MRR = {"a1": 100, "a2": 200, "a3": 50, "a4": 300, "a5": 80, "a6": 120, "a7": 10}


def _e2e_uplift(mrr: float) -> float:
    """The registered model's uplift at an MRR: least squares through (log1p 10, 0) and (log1p 300, .5) (the
    pipeline regresses on standardised signed log1p values; an affine rescaling changes no fitted value)."""
    return 0.5 * (math.log1p(mrr) - math.log1p(10)) / (math.log1p(300) - math.log1p(10))


@pytest.mark.slow  # a tiny lakehouse, one trained LR model, one scoring run
def test_score_in_uplift_mode_targets_by_the_registered_models_uplift(spark: SparkSession, settings: Settings) -> None:
    """run_score end to end with a real registered uplift model (a transformed-outcome learner on `mrr`): the
    uplift is predicted on the features of D and joined to the written scores; uplift EV = uplift x MRR x 12 - 10,
    worked out by hand below."""
    s = with_overrides(settings, {
        "churn.lookback_months": 2, "churn.data_end": "2023-08-01", "features.windows_days": [7, 28],
        "features.trend_windows_days": [7], "features.per_seat_windows_days": [7], "features.change_windows_days": [28],
        "features.event_types": ["login"], "inputs.support_tickets.enabled": False,
        "scoring.drift_top_features": 3, "scoring.targeting.mode": "uplift", "scoring.targeting.max_contacts": 3,
        "scoring.targeting.cost_per_contact": 10.0, "scoring.targeting.value_months": 12.0})
    d0, d1 = D(2023, 6, 1), D(2023, 7, 1)
    logins = {"a1": 6, "a2": 4, "a3": 3, "a4": 2, "a5": 1}
    write_inputs(s, accounts(spark, [(a, T(2022, 12, 1)) for a in E2E_MRR]),
                 subs(spark, [(f"s-{a}", a, D(2023, 1, 1), None, m) for a, m in E2E_MRR.items()]),
                 events(spark, [(f"{a}-{m}-{i}", a, "login", T(2023, m, 1 + i, 10)) for a, n in logins.items()
                                for m in (4, 5, 6) for i in range(n)]), None)
    lake = Lakehouse.from_settings(s)
    _, train_features = build_labels_and_features(spark, s, [d0])
    io.write_slice(train_features, lake.churn_features, io.slice_predicate(equals={"as_of_date": d0}), ["as_of_date"])
    model, meta = train_on_stored(spark, s, {"a1": 0, "a2": 0, "a3": 0, "a4": 0, "a5": 1, "a6": 1, "a7": 1}, [d0])
    register(spark, s, "v-lr", model, meta, current=True)
    # An uplift model reading a feature D does not have fails the run before the scores are written.
    _register_uplift(spark, s, "up-0", "nope", _cells(10.0, 1, 4) + _cells(300.0, 3, 2))
    with pytest.raises(AnalysisException, match="nope"):
        run_score(spark, s, d1, allow_stale_feed=True)  # events stop in early June
    assert not io.table_exists(spark, lake.churn_scores) and not io.table_exists(spark, lake.churn_targets)
    # mrr 10: (1 * 5 - 4 * 1.25) / 25 = 0; mrr 300: (3 * 5 - 2 * 1.25) / 25 = .5
    _register_uplift(spark, s, "up-1", "mrr", _cells(10.0, 1, 4) + _cells(300.0, 3, 2))

    result = run_score(spark, s, d1, allow_stale_feed=True)

    # uplift x MRR x 12 - 10: a4 (300) .5 * 3600 - 10 = 1790, a2 (200) ~.439 -> ~1044, a6 (120) ~.362 -> ~512,
    # a1 (100) ~392, a5 ~289, a3 ~129, a7 (10) 0 -> -10: the top three by the limit
    probability = {r["account_id"]: r["churn_probability"] for r in spark.read.format("delta").load(
        lake.churn_scores).where(F.col("as_of_date") == d1).collect()}  # 7 rows
    top = ("a4", "a2", "a6")
    expected = spark.createDataFrame(
        [(a, "uplift", _e2e_uplift(E2E_MRR[a]), probability[a], _e2e_uplift(E2E_MRR[a]) * E2E_MRR[a] * 12 - 10, rank)
         for rank, a in enumerate(top, 1)],
        "account_id string, targeting_mode string, uplift double, churn_probability double, expected_value double, "
        "target_rank long")
    got = spark.read.format("delta").load(lake.churn_targets).where(F.col("as_of_date") == d1)
    assert_approx_df_equality(got.select(*expected.columns).orderBy("target_rank"), expected, 1e-6,
                              ignore_nullable=True)
    assert {k: result["targets"][k] for k in ("mode", "count", "uplift_model_version", "accounts_with_uplift",
                                              "accounts_without_uplift")} == {
        "mode": "uplift", "count": 3, "uplift_model_version": "up-1", "accounts_with_uplift": 7,
        "accounts_without_uplift": 0}
    assert result["targets"]["expected_saved_churners"] == pytest.approx(
        sum(_e2e_uplift(E2E_MRR[a]) for a in top), abs=1e-4)

    # Both target lists of D at the same limits, valued by the uplift model (what the demo prints). Risk EV =
    # p x .2 (the default success rate) x MRR x 12 - 10: its top three by the limit, worked out from the written
    # probabilities; each list's expected saved churners are the predicted uplift of the accounts it contacts.
    risk_ev = {a: probability[a] * 0.2 * m * 12 - 10 for a, m in E2E_MRR.items()}
    risk_top = sorted((a for a in risk_ev if risk_ev[a] > 0), key=lambda a: -risk_ev[a])[:3]
    compared = run_targeting_comparison(spark, s, d1)
    assert (compared["as_of_date"], compared["churn_model_version"]) == ("2023-07-01", "v-lr")
    assert compared["uplift"] == pytest.approx({
        "mode": "uplift", "contacts": 3, "cost": 30.0,
        "expected_value": sum(_e2e_uplift(E2E_MRR[a]) * E2E_MRR[a] * 12 - 10 for a in top),
        "expected_saved_churners": sum(_e2e_uplift(E2E_MRR[a]) for a in top)}, abs=1e-2)
    assert compared["risk"] == pytest.approx({
        "mode": "risk", "contacts": len(risk_top), "cost": 10.0 * len(risk_top),
        "expected_value": sum(risk_ev[a] for a in risk_top),
        "expected_saved_churners": sum(_e2e_uplift(E2E_MRR[a]) for a in risk_top)}, abs=1e-2)
