"""Results: the race's output check, the headline keys of latest.json, the printed table, the README."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.spec import KEYS, RaceSpec

README_START = "<!-- bench:latest-full:start -->"
README_END = "<!-- bench:latest-full:end -->"
PEER_KEYS = ("status", "seconds", "time_vs_ours", "peak_rss_mb", "memory_vs_ours")


# --- are the racers' numbers ours? ---------------------------------------------------------------


def load_output(path: Path) -> pd.DataFrame | None:
    """A racer's result (a Parquet folder or file) normalised: keys and dates as text, numbers as float."""
    file = path if path.exists() else Path(f"{path}.parquet")
    if not file.exists():
        return None
    df = pd.read_parquet(file)
    df["account_id"] = df["account_id"].astype(str)
    for c in ("as_of_date", "churn_date"):
        df[c] = pd.to_datetime(df[c]).dt.strftime("%Y-%m-%d")
    for c in df.columns:
        if c not in ("account_id", "as_of_date", "churn_date"):
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    return df.sort_values(KEYS).reset_index(drop=True)


def diff_outputs(ours: pd.DataFrame, other: pd.DataFrame, columns: Sequence[str]) -> dict[str, Any]:
    """Rows only one side has, and per column the rows whose values differ (null equals null only)."""
    merged = ours.merge(other, on=KEYS, how="outer", suffixes=("", "__o"), indicator=True)
    only = {"only_ours": int((merged["_merge"] == "left_only").sum()),
            "only_theirs": int((merged["_merge"] == "right_only").sum())}
    both = merged[merged["_merge"] == "both"]
    mismatched: dict[str, int] = {}
    for c in columns:
        if c in KEYS:
            continue
        if c not in other.columns:
            mismatched[c] = len(both)
            continue
        a, b = both[c], both[f"{c}__o"]
        if a.dtype == object or b.dtype == object:
            same = (a == b) | (a.isna() & b.isna())
        else:
            same = np.isclose(a.to_numpy(), b.to_numpy(), rtol=0, atol=1e-9, equal_nan=True)
        bad = int((~pd.Series(same, index=both.index)).sum())
        if bad:
            mismatched[c] = bad
    equal = not any(only.values()) and not mismatched
    return {"equal": equal, "rows": len(ours), **({} if equal else {**only, "mismatched": mismatched})}


def compare_outputs(spec: RaceSpec, race_dir: Path, names: Sequence[str]) -> dict[str, Any]:
    """{racer: check against ours}; None where a racer or ours produced nothing."""
    ours = load_output(race_dir / "ours")
    out: dict[str, Any] = {}
    for name in names:
        other = load_output(race_dir / name)
        out[name] = None if ours is None or other is None else diff_outputs(ours, other, spec.output_columns())
    return out


# --- headline and table --------------------------------------------------------------------------


def _get(d: dict[str, Any], *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The top-level keys of latest.json: one number per question of the issue."""
    racers = _get(results, "peers", "racers") or {}
    return {
        "feature_job_vs_scan_ratio": _get(results, "floor", "feature_job_vs_scan_ratio"),
        "feature_job_vs_scan_ratio_by_snapshots": _get(results, "floor", "ratio"),
        "growth_loglog_slope": _get(results, "growth", "loglog_slope"),
        "speedup_local2_vs_local1": _get(results, "peers", "speedup_local2_vs_local1"),
        "peer_ratios": {name: {k: r.get(k) for k in PEER_KEYS}
                        | {"matches_ours": (r.get("matches_ours") or {}).get("equal")}
                        for name, r in racers.items() if name != "ours_local1"},
        "training_time_ratio_mllib_vs_sklearn": _get(results, "training", "time_ratio_mllib_vs_sklearn"),
        "training_auc_diff_mllib_minus_sklearn": _get(results, "training", "auc_diff_mllib_minus_sklearn"),
        "training_time_ratio_xgboost_vs_gbt": _get(results, "training", "xgboost", "time_ratio_xgboost_vs_gbt"),
        "training_auc_diff_xgboost_minus_gbt": _get(results, "training", "xgboost", "auc_diff_xgboost_minus_gbt"),
        "scoring_accounts_per_s": _get(results, "score", "accounts_per_s"),
        "ingest_events_per_s": _get(results, "ingest", "events_per_s"),
        "score_accounts_per_s": _get(results, "nightly", "score_accounts_per_s"),
        "nightly_seconds": _get(results, "nightly", "nightly_seconds"),
        "nightly_vs_rebuild_ratio": _get(results, "nightly", "nightly_vs_rebuild_ratio"),
        "nightly_event_volume_ratio": _get(results, "nightly", "nightly_event_volume_ratio"),
        "uplift_qini_vs_oracle": _get(results, "uplift", "uplift_qini_vs_oracle"),
        "uplift_qini_vs_sklearn": _get(results, "uplift", "sklearn", "uplift_qini_vs_sklearn"),
    }


def _fmt(v: Any, spec: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and spec:
        return format(v, spec)
    return str(v)


def table(results: dict[str, Any]) -> str:
    """The run as a Markdown table (printed, and pasted into the README for full runs)."""
    m = results.get("machine", {})
    rows = [("measure", "value", "detail"), ("---", "---", "---")]
    data = results.get("data", {})
    rows.append(("data", f"{_fmt(data.get('events'))} events", f"{_fmt(data.get('accounts'))} accounts, 2022-2024"))
    floor = results.get("floor", {})
    if "error" in floor:
        rows.append(("floor: features job / scan", "failed", floor["error"]))
    for n in ("1", "12", "24"):
        if n in floor.get("ratio", {}):
            rows.append((f"floor: features job / scan, {n} snapshots", _fmt(floor["ratio"][n], ".2f"),
                         f"{floor['features_s'][n]:.1f}s vs scan {floor['scan_s']:.1f}s"))
    growth = results.get("growth", {})
    if "points" in growth:
        pts = ", ".join(f"{p['events']:,} ev {p['features_s']:.1f}s" for p in growth["points"])
        rows.append(("growth: log-log slope (1.0 = linear)", _fmt(growth["loglog_slope"]), f"features job: {pts}"))
    elif "error" in growth:
        rows.append(("growth", "failed", growth["error"]))
    peers = results.get("peers", {})
    if "racers" in peers:
        rows.append(("speed-up local[2] vs local[1]", _fmt(peers.get("speedup_local2_vs_local1")),
                     "ours (race computation), same data"))
        for name, r in peers["racers"].items():
            if name == "ours_local1":
                continue
            check = r.get("matches_ours") or {}
            same = "same numbers" if check.get("equal") else f"DIFFERS {check}" if check else "not compared"
            if r.get("status") == "ok":
                val = "1.00" if name == "ours" else _fmt(r.get("time_vs_ours"), ".2f")
                rows.append((f"peer {name}: time / ours", val,
                             f"{r['seconds']:.1f}s, peak {r['peak_rss_mb']:.0f} MiB, {r['rows']:,} rows, {same}"))
            else:
                rows.append((f"peer {name}: time / ours", r.get("status", "?").upper(),
                             f"peak {r.get('peak_rss_mb')} MiB after {r.get('wall_s')}s: {r.get('error', '')}"))
    elif "error" in peers:
        rows.append(("peers", "failed", peers["error"]))
    tr = results.get("training", {})
    if "mllib_gbt_s" in tr:
        rows.append(("training: MLlib GBT / sklearn HGB time", _fmt(tr["time_ratio_mllib_vs_sklearn"]),
                     f"{tr['mllib_gbt_s']:.1f}s vs {tr['sklearn_hgb_s']:.2f}s, {tr['rows']['train']:,} train rows"))
        rows.append(("training: test AUC MLlib - sklearn", _fmt(tr["auc_diff_mllib_minus_sklearn"], "+.4f"),
                     f"{tr['mllib_test_auc']:.4f} vs {tr['sklearn_test_auc']:.4f}, {tr['rows']['test']:,} test rows"))
        rows += xgboost_rows(tr)
    elif "error" in tr:
        rows.append(("training", "failed", tr["error"]))
    sc = results.get("score", {})
    if "accounts_per_s" in sc:
        rows.append(("scoring: accounts/s", _fmt(sc["accounts_per_s"]),
                     f"{sc['scored_accounts']:,} accounts in {sc['score_job_s']:.1f}s "
                     f"(train job {sc['train_job_s']:.0f}s)"))
    elif "error" in sc:
        rows.append(("scoring", "failed", sc["error"]))
    ing = results.get("ingest", {})
    if "events_per_s" in ing:
        rows.append(("ingest: events/s (exactly-once MERGE)", _fmt(ing["events_per_s"]),
                     f"{ing['records_in']:,} lines in {ing['seconds']:.1f}s, bronze rows exact: "
                     f"{ing['exactly_once_rows_ok']}"))
    elif "error" in ing:
        rows.append(("ingest", "failed", ing["error"]))
    rows += nightly_rows(results.get("nightly", {}))
    rows += uplift_rows(results.get("uplift", {}))
    head = (f"churn-spark bench ({results.get('mode')}) {results.get('date')} on {m.get('cores')} cores, "
            f"{m.get('memory_gib')} GiB, load avg (1/5/15 min) at start {m.get('load_avg_at_start')}, "
            f"at end {m.get('load_avg_at_end')}; "
            f"total {results.get('total_s')}s")
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return head + "\n\n" + "\n".join(lines)


def xgboost_rows(tr: dict[str, Any]) -> list[tuple[str, str, str]]:
    """xgboost.spark vs MLlib GBT in the same Pipeline on the same rows (training stage), or why not."""
    xgb = tr.get("xgboost") or {}
    if xgb.get("status") != "ok":
        return [("training: xgboost vs MLlib GBT", "-", str(xgb.get("status", "not run")))] if xgb else []
    return [("training: xgboost / MLlib GBT time", _fmt(xgb["time_ratio_xgboost_vs_gbt"], ".3f"),
             f"{xgb['xgboost_s']:.1f}s vs {tr['mllib_gbt_s']:.1f}s, {xgb['params']['num_workers']} worker(s)"),
            ("training: test AUC xgboost - MLlib GBT", _fmt(xgb["auc_diff_xgboost_minus_gbt"], "+.4f"),
             f"{xgb['xgboost_test_auc']:.4f} vs {tr['mllib_test_auc']:.4f}")]


def nightly_rows(ni: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The nightly stage's three figures (issue 20)."""
    if "error" in ni:
        return [("nightly", "failed", ni["error"])]
    if "nightly" not in ni:
        return []
    so, n, fs, vol = ni["score_only"], ni["nightly"], ni["from_scratch"], ni["volume"]
    x1, x10 = vol["x1"], vol["x10"]
    return [
        ("scoring only (features present): accounts/s", _fmt(ni["score_accounts_per_s"]),
         f"{so['scored_accounts']:,} accounts in {so['score_s']:.1f}s"),
        ("nightly / from scratch", _fmt(ni["nightly_vs_rebuild_ratio"], ".3f"),
         f"nightly {n['seconds']:.1f}s (ingest {n['ingest_s']:.1f}, features {n['features_s']:.1f}, score "
         f"{n['score_s']:.1f}; {ni['appended_events']:,} new events) vs silver rebuild {fs['silver_rebuild_s']:.1f} + "
         f"features {fs['features_s']:.1f} + score {fs['score_s']:.1f}s"),
        ("nightly at 10x / 1x events per account-month", _fmt(vol["nightly_event_volume_ratio"], ".3f"),
         f"{vol['accounts']:,} accounts: {x10['seconds']:.1f}s on {x10['bronze_events']:,} events vs "
         f"{x1['seconds']:.1f}s on {x1['bronze_events']:,}"),
    ]


def uplift_rows(up: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The uplift stage's figures (issue 23)."""
    if "error" in up:
        return [("uplift", "failed", up["error"])]
    if "uplift_qini" not in up:
        return []
    interval = up.get("uplift_qini_interval") or {}
    sk = up.get("sklearn", {})
    rows = [("uplift: Qini / oracle's Qini", _fmt(up["uplift_qini_vs_oracle"], ".3f"),
             f"{up['learner']} {up['uplift_qini']:.2f} (95 % {_fmt(interval.get('low'), '.2f')} .. "
             f"{_fmt(interval.get('high'), '.2f')}) vs {up['oracle_qini']:.2f}, {up['test_rows']:,} test assignments "
             f"({', '.join(up['test_dates'])})"),
            ("uplift: Qini MLlib / scikit-learn T-learner", _fmt(sk.get("uplift_qini_vs_sklearn"), ".3f"),
             f"{_fmt(sk.get('mllib_t_learner_qini'), '.2f')} vs {_fmt(sk.get('sklearn_t_learner_qini'), '.2f')}")]
    for tag, s in up["true_saved_per_1000_contacts"].items():
        rows.append((f"uplift: true churners saved per 1,000 contacts, top {tag}", _fmt(s["uplift"]),
                     f"{s['contacts']:,} contacts; by churn risk {_fmt(s['risk'])}, oracle {_fmt(s['oracle'])}"))
    return rows


def results_name(results: dict[str, Any]) -> str:
    """`<mode>-<UTC start, digits>.json`: one file per run, kept beside `latest.json`."""
    return f"{results['mode']}-{re.sub(r'[^0-9]', '', results['date'])[:14]}.json"


def write_results(results: dict[str, Any], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=1, default=str)
    (folder / results_name(results)).write_text(text)
    latest = folder / "latest.json"
    latest.write_text(text)
    return latest


def update_readme(readme: Path, table_text: str, results: dict[str, Any]) -> None:
    """Replace the table between the README's markers with this run's."""
    text = readme.read_text() if readme.exists() else f"{README_START}\n{README_END}\n"
    note = f"Raw numbers: `bench/results/{results_name(results)}`."
    block = f"{README_START}\n{table_text}\n\n{note}\n{README_END}"
    if README_START in text and README_END in text:
        text = re.sub(re.escape(README_START) + r".*?" + re.escape(README_END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    readme.write_text(text)
