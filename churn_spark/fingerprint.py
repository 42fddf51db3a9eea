"""Short fingerprints of the configuration a table slice was computed with.

A fingerprint is the sha256 of the payload's canonical JSON (`canonical_json`: sorted keys), cut to 16
hex digits. It is stored next to what the configuration produced: `config_fingerprint` on
`gold.churn_features` slices (`features.job.feature_config_fingerprint`) and `definition_fingerprint`
on `gold.churn_labels` rows (`labels.label_definition`), so a reader can tell whether a slice still
matches, or whether two slices were computed alike, without comparing every setting.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(payload: Any) -> str:
    """`payload` as JSON with sorted keys: equal payloads give the same text."""
    return json.dumps(payload, sort_keys=True)


def fingerprint(payload: Any) -> str:
    """The first 16 hex digits of the sha256 of `canonical_json(payload)`."""
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:16]
