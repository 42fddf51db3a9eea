"""The feature catalogue: name, family, window, type and definition of every `gold.churn_features` column.

The family modules name their output columns with these functions, the job selects columns in
catalogue order, and the table in docs/churn-definition.md is generated from `readme_table()` (a test checks both).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from churn_spark.config import ChurnSettings, FeatureSettings, Settings
from churn_spark.errors import ConfigError

Dtype = Literal["numeric", "categorical"]
TYPE_PLACEHOLDER = "{event_type}"
ANY_TYPE = "events"


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    family: str
    window_days: int | None
    dtype: Dtype
    definition: str
    zero_when_absent: bool = False  # a count: 0 (not null) for an account with no events/tickets
    # grows with calendar time for every account (tenure): its distribution shifts every night by design,
    # so drift never checks it (score/drift.py, docs/model.md#drift)
    grows_by_design: bool = False
    # a property of the snapshot date D, the same for every account (the season): it moves with the calendar
    # by design (never drift-checked) and says nothing about one account (never a reason code)
    calendar: bool = False


OTHER = "other"  # the family pooling the event types beyond features.max_event_types
RESERVED_PREFIXES = (ANY_TYPE, "days")  # column prefixes of the any-type features


def type_slug(event_type: str) -> str:
    """A column-safe name for an event type: lower case, runs of other characters as `_`."""
    slug = re.sub(r"[^a-z0-9]+", "_", event_type.lower()).strip("_")
    return slug or "unnamed"


def variant_key(event_type: str) -> str:
    """The type with case, spacing and punctuation ignored, but every letter kept (Unicode too).

    Two raw types with the same key are variants of one type ("Page View", "PAGE-VIEW") and fold into
    one family; two with the same slug but different keys ("café", "caf") collide.
    """
    return re.sub(r"[\W_]+", "_", event_type.casefold()).strip("_")


def slug_collisions(families: Mapping[str, str], explicit: Sequence[str] = ()) -> list[str]:
    """Why `families` ({raw type: family}) cannot be feature columns, one entry per problem ([] when fine).

    A family reached by slugging (raw types not in `explicit`, i.e. not named by features.event_type_map)
    must hold variants of one type only; no family may take a reserved prefix of the any-type features.
    """
    implicit: dict[str, set[str]] = {}
    named = set(explicit)
    for raw, family in families.items():
        if raw not in named:
            implicit.setdefault(family, set()).add(raw)
    problems = [f"{', '.join(repr(r) for r in sorted(raws))} -> {family!r}" for family, raws in sorted(implicit.items())
                if len({variant_key(r) for r in raws}) > 1]
    reserved = sorted(raw for raw, family in families.items() if family in RESERVED_PREFIXES)
    problems += [f"{raw!r} -> {families[raw]!r} (reserved for the any-type features)" for raw in reserved]
    return problems


def check_slug_collisions(families: Mapping[str, str], explicit: Sequence[str] = ()) -> None:
    """One ConfigError listing every collision of `slug_collisions`."""
    problems = slug_collisions(families, explicit)
    if problems:
        raise ConfigError("event types collide as feature column prefixes (not case/punctuation variants of one "
                          "type; fold or rename them with features.event_type_map): " + "; ".join(problems))


def event_type_slugs(event_types: Sequence[str]) -> dict[str, str]:
    """{event_type: slug}: variants of one type share their slug; other collisions are one config error."""
    out = {t: type_slug(t) for t in sorted(set(event_types))}
    check_slug_collisions(out)
    return out


def family_order(families: Iterable[str]) -> list[str]:
    """Families in column order: by name, the `other` pool last."""
    return sorted(set(families), key=lambda f: (f == OTHER, f))


def families_of(event_types: Sequence[str] | Mapping[str, str]) -> list[str]:
    """The families with columns: of {raw type: family}, or of a list of types (each its own slug)."""
    members = event_types if isinstance(event_types, Mapping) else event_type_slugs(event_types)
    return family_order(members.values())


# --- activity ----------------------------------------------------------------------------------


def count_col(slug: str, w: int) -> str:
    return f"{slug}_count_{w}d"


def value_sum_col(slug: str, w: int) -> str:
    return f"{slug}_value_sum_{w}d"


def days_active_col(slug: str, w: int) -> str:
    return f"{slug}_days_active_{w}d" if slug != ANY_TYPE else f"days_active_{w}d"


def trend_prev_col(slug: str, w: int) -> str:
    return f"{slug}_trend_{w}d_vs_prev_{w}d"


def trend_lookback_col(slug: str, w: int) -> str:
    return f"{slug}_trend_{w}d_vs_lookback"


def per_seat_col(slug: str, w: int) -> str:
    return f"{slug}_count_per_seat_{w}d"


DAYS_SINCE_LAST_EVENT = "days_since_last_event"


def _activity_for(slug: str, what: str, f: FeatureSettings, churn: ChurnSettings) -> list[FeatureSpec]:
    lb = f"the lookback ({churn.lookback_months} months before D)"
    specs = []
    for w in f.windows_days:
        win = f"[D-{w}d, D)"
        specs.append(FeatureSpec(count_col(slug, w), "activity", w, "numeric", f"number of {what} in {win}", True))
        if slug != ANY_TYPE:
            specs.append(FeatureSpec(value_sum_col(slug, w), "activity", w, "numeric",
                                     f"sum of `value` of {what} in {win} (0 when none)", True))
        specs.append(FeatureSpec(days_active_col(slug, w), "activity", w, "numeric",
                                 f"distinct UTC days with {what} in {win}", True))
    for w in f.trend_windows_days:
        specs.append(FeatureSpec(trend_prev_col(slug, w), "activity", w, "numeric",
                                 f"{what} in [D-{w}d, D) / {what} in [D-{2 * w}d, D-{w}d); null when the latter is 0"))
        specs.append(FeatureSpec(trend_lookback_col(slug, w), "activity", w, "numeric",
                                 f"daily rate of {what} in [D-{w}d, D) / daily rate over {lb}; null when no events"))
    for w in f.per_seat_windows_days:
        specs.append(FeatureSpec(per_seat_col(slug, w), "activity", w, "numeric",
                                 f"{what} in [D-{w}d, D) / seats (`quantity`) active at D"))
    return specs


def activity_specs(f: FeatureSettings, churn: ChurnSettings, slugs: Sequence[str]) -> list[FeatureSpec]:
    specs = _activity_for(ANY_TYPE, "events of any type", f, churn)
    specs.append(FeatureSpec(DAYS_SINCE_LAST_EVENT, "activity", None, "numeric",
                             "days from the last event day before D to D; null when no event in the lookback "
                             "span of D (the longest window, trend span or lookback)"))
    for slug in slugs:
        what = f"events of the types pooled into `{OTHER}`" if slug == OTHER else f"`{slug}` events"
        specs.extend(_activity_for(slug, what, f, churn))
    return specs


# --- account -------------------------------------------------------------------------------------


def plan_changes_col(w: int) -> str:
    return f"plan_changes_{w}d"


def mrr_change_col(w: int) -> str:
    return f"mrr_change_ratio_{w}d"


def account_specs(f: FeatureSettings, attributes: Sequence[str],
                  attribute_dtypes: Mapping[str, Dtype] | None = None) -> list[FeatureSpec]:
    """`attribute_dtypes`: the type of each attribute feature, from its source column (numeric or boolean
    columns are numeric features: features/account.py `attribute_dtypes`); unlisted ones are categorical."""
    specs = [
        FeatureSpec("tenure_days", "account", None, "numeric", "days from the account's creation date to D",
                    grows_by_design=True),
        FeatureSpec("mrr", "account", None, "numeric", "sum of `mrr` of subscriptions active at D"),
        FeatureSpec("quantity", "account", None, "numeric", "sum of `quantity` (seats) of subscriptions active at D"),
        FeatureSpec("active_subscriptions", "account", None, "numeric", "subscriptions active at D"),
        FeatureSpec("mrr_per_seat", "account", None, "numeric", "`mrr` / `quantity` at D"),
        FeatureSpec("product_id", "account", None, "categorical",
                    "product of the main subscription active at D (highest mrr, then latest start)"),
        FeatureSpec("bill_period_months", "account", None, "categorical",
                    "billing period (months) of the main subscription active at D, as text"),
    ]
    for w in f.change_windows_days:
        specs.append(FeatureSpec(plan_changes_col(w), "account", w, "numeric",
                                 f"subscriptions started in (D-{w}d, D] other than the account's first "
                                 "(renewals, upgrades, downgrades)"))
        specs.append(FeatureSpec(mrr_change_col(w), "account", w, "numeric",
                                 f"(mrr at D - mrr at D-{w}d) / mrr at D-{w}d; null when no mrr at D-{w}d"))
    for attr in attributes:
        dtype = (attribute_dtypes or {}).get(attr, "categorical")
        kind = "as double (numeric source column)" if dtype == "numeric" else "as text"
        specs.append(FeatureSpec(attr, "account", None, dtype,
                                 f"declared account attribute `{attr}`, {kind}: today's value, or the value valid "
                                 "on D-1 with `inputs.account_attribute_history`"))
    return specs


# --- calendar ------------------------------------------------------------------------------------

SEASON_COS, SEASON_SIN = "season_cos", "season_sin"
CALENDAR_FEATURES = (SEASON_COS, SEASON_SIN)


def calendar_specs(f: FeatureSettings) -> list[FeatureSpec]:
    """The season of D as a point on the unit circle (both coordinates: one alone cannot tell spring from
    autumn), empty with `features.season: false`."""
    if not f.season:
        return []
    angle = "2 pi (day of year of D - 1) / days in D's year"
    return [FeatureSpec(SEASON_COS, "calendar", None, "numeric", f"cos({angle}): 1 on January 1, -1 mid-year",
                        calendar=True),
            FeatureSpec(SEASON_SIN, "calendar", None, "numeric", f"sin({angle}): 1 in early April, -1 in early "
                        "October", calendar=True)]


# --- support -------------------------------------------------------------------------------------


def tickets_col(w: int) -> str:
    return f"tickets_{w}d"


def tickets_high_col(w: int) -> str:
    return f"tickets_high_priority_{w}d"


def tone_col(w: int) -> str:
    return f"ticket_tone_mean_{w}d"


TICKETS_OPEN = "tickets_open"


def resolution_col(f: FeatureSettings) -> str:
    return f"ticket_resolution_hours_mean_{max(f.windows_days)}d"


def support_specs(f: FeatureSettings) -> list[FeatureSpec]:
    high = ", ".join(f.high_priorities)
    specs = []
    for w in f.windows_days:
        specs.append(FeatureSpec(tickets_col(w), "support", w, "numeric", f"tickets opened in [D-{w}d, D)", True))
        specs.append(FeatureSpec(tickets_high_col(w), "support", w, "numeric",
                                 f"tickets opened in [D-{w}d, D) with priority in ({high})", True))
        specs.append(FeatureSpec(tone_col(w), "support", w, "numeric",
                                 f"mean VADER compound tone (-1..1) of ticket texts opened in [D-{w}d, D); "
                                 "null when none"))
    specs.append(FeatureSpec(TICKETS_OPEN, "support", None, "numeric",
                             "tickets opened before D and not closed before D (closed at or after D = open)", True))
    w = max(f.windows_days)
    specs.append(FeatureSpec(resolution_col(f), "support", w, "numeric",
                             f"mean hours from opening to closing of tickets opened in [D-{w}d, D) and closed "
                             "before D; null when none"))
    return specs


# --- the whole catalogue -------------------------------------------------------------------------


def feature_catalog(settings: Settings, event_types: Sequence[str] | Mapping[str, str], with_support: bool,
                    attribute_dtypes: Mapping[str, Dtype] | None = None) -> list[FeatureSpec]:
    """Every feature column in table order: account, calendar, activity (any type, then per family), support.

    `event_types`: {raw type: family} (features/vocabulary.py), or a list of types, each its own family.
    `attribute_dtypes` as in `account_specs` (the job passes the types of its attribute source)."""
    slugs = families_of(event_types)
    specs = account_specs(settings.features, settings.inputs.account_attributes, attribute_dtypes)
    specs += calendar_specs(settings.features)
    specs += activity_specs(settings.features, settings.churn, slugs)
    if with_support:
        specs += support_specs(settings.features)
    names = [s.name for s in specs]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ConfigError(f"feature names clash (check inputs.account_attributes and features.event_type_map): "
                          f"{', '.join(clashes)}")
    return specs


def grows_by_design(settings: Settings) -> list[str]:
    """Features whose values grow with calendar time for every account (flagged in the catalogue).

    Read off the specs directly (no name-clash check, so drift never fails on a config the features job
    would refuse); per-event-type activity features are windowed and never grow by design.
    """
    specs = account_specs(settings.features, settings.inputs.account_attributes)
    specs += activity_specs(settings.features, settings.churn, []) + support_specs(settings.features)
    return [s.name for s in specs if s.grows_by_design]


def calendar_features(settings: Settings) -> list[str]:
    """Features that are a property of D alone (the season), flagged `calendar` in the catalogue."""
    return [s.name for s in calendar_specs(settings.features) if s.calendar]


def readme_table(settings: Settings | None = None) -> str:
    """The catalogue as a Markdown table for the default config, per-type features as `{event_type}_...`."""
    settings = settings or Settings()
    specs = account_specs(settings.features, settings.inputs.account_attributes)
    specs += calendar_specs(settings.features)
    specs += activity_specs(settings.features, settings.churn, [TYPE_PLACEHOLDER])
    specs += support_specs(settings.features)
    lines = ["| feature | family | window (days) | type | definition |", "|---|---|---|---|---|"]
    for s in specs:
        win = "" if s.window_days is None else str(s.window_days)
        lines.append(f"| `{s.name}` | {s.family} | {win} | {s.dtype} | {s.definition.replace('|', '/')} |")
    return "\n".join(lines)
