"""churn-spark: production churn prediction on Spark + Delta Lake."""

from __future__ import annotations

__version__ = "0.1.0"
