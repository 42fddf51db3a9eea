"""Deterministic randomness as Column expressions: hashes of (seed, stream, keys...), never `F.rand`.

`F.rand` depends on partitioning (its stream is per partition), so a generator built on it gives
different data when partition counts change. Here every draw is a pure function of the seed, a
stream number (one per kind of draw) and the keys of the thing drawn for (account, month, k), so
the same seed gives the same tables on a laptop and on a cluster, whatever the partitioning.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from pyspark.sql import Column
from pyspark.sql import functions as F

_BITS = 53
_MASK = (1 << _BITS) - 1
_SCALE = float(1 << _BITS)


def uniform(seed: int, stream: int, *keys: Column) -> Column:
    """U[0, 1) from xxhash64 of (seed, stream, keys): 53 bits of the hash as a double."""
    h = F.xxhash64(F.lit(seed).cast("long"), F.lit(stream).cast("int"), *keys)
    return h.bitwiseAND(F.lit(_MASK)).cast("double") / F.lit(_SCALE)


def normal(seed: int, stream: int, *keys: Column) -> Column:
    """N(0, 1) by Box-Muller from two independent uniforms of the same keys."""
    u1 = uniform(seed, stream, *keys, F.lit(0))
    u2 = uniform(seed, stream, *keys, F.lit(1))
    return F.sqrt(F.lit(-2.0) * F.log(F.lit(1.0) - u1)) * F.cos(F.lit(2 * math.pi) * u2)


def logistic_noise(u: Column) -> Column:
    """A standard logistic variate from a uniform (one hash instead of Box-Muller's two)."""
    v = F.least(F.greatest(u, F.lit(1e-12)), F.lit(1 - 1e-12))
    return F.log(v / (F.lit(1.0) - v))


def sigmoid(x: Column) -> Column:
    return F.lit(1.0) / (F.lit(1.0) + F.exp(-x))


def poisson(lam: Column, u: Column, z: Column, exact_below: float = 10.0) -> Column:
    """Poisson(lam) count (int): inverse CDF for small means, rounded normal approximation above.

    The inverse CDF walks k = 1..cap with a higher-order `aggregate`, so its cost is O(lam); the
    normal branch keeps the cost flat for busy accounts, where the approximation is good.
    """
    cap = F.ceil(lam + F.lit(6.0) * F.sqrt(lam) + F.lit(4.0)).cast("int")
    p0 = F.exp(-lam)
    init = F.struct(p0.alias("p"), p0.alias("cdf"), F.lit(0).alias("n"))

    def step(acc: Column, k: Column) -> Column:
        p = acc["p"] * lam / k.cast("double")
        nxt = F.struct(p.alias("p"), (acc["cdf"] + p).alias("cdf"), k.alias("n"))
        return F.when(u > acc["cdf"], nxt).otherwise(acc)

    exact = F.aggregate(F.sequence(F.lit(1), F.greatest(cap, F.lit(1))), init, step, lambda acc: acc["n"])
    approx = F.greatest(F.lit(0.0), F.round(lam + F.sqrt(lam) * z)).cast("int")
    return F.when(lam <= F.lit(0.0), F.lit(0)).when(lam < F.lit(exact_below), exact).otherwise(approx)


def pick(u: Column, values: Sequence[str]) -> Column:
    """One of `values`, equally likely."""
    idx = F.floor(u * F.lit(len(values))).cast("int") + F.lit(1)
    return F.element_at(F.array(*[F.lit(v) for v in values]), idx)


def pick_weighted(u: Column, weights: Sequence[tuple[str, float]]) -> Column:
    """One of the keys of `weights`, with probability proportional to its weight."""
    total = sum(w for _, w in weights)
    out: Column = F.lit(weights[-1][0])
    cum = 0.0
    bounds = []
    for value, w in weights[:-1]:
        cum += w / total
        bounds.append((cum, value))
    for bound, value in reversed(bounds):
        out = F.when(u < F.lit(bound), F.lit(value)).otherwise(out)
    return out


def let(value: Column, body: Callable[[Column], Column]) -> Column:
    """Evaluate `value` once and hand it to `body`.

    Inside higher-order functions Spark evaluates lambda bodies without common-subexpression
    elimination, so a value used in several places would be recomputed each time; binding it to a
    lambda variable computes it once.
    """
    return F.transform(F.array(value), body).getItem(0)
