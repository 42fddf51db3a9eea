"""Text views of a scoring run summary for the CLI (the summary itself is the JSON run record)."""

from __future__ import annotations

from typing import Any


def target_list_table(result: dict[str, Any]) -> str:
    """The top of the target list, one line per account, plus the totals and the drift verdict."""
    t = result.get("targets", {})
    lines = [f"Target list for {result.get('as_of_date')} (model {result.get('model_version')}): "
             f"{t.get('count', 0)} accounts, expected value {t.get('total_expected_value', 0.0):,.2f}, "
             f"cost {t.get('total_cost', 0.0):,.2f}"]
    lines.append(f"{'rank':>4}  {'account_id':<14}{'p(churn)':>9}{'value':>12}{'exp. value':>12}  reasons")
    for r in result.get("top_targets", []):
        lines.append(f"{r['target_rank']:>4}  {r['account_id']:<14}{r['churn_probability']:>9.3f}"
                     f"{r['account_value']:>12,.2f}{r['expected_value']:>12,.2f}  {', '.join(r['reasons'])}")
    drift = result.get("drift", {})
    if drift.get("status") == "ok":
        above = drift.get("above_threshold") or []
        lines.append(f"drift: score PSI {drift['score_psi']:.3f}; "
                     + (f"above {drift['threshold']}: {', '.join(above)}" if above else "no PSI above threshold"))
    elif drift.get("status") == "unavailable":
        lines.append(f"drift: unavailable ({drift.get('reason')})")
    return "\n".join(lines)
