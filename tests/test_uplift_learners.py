"""The uplift learners recover a hand-constructed effect on 50 assignments, survive a save/load round trip, and
the regularisation search keeps the grid point whose out-of-fold predictions rank the effect."""

from __future__ import annotations

import datetime as dt

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from churn_spark.errors import ContractError
from churn_spark.uplift import learners as L

pytestmark = pytest.mark.slow  # fits, saves and loads uplift models: not in make test-fast

D = dt.date(2024, 3, 1)
SCHEMA = "account_id string, as_of_date date, x double, treated int, propensity double, label int"


def cell(x: float, treated: int, rows: int, churners: int) -> list[tuple[float, int, int]]:
    return [(x, treated, 1 if i < churners else 0) for i in range(rows)]


# Propensity .8 (a 20 % holdout): per x, 5 control and 20 treated accounts.
#   x = 1: control churn 3/5 = .6, treated 4/20 = .2  -> true uplift .4
#   x = 0: control churn 1/5 = .2, treated 4/20 = .2  -> true uplift 0
CELLS = cell(1.0, 0, 5, 3) + cell(1.0, 1, 20, 4) + cell(0.0, 0, 5, 1) + cell(0.0, 1, 20, 4)


@pytest.fixture(scope="module")
def rows(spark: SparkSession) -> DataFrame:
    data = [(f"a{i}", D, x, t, 0.8, y) for i, (x, t, y) in enumerate(CELLS)]
    return spark.createDataFrame(data, SCHEMA).cache()


@pytest.fixture(scope="module")
def accounts(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame([("new0", D, 0.0), ("new1", D, 1.0)], "account_id string, as_of_date date, x double")


@pytest.fixture(scope="module")
def t_model(rows: DataFrame) -> L.UpliftModel:
    return L.fit_t_learner(rows, L.uplift_feature_columns(rows.schema), "lr", {"regParam": 0.0})


@pytest.fixture(scope="module")
def to_model(rows: DataFrame) -> L.UpliftModel:
    return L.fit_transformed_outcome(rows, L.uplift_feature_columns(rows.schema), "lr", {"regParam": 0.0})


@pytest.fixture(scope="module")
def x_model(rows: DataFrame) -> L.UpliftModel:
    return L.fit_x_learner(rows, L.uplift_feature_columns(rows.schema), "lr", {"regParam": 0.0})


def uplift_by_x(model: L.UpliftModel, accounts: DataFrame) -> dict[float, float]:
    return {r["x"]: r["uplift"] for r in L.predict_uplift(model, accounts).collect()}


def test_assignment_columns_are_not_features(rows: DataFrame) -> None:
    extra = [StructField("arm", StringType()), StructField("campaign_id", StringType())]
    schema = StructType([*rows.schema.fields, *extra])
    cols = L.uplift_feature_columns(schema)
    assert (cols.numeric, cols.categorical) == (["x"], [])


def test_treated_flag_from_the_arm(spark: SparkSession) -> None:
    df = spark.createDataFrame([("treatment",), ("control",), ("other",), (None,)], "arm string")
    expected = spark.createDataFrame([("treatment", 1), ("control", 0), ("other", None), (None, None)],
                                     "arm string, treated int")
    assert_df_equality(L.with_treated(df), expected, ignore_nullable=True)


def test_t_learner_recovers_the_constructed_effect(t_model: L.UpliftModel, accounts: DataFrame) -> None:
    # the churn model's encoding (log1p + scaler for LR), unweighted, one classifier per arm
    assert [type(s).__name__ for s in t_model.parts["control"].stages] == [
        "SQLTransformer", "ImputerModel", "VectorAssembler", "StandardScalerModel", "LogisticRegressionModel"]
    assert not t_model.parts["control"].stages[-1].isSet("weightCol")
    got = {r["x"]: r for r in L.predict_uplift(t_model, accounts).collect()}
    # x is binary, so an unregularised logistic regression on it is saturated: its maximum-likelihood
    # probabilities are the cell churn rates (.6/.2 for x = 1, .2/.2 for x = 0); only L-BFGS's tolerance is
    # left, far below 0.01
    assert got[1.0]["p_control"] == pytest.approx(0.6, abs=0.01)
    assert got[1.0]["p_treatment"] == pytest.approx(0.2, abs=0.01)
    assert got[0.0]["p_control"] == pytest.approx(0.2, abs=0.01)
    assert got[1.0]["uplift"] == pytest.approx(0.4, abs=0.02)
    assert got[0.0]["uplift"] == pytest.approx(0.0, abs=0.02)
    assert got[1.0]["uplift"] == pytest.approx(got[1.0]["p_control"] - got[1.0]["p_treatment"], abs=1e-12)


def test_t_learner_with_gbt_ranks_the_effect(rows: DataFrame, accounts: DataFrame) -> None:
    params = {"maxIter": 5, "maxDepth": 1, "minInstancesPerNode": 1, "subsamplingRate": 1.0}
    got = uplift_by_x(L.fit_t_learner(rows, L.uplift_feature_columns(rows.schema), "gbt", params), accounts)
    # MLlib's first tree has weight 1 and fits the labels mapped to -1/+1, so the split on x gives the margin
    # 2p - 1 per cell and P = 1 / (1 + exp(-2 margin)): x = 1 control .2 -> .60, treated -.6 -> .23;
    # x = 0: both -.6 -> .23. The next 4 trees (step .1) only move these towards the cell rates:
    # uplift(1) ~ .37-.4, uplift(0) ~ 0
    assert got[1.0] > 0.3
    assert abs(got[0.0]) < 0.05


def test_transformed_outcome_learner_recovers_the_effect(to_model: L.UpliftModel, accounts: DataFrame) -> None:
    # Z = Y ((1 - W) / (1 - e) - W / e) with e = .8: a control churner 5, a treated churner -1.25, else 0.
    # x = 1: (3 * 5 - 4 * 1.25) / 25 = .4; x = 0: (1 * 5 - 4 * 1.25) / 25 = 0. Least squares on a binary x
    # (saturated) predicts the cell means, solved exactly (normal equations)
    got = L.predict_uplift(to_model, accounts)
    assert {r["x"]: r["uplift"] for r in got.collect()} == pytest.approx({1.0: 0.4, 0.0: 0.0}, abs=1e-9)
    assert got.where(F.col("p_control").isNotNull() | F.col("p_treatment").isNotNull()).isEmpty()


def test_x_learner_recovers_the_effect_from_imputed_effects(x_model: L.UpliftModel, accounts: DataFrame) -> None:
    # first stage = the saturated T-learner: p_control .6/.2, p_treatment .2/.2 for x = 1/0 (within .01).
    # Imputed effects: treated x = 1: p_control - y = .6 - y, mean .6 - 4/20 = .4; control x = 1: y - p_treatment,
    # mean 3/5 - .2 = .4; x = 0: .2 - 4/20 = 0 and 1/5 - .2 = 0. Least squares on binary x gives the cell means, and
    # the mean propensity .8 weights the two: uplift = .8 * .4 + .2 * .4 = .4 and 0
    assert sorted(x_model.parts) == ["control", "effect_control", "effect_treatment", "treatment"]
    assert x_model.constants == {L.CONTROL_WEIGHT: pytest.approx(0.8, abs=1e-12)}
    got = {r["x"]: r for r in L.predict_uplift(x_model, accounts).collect()}
    assert got[1.0]["uplift"] == pytest.approx(0.4, abs=0.02)
    assert got[0.0]["uplift"] == pytest.approx(0.0, abs=0.02)
    assert got[1.0]["p_control"] == pytest.approx(0.6, abs=0.01)
    assert got[0.0]["p_treatment"] == pytest.approx(0.2, abs=0.01)


def test_imputed_effect_per_arm_with_a_null_arm(spark: SparkSession) -> None:
    df = spark.createDataFrame([(1, 1, 0.6, 0.2), (1, 0, 0.6, 0.2), (0, 1, 0.6, 0.25), (0, 0, 0.6, 0.25),
                                (1, None, 0.6, 0.2)], "label int, treated int, p_control double, p_treatment double")
    got = df.select(L.imputed_effect(F.col("label"), F.col("treated"), F.col("p_control"), F.col("p_treatment"))
                    .alias("d"))
    # treated: .6 - 1 = -.4, .6 - 0 = .6; control: 1 - .2 = .8, 0 - .25 = -.25; no arm: null
    expected = spark.createDataFrame([(-0.4,), (0.8,), (0.6,), (-0.25,), (None,)], "d double")
    assert_df_equality(got, expected, ignore_nullable=True, allow_nan_equality=True)


def test_grid_points_and_folds_keep_an_account_together(spark: SparkSession) -> None:
    assert L.grid_points({"regParam": [0.1, 1.0], "elasticNetParam": [0.0]}) == [
        {"elasticNetParam": 0.0, "regParam": 0.1}, {"elasticNetParam": 0.0, "regParam": 1.0}]
    assert L.grid_points({}) == [{}]
    df = spark.createDataFrame([("a", 1), ("a", 2), ("b", 1)], "account_id string, d int")
    folds = {(r["account_id"], r["d"]): r[L.FOLD] for r in L.with_fold(df, 3, 7).collect()}
    assert folds[("a", 1)] == folds[("a", 2)]
    assert all(0 <= f < 3 for f in folds.values())


def test_search_keeps_the_point_that_ranks_the_effect(rows: DataFrame) -> None:
    cols = L.uplift_feature_columns(rows.schema)
    grid = {"elasticNetParam": [1.0], "regParam": [0.0, 10.0]}
    params, tried = L.search_params([L.TRANSFORMED_OUTCOME], rows, cols, "lr", {"maxIter": 50}, grid, 3, 0)[
        L.TRANSFORMED_OUTCOME]
    # L1 at 10 zeroes x's coefficient: one predicted value for every row of a fold, one tie group, so each fold's
    # Qini curve is its random line and the coefficient is 0 exactly; unregularised fits rank x = 1 (uplift .4)
    # above x = 0
    by_reg = {t["params"]["regParam"]: t["qini_coefficient"] for t in tried}
    assert by_reg[10.0] == pytest.approx(0.0, abs=1e-9)
    assert by_reg[0.0] > 0.1
    assert params == {"maxIter": 50, "elasticNetParam": 1.0, "regParam": 0.0}
    assert L.search_params([L.T_LEARNER, L.X_LEARNER], rows, cols, "lr", {}, {"regParam": [0.3]}) == {
        L.T_LEARNER: ({"regParam": 0.3}, []), L.X_LEARNER: ({"regParam": 0.3}, [])}


def test_the_x_learner_reuses_the_t_learner_fitted_with_the_same_params(rows: DataFrame) -> None:
    fitted = L.fit_learners({L.T_LEARNER: {"regParam": 0.1}, L.X_LEARNER: {"regParam": 0.1}}, rows,
                            L.uplift_feature_columns(rows.schema), "lr")
    assert fitted[L.X_LEARNER].parts["control"] is fitted[L.T_LEARNER].parts["control"]
    assert fitted[L.X_LEARNER].parts["treatment"] is fitted[L.T_LEARNER].parts["treatment"]


@pytest.mark.parametrize("fitted", ["t_model", "to_model", "x_model"])
def test_save_and_load_give_the_same_predictions(spark: SparkSession, fitted: str, accounts: DataFrame,
                                                 request: pytest.FixtureRequest, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model: L.UpliftModel = request.getfixturevalue(fitted)
    loaded = L.load_uplift_model(spark, L.save_uplift_model(spark, model, str(tmp_path / model.kind)))
    assert (loaded.kind, loaded.model_type, loaded.columns, sorted(loaded.parts)) == (
        model.kind, model.model_type, model.columns, sorted(model.parts))
    assert_df_equality(L.predict_uplift(loaded, accounts), L.predict_uplift(model, accounts))


def test_missing_arm_propensity_or_model_is_one_clear_error(spark: SparkSession, rows: DataFrame, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cols = L.uplift_feature_columns(rows.schema)
    with pytest.raises(ContractError, match="both arms: 40 treated and 0 control"):
        L.fit_t_learner(rows.where("treated = 1"), cols)
    with pytest.raises(ContractError, match="propensity"):
        L.fit_transformed_outcome(rows.drop("propensity"), cols)
    with pytest.raises(ContractError, match="1 assignments have a propensity outside"):
        L.fit_transformed_outcome(rows.withColumn("propensity", F.when(F.col("account_id") == "a0", 1.0)
                                                  .otherwise(F.col("propensity"))), cols)
    from churn_spark.errors import NotAvailableError

    with pytest.raises(NotAvailableError, match="uplift.json is missing"):
        L.load_uplift_model(spark, str(tmp_path / "nothing"))
