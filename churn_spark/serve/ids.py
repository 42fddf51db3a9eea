"""Account ids in request paths: the pipeline's normalisation (`churn_spark/ids.py`), on one Python string.

`churn_spark/ids.py` works on Spark Columns and imports pyspark, which the service must not load; both
apply the same text rules (`churn_spark/idtext.py`), so `/v1/accounts/123.0` finds the account stored as `123`.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from churn_spark import idtext
from churn_spark.config import IdCase

INTEGRAL_DECIMAL = re.compile(idtext.INTEGRAL_DECIMAL)
DOUBLE_EXPONENT = re.compile(idtext.DOUBLE_EXPONENT)
WELL_FORMED = re.compile(r"^[^\s\x00-\x1f\x7f/\\]{1,128}$")
"""What the service accepts as an id: 1-128 characters, no whitespace, control characters or slashes."""


def normalized_account_id(raw: str, case: IdCase = "preserve") -> str | None:
    """The id as the gold tables store it, or None when it is malformed (the caller answers 400)."""
    text = raw.strip()
    if match := INTEGRAL_DECIMAL.match(text):
        text = match.group(1)
    elif DOUBLE_EXPONENT.match(text):
        try:
            exact = Decimal(text)
        except InvalidOperation:  # pragma: no cover - the regex admits only valid decimals
            return None
        if exact == exact.to_integral_value():
            text = str(int(exact))
    if case == "lower":
        text = text.lower()
    elif case == "upper":
        text = text.upper()
    return text if WELL_FORMED.match(text) else None
