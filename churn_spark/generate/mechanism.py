"""The generator's process: accounts, a drifting latent engagement, subscriptions and churn truth.

Grain and time:
- one row per account (`spark.range`), its whole life simulated month by month inside one
  higher-order `aggregate` over its months (a sequential state machine, no shuffle, no driver loop);
- months are calendar months indexed from `Calendar.origin` (= the start month minus
  `generate.history_months`): initial accounts are created in that history window so they arrive
  at `start` with real tenure and subscription history; events and tickets start at `start`.

Mechanism per account and month m (all draws hash-based, see `rand`):
- engagement e_m = mu + phi (e_{m-1} - mu) + sigma z_m  (AR(1) around an account level mu that
  depends on channel and industry);
- cancellation hazard h_m = sigmoid(a + b e_m + season(month) + c log1p(tenure) + plan + seats);
  monthly billing: cancel with prob h_m, effective on the account's billing day of that month;
  annual billing: only at the renewal month, not renewing with prob 1 - (1 - h_m)^K;
- a cancellation is followed by a short-gap reactivation (gap 1..grace_days: the labels bridge
  it, so it is not churn), a long-gap reactivation (beyond grace_days: churn, then a new life) or
  nothing;
- upgrades (plan up or seats up) are likelier when engaged, downgrades when not; plan and seat
  changes and annual renewals close the current subscription row and open a new one.

Retention campaigns (`generate.campaigns`, none by default; tables in `generate/campaigns.py`): in a
campaign month m (its date D is the month's first day) an account eligible at D as the labels define it
(a subscription active at D, tenure >= churn.min_tenure_days) and not assigned in the last
`churn.horizon_months` months (so each assignment's outcome window holds one treatment) is assigned with
probability `share`, and treated with probability `propensity` (else control). A treated account's hazard
logit gets `treatment_shift` (depending on its engagement e_{m-1}, tenure, plan and seats; ticket rates
follow engagement, so it carries them) for months m .. m + horizon - 1, inside the same `aggregate`: the
treated account's later life (cancellations, subscriptions, events, tickets) follows the changed hazard,
while every draw stays keyed on (account, month), so unassigned and control accounts are identical to a
run without campaigns. `churn_truth` stays the untreated process's probability for every account.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DateType,
    DoubleType,
    IntegerType,
    StructField,
    StructType,
)

from churn_spark.config import Settings
from churn_spark.generate.rand import let, normal, pick_weighted, sigmoid, uniform
from churn_spark.thresholds import count_at_or_below

PLANS = ("basic", "pro", "enterprise")
LIST_PRICE_PER_SEAT = (15.0, 40.0, 90.0)


class Stream:
    """One stream number per kind of draw, so draws for different purposes are independent."""

    INITIAL, CREATED_DAY, CREATED_MONTH, CREATED_SECOND = 1, 2, 3, 4
    COUNTRY, CHANNEL, INDUSTRY, MU, E0, PLAN, SEATS, BILLING, DISCOUNT = 10, 11, 12, 13, 14, 15, 16, 17, 18
    E, CANCEL, CHANGE, CHANGE_KIND, CHANGE_DAY, REACT, GAP = 20, 21, 22, 23, 24, 25, 26
    EVENT_COUNT, EVENT_COUNT_Z, EVENT_TYPE, EVENT_DAY = 30, 31, 32, 33
    EVENT_SECOND, EVENT_VALUE, EVENT_PROP = 34, 35, 36
    DUPLICATE, MALFORMED, MALFORMED_KIND = 40, 41, 42
    TICKET_COUNT, TICKET_DAY, TICKET_SECOND, TICKET_TONE, TICKET_TEMPLATE, TICKET_FEATURE = 50, 51, 52, 53, 54, 55
    TICKET_PRIORITY, TICKET_CHANNEL, TICKET_HOURS = 56, 57, 58
    ASSIGN, ARM = 60, 61


@dataclass(frozen=True)
class Mechanism:
    """The generator's parameters; the truth uses the same numbers as the simulation."""

    phi: float = 0.85
    sigma: float = 0.35
    mu_sd: float = 0.6
    hazard_intercept: float = -3.4
    hazard_engagement: float = -1.0
    hazard_season: float = 0.3  # amplitude; peaks in January (budget reviews)
    hazard_tenure: float = -0.15  # per log1p(months of tenure)
    hazard_plan: tuple[float, float, float] = (0.0, -0.2, -0.4)
    hazard_seats: float = -0.1  # per log(seats)
    annual_equivalent_months: int = 8  # annual non-renewal = 1 - (1 - h)^8 at the renewal month
    annual_fraction: float = 0.3
    short_reactivation: float = 0.2
    long_reactivation: float = 0.15
    long_gap_min_beyond_grace: int = 15
    long_gap_span_days: int = 150
    upgrade_base: float = 0.04
    downgrade_base: float = 0.03
    change_elasticity: float = 0.8
    # a retention contact's shift of the hazard logit over the horizon (negative: it retains): it helps
    # disengaged, new, small accounts and puts off engaged, long-standing enterprise ones ("sleeping dogs")
    effect_intercept: float = -0.9
    effect_engagement: float = 0.9  # per unit of engagement e_{m-1}
    effect_tenure: float = 0.12  # per log1p(months of tenure)
    effect_plan: tuple[float, float, float] = (0.0, 0.15, 0.45)
    effect_seats: float = -0.08  # per log(seats)

    @property
    def stationary_var(self) -> float:
        return self.sigma**2 / (1 - self.phi**2)


MECHANISM = Mechanism()

COUNTRIES = (("US", 0.35), ("GB", 0.12), ("DE", 0.12), ("FR", 0.08), ("NL", 0.05), ("CA", 0.07),
             ("AU", 0.05), ("IN", 0.08), ("BR", 0.05), ("JP", 0.03))
CHANNELS = (("self_serve", 0.5), ("sales", 0.3), ("partner", 0.2))
CHANNEL_EFFECT = {"self_serve": -0.15, "sales": 0.2, "partner": 0.05}
INDUSTRIES = (("software", 0.25), ("retail", 0.15), ("finance", 0.15), ("healthcare", 0.12),
              ("education", 0.1), ("manufacturing", 0.13), ("media", 0.1))
INDUSTRY_EFFECT = {"software": 0.15, "retail": -0.2, "finance": 0.05, "healthcare": 0.0, "education": -0.15,
                   "manufacturing": 0.0, "media": -0.05}
ARRIVAL_SEASON = (1.2, 1.1, 1.1, 1.0, 1.0, 0.9, 0.8, 0.7, 1.1, 1.1, 1.0, 0.7)  # Jan..Dec
ARRIVAL_GROWTH = 0.5  # the last month gets 1.5x the arrivals of the first (before seasonality)


@dataclass(frozen=True)
class Calendar:
    """Month grid of the simulation: index 0 is `origin`; data (events, truth) start at `start_m`."""

    origin: dt.date
    start: dt.date
    end: dt.date
    start_m: int
    last_m: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Calendar:
        g = settings.generate
        first = g.start.replace(day=1)
        origin_idx = first.year * 12 + first.month - 1 - g.history_months
        origin = dt.date(origin_idx // 12, origin_idx % 12 + 1, 1)
        last_m = g.end.year * 12 + g.end.month - 1 - origin_idx
        return cls(origin, g.start, g.end, g.history_months, last_m)

    @property
    def end_excl(self) -> dt.date:
        return self.end + dt.timedelta(days=1)

    def month_start(self, m: Column) -> Column:
        return F.add_months(F.lit(self.origin), m)

    def month_end_excl(self, m: Column) -> Column:
        """First day after month m that the data covers (the next month start, capped at end + 1)."""
        return F.least(F.add_months(F.lit(self.origin), m + F.lit(1)), F.lit(self.end_excl))

    def month_index(self, day: Column) -> Column:
        return ((F.year(day) - F.lit(self.origin.year)) * F.lit(12) + F.month(day) - F.lit(self.origin.month)).cast(
            "int"
        )

    def arrival_thresholds(self) -> list[float]:
        """Cumulative arrival probabilities of the data months (growth x seasonality), ending at 1."""
        n = self.last_m - self.start_m + 1
        weights = []
        for k in range(n):
            idx = self.origin.year * 12 + self.origin.month - 1 + self.start_m + k
            weights.append((1 + ARRIVAL_GROWTH * k / max(n - 1, 1)) * ARRIVAL_SEASON[idx % 12])
        total, cum, out = sum(weights), 0.0, []
        for w in weights:
            cum += w
            out.append(cum / total)
        return out


def season(month_of_year: Column) -> Column:
    """Seasonal churn pressure in [-1, 1]: highest in January, lowest in July."""
    return F.cos(F.lit(2 * math.pi / 12) * (month_of_year - F.lit(1)).cast("double"))


def hazard_logit(mech: Mechanism, e: Column, month_of_year: Column, tenure_months: Column, plan: Column,
                 seats: Column) -> Column:
    """Logit of the monthly cancellation hazard; `e` may be an (expected) engagement."""
    plan_effect = F.element_at(F.array(*[F.lit(x) for x in mech.hazard_plan]), plan + F.lit(1))
    return (
        F.lit(mech.hazard_intercept)
        + F.lit(mech.hazard_engagement) * e
        + F.lit(mech.hazard_season) * season(month_of_year)
        + F.lit(mech.hazard_tenure) * F.log1p(F.greatest(tenure_months, F.lit(0)).cast("double"))
        + plan_effect
        + F.lit(mech.hazard_seats) * F.log(F.greatest(seats, F.lit(1)).cast("double"))
    )


def treatment_shift(mech: Mechanism, e: Column, tenure_months: Column, plan: Column, seats: Column) -> Column:
    """A retention contact's shift of the hazard logit (negative: fewer cancellations), given the account's
    state when assigned: engagement e_{m-1}, months of tenure, plan index and seats."""
    plan_effect = F.element_at(F.array(*[F.lit(x) for x in mech.effect_plan]), plan + F.lit(1))
    return (
        F.lit(mech.effect_intercept)
        + F.lit(mech.effect_engagement) * e
        + F.lit(mech.effect_tenure) * F.log1p(F.greatest(tenure_months, F.lit(0)).cast("double"))
        + plan_effect
        + F.lit(mech.effect_seats) * F.log(F.greatest(seats, F.lit(1)).cast("double"))
    )


def campaign_months(settings: Settings, cal: Calendar) -> list[int]:
    """The month indexes (from `cal.origin`) of the configured campaign dates (first days of months)."""
    origin = cal.origin.year * 12 + cal.origin.month - 1
    return [d.year * 12 + d.month - 1 - origin for d in settings.generate.campaigns.dates]


def mrr(plan: Column, seats: Column, annual: Column, discount: Column) -> Column:
    """Monthly recurring revenue as decimal(18,2): list price x seats, less discounts."""
    price = F.element_at(F.array(*[F.lit(p) for p in LIST_PRICE_PER_SEAT]), plan + F.lit(1))
    value = price * seats.cast("double") * (F.lit(1.0) - discount) * F.when(annual, F.lit(0.85)).otherwise(F.lit(1.0))
    return F.round(value, 2).cast("decimal(18,2)")


# --- accounts --------------------------------------------------------------------------------


def account_draws(spark: SparkSession, settings: Settings, cal: Calendar, partitions: int,
                  mech: Mechanism = MECHANISM) -> DataFrame:
    """One row per account with everything fixed at creation (grain: account).

    `initial_accounts_fraction` of the accounts are created in the history window before `start`;
    the rest arrive during the data months, more later (growth) and with seasonality.
    """
    g = settings.generate
    seed = g.seed
    key = F.col("id")

    def u(stream: int) -> Column:
        return uniform(seed, stream, key)

    history_days = (cal.start - cal.origin).days
    # the month of arrival: how many cumulative arrival probabilities the account's draw passes
    arrival_u, arrival_m = F.col("__arrival_u"), F.col("__arrival_m")
    arrival_lo = F.greatest(cal.month_start(arrival_m), F.lit(cal.start))
    arrival_hi = cal.month_end_excl(arrival_m)
    new_day = F.date_add(arrival_lo, F.floor(u(Stream.CREATED_DAY) * F.datediff(arrival_hi, arrival_lo)).cast("int"))
    initial_day = F.date_add(F.lit(cal.origin), F.floor(u(Stream.CREATED_DAY) * F.lit(history_days)).cast("int"))
    created_date = F.when(u(Stream.INITIAL) < F.lit(g.initial_accounts_fraction), initial_day).otherwise(new_day)

    channel_effect = F.create_map(*[F.lit(x) for kv in CHANNEL_EFFECT.items() for x in kv])
    industry_effect = F.create_map(*[F.lit(x) for kv in INDUSTRY_EFFECT.items() for x in kv])
    is_sales = F.col("channel") == F.lit("sales")
    plan_u = u(Stream.PLAN)
    return (
        spark.range(0, g.accounts, 1, partitions)
        .withColumn("account_id", F.format_string("acc-%08d", key))
        .withColumn("__arrival_u", u(Stream.CREATED_MONTH))
        .withColumn("__arrival_m", F.lit(cal.start_m) + count_at_or_below(arrival_u, cal.arrival_thresholds()))
        .withColumn("created_date", created_date)
        .drop("__arrival_u", "__arrival_m")
        .withColumn(
            "created_at",
            F.timestamp_seconds(
                F.unix_date(F.col("created_date")).cast("long") * F.lit(86400)
                + F.floor(u(Stream.CREATED_SECOND) * F.lit(86400)).cast("long")
            ),
        )
        .withColumn("created_m", cal.month_index(F.col("created_date")))
        .withColumn("country", pick_weighted(u(Stream.COUNTRY), COUNTRIES))
        .withColumn("channel", pick_weighted(u(Stream.CHANNEL), CHANNELS))
        .withColumn("industry", pick_weighted(u(Stream.INDUSTRY), INDUSTRIES))
        .withColumn(
            "mu",
            channel_effect[F.col("channel")] + industry_effect[F.col("industry")]
            + F.lit(mech.mu_sd) * normal(seed, Stream.MU, key),
        )
        .withColumn("e0", F.col("mu") + F.lit(math.sqrt(mech.stationary_var)) * normal(seed, Stream.E0, key))
        .withColumn(
            "plan0",
            F.when(plan_u < F.lit(0.08) + F.when(is_sales, F.lit(0.17)).otherwise(F.lit(0.0)), F.lit(2))
            .when(plan_u < F.lit(0.45), F.lit(1))
            .otherwise(F.lit(0)),
        )
        .withColumn(
            "seats0",
            F.greatest(
                F.lit(1.0),
                F.round(F.exp(F.lit(math.log(3.0)) + F.lit(0.4) * F.col("plan0")
                              + F.lit(0.7) * normal(seed, Stream.SEATS, key))),
            ).cast("int"),
        )
        .withColumn(
            "annual",
            u(Stream.BILLING) < F.lit(mech.annual_fraction) + F.when(is_sales, F.lit(0.25)).otherwise(F.lit(0.0)),
        )
        .withColumn("renew_moy", F.month(F.col("created_date")))
        .withColumn("anchor_day", F.least(F.greatest(F.dayofmonth(F.col("created_date")), F.lit(2)), F.lit(28)))
        .withColumn("discount", F.element_at(F.array(F.lit(0.0), F.lit(0.0), F.lit(0.1), F.lit(0.2)),
                                             F.floor(u(Stream.DISCOUNT) * F.lit(4)).cast("int") + F.lit(1)))
    )


# --- lifecycle -------------------------------------------------------------------------------

SUB_ROW = StructType([
    StructField("start_date", DateType()), StructField("end_date", DateType()),
    StructField("plan", IntegerType()), StructField("seats", IntegerType()),
])
MONTH_ROW = StructType([
    StructField("m", IntegerType()), StructField("e_prev", DoubleType()), StructField("e", DoubleType()),
    StructField("active_at_start", BooleanType()), StructField("fresh", BooleanType()),
    StructField("act_from", DateType()), StructField("act_to", DateType()),
    StructField("plan", IntegerType()), StructField("seats", IntegerType()), StructField("cancelled", BooleanType()),
])


def _month_givens(acc: Column, m: Column, seed: int, grace_days: int, cal: Calendar, mech: Mechanism) -> Column:
    """Stage 1 of a month: calendar, new engagement, reactivation, draws (each computed once)."""
    key = F.col("id")

    def u(stream: int) -> Column:
        return uniform(seed, stream, key, m)

    t = cal.month_start(m)
    hi = cal.month_end_excl(m)
    mu = F.col("mu")
    reacts = (acc["status"] == F.lit(2)) & (acc["react"] < F.add_months(F.lit(cal.origin), m + F.lit(1)))
    anniv = F.date_add(t, F.col("anchor_day") - F.lit(1))
    return F.struct(
        t.alias("t"), hi.alias("hi"), F.datediff(hi, t).alias("days"), F.month(t).alias("moy"),
        (mu + F.lit(mech.phi) * (acc["e"] - mu) + F.lit(mech.sigma) * normal(seed, Stream.E, key, m)).alias("e"),
        reacts.alias("reacts"),
        F.when(reacts, F.lit(1)).otherwise(acc["status"]).alias("status"),
        F.when(reacts, acc["react"]).otherwise(acc["row_start"]).alias("row_start"),
        (reacts | (m == F.col("created_m"))).alias("fresh"),
        anniv.alias("anniv"), (anniv < hi).alias("on_anchor"),
        u(Stream.CANCEL).alias("u_cancel"), u(Stream.CHANGE).alias("u_change"),
        u(Stream.CHANGE_KIND).alias("u_kind"), u(Stream.CHANGE_DAY).alias("u_day"),
        u(Stream.REACT).alias("u_react"), u(Stream.GAP).alias("u_gap"),
    )


def _decisions(acc: Column, m: Column, a: Column, mech: Mechanism, shift: Column | None = None) -> Column:
    """Stage 2: cancel / upgrade / downgrade / renew, given the month's givens `a` (and a treatment's logit
    `shift`, null when untreated: x + 0.0 == x in IEEE doubles, so an untreated hazard is bit-identical)."""
    annual = F.col("annual")
    can = (a["status"] == F.lit(1)) & ~a["fresh"] & (a["days"] >= F.lit(2))
    renew = annual & (a["moy"] == F.col("renew_moy")) & a["on_anchor"]
    logit = hazard_logit(mech, a["e"], a["moy"], m - F.col("created_m"), acc["plan"], acc["seats"])
    h = sigmoid(logit if shift is None else logit + F.coalesce(shift, F.lit(0.0)))
    p_cancel = F.when(annual, F.when(renew, F.lit(1.0) - F.pow(F.lit(1.0) - h, F.lit(mech.annual_equivalent_months)))
                      .otherwise(F.lit(0.0))).otherwise(F.when(a["on_anchor"], h).otherwise(F.lit(0.0)))
    cancel = can & (a["u_cancel"] < p_cancel)
    p_up = F.least(F.lit(mech.upgrade_base) * F.exp(F.lit(mech.change_elasticity) * a["e"]), F.lit(0.3))
    p_down = F.least(F.lit(mech.downgrade_base) * F.exp(F.lit(-mech.change_elasticity) * a["e"]), F.lit(0.3))
    up = can & ~cancel & (a["u_change"] < p_up)
    down = can & ~cancel & ~up & (a["u_change"] < p_up + p_down)
    return F.struct(cancel.alias("cancel"), up.alias("up"), down.alias("down"), (can & renew).alias("renew"))


def _next_state(acc: Column, m: Column, a: Column, b: Column, grace_days: int, cal: Calendar,
                mech: Mechanism) -> Column:
    """Stage 3: apply the decisions: close/open subscription rows, record the month, move the state."""
    plan, seats = acc["plan"], acc["seats"]
    step = F.greatest(F.lit(1), F.round(seats.cast("double") * F.lit(0.3)).cast("int"))
    plan_up = b["up"] & (plan < F.lit(2)) & (a["u_kind"] < F.lit(0.5))
    plan_down = b["down"] & (plan > F.lit(0)) & (a["u_kind"] < F.lit(0.4))
    new_plan = F.when(plan_up, plan + F.lit(1)).when(plan_down, plan - F.lit(1)).otherwise(plan)
    new_seats = (
        F.when(b["up"] & ~plan_up, seats + step)
        .when(b["down"] & ~plan_down, F.greatest(F.lit(1), seats - step))
        .otherwise(seats)
    )
    mid_month = F.date_add(a["t"], (F.lit(1) + F.floor(a["u_day"] * (a["days"] - F.lit(1)))).cast("int"))
    changed = (new_plan != plan) | (new_seats != seats)
    close = (
        F.when(b["cancel"], a["anniv"])
        .when(b["renew"], a["anniv"])
        .when(changed, mid_month)
        .otherwise(F.lit(None).cast("date"))
    )
    closed_row = F.struct(a["row_start"].alias("start_date"), close.alias("end_date"), plan.alias("plan"),
                          seats.alias("seats"))
    p_short = mech.short_reactivation if grace_days > 0 else 0.0
    short = a["u_react"] < F.lit(p_short)
    long_ = ~short & (a["u_react"] < F.lit(p_short + mech.long_reactivation))
    short_gap = F.lit(1) + F.floor(a["u_gap"] * F.lit(max(grace_days, 1))).cast("int")
    long_gap = F.lit(grace_days + mech.long_gap_min_beyond_grace) + F.floor(
        a["u_gap"] * F.lit(mech.long_gap_span_days)
    ).cast("int")
    react = (
        F.when(b["cancel"] & short, F.date_add(close, short_gap))
        .when(b["cancel"] & long_, F.date_add(close, long_gap))
        .when(b["cancel"] | a["reacts"], F.lit(None).cast("date"))
        .otherwise(acc["react"])
    )
    active = a["status"] == F.lit(1)
    record = F.struct(
        m.alias("m"), acc["e"].alias("e_prev"), a["e"].alias("e"),
        F.coalesce(active & (a["row_start"] <= a["t"]), F.lit(False)).alias("active_at_start"),
        a["fresh"].alias("fresh"),
        F.when(active, F.greatest(a["t"], a["row_start"], F.lit(cal.start))).alias("act_from"),
        F.when(active, F.when(b["cancel"], close).otherwise(a["hi"])).alias("act_to"),
        plan.alias("plan"), seats.alias("seats"), b["cancel"].alias("cancelled"),
    )
    return F.struct(
        a["e"].alias("e"),
        F.when(b["cancel"], F.when(short | long_, F.lit(2)).otherwise(F.lit(3))).otherwise(a["status"]).alias("status"),
        react.alias("react"),
        new_plan.alias("plan"),
        new_seats.alias("seats"),
        F.when(b["cancel"], F.lit(None).cast("date")).when(close.isNotNull(), close).otherwise(a["row_start"])
        .alias("row_start"),
        F.when(close.isNotNull(), F.concat(acc["subs"], F.array(closed_row))).otherwise(acc["subs"]).alias("subs"),
        F.when(m >= F.lit(cal.start_m), F.concat(acc["months"], F.array(record))).otherwise(acc["months"])
        .alias("months"),
    )


ASSIGNMENT_ROW = StructType([
    StructField("m", IntegerType()), StructField("treated", BooleanType()), StructField("shift", DoubleType()),
    StructField("e_prev", DoubleType()), StructField("plan", IntegerType()), StructField("seats", IntegerType()),
    StructField("fresh", BooleanType()),
])
"""A campaign assignment recorded by the lifecycle: its month, arm, the treatment's logit shift (also for
control: what treating would have done) and the state at the month's start the truth needs."""


def _campaign_givens(acc: Column, m: Column, a: Column, settings: Settings, months: list[int],
                     mech: Mechanism) -> Column:
    """Stage 1b of a campaign month: `assigned`, `treated` and the account's treatment `shift`.

    Eligible as the labels define it at D (the month's first day): a subscription active at D (status
    active and the open row started by D; rows never close on a first day) and tenure >= min_tenure_days;
    and not assigned in the last horizon months.
    """
    camp, key, seed = settings.generate.campaigns, F.col("id"), settings.generate.seed
    active = (a["status"] == F.lit(1)) & F.coalesce(a["row_start"] <= a["t"], F.lit(False))
    tenure_ok = F.datediff(a["t"], F.col("created_date")) >= F.lit(settings.churn.min_tenure_days)
    free = acc["assigned_until"].isNull() | (m >= acc["assigned_until"])
    assigned = m.isin(months) & active & tenure_ok & free & (uniform(seed, Stream.ASSIGN, key, m) < F.lit(camp.share))
    treated = assigned & (uniform(seed, Stream.ARM, key, m) < F.lit(camp.propensity))
    shift = treatment_shift(mech, acc["e"], m - F.col("created_m"), acc["plan"], acc["seats"])
    return F.struct(assigned.alias("assigned"), treated.alias("treated"), shift.alias("shift"))


def _active_shift(acc: Column, m: Column, c: Column) -> Column:
    """The treatment's logit shift in month m: a new treatment, else one assigned in the last horizon months;
    null when untreated (control, or no assignment in force)."""
    return F.when(c["assigned"], F.when(c["treated"], c["shift"])).when(
        F.coalesce(m < acc["assigned_until"], F.lit(False)), acc["shift"])


def _with_campaign_state(state: Column, acc: Column, m: Column, a: Column, c: Column, horizon: int) -> Column:
    """The next state (`_next_state`) with the campaign fields moved on: `assigned_until`, `shift`, `campaigns`."""
    record = F.struct(m.alias("m"), c["treated"].alias("treated"), c["shift"].alias("shift"), acc["e"].alias("e_prev"),
                      acc["plan"].alias("plan"), acc["seats"].alias("seats"), a["fresh"].alias("fresh"))
    until = F.when(c["assigned"], m + F.lit(horizon)).otherwise(acc["assigned_until"])
    return (state.withField("assigned_until", until)
            .withField("shift", F.when(c["assigned"], F.when(c["treated"], c["shift"])).otherwise(acc["shift"]))
            .withField("campaigns", F.when(c["assigned"], F.concat(acc["campaigns"], F.array(record)))
                       .otherwise(acc["campaigns"])))


def with_lifecycle(accounts: DataFrame, settings: Settings, cal: Calendar, mech: Mechanism = MECHANISM) -> DataFrame:
    """Add `subs` (array of subscription rows) and `months` (array of monthly records) per account, and with
    campaigns configured `campaigns` (array of `ASSIGNMENT_ROW`).

    One `aggregate` over the account's months from its creation to the end of the data carries
    the state (engagement, status, plan, seats, open row; with campaigns the treatment in force); each
    month is computed in three staged lambdas so every draw is evaluated once.
    """
    seed, grace = settings.generate.seed, settings.churn.grace_days
    months_of_campaigns = campaign_months(settings, cal)
    horizon = settings.churn.horizon_months
    campaign_state = [F.lit(None).cast("int").alias("assigned_until"), F.lit(None).cast("double").alias("shift"),
                      F.array().cast(ArrayType(ASSIGNMENT_ROW)).alias("campaigns")] if months_of_campaigns else []
    init = F.struct(
        F.col("e0").alias("e"), F.lit(1).alias("status"), F.lit(None).cast("date").alias("react"),
        F.col("plan0").alias("plan"), F.col("seats0").alias("seats"), F.col("created_date").alias("row_start"),
        F.array().cast(ArrayType(SUB_ROW)).alias("subs"), F.array().cast(ArrayType(MONTH_ROW)).alias("months"),
        *campaign_state,
    )

    def step(acc: Column, m: Column) -> Column:
        if not months_of_campaigns:
            return let(
                _month_givens(acc, m, seed, grace, cal, mech),
                lambda a: let(_decisions(acc, m, a, mech), lambda b: _next_state(acc, m, a, b, grace, cal, mech)),
            )
        return let(_month_givens(acc, m, seed, grace, cal, mech), lambda a: let(
            _campaign_givens(acc, m, a, settings, months_of_campaigns, mech), lambda c: let(
                _decisions(acc, m, a, mech, _active_shift(acc, m, c)),
                lambda b: _with_campaign_state(_next_state(acc, m, a, b, grace, cal, mech), acc, m, a, c, horizon))))

    def finish(acc: Column) -> Column:
        open_row = F.struct(acc["row_start"].alias("start_date"), F.lit(None).cast("date").alias("end_date"),
                            acc["plan"].alias("plan"), acc["seats"].alias("seats"))
        subs = F.when(acc["status"] == F.lit(1), F.concat(acc["subs"], F.array(open_row))).otherwise(acc["subs"])
        assignments = [acc["campaigns"].alias("campaigns")] if months_of_campaigns else []
        return F.struct(subs.alias("subs"), acc["months"].alias("months"), *assignments)

    months = F.sequence(F.col("created_m"), F.lit(cal.last_m))
    life = F.aggregate(months, init, step, finish)
    outputs = ["life.subs", "life.months", *(["life.campaigns"] if months_of_campaigns else [])]
    return accounts.withColumn("life", life).select("*", *outputs).drop("life")


# --- tables derived from the simulation -------------------------------------------------------


GENERATED_ATTRIBUTES = ("country", "channel", "industry")
"""The attribute columns of the generated accounts: what a config for generated data declares in
`inputs.account_attributes` (none are declared by default)."""


def accounts_table(sim: DataFrame) -> DataFrame:
    """raw/accounts (grain: account): id, creation time and the attributes (`GENERATED_ATTRIBUTES`)."""
    return sim.select("account_id", "created_at", *GENERATED_ATTRIBUTES)


def subscriptions_table(sim: DataFrame) -> DataFrame:
    """raw/subscriptions (grain: plan period): renewals, plan/seat changes and reactivations are rows."""
    rows = sim.select("account_id", "annual", "discount", F.posexplode("subs").alias("pos", "s"))
    return rows.select(
        F.format_string("%s-s%03d", F.col("account_id"), F.col("pos")).alias("subscription_id"),
        "account_id",
        F.element_at(F.array(*[F.lit(p) for p in PLANS]), F.col("s.plan") + F.lit(1)).alias("product_id"),
        F.col("s.start_date").alias("start_date"),
        F.col("s.end_date").alias("end_date"),
        mrr(F.col("s.plan"), F.col("s.seats"), F.col("annual"), F.col("discount")).alias("mrr"),
        F.col("s.seats").alias("quantity"),
        F.when(F.col("annual"), F.lit(12)).otherwise(F.lit(1)).alias("bill_period_months"),
    )


def account_months(sim: DataFrame, cal: Calendar) -> DataFrame:
    """One row per account and data month (from `start`, or creation if later) with its state."""
    keep = ["id", "account_id", "mu", "created_m", "annual", "renew_moy", "discount"]
    return (
        sim.select(*keep, F.explode("months").alias("r"))
        .select(*keep, "r.*")
        .withColumn("month_start", cal.month_start(F.col("m")))
    )


def expected_hazard(mech: Mechanism, e_prev: Column, mu: Column, steps_ahead: int, month_of_year: Column,
                    tenure_months: Column, plan: Column, seats: Column, shift: Column | None = None) -> Column:
    """E[h] for the month `steps_ahead` (>= 1) engagement draws after `e_prev` was known (with a treatment's
    logit `shift` when given).

    e_{m+h} | e_prev ~ N(mu + phi^h (e_prev - mu), sigma^2 (1 - phi^(2h)) / (1 - phi^2)), and
    E[sigmoid(x)] for x ~ N(m, v) is approximated by sigmoid(m / sqrt(1 + pi v / 8)).
    """
    mean_e = mu + F.lit(mech.phi**steps_ahead) * (e_prev - mu)
    var_e = mech.sigma**2 * (1 - mech.phi ** (2 * steps_ahead)) / (1 - mech.phi**2)
    mean_logit = hazard_logit(mech, mean_e, month_of_year, tenure_months, plan, seats)
    if shift is not None:
        mean_logit = mean_logit + shift
    var_logit = mech.hazard_engagement**2 * var_e
    return sigmoid(mean_logit / F.lit(math.sqrt(1 + math.pi * var_logit / 8)))


def churn_truth(months: DataFrame, settings: Settings, cal: Calendar, mech: Mechanism = MECHANISM) -> DataFrame:
    """raw/churn_truth (grain: account x month start D, accounts with a subscription active at D).

    P(the active period containing D ends within (D, D + horizon]) under the process, given what
    is known just before D (engagement e_{m-1}, plan, seats, billing):
        1 - prod_{h=0}^{H-1} (1 - p_{m+h} (1 - p_short)),
    where p_j is the expected monthly hazard (annual billing: the non-renewal probability in the
    renewal month, 0 otherwise) and p_short the chance a cancellation is undone within grace_days.
    Approximations (documented, small): the expected hazard uses the expected engagement path with
    a probit-style variance correction and treats months as independent given e_{m-1}; plan and
    seats are held at their values at D; the month after a short-gap reactivation (which has no
    hazard in the simulation) is treated like any other month.
    """
    return months.where(F.col("active_at_start") & (F.col("month_start") >= F.lit(cal.start))).select(
        "account_id",
        F.col("month_start").alias("as_of_date"),
        horizon_churn_probability(settings, cal, mech).alias("churn_probability"),
    )


def horizon_churn_probability(settings: Settings, cal: Calendar, mech: Mechanism = MECHANISM,
                              shift: Column | None = None) -> Column:
    """1 - prod_{h=0}^{H-1} (1 - p_{m+h} (1 - p_short)) (`churn_truth`), with a treatment's logit `shift` in
    every month of the horizon when given. Reads `m`, `e_prev`, `mu`, `created_m`, `plan`, `seats`, `annual`,
    `renew_moy`, `fresh` (the state at the start of month m)."""
    horizon = settings.churn.horizon_months
    p_short = mech.short_reactivation if settings.churn.grace_days > 0 else 0.0
    m = F.col("m")
    survive: Column = F.lit(1.0)
    for h in range(horizon):
        j = m + F.lit(h)
        moy = F.month(cal.month_start(j))
        eh = expected_hazard(mech, F.col("e_prev"), F.col("mu"), h + 1, moy, j - F.col("created_m"),
                             F.col("plan"), F.col("seats"), shift)
        annual_p = F.when(moy == F.col("renew_moy"),
                          F.lit(1.0) - F.pow(F.lit(1.0) - eh, F.lit(mech.annual_equivalent_months))).otherwise(0.0)
        p = F.when(F.col("annual"), annual_p).otherwise(eh)
        if h == 0:
            p = F.when(F.col("fresh"), F.lit(0.0)).otherwise(p)
        survive = survive * (F.lit(1.0) - p * F.lit(1.0 - p_short))
    return F.least(F.greatest(F.lit(1.0) - survive, F.lit(0.0)), F.lit(1.0))
