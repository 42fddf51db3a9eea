"""Typed configuration: one YAML file, overridden by CLI flags, validated at the edge.

Every job reads its settings from :class:`Settings`; nothing in the library hard-codes a path,
table name or date. Invalid values fail with one line naming the field and what is allowed.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from churn_spark.errors import ConfigError

TableFormat = Literal["delta", "parquet", "csv", "json", "catalog"]
IdCase = Literal["preserve", "lower", "upper"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


EPOCH_FORMATS = ("epoch_s", "epoch_ms", "epoch_us")
"""Timestamp formats that are numbers since 1970-01-01 UTC (seconds may carry a fraction)."""


def _time_format(value: str) -> str:
    if not value.strip():
        raise ValueError("must be iso, epoch_s, epoch_ms, epoch_us or a Spark datetime pattern (e.g. dd/MM/yyyy HH:mm)")
    return value


def _date_format(value: str) -> str:
    if not value.strip() or value in EPOCH_FORMATS:
        raise ValueError("must be iso or a Spark datetime pattern (e.g. dd/MM/yyyy)")
    return value


def _time_zone(value: str) -> str:
    """A region id (Europe/Paris) or a fixed offset (+02:00, UTC+2): what both Spark and Python know."""
    if re.fullmatch(r"(UTC|GMT|UT)?[+-]\d{1,2}(:?\d{2})?", value):
        return value
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}: use a region id (Europe/Paris, UTC) or an offset (+02:00)") \
            from None
    return value


TimeFormat = Annotated[str, AfterValidator(_time_format)]
"""`iso` (ISO-8601; an offset in the value wins), `epoch_s`, `epoch_ms`, `epoch_us`, or a Spark datetime pattern."""
DateFormat = Annotated[str, AfterValidator(_date_format)]
"""`iso` (yyyy-MM-dd, or a timestamp cast to its UTC date) or a Spark datetime pattern."""
TimeZone = Annotated[str, AfterValidator(_time_zone)]
"""The zone of source times that carry no offset; they are converted to UTC."""


class TableSource(_Section):
    """Where one input table lives: a path (relative paths resolve under the lakehouse) or a catalog name,
    and how its columns map to the contract (docs/contract.md, "Mapping and formats")."""

    format: TableFormat = "delta"
    path: str | None = None
    table: str | None = None
    options: dict[str, str] = Field(default_factory=dict)
    enabled: bool = True
    # contract column -> source column, e.g. {account_id: customer_id}; unmapped columns keep their names
    columns: dict[str, str] = Field(default_factory=dict)
    timestamp_format: TimeFormat = "iso"  # of the contract's timestamp columns
    time_zone: TimeZone = "UTC"  # of times without an offset (iso, pattern); epochs are UTC by definition
    date_format: DateFormat = "iso"  # of the contract's date columns
    # a column saying which copy of a repeated key is the latest (e.g. updated_at): the latest valid copy is
    # kept (ties by all values); None: the first valid copy by all values (io.conform)
    version_column: str | None = None

    @model_validator(mode="after")
    def _location_matches_format(self) -> TableSource:
        if self.enabled and self.format == "catalog" and not self.table:
            raise ValueError("format 'catalog' needs 'table' (e.g. db.accounts)")
        if self.enabled and self.format != "catalog" and not self.path:
            raise ValueError(f"format '{self.format}' needs 'path'")
        return self


class InputsSettings(_Section):
    accounts: TableSource = TableSource(path="raw/accounts")
    subscriptions: TableSource = TableSource(path="raw/subscriptions")
    support_tickets: TableSource = TableSource(path="raw/support_tickets")
    churn_truth: TableSource = TableSource(path="raw/churn_truth")
    # declared attribute columns of accounts used as features; none by default (the generated data's are
    # churn_spark.generate.GENERATED_ATTRIBUTES: country, channel, industry)
    account_attributes: list[str] = Field(default_factory=list)
    # ids of every input (ids.normalized_id): trimmed, integral numbers without decimals, then this case
    id_case: IdCase = "preserve"
    # fail a run when more than this share of events, subscriptions or tickets name an account not in accounts
    max_unknown_account_share: float = Field(0.01, ge=0, le=1)
    # fail when more than this share of accounts has no subscription; None: reported only
    max_accounts_without_subscriptions_share: float | None = Field(None, ge=0, le=1)
    # optional history of the attributes (docs/contract.md): one row per account and validity interval
    # [valid_from, valid_to) with the attribute columns; None: attributes are assumed static (today's values)
    account_attribute_history: TableSource | None = None
    # optional retention-campaign log (docs/contract.md): one row per (campaign, account) assignment with its
    # arm and propensity; read by the uplift code (churn_spark/uplift/campaigns.py); None: no campaigns
    interventions: TableSource | None = None


class SparkSettings(_Section):
    master: str | None = None  # None: spark-submit's --master, else local[*]
    app_name: str = "churn-spark"
    shuffle_partitions: int = Field(8, ge=1)
    # tasks per Delta log replay (Delta's default is 50): each table load runs it, and these logs list
    # thousands of files, not millions; on a small run the replays were the biggest fixed cost
    delta_snapshot_partitions: int = Field(2, ge=1)
    driver_memory: str = Field("2g", pattern=r"^\d+[kmgt]?$")
    ivy_cache: str = "~/.cache/churn-spark/ivy"
    ui_enabled: bool = False
    show_progress: bool = True
    log_level: Literal["ERROR", "WARN", "INFO", "DEBUG"] = "ERROR"
    bind_address: str = "127.0.0.1"
    with_kafka: bool = True
    # extra options of a driver JVM this process launches (JIT, code cache, GC); spark-submit's own win
    java_options: str = ""
    # a driver JVM this process launches maps the class-data-sharing archive `make prefetch` (or `python -m
    # churn_spark.prefetch cds`) built, when there is one (churn_spark/classcache.py): Spark, Delta and MLlib
    # classes come from one file instead of being loaded and verified one by one (a cold process scoring 69k
    # accounts: 59.5-61.5 s with it, 64.8-65.3 s without; docs/operations.md)
    class_sharing: bool = True
    conf: dict[str, str] = Field(default_factory=dict)


class CampaignSettings(_Section):
    """Simulated retention campaigns (generate/mechanism.py, generate/campaigns.py). None by default: with
    campaigns, the treated accounts' lives (subscriptions, events) change, so every other table stays as
    it was only without them."""

    # campaign dates: first days of months (the simulation is monthly) inside [generate.start, generate.end]
    dates: list[dt.date] = Field(default_factory=list)
    share: float = Field(0.2, gt=0, le=1)  # of the eligible accounts (not assigned in the last horizon) assigned
    propensity: float = Field(0.8, gt=0, lt=1)  # P(treatment) of an assigned account; the rest is the holdout
    cost_per_contact: float = Field(25.0, ge=0)  # `cost` of a treated assignment (control: 0)
    channel: str = "email"

    @field_validator("dates")
    @classmethod
    def _month_starts(cls, v: list[dt.date]) -> list[dt.date]:
        wrong = [d.isoformat() for d in v if d.day != 1]
        if wrong:
            raise ValueError(f"campaign dates must be first days of months (the simulation is monthly): {wrong}")
        return sorted(set(v))


class GenerateSettings(_Section):
    accounts: int = Field(2000, ge=1)
    start: dt.date = dt.date(2022, 1, 1)
    end: dt.date = dt.date(2024, 12, 31)
    seed: int = 42
    events_per_account_month: float = Field(30.0, gt=0)
    event_files: int = Field(8, ge=1)
    duplicate_event_rate: float = Field(0.002, ge=0, le=0.5)
    malformed_event_rate: float = Field(0.001, ge=0, le=0.5)
    initial_accounts_fraction: float = Field(0.6, gt=0, le=1)
    history_months: int = Field(24, ge=1, le=240)  # initial accounts are created this long before start
    partitions: int | None = Field(None, ge=1)  # account partitions (None: from cluster size); output is the same
    campaigns: CampaignSettings = CampaignSettings()  # simulated retention campaigns; none by default

    @model_validator(mode="after")
    def _range(self) -> GenerateSettings:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        outside = [d.isoformat() for d in self.campaigns.dates if not self.start <= d <= self.end]
        if outside:
            raise ValueError(f"campaigns.dates outside [start, end]: {outside}")
        return self


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = "churn-events"
    starting_offsets: Literal["earliest", "latest"] = "earliest"
    max_offsets_per_trigger: int | None = Field(None, ge=1)
    options: dict[str, str] = Field(default_factory=dict)


class BackfillSettings(_Section):
    """A batch backfill of events (ingest source `files` or `table`): drained once, with its own checkpoint."""

    format: Literal["parquet", "csv", "json"] = "parquet"  # json: JSON lines, read like the landing folder
    path: str | None = None  # source `files`: a folder or file (relative: under the lakehouse)
    table: str | None = None  # source `table`: a catalog table, e.g. db.events_history
    options: dict[str, str] = Field(default_factory=dict)  # Spark reader options (csv: header=true is set)


EventField = Literal["event_id", "account_id", "event_type", "event_time", "value", "properties"]


class IngestSettings(_Section):
    source: Literal["landing", "kafka", "files", "table"] = "landing"
    landing_path: str = "landing/events"
    kafka: KafkaSettings = KafkaSettings()
    backfill: BackfillSettings = BackfillSettings()
    allowed_event_types: list[str] | None = None
    min_event_time: dt.datetime = dt.datetime(2000, 1, 1)
    max_future_seconds: int = Field(86_400, ge=0)
    max_record_bytes: int = Field(65_536, ge=128)
    watermark: str = "2 days"
    trigger_interval: str = "30 seconds"
    max_files_per_trigger: int | None = Field(None, ge=1)
    # event field -> the record's field (a top-level name, or a path such as $.context.account), e.g.
    # {event_id: id, account_id: customer_id, event_time: ts}; unmapped fields keep their contract names
    fields: dict[EventField, str] = Field(default_factory=dict)
    event_time_format: TimeFormat = "iso"
    time_zone: TimeZone = "UTC"  # of event times without an offset (iso, pattern)
    # an absent or blank id: quarantine (missing_event_id), or derive one as sha2 of account, type, time,
    # value and properties, so a re-delivered copy of the same event gets the same id
    missing_event_id: Literal["quarantine", "derive"] = "quarantine"

    @model_validator(mode="after")
    def _backfill_location(self) -> IngestSettings:
        if self.source == "files" and not self.backfill.path:
            raise ValueError("source 'files' needs backfill.path (ingest --path)")
        if self.source == "table" and not self.backfill.table:
            raise ValueError("source 'table' needs backfill.table (ingest --table)")
        return self


class SnapshotSettings(_Section):
    """Snapshot schedule: the first day of each month (or every `every_days`) in [start, end]."""

    frequency: Literal["monthly", "days"] = "monthly"
    every_days: int = Field(30, ge=1)
    start: dt.date | None = None
    end: dt.date | None = None


class ChurnSettings(_Section):
    lookback_months: int = Field(18, ge=1)
    horizon_months: int = Field(6, ge=1)
    grace_days: int = Field(30, ge=0)
    min_tenure_days: int = Field(0, ge=0)
    data_end: dt.date | None = None
    snapshots: SnapshotSettings = SnapshotSettings()


class FeatureSettings(_Section):
    windows_days: list[int] = Field(default_factory=lambda: [7, 28, 90, 182, 365, 548])
    event_types: list[str] | None = None
    # raw event type (exact) or slug (every variant) -> family name; applied before slugging and capping
    event_type_map: dict[str, str] = Field(default_factory=dict)
    # the most frequent families in the first build's range keep their own columns, the rest pool into
    # `other` (features/vocabulary.py); frozen with feature_set_version; null: no cap
    max_event_types: int | None = Field(50, ge=0)
    feature_set_version: str = "1"
    high_priorities: list[str] = Field(default_factory=lambda: ["high", "urgent"])
    # windows (a subset of windows_days) with trend ratios: last w days vs the w before, and vs the lookback
    trend_windows_days: list[int] = Field(default_factory=lambda: [7, 28, 90])
    # windows (a subset of windows_days) whose event counts are also given per seat (quantity)
    per_seat_windows_days: list[int] = Field(default_factory=lambda: [28, 90])
    # windows for plan changes and MRR change ratios from subscriptions
    change_windows_days: list[int] = Field(default_factory=lambda: [90, 182, 365])
    # season_cos / season_sin: where D falls in the calendar year, so a model can learn seasonal churn
    # (budget reviews, year-end) instead of carrying the calibration period's base rate to every season
    season: bool = True

    @field_validator("windows_days", "change_windows_days")
    @classmethod
    def _windows_positive(cls, v: list[int]) -> list[int]:
        if not v or any(w <= 0 for w in v):
            raise ValueError("must be a non-empty list of positive day counts")
        return sorted(set(v))

    @model_validator(mode="after")
    def _subsets_of_windows(self) -> FeatureSettings:
        for name in ("trend_windows_days", "per_seat_windows_days"):
            extra = sorted(set(getattr(self, name)) - set(self.windows_days))
            if extra:
                raise ValueError(f"{name} must be a subset of windows_days; not in it: {extra}")
        return self


Family = Literal["lr", "gbt", "xgboost"]  # xgboost: optional extra (`pip install 'churn-spark[xgboost]'`)


class ModelSettings(_Section):
    # auto: fit every family of `candidates` on the expanding-window folds and keep the best by
    # `select_metric`; gbt (GBTClassifier) or lr (LogisticRegression on standardised log1p values): one family;
    # xgboost (xgboost.spark's SparkXGBClassifier, optional package): one family, never a default candidate
    type: Literal["auto", "gbt", "lr", "xgboost"] = "auto"
    candidates: list[Family] = Field(default_factory=lambda: list[Family](["lr", "gbt"]), min_length=1)
    select_metric: Literal["roc_auc", "pr_auc"] = "roc_auc"
    seed: int = 7
    train_end: dt.date | None = None
    validation_snapshots: int = Field(2, ge=1)
    test_snapshots: int = Field(3, ge=1)
    # after search and calibration, refit the registered model on every snapshot whose label window
    # ends by the first test snapshot (train + gap + validation): more and more recent data, same test
    refit: bool = True
    params: dict[str, Any] = Field(default_factory=dict)  # MLlib params of the one family `type` names
    params_by_family: dict[Family, dict[str, Any]] = Field(default_factory=dict)  # per family (any type)
    param_grid: dict[str, list[Any]] = Field(default_factory=dict)  # searched for the one family `type` names
    # fits (and independent later steps: refit + calibrator, evaluation + drift reference) run at a time
    parallelism: int = Field(2, ge=1)
    # the labelled dataset's layout: one partition per this many rows, at most spark.sql.shuffle.partitions
    rows_per_partition: int = Field(20_000, ge=1)
    promote_metric: Literal["roc_auc", "pr_auc", "log_loss", "brier"] = "roc_auc"
    promote_tolerance: float = Field(0.0, ge=0)
    # account-level bootstrap on the test snapshots: 95 % intervals of ROC AUC, PR AUC and lift at 10 %,
    # and the paired difference with the current model at promotion (0 turns both off; cost ~ rows x B)
    bootstrap_replicates: int = Field(200, ge=0)
    mlflow: bool = False
    # Calibrator fitted on out-of-time predictions (docs/model.md), saved as the pipeline's last stage:
    # raw probabilities carry the fit's own churn rate and over-confidence, the calibrated ones are what scoring
    # and targeting spend on. isotonic (default since session 25): a monotone map, centred and tie-broken so it
    # keeps the classifier's ranking; it reaches accounts that cannot churn soon, which Platt's sigmoid cannot
    # (8k accounts, with the seasonal shift: ece 0.0101 vs 0.0130). platt: two parameters, for few rows.
    calibration: Literal["platt", "isotonic", "none"] = "isotonic"
    # after the calibrator, a seasonal shift of the log-odds fitted on the registered fit's own rows (a GLM with
    # the calibrated log-odds as offset, the season's cosine and sine as inputs; docs/model.md): for models that
    # do not learn the season, whose calibrator would carry its snapshots' season to the whole year. auto: for
    # tree ensembles (gbt, xgboost), not for lr, which fits the season terms itself on the same rows. Without the
    # calendar features (features.season) there is no shift.
    seasonal_calibration: bool | Literal["auto"] = "auto"
    # weight classes to balance them in training (weightCol). Off by default: the weights cost ranking (8k
    # accounts: GBT test ROC AUC 0.7552 weighted, 0.7705 not), and the calibrator, fitted on fold predictions
    # centred on each fit's own churn rate, stays valid for the refit without them (docs/model.md).
    class_weights: bool = False
    # GBT: every fit holds out its latest snapshot and stops growing trees when they stop improving its log loss
    # (maxIter becomes a ceiling). Off by default: on 8,000 generated accounts it kept 6 trees, the same ROC AUC
    # in a third less time, but a worse calibration (ece 0.0204 vs 0.0130); on the demo's 2,000 accounts, where
    # 60 trees over-fit, it is on (docs/model.md, "Early stopping").
    early_stopping: bool = False
    missing_indicators: bool = True  # 0/1 columns for numeric features that had nulls in training
    # numeric feature -> period: `<feature> mod <period>` is a model input too (annual contracts renew on
    # the anniversary of their start, so the position in the contract year tells if a renewal is near)
    cyclic_features: dict[str, PositiveInt] = Field(default_factory=lambda: {"tenure_days": 365})
    exclude_features: list[str] = Field(default_factory=list)  # feature columns never used by the model

    @model_validator(mode="after")
    def _family_specific_settings_need_a_family(self) -> ModelSettings:
        if self.type == "auto" and (self.params or self.param_grid):
            raise ValueError("params and param_grid are MLlib parameters of one family: set type to gbt, lr or "
                             "xgboost, or give per-family parameters in params_by_family")
        return self

    def family_params(self, family: str) -> dict[str, Any]:
        """The configured MLlib parameters of `family` (over its defaults in train/pipeline.py)."""
        return {**self.params_by_family.get(family, {}), **(self.params if self.type == family else {})}  # type: ignore[call-overload]


class TargetingSettings(_Section):
    max_contacts: int | None = Field(None, ge=0)
    budget: float | None = Field(None, ge=0)
    cost_per_contact: float = Field(25.0, ge=0)
    success_rate: float = Field(0.2, ge=0, le=1)
    value_months: float = Field(12.0, gt=0)
    mrr_column: str = "mrr"  # feature column holding the account's MRR at D (account value = MRR x value_months)
    # risk: a contact is worth p x success_rate x value - cost; uplift: predicted uplift (the contact's reduction
    # of p, from the registered uplift model) x value - cost, and accounts with uplift <= 0 are never contacted
    mode: Literal["risk", "uplift"] = "risk"


class ScoringSettings(_Section):
    psi_warning_threshold: float = Field(0.2, gt=0)
    drift_top_features: int = Field(10, ge=0)
    psi_bins: int = Field(10, ge=2)  # numeric drift bins: quantiles of the training data
    # Features never checked for drift, besides the catalogue's `grows_by_design` ones (tenure_days).
    drift_exclude_features: list[str] = Field(default_factory=list)
    reason_candidates: int = Field(10, ge=1)  # trees: top-K features by importance tried by occlusion
    allow_extra_features: bool = False  # true: feature columns unknown to the model are ignored, not an error
    # Refuse to score D when the latest event day is more than this many days before D (stale activity
    # windows would push every account's risk up); `score --allow-stale-feed` overrides.
    max_feed_lag_days: int = Field(2, ge=0)
    targeting: TargetingSettings = TargetingSettings()


UpliftLearner = Literal["t_learner", "x_learner", "transformed_outcome"]


class UpliftSettings(_Section):
    """`churn-spark uplift train` (churn_spark/uplift/job.py); `--learner`, `--family` and `--test-dates` override.

    Few campaigns give few hundred assignments for a few hundred features: the learners are regularised, read a
    short feature list, and the regularisation is chosen by cross-validation on the training campaigns only."""

    learner: UpliftLearner = "x_learner"  # the one registered; `compare` ones are evaluated beside it, never chosen
    compare: list[UpliftLearner] = Field(default_factory=lambda: list[UpliftLearner](["t_learner",
                                                                                      "transformed_outcome"]))
    family: Literal["lr", "gbt"] = "lr"
    test_dates: int = Field(1, ge=1)  # latest campaign dates held out for the test
    params: dict[str, Any] = Field(default_factory=dict)  # fixed MLlib params of every model of the learner
    # searched by cross-validation on the training campaigns (Qini of the out-of-fold predictions); empty: the
    # family's default grid (uplift/learners.py DEFAULT_GRIDS); one combination: no search
    param_grid: dict[str, list[Any]] = Field(default_factory=dict)
    folds: int = Field(3, ge=2)  # account folds of that search
    features: list[str] = Field(default_factory=list)  # the feature columns read; empty: see max_features
    max_features: int | None = Field(20, ge=1)  # the registered churn model's most important; None: all features
    min_rows_per_arm: int = Field(50, ge=1)  # fewer treated or control training assignments: a one-line error
    bootstrap_replicates: int = Field(200, ge=0)
    promote_tolerance: float = Field(0.0, ge=0)  # promote when qini >= current's - tolerance on the same test rows


class ServeSettings(_Section):
    """`churn-spark serve` (churn_spark/serve/): the REST service over the latest scores, without a JVM."""

    host: str = "127.0.0.1"  # the pod's manifest passes 0.0.0.0; locally nothing listens beyond this machine
    port: int = Field(8080, ge=1, le=65535)
    # how often the service checks the Delta versions of the score tables and models/current for a newer
    # slice or model (loaded aside, then swapped in; a failed reload keeps the previous data)
    poll_interval_seconds: float = Field(30.0, gt=0)
    # name of the environment variable (backed by a Kubernetes Secret) holding the bearer token; None: no
    # auth. When named, the variable must be set, and every route but the probes needs the token.
    auth_token_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    max_page_size: int = Field(1000, ge=1)  # largest `limit` of GET /v1/targets


class Settings(_Section):
    lakehouse: str = "./lakehouse"
    spark: SparkSettings = SparkSettings()
    inputs: InputsSettings = InputsSettings()
    generate: GenerateSettings = GenerateSettings()
    ingest: IngestSettings = IngestSettings()
    churn: ChurnSettings = ChurnSettings()
    features: FeatureSettings = FeatureSettings()
    model: ModelSettings = ModelSettings()
    scoring: ScoringSettings = ScoringSettings()
    serve: ServeSettings = ServeSettings()
    uplift: UpliftSettings = UpliftSettings()


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "config"
    extra = f" ({len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"invalid config: {where}: {first['msg']}{extra}"


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"invalid override {dotted}: {key} is not a section")
    node[leaf] = value


def load_settings(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Read the YAML file (if any), apply dotted-key overrides (CLI flags win), validate."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level")
        data = loaded
    return _validated(data, overrides or {})


def with_overrides(settings: Settings, overrides: dict[str, Any]) -> Settings:
    """A copy of `settings` with dotted-key overrides applied and re-validated."""
    return _validated(settings.model_dump(mode="json"), overrides)


def _validated(data: dict[str, Any], overrides: dict[str, Any]) -> Settings:
    """`data` with the non-None dotted-key overrides applied, validated into Settings (one-line errors)."""
    for key, value in overrides.items():
        if value is not None:
            _set_dotted(data, key, value)
    try:
        return Settings.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_describe(err)) from None
