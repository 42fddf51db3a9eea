"""The exhaustive optimum the targeting tests compare the job's selection with (plain Python)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

from churn_spark.config import TargetingSettings


def best_total(ev: Mapping[str, float], t: TargetingSettings) -> float:
    """Best total expected value over every subset of `ev`'s accounts that the budget and contact cap allow."""
    best = 0.0
    for k in range(len(ev) + 1):
        if t.max_contacts is not None and k > t.max_contacts:
            break
        if t.budget is not None and k * t.cost_per_contact > t.budget + 1e-9:
            break
        for subset in itertools.combinations(ev, k):
            best = max(best, sum(ev[a] for a in subset))
    return best
