"""Schemas are code: the StructType of every input contract and every table the pipeline writes.

Readers validate against these, writers assert them. The features table is wide and versioned
(`feature_set_version`), so only its key columns are declared here.
"""

from __future__ import annotations

from pyspark.sql.types import (
    BooleanType,
    ByteType,
    DataType,
    DateType,
    DecimalType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    MapType,
    ShortType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)


def _f(name: str, dtype: object, nullable: bool = True) -> StructField:
    return StructField(name, dtype, nullable)  # type: ignore[arg-type]


# --- raw input contracts (docs/contract.md) ----------------------------------------------------

ACCOUNTS = StructType([_f("account_id", StringType(), False), _f("created_at", TimestampType(), False)])
"""Required columns of `accounts`; declared attribute columns (config) are added with `attribute_type`."""

ACCOUNT_ATTRIBUTE_HISTORY = StructType(
    [
        _f("account_id", StringType(), False),
        _f("valid_from", DateType(), False),
        _f("valid_to", DateType(), True),
    ]
)
"""Required columns of the optional `account_attribute_history` (a slowly changing dimension, type 2): one
row per account and interval `[valid_from, valid_to)` (null `valid_to` = still valid) holding the values
of the declared attribute columns (added with `attribute_type`) during it. No key: an account has many
rows, whose intervals may not overlap (io.check_attribute_history)."""

_NUMERIC_ATTRIBUTE_TYPES = (ByteType, ShortType, IntegerType, LongType, FloatType, DoubleType, DecimalType,
                            BooleanType)


def attribute_type(source: DataType) -> DataType:
    """The type a declared attribute column is read as: double when the source column is numeric or
    boolean (a numeric feature), string otherwise (a categorical feature)."""
    return DoubleType() if isinstance(source, _NUMERIC_ATTRIBUTE_TYPES) else StringType()

SUBSCRIPTIONS = StructType(
    [
        _f("subscription_id", StringType(), False),
        _f("account_id", StringType(), False),
        _f("product_id", StringType(), False),
        _f("start_date", DateType(), False),
        _f("end_date", DateType(), True),
        _f("mrr", DecimalType(18, 2), False),
        _f("quantity", IntegerType(), False),
        _f("bill_period_months", IntegerType(), False),
    ]
)

EVENTS = StructType(
    [
        _f("event_id", StringType(), False),
        _f("account_id", StringType(), False),
        _f("event_type", StringType(), False),
        _f("event_time", TimestampType(), False),
        _f("value", DoubleType(), True),
        _f("properties", MapType(StringType(), StringType()), True),
    ]
)

SUPPORT_TICKETS = StructType(
    [
        _f("ticket_id", StringType(), False),
        _f("account_id", StringType(), False),
        _f("opened_at", TimestampType(), False),
        _f("closed_at", TimestampType(), True),
        _f("priority", StringType(), False),
        _f("channel", StringType(), False),
        _f("text", StringType(), True),
    ]
)

CHURN_TRUTH = StructType(
    [
        _f("account_id", StringType(), False),
        _f("as_of_date", DateType(), False),
        _f("churn_probability", DoubleType(), False),
    ]
)
"""Generator only: true P(churn within the horizon) per account and month under its own process."""

INTERVENTIONS = StructType(
    [
        _f("campaign_id", StringType(), False),
        _f("account_id", StringType(), False),
        _f("assigned_at", DateType(), False),
        _f("arm", StringType(), False),
        _f("propensity", DoubleType(), False),
        _f("channel", StringType(), True),
        _f("cost", DoubleType(), True),
        _f("delivered", BooleanType(), True),
    ]
)
"""The optional `interventions` input (retention campaigns): one row per (campaign, account) assignment, `arm`
`treatment` or `control` drawn with probability `propensity` of treatment (strictly between 0 and 1).
`channel`, `cost` (>= 0) and `delivered` may be absent from the source (read as null, io.OPTIONAL_COLUMNS)."""

INTERVENTION_TRUTH = StructType(
    [
        _f("campaign_id", StringType(), False),
        _f("account_id", StringType(), False),
        _f("assigned_at", DateType(), False),
        _f("arm", StringType(), False),
        _f("p_control", DoubleType(), False),
        _f("p_treatment", DoubleType(), False),
        _f("uplift", DoubleType(), False),
    ]
)
"""Generator only: per assignment, the true P(churn within the horizon from `assigned_at`) without
(`p_control`) and with (`p_treatment`) the contact, and `uplift` = p_control - p_treatment (negative: harmful)."""

CAMPAIGN_OUTCOMES = StructType(
    list(INTERVENTIONS.fields)
    + [
        _f("as_of_date", DateType(), False),
        _f("label", IntegerType(), False),
        _f("churn_date", DateType(), True),
        _f("tenure_days", IntegerType(), False),
    ]
)
"""What `uplift.campaigns.campaign_outcomes` gives: each labelled assignment with its outcome, the churn label
at `as_of_date` = `assigned_at` (censored and ineligible assignments are left out and counted)."""

# --- tables the pipeline writes (docs/tables.md) -----------------------------------------------

BRONZE_EVENTS = StructType(
    list(EVENTS.fields)
    + [
        _f("ingested_at", TimestampType(), False),
        _f("source", StringType(), False),
        _f("event_date", DateType(), False),
    ]
)

SILVER_ACCOUNT_DAILY_ACTIVITY = StructType(
    [
        _f("account_id", StringType(), False),
        _f("event_date", DateType(), False),
        _f("event_type", StringType(), False),
        _f("events", LongType(), False),
        _f("value_units", LongType(), True),
    ]
)
"""`silver.account_daily_activity` (churn_spark/silver): bronze events per (account, UTC day, type);
`value_units` = sum of round(value * 1e4) (null when every value is null), partitioned by `event_date`."""

EVENTS_QUARANTINE = StructType(
    [
        _f("raw", StringType(), True),
        _f("reason", StringType(), False),
        _f("source", StringType(), False),
        _f("event_id", StringType(), True),
        _f("ingested_at", TimestampType(), False),
        _f("ingest_date", DateType(), False),
    ]
)

CHURN_LABEL_VALUES = StructType(
    [
        _f("account_id", StringType(), False),
        _f("as_of_date", DateType(), False),
        _f("label", IntegerType(), True),
        _f("churn_date", DateType(), True),
        _f("tenure_days", IntegerType(), False),
    ]
)
"""What `labels.churn_labels` computes: the label of each eligible (account, D)."""

CHURN_LABELS = StructType(
    list(CHURN_LABEL_VALUES.fields)
    + [
        # How the row was labelled (labels.with_definition), the same on every row of a snapshot's slice:
        # the date censoring was decided against, the churn definition as canonical JSON (horizon, grace,
        # minimum tenure, censoring rule) and its fingerprint. Null in slices written before they existed.
        _f("data_end", DateType(), True),
        _f("definition", StringType(), True),
        _f("definition_fingerprint", StringType(), True),
    ]
)
"""`gold.churn_labels`: the label values and the definition they were computed with."""

KEYS = ("account_id", "as_of_date")
"""The grain of labels, features and scores: one row per account and snapshot date."""

FEATURE_KEYS = StructType(
    [
        _f("account_id", StringType(), False),
        _f("as_of_date", DateType(), False),
        _f("feature_set_version", StringType(), False),
        # A hash of the configuration the slice was built with (features.job.feature_config_fingerprint):
        # scoring reuses a slice only when it matches. Null in slices written before it existed.
        _f("config_fingerprint", StringType(), True),
    ]
)
FEATURE_KEY_COLUMNS = tuple(FEATURE_KEYS.fieldNames())
"""The features table's non-feature columns: `KEYS`, `feature_set_version` and `config_fingerprint`."""

CHURN_SCORES = StructType(
    [
        _f("account_id", StringType(), False),
        _f("as_of_date", DateType(), False),
        _f("model_version", StringType(), False),
        _f("churn_probability", DoubleType(), False),
        _f("risk_decile", IntegerType(), False),
        _f("rank", LongType(), False),
        _f("reason_1", StringType(), True),
        _f("reason_2", StringType(), True),
        _f("reason_3", StringType(), True),
        _f("scored_at", TimestampType(), False),
    ]
)

CHURN_TARGETS = StructType(
    [
        _f("account_id", StringType(), False),
        _f("as_of_date", DateType(), False),
        _f("model_version", StringType(), False),
        _f("churn_probability", DoubleType(), False),
        _f("account_value", DoubleType(), False),
        _f("expected_value", DoubleType(), False),
        _f("contact_cost", DoubleType(), False),
        _f("target_rank", LongType(), False),
        _f("reason_1", StringType(), True),
        _f("reason_2", StringType(), True),
        _f("reason_3", StringType(), True),
        _f("scored_at", TimestampType(), False),
        # How the row was chosen (score.targeting): `targeting_mode` risk or uplift, and the predicted uplift
        # (reduction of churn_probability by a contact; null in risk mode). Appended and nullable: slices
        # written before they existed read null, and the write evolves an older table (mergeSchema).
        _f("targeting_mode", StringType(), True),
        _f("uplift", DoubleType(), True),
    ]
)
"""The budget-constrained contact list for one `as_of_date` (best expected value first), with the reasons to
talk about; re-scoring the date replaces it."""
