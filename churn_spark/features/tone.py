"""Ticket tone: the VADER compound sentiment score (-1 very negative .. 1 very positive) of a ticket's text.

vaderSentiment ships its lexicon in the package (no download). No Spark built-in does sentiment,
so this is the pipeline's one Python function on the data path: a vectorised pandas UDF applied
once per ticket, before tickets meet the snapshots.
"""

from __future__ import annotations

import functools
from typing import Any

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType


@functools.lru_cache(maxsize=1)
def _analyzer() -> Any:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def tone_scores(texts: pd.Series) -> pd.Series:
    """VADER compound score per text; null for a null or blank text (already rounded to 4 decimals)."""
    analyzer = _analyzer()
    scores = [analyzer.polarity_scores(t)["compound"] if isinstance(t, str) and t.strip() else None for t in texts]
    return pd.Series(scores, dtype="float64")


@F.pandas_udf(DoubleType())  # type: ignore[call-overload]
def ticket_tone(texts: pd.Series) -> pd.Series:
    """Vectorised Spark wrapper of `tone_scores` (reason for a UDF: no built-in sentiment)."""
    return tone_scores(texts)


def with_ticket_tone(tickets: DataFrame) -> DataFrame:
    """Adds `tone` (double, nullable) per ticket from `text`."""
    return tickets.withColumn("tone", _tone(F.col("text")))


def _tone(text: Column) -> Column:
    return ticket_tone(text)
