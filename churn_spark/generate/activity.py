"""Activity driven by engagement: event JSON lines (with noise) and support tickets with tone.

Grain: both start from `account_months` (one row per account and data month with its active
interval [act_from, act_to), engagement e, plan and seats) and explode it: counts are Poisson with
a rate per event type that grows (value signals) or shrinks (frustration signals) with engagement.
Times are uniform over the active days of the month, mostly in working hours.
"""

from __future__ import annotations

import math

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from churn_spark.generate.mechanism import LIST_PRICE_PER_SEAT, MECHANISM, Calendar, Mechanism, Stream
from churn_spark.generate.rand import logistic_noise, normal, pick, pick_weighted, poisson, uniform

# (event type, share of the volume at average engagement, elasticity to engagement).
EVENT_TYPES: tuple[tuple[str, float, float], ...] = (
    ("login", 0.33, 0.6),
    ("feature_use", 0.33, 0.9),
    ("report_export", 0.08, 1.1),
    ("api_call", 0.15, 1.0),
    ("error", 0.07, -0.4),
    ("support_visit", 0.03, -0.9),
    ("payment_failed", 0.01, -1.2),
)
ACTIVITY_SEASON = (1.0, 1.05, 1.05, 1.0, 1.0, 0.95, 0.85, 0.8, 1.0, 1.05, 1.05, 0.8)  # Jan..Dec
FEATURES = ("dashboards", "reports", "the API", "alerts", "integrations", "exports", "user management", "SSO")
DEVICES = ("web", "web", "desktop", "mobile")
ENDPOINTS = ("/v1/records", "/v1/search", "/v1/export", "/v1/users", "/v1/webhooks")
ERROR_CODES = ("E400", "E403", "E404", "E409", "E500", "E503", "TIMEOUT")
FORMATS = ("pdf", "csv", "xlsx")
PAYMENT_REASONS = ("card_declined", "insufficient_funds", "expired_card", "bank_error")
HELP_PAGES = ("/help/billing", "/help/getting-started", "/help/api", "/help/troubleshooting", "/status")

TICKETS_PER_MONTH = 0.25  # at average engagement, per active account
TONES = ("negative", "neutral", "positive")
TICKET_TEMPLATES: dict[str, tuple[str, ...]] = {
    "positive": (
        "Thanks so much for the quick help with {feature}, it works great now!",
        "We love the new {feature} update, the whole team is really happy with it.",
        "Excellent support as always. Could you also enable {feature} for two more users? Thank you!",
        "Great product! Just wondering whether {feature} can be shared with our partners. Thanks!",
        "We are very pleased with {feature}; it saves us a lot of time. Awesome work.",
        "Wonderful experience so far. Kindly add our new colleague to {feature}, thanks!",
        "Really impressed with how smooth {feature} is. Nice job, keep it up!",
        "The onboarding was fantastic and {feature} is a big win for us. Appreciate it!",
    ),
    "neutral": (
        "How do I change the settings for {feature}?",
        "Where can I find the invoice for last month?",
        "We need to update the billing address on our account.",
        "Is there a limit on how many people can use {feature}?",
        "Requesting documentation about the limits of {feature}.",
        "Our admin changed roles; transfer ownership of {feature} to the new admin.",
        "Which plan includes {feature} for more than ten users?",
        "What is the time zone used by {feature} in exported files?",
    ),
    "negative": (
        "{feature} is broken again and nobody has fixed it. This is terrible.",
        "Very frustrated: {feature} keeps failing and we are losing time.",
        "The app is so slow and buggy, it is a mess and we are thinking about cancelling.",
        "Awful experience with {feature}, errors every day. Disappointed.",
        "Why were we charged twice? This is unacceptable.",
        "Support ignored our ticket for a week. Really poor service, we are unhappy.",
        "{feature} crashed during our board meeting. Embarrassing and annoying.",
        "We regret switching to you; {feature} is useless and the price is too high.",
    ),
}
PRIORITY_BY_TONE = {
    "negative": (("low", 0.1), ("normal", 0.4), ("high", 0.35), ("urgent", 0.15)),
    "neutral": (("low", 0.35), ("normal", 0.5), ("high", 0.12), ("urgent", 0.03)),
    "positive": (("low", 0.5), ("normal", 0.45), ("high", 0.05), ("urgent", 0.0001)),
}
TICKET_CHANNELS = (("email", 0.45), ("chat", 0.3), ("web", 0.15), ("phone", 0.1))


def _month_days(cal: Calendar) -> Column:
    return F.datediff(cal.month_end_excl(F.col("m")), cal.month_start(F.col("m")))


def active_months(months: DataFrame, cal: Calendar) -> DataFrame:
    """Account-months with a non-empty active interval, with `active_days` and `active_share`."""
    return (
        months.where(F.col("act_from").isNotNull() & (F.col("act_from") < F.col("act_to")))
        .withColumn("active_days", F.datediff(F.col("act_to"), F.col("act_from")))
        .withColumn("active_share", F.col("active_days") / _month_days(cal))
    )


def with_event_rates(months: DataFrame, per_month: float, mech: Mechanism = MECHANISM) -> DataFrame:
    """Add `rate_total` and cumulative type shares `cum_<i>` (grain: account-month).

    rate_k = per_month x share_k x exp(b_k e - b_k^2 V / 2) x season x seats^0.2 x active share,
    where V is the engagement variance, so the average active account-month is near `per_month`.
    """
    var_e = mech.mu_sd**2 + mech.stationary_var
    moy = F.month(F.col("month_start"))
    season = F.element_at(F.array(*[F.lit(x) for x in ACTIVITY_SEASON]), moy)
    scale = (
        F.lit(per_month) * season * F.pow(F.col("seats").cast("double") / F.lit(5.0), F.lit(0.2))
        * F.col("active_share")
    )
    rates = [
        F.lit(share) * F.exp(F.lit(beta) * F.col("e") - F.lit(beta * beta * var_e / 2))
        for _, share, beta in EVENT_TYPES
    ]
    total = rates[0]
    for r in rates[1:]:
        total = total + r
    out = months.withColumn("rate_total", scale * total)
    cum: Column = F.lit(0.0)
    for i, r in enumerate(rates[:-1]):
        cum = cum + r
        out = out.withColumn(f"cum_{i}", cum / total)
    return out


def _event_type(u: Column) -> Column:
    out: Column = F.lit(EVENT_TYPES[-1][0])
    for i in reversed(range(len(EVENT_TYPES) - 1)):
        out = F.when(u < F.col(f"cum_{i}"), F.lit(EVENT_TYPES[i][0])).otherwise(out)
    return out


def _time_in_interval(seed: int, day_stream: int, second_stream: int, *keys: Column) -> Column:
    """A timestamp on one of the active days, 70% in working hours (08:00-18:00 UTC), ms precision."""
    day = F.date_add(F.col("act_from"), F.floor(uniform(seed, day_stream, *keys) * F.col("active_days")).cast("int"))
    v = uniform(seed, second_stream, *keys)
    second = F.when(v < F.lit(0.7), F.lit(8 * 3600.0) + v / F.lit(0.7) * F.lit(36000.0)).otherwise(
        (v - F.lit(0.7)) / F.lit(0.3) * F.lit(86400.0)
    )
    millis = F.unix_date(day).cast("long") * F.lit(86_400_000) + F.floor(second * F.lit(1000.0)).cast("long")
    return F.timestamp_millis(millis)


def _value_and_property(seed: int, keys: list[Column]) -> tuple[Column, Column, Column]:
    """Per type: a numeric value (minutes, call batch size, amount) and one property (key, value)."""
    uv, up = uniform(seed, Stream.EVENT_VALUE, *keys), uniform(seed, Stream.EVENT_PROP, *keys)
    t, e = F.col("event_type"), F.col("e")
    price = F.element_at(F.array(*[F.lit(p) for p in LIST_PRICE_PER_SEAT]), F.col("plan") + F.lit(1))
    value = (
        F.when(t == "feature_use", F.round(F.exp(F.lit(1.8) + F.lit(0.3) * e + F.lit(0.4) * logistic_noise(uv)), 1))
        .when(t == "api_call", F.round(F.exp(F.lit(3.0) + F.lit(0.4) * e + F.lit(0.5) * logistic_noise(uv))))
        .when(t == "payment_failed", F.round(price * F.col("seats").cast("double"), 2))
        .otherwise(F.lit(None).cast("double"))
    )
    by_type = {
        "login": ("device", DEVICES), "feature_use": ("feature", FEATURES), "report_export": ("format", FORMATS),
        "api_call": ("endpoint", ENDPOINTS), "error": ("code", ERROR_CODES),
        "payment_failed": ("reason", PAYMENT_REASONS), "support_visit": ("page", HELP_PAGES),
    }
    has = F.when(t == "support_visit", up < F.lit(0.5)).otherwise(F.lit(True))
    key: Column = F.lit(None).cast("string")
    val: Column = F.lit(None).cast("string")
    for name, (k, values) in by_type.items():
        key = F.when(t == name, F.lit(k)).otherwise(key)
        val = F.when(t == name, pick(up, values)).otherwise(val)
    return value, F.when(has, key), F.when(has, val)


def events(months: DataFrame, seed: int, per_month: float) -> DataFrame:
    """One row per generated event, in the events contract plus `m`, `k`, `prop_key`, `prop_value`.

    event_id = <account_id>-<yyyymm>-<k>: unique by construction and stable for a seed.
    """
    keys = [F.col("id"), F.col("m")]
    lam = F.col("rate_total")
    count = poisson(lam, uniform(seed, Stream.EVENT_COUNT, *keys), normal(seed, Stream.EVENT_COUNT_Z, *keys))
    exploded = (
        months.transform(lambda df: with_event_rates(df, per_month))
        .withColumn("n", count)
        .where(F.col("n") > 0)
        .withColumn("ym", F.date_format(F.col("month_start"), "yyyyMM"))
        .withColumn("k", F.explode(F.sequence(F.lit(0), F.col("n") - F.lit(1))))
    )
    ek = [F.col("id"), F.col("m"), F.col("k")]
    value, prop_key, prop_value = _value_and_property(seed, ek)
    return (
        exploded.withColumn("event_type", _event_type(uniform(seed, Stream.EVENT_TYPE, *ek)))
        .withColumn("event_id", F.concat_ws("-", F.col("account_id"), F.col("ym"), F.col("k").cast("string")))
        .withColumn("event_time", _time_in_interval(seed, Stream.EVENT_DAY, Stream.EVENT_SECOND, *ek))
        .withColumn("value", value)
        .withColumn("prop_key", prop_key)
        .withColumn("prop_value", prop_value)
        .withColumn("properties", F.when(F.col("prop_key").isNotNull(),
                                         F.create_map(F.col("prop_key"), F.col("prop_value"))))
        .select("id", "m", "k", "event_id", "account_id", "event_type", "event_time", "value", "properties",
                "prop_key", "prop_value")
    )


MALFORMED_KINDS = ("bad_json", "missing_account_id", "bad_timestamp")


def _json_line() -> Column:
    """The event as one JSON object. Built by concatenation (every string is generated from fixed
    vocabularies, so nothing needs escaping): several times cheaper than `to_json` of a map."""

    def s(c: str) -> Column:
        return F.col(c)

    iso = F.date_format(s("event_time"), "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'")
    props = F.concat(F.lit('{"'), s("prop_key"), F.lit('":"'), s("prop_value"), F.lit('"}'))
    return F.concat(
        F.lit('{"event_id":"'), s("event_id"), F.lit('","account_id":"'), s("account_id"),
        F.lit('","event_type":"'), s("event_type"), F.lit('","event_time":"'), iso,
        F.lit('","value":'), F.coalesce(s("value").cast("string"), F.lit("null")),
        F.lit(',"properties":'), F.coalesce(props, F.lit("null")), F.lit("}"),
    )


def event_lines(evts: DataFrame, seed: int, duplicate_rate: float, malformed_rate: float) -> DataFrame:
    """Text (`value`) per event plus `kind` (ok / a malformed kind) and `duplicate` (grain: event).

    event_time is an ISO-8601 UTC string; null fields are written as null. A duplicate is the same
    line twice (same event_id: `value` then holds two lines); a malformed line replaces its event:
    truncated JSON, the account_id key missing, or an unparsable event_time.
    """
    ek = [F.col("id"), F.col("m"), F.col("k")]
    good = F.col("good")
    no_account = F.regexp_replace(good, F.lit('"account_id":"[^"]*",'), F.lit(""))
    bad_time = F.regexp_replace(good, F.lit('"event_time":"([0-9]{4})-[^"]*"'), F.lit('"event_time":"31/13/$1 25:61"'))
    bad = uniform(seed, Stream.MALFORMED, *ek) < F.lit(malformed_rate)
    kind = F.when(~bad, F.lit("ok")).otherwise(pick(uniform(seed, Stream.MALFORMED_KIND, *ek), MALFORMED_KINDS))
    dup = ~bad & (uniform(seed, Stream.DUPLICATE, *ek) < F.lit(duplicate_rate))
    kind_c = F.col("kind")
    line = (
        F.when(kind_c == "ok", F.when(F.col("duplicate"), F.concat(good, F.lit("\n"), good)).otherwise(good))
        .when(kind_c == "bad_json", F.substring(good, 1, 40))
        .when(kind_c == "missing_account_id", no_account)
        .otherwise(bad_time)
    )
    return (
        evts.withColumn("good", _json_line())
        .withColumn("kind", kind)
        .withColumn("duplicate", dup)
        .select("m", line.alias("value"), "kind", "duplicate")
    )


def support_tickets(months: DataFrame, seed: int, end_excl_ts: Column, mech: Mechanism = MECHANISM) -> DataFrame:
    """raw/support_tickets (grain: ticket) plus `e` and `tone` of its account-month.

    Rate 0.25/month at average engagement, up when disengaged; tone score = 1.4 e + N(0,1):
    negative below -0.8, positive above 0.8; priority and resolution time follow the tone.
    Tickets whose resolution falls after the data end are still open (closed_at null).
    """
    keys = [F.col("id"), F.col("m")]
    var_e = mech.mu_sd**2 + mech.stationary_var
    lam = (
        F.lit(TICKETS_PER_MONTH) * F.exp(F.lit(-0.7) * F.col("e") - F.lit(0.49 * var_e / 2))
        * F.pow(F.col("seats").cast("double") / F.lit(5.0), F.lit(0.2)) * F.col("active_share")
    )
    count = poisson(lam, uniform(seed, Stream.TICKET_COUNT, *keys), F.lit(0.0))
    tk = [F.col("id"), F.col("m"), F.col("k")]
    score = F.lit(1.4) * F.col("e") + normal(seed, Stream.TICKET_TONE, *tk)
    tone = F.when(score < F.lit(-0.8), F.lit("negative")).when(score > F.lit(0.8), F.lit("positive")).otherwise(
        F.lit("neutral")
    )
    u_template = uniform(seed, Stream.TICKET_TEMPLATE, *tk)
    template = F.when(F.col("tone") == "negative", pick(u_template, TICKET_TEMPLATES["negative"])).when(
        F.col("tone") == "positive", pick(u_template, TICKET_TEMPLATES["positive"])
    ).otherwise(pick(u_template, TICKET_TEMPLATES["neutral"]))
    text = F.replace(template, F.lit("{feature}"), pick(uniform(seed, Stream.TICKET_FEATURE, *tk), FEATURES))
    u_priority = uniform(seed, Stream.TICKET_PRIORITY, *tk)
    priority = F.when(F.col("tone") == "negative", pick_weighted(u_priority, PRIORITY_BY_TONE["negative"])).when(
        F.col("tone") == "positive", pick_weighted(u_priority, PRIORITY_BY_TONE["positive"])
    ).otherwise(pick_weighted(u_priority, PRIORITY_BY_TONE["neutral"]))
    urgency = (
        F.when(F.col("priority") == "urgent", F.lit(-1.5))
        .when(F.col("priority") == "high", F.lit(-0.7))
        .otherwise(F.lit(0.0))
    )
    noise = logistic_noise(uniform(seed, Stream.TICKET_HOURS, *tk))
    hours = F.exp(F.lit(math.log(20.0)) + urgency + F.lit(0.6) * noise)
    closed = F.timestamp_millis(F.unix_millis(F.col("opened_at")) + F.round(hours * F.lit(3_600_000.0)).cast("long"))
    return (
        months.withColumn("n", count)
        .where(F.col("n") > 0)
        .withColumn("k", F.explode(F.sequence(F.lit(0), F.col("n") - F.lit(1))))
        .withColumn("ticket_id", F.format_string("tkt-%s-%s-%d", F.col("account_id"),
                                                 F.date_format(F.col("month_start"), "yyyyMM"), F.col("k")))
        .withColumn("opened_at", _time_in_interval(seed, Stream.TICKET_DAY, Stream.TICKET_SECOND, *tk))
        .withColumn("tone", tone)
        .withColumn("priority", priority)
        .withColumn("closed_at", F.when(closed < end_excl_ts, closed))
        .withColumn("channel", pick_weighted(uniform(seed, Stream.TICKET_CHANNEL, *tk), TICKET_CHANNELS))
        .withColumn("text", text)
        .select("ticket_id", "account_id", "opened_at", "closed_at", "priority", "channel", "text", "e", "tone")
    )
