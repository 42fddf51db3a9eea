"""The calendar family: where the snapshot date D falls in the year (the same for every account at D).

Churn is seasonal in many businesses (budget reviews in January, renewals at year end). Without the season
a model learns one base rate, and its calibrator (fitted on the validation snapshots) carries that
period's rate to every other season. A point on the unit circle keeps December next to January, which a
month number would not.
"""

from __future__ import annotations

import math

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from churn_spark.features.catalog import SEASON_COS, SEASON_SIN


def season_angle(d: Column) -> Column:
    """2 pi (day of year - 1) / days in the year: 0 on January 1 of every year, leap years included."""
    days_in_year = F.dayofyear(F.make_date(F.year(d), F.lit(12), F.lit(31)))
    return F.lit(2 * math.pi) * (F.dayofyear(d) - F.lit(1)).cast("double") / days_in_year.cast("double")


def with_season(df: DataFrame) -> DataFrame:
    """Adds `season_cos` and `season_sin` of `as_of_date`: nothing after D is read (D itself is known at D)."""
    angle = season_angle(F.col("as_of_date"))
    return df.withColumns({SEASON_COS: F.cos(angle), SEASON_SIN: F.sin(angle)})
