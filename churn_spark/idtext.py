"""The text rules of id normalisation, without Spark: `ids.py` applies them to Columns in the jobs and
`serve/ids.py` to one string in the REST service (which must not import pyspark). One definition, so a
request for `123.0` finds the account the pipeline stored as `123`."""

INTEGRAL_DECIMAL = r"^(-?\d+)\.0+$"
"""An integral number written with a zero fraction (`123.0`, `-7.00`): the integer part is the id."""
DOUBLE_EXPONENT = r"^-?\d\.\d+E\d+$"
"""How Spark (Java) renders a double of 10^7 or more as text (`1.2345678901E10`): read as a decimal."""
