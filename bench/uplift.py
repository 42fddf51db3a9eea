"""Uplift figures (issue 23): the `uplift` stage of `python -m bench`, and `python -m bench.uplift --config FILE`
for a lakehouse that already has campaigns and a registered uplift model.

The stage generates its own dataset with retention campaigns (CAMPAIGNS: the demo's quarterly campaigns), trains
the churn model (it ranks the features the uplift learners read and is the risk side of the comparison), runs
`uplift train` with the product's defaults and reports, on the test campaign: the registered learner's Qini
against the oracle's (`uplift_qini_vs_oracle`, ranked by the generator's true uplift on the same rows), the true
churners saved per 1,000 contacts by uplift and by churn-risk targeting, and `uplift_qini_vs_sklearn`.

`uplift_qini_vs_sklearn`: our MLlib T-learner vs an independent scikit-learn T-learner on the same campaign rows.
The registered model's feature columns and chosen params are reused, so both T-learners read the same rows, the
same features and the same L2 strength. Both are scored by the same metric code (`uplift/metrics.py`) on the same
test campaigns: the figure compares the learners, not two Qini formulas.

scikit-learn's `LogisticRegression(C)` minimises C * sum(loss) + ||w||^2 / 2 and MLlib's
mean(loss) + regParam * ||w||^2 / 2, so C = 1 / (regParam * n) for an arm of n rows. The encoding mirrors
`train/pipeline.py` for lr: median imputation, signed log1p, standardisation, one-hot categoricals.
`python -m bench.uplift` writes bench/results/uplift-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench.measure import timed

HERE = Path(__file__).resolve().parent
# The demo's campaigns (churn_spark/demo.py): each quarter half of the eligible accounts, 30 % of them held out.
CAMPAIGNS: dict[str, Any] = {"dates": ["2022-10-01", "2023-01-01", "2023-04-01", "2023-07-01", "2023-10-01",
                                       "2024-01-01"], "share": 0.5, "propensity": 0.7}
CHURN_SNAPSHOTS = 24  # the bench's snapshots (2022-07 .. 2024-06): the churn model ranks features, gives the risk side


def sklearn_t_learner(train: Any, test: Any, numeric: list[str], categorical: list[str], reg_param: float) -> Any:
    """Predicted uplift (p_control - p_treatment) of the `test` rows (pandas) by one scikit-learn logistic
    regression per arm, fitted on `train` (pandas, with `treated` and `label`)."""
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    def signed_log1p(x: Any) -> Any:
        return np.sign(x) * np.log1p(np.abs(x))

    def arm_model(rows: Any) -> Any:
        encode = ColumnTransformer([
            ("num", make_pipeline(SimpleImputer(strategy="median"), FunctionTransformer(signed_log1p),
                                  StandardScaler()), numeric),
            ("cat", OneHotEncoder(handle_unknown="ignore"), categorical)])
        clf = LogisticRegression(C=1.0 / (reg_param * len(rows)), max_iter=1000)
        return make_pipeline(encode, clf).fit(rows[numeric + categorical], rows["label"])

    def frame(df: Any) -> Any:
        out = df[numeric + categorical].copy()
        out[numeric] = out[numeric].astype("float64")
        for c in categorical:  # None is no category scikit-learn's encoders sort with strings
            out[c] = out[c].astype(object).where(out[c].notna(), "__missing__").astype(str)
        return out

    train = train.assign(**{c: frame(train)[c] for c in numeric + categorical})
    control = arm_model(train[train["treated"] == 0])
    treated = arm_model(train[train["treated"] == 1])
    x = frame(test)
    return control.predict_proba(x)[:, 1] - treated.predict_proba(x)[:, 1]


def campaign_settings(settings: Any, lake: Path, accounts: int, search: bool = True) -> Any:
    """The bench's settings for a lakehouse `lake` of `accounts` generated accounts with CAMPAIGNS; without
    `search`, `uplift train` fits the registered learner once at the demo's regularisation (quick mode)."""
    from churn_spark.config import with_overrides

    fixed = {} if search else {"uplift.compare": [], "uplift.param_grid": {"regParam": [1.0]},
                               "uplift.bootstrap_replicates": 50}
    return with_overrides(settings, {
        "lakehouse": str(lake), "generate.accounts": accounts,
        "generate.campaigns.dates": CAMPAIGNS["dates"], "generate.campaigns.share": CAMPAIGNS["share"],
        "generate.campaigns.propensity": CAMPAIGNS["propensity"],
        "inputs.interventions": {"format": "delta", "path": "raw/interventions"}, **fixed})


def per_thousand(saved: float | None, contacts: int) -> float | None:
    """True churners saved per 1,000 contacts."""
    return None if saved is None or not contacts else round(1000.0 * saved / contacts, 1)


def uplift_figures(result: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of an `uplift train` result on generated data: Qini against the oracle's (with the
    model's bootstrap interval), the compared learners' ratios, and the true churners saved per 1,000 contacts
    by uplift, by churn risk and by the oracle when the top 10/20/30 % of the test assignments are contacted."""
    from churn_spark.train.metrics import top_count
    from churn_spark.uplift.metrics import FRACTIONS, fraction_tag

    m, risk = result["metrics"], result.get("risk_targeting") or {}
    rows = int(m["rows"])
    saved = {}
    for f in FRACTIONS:
        key, contacts = f"true_saved_at_{fraction_tag(f)}", top_count(f, rows)
        saved[fraction_tag(f)] = {"contacts": contacts, "uplift": per_thousand(m.get(key), contacts),
                                  "risk": per_thousand(risk.get(key), contacts),
                                  "oracle": per_thousand(m.get(f"oracle_{key}"), contacts)}
    return {"learner": result["kind"], "params": result["params"], "test_rows": rows,
            "test_dates": result["split"]["test"], "train_dates": result["split"]["train"],
            "uplift_qini": m["qini_coefficient"],
            "uplift_qini_interval": (m.get("intervals") or {}).get("qini_coefficient"),
            "oracle_qini": m.get("oracle_qini_coefficient"), "uplift_qini_vs_oracle": m.get("qini_vs_oracle"),
            "candidates_qini_vs_oracle": {k: v.get("qini_vs_oracle") for k, v in result["candidates"].items()},
            "true_saved_per_1000_contacts": saved, "feature_selection": result["feature_selection"]}


def stage_campaigns(spark: Any, settings: Any) -> dict[str, Any]:
    """On a generated lakehouse with campaigns (generated and ingested): churn features and model over the last
    CHURN_SNAPSHOTS snapshots, `uplift train` with the product's defaults, then the scikit-learn comparison."""
    from churn_spark.features.job import run_features
    from churn_spark.train.job import run_train
    from churn_spark.uplift.job import run_uplift_train

    features_s, _ = timed(lambda: run_features(spark, settings))
    train_s, trained = timed(lambda: run_train(spark, settings))
    uplift_s, result = timed(lambda: run_uplift_train(spark, settings))
    return {**uplift_figures(result), "churn_model_version": trained["model_version"],
            "seconds": {"features": round(features_s, 1), "churn_train": round(train_s, 1),
                        "uplift_train": round(uplift_s, 1)},
            "sklearn": sklearn_comparison(spark, settings)}


def sklearn_comparison(spark: Any, settings: Any) -> dict[str, Any]:
    """Qini of our T-learner and of scikit-learn's on the test campaigns, their ratio, and the oracle's."""
    from pyspark.sql import functions as F

    from churn_spark.uplift import job as J
    from churn_spark.uplift import learners as L
    from churn_spark.uplift import metrics as M

    registered = J.load_registered(spark, settings)
    pointer = json.loads(Path(J.uplift_root(settings), J.POINTER).read_text())
    meta = json.loads(Path(J.uplift_root(settings), pointer["version"], "metadata.json").read_text())
    params = dict(meta["params"])
    campaigns, features, dates = J.read_campaigns(spark, settings)
    churn = settings.churn
    train_dates, test_dates = J.plan_campaign_split(dates, churn.horizon_months, churn.grace_days,
                                                    settings.uplift.test_dates)
    rows = J.with_true_uplift(J.assignment_rows(campaigns.outcomes, features), J.read_truth(spark, settings)).cache()
    train = rows.where(F.col("as_of_date").isin(train_dates))
    test = rows.where(F.col("as_of_date").isin(test_dates))
    cols = registered.columns
    started = time.perf_counter()
    ours = L.fit_t_learner(train, cols, "lr", params, settings.model.seed)
    ours_s = time.perf_counter() - started
    scored = L.predict_uplift(ours, test)
    ours_q = M.uplift_metrics(scored, fractions=())["qini_coefficient"]
    oracle_q = M.uplift_metrics(scored, M.TRUE_UPLIFT, fractions=())["qini_coefficient"]

    keep = ["account_id", "campaign_id", "label", "treated", "propensity", M.TRUE_UPLIFT, *cols.numeric,
            *cols.categorical]
    # bench-sized: a few thousand assignments (Any: pyspark types toPandas' result as a protocol without indexing)
    tr: Any = train.select(*[f"`{c}`" for c in keep]).toPandas()
    te: Any = test.select(*[f"`{c}`" for c in keep]).toPandas()
    started = time.perf_counter()
    te["uplift"] = sklearn_t_learner(tr, te, list(cols.numeric), list(cols.categorical), float(params["regParam"]))
    sk_s = time.perf_counter() - started
    sk_scored = spark.createDataFrame(te[["label", "treated", "propensity", "uplift"]])
    sk_q = M.uplift_metrics(sk_scored, fractions=())["qini_coefficient"]
    rows.unpersist()
    return {
        "uplift_model_version": pointer["version"], "params": params, "train_rows": len(tr), "test_rows": len(te),
        "train_dates": [d.isoformat() for d in train_dates], "test_dates": [d.isoformat() for d in test_dates],
        "features": {"numeric": len(cols.numeric), "categorical": len(cols.categorical)},
        "mllib_t_learner_qini": ours_q, "sklearn_t_learner_qini": sk_q, "oracle_qini": oracle_q,
        "uplift_qini_vs_sklearn": ours_q / sk_q if sk_q else None,
        "mllib_fit_s": round(ours_s, 2), "sklearn_fit_s": round(sk_s, 3),
        "registered_model_qini": meta["metrics"]["qini_coefficient"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.uplift", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the config of a lakehouse with campaigns and an uplift model")
    args = parser.parse_args(argv)
    from churn_spark.config import load_settings
    from churn_spark.session import build_spark

    settings = load_settings(args.config)
    spark = build_spark(settings.spark, app_name="churn-bench-uplift")
    try:
        result = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                  "load_avg": [round(x, 1) for x in os.getloadavg()], **sklearn_comparison(spark, settings)}
    finally:
        spark.stop()
    out = HERE / "results" / f"uplift-{dt.datetime.now(dt.UTC):%Y%m%d%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
