"""A GBT's occlusion effects read from its trees, as Spark column expressions.

Why: occluding K features by making K more input vectors per account (the general method in
`reasons.occlusion_reasons`) spends its time building and converting vectors, not in the trees: at
68k accounts and K = 10 the 750k occluded vectors took ~6 s of the reasons' ~12 s, the fold back
to one row per account most of the rest. A GBT's margin is a weighted sum of trees, and putting a
feature at its baseline changes only the trees that split on its slots:

    margin(x with f at baseline) = margin(x) + sum over trees t splitting on f's slots of
                                   w_t * (t(x with f at baseline) - t(x))

Each tree is a nested CASE WHEN over the slots of the account's dense vector; in the occluded
copy the splits on f's slots (constants there) are decided when the expression is built. The
margin is the model's own (MLlib's rawPrediction), and a tree evaluated on the same slots gives the
same leaf, so an account already at the baseline gets an effect of exactly 0, as re-scoring gives.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

from pyspark.sql import Column
from pyspark.sql import functions as F

from churn_spark.thresholds import sql_double


@dataclass(frozen=True)
class Split:
    """An internal node: a continuous split sends `value <= threshold` left; a categorical one (a one-hot
    slot, which MLlib treats as a 2-category feature) sends the values in `categories` left."""

    slot: int
    threshold: float | None
    categories: tuple[float, ...]
    left: Tree
    right: Tree


Tree = Union[Split, float]  # noqa: UP007 - a runtime alias (the dataclass above refers to it by name)
"""A node: a Split, or a leaf's prediction."""


_TREE = re.compile(r"Tree (\d+) \(weight (\S+)\):")
_IF = re.compile(r"If \(feature (\d+) (<=|in) (\S+)\)")
_PREDICT = re.compile(r"Predict: (\S+)")


def parse_ensemble(text: str) -> list[tuple[float, Tree]]:
    """(weight, tree) of every tree in an MLlib ensemble's `toDebugString` (JVM doubles print as the
    shortest text that reads back as the same double, so thresholds and leaves are exact).

    Why text: reading the nodes one py4j call at a time cost ~9 calls per split, up to ~22,000 for the default
    60-tree depth-5 GBT (1.19 s against 0.18 s for the one grown on the demo data); the debug string is one call.
    """
    lines = [line.strip() for line in text.splitlines()[1:] if line.strip()]  # [0]: the model's toString
    at = 0

    def expect(pattern: re.Pattern[str]) -> re.Match[str]:
        nonlocal at
        line = lines[at] if at < len(lines) else "<end of text>"
        match = pattern.fullmatch(line)
        if match is None:
            raise ValueError(f"unexpected line {at + 2} in a tree ensemble's debug string: {line!r}")
        at += 1
        return match

    def node() -> Tree:
        if _PREDICT.fullmatch(lines[at] if at < len(lines) else ""):
            return float(expect(_PREDICT)[1])
        split = expect(_IF)
        left = node()
        expect(re.compile(rf"Else \(feature {split[1]} (>|not in) {re.escape(split[3])}\)"))
        right = node()
        if split[2] == "<=":
            return Split(int(split[1]), float(split[3]), (), left, right)
        categories = tuple(float(c) for c in split[3].strip("{}").split(",") if c)
        return Split(int(split[1]), None, categories, left, right)

    trees: list[tuple[float, Tree]] = []
    while at < len(lines):
        header = expect(_TREE)
        if int(header[1]) != len(trees):
            raise ValueError(f"tree {header[1]} out of order in a tree ensemble's debug string")
        trees.append((float(header[2]), node()))
    return trees


def ensemble(gbt: Any) -> list[tuple[float, Tree]]:
    """(weight, tree) of every tree of a fitted GBTClassificationModel, in order (one call into the JVM)."""
    trees = parse_ensemble(gbt._java_obj.toDebugString())
    if len(trees) != gbt.getNumTrees:
        raise ValueError(f"read {len(trees)} trees from a GBT of {gbt.getNumTrees}")
    return trees


def slots_of(tree: Tree) -> set[int]:
    """The vector slots the tree splits on."""
    if not isinstance(tree, Split):
        return set()
    return {tree.slot} | slots_of(tree.left) | slots_of(tree.right)


def goes_left(split: Split, value: float) -> bool:
    """MLlib's rule for one value (NaN compares false, so it goes right, as in MLlib and Spark SQL)."""
    return value <= split.threshold if split.threshold is not None else value in split.categories


def tree_sql(tree: Tree, values: str, fixed: Mapping[int, float]) -> str:
    """The tree's prediction as a SQL expression over the dense vector `values` (an array<double>
    column's name), with the slots in `fixed` at their given values: a split on a fixed slot is decided
    here, so only the branch taken is in the expression. SQL text, parsed by Spark once, because a
    column built node by node costs a py4j round trip per node."""
    if not isinstance(tree, Split):
        return sql_double(tree)
    if tree.slot in fixed:
        return tree_sql(tree.left if goes_left(tree, fixed[tree.slot]) else tree.right, values, fixed)
    value = f"{values}[{tree.slot}]"
    goes = (f"{value} <= {sql_double(tree.threshold)}" if tree.threshold is not None
            else f"{value} IN ({', '.join(sql_double(c) for c in tree.categories)})")
    return f"CASE WHEN {goes} THEN {tree_sql(tree.left, values, fixed)} ELSE {tree_sql(tree.right, values, fixed)} END"


def margin_shift(trees: Sequence[tuple[float, Tree]], values: str, fixed: Mapping[int, float]) -> str | None:
    """margin(x with the `fixed` slots) - margin(x) as SQL, over the trees that split on a fixed slot;
    None when no tree does (the occlusion cannot change the prediction)."""
    terms = [f"{sql_double(w)} * (({tree_sql(t, values, fixed)}) - ({tree_sql(t, values, {})}))"
             for w, t in trees if slots_of(t) & set(fixed)]
    return " + ".join(terms) if terms else None


# CASE WHENs in one scoring plan's margin shifts. Measured (K = 10 candidates): a 10-tree depth-3 GBT's
# 568 compiled and its reasons took ~3 s at 68k accounts; a 60-tree depth-5 GBT's 16,522 did not compile
# (Spark ran the plan interpreted: 23-29 s at 5,459 accounts against 3.6-7.2 s by re-scoring the variants).
MAX_CASES = 1000


def fits_in_generated_code(shifts: Iterable[str | None]) -> bool:
    """Whether the margin shifts are small enough to evaluate as expressions (`MAX_CASES`)."""
    return sum(s.count("CASE WHEN") for s in shifts if s is not None) <= MAX_CASES


def margin_probability(margin: Column) -> Column:
    """P(class 1) of a GBT margin, as MLlib's log-loss GBT computes it: 1 / (1 + e^(-2m))."""
    return F.lit(1.0) / (F.lit(1.0) + F.exp(F.lit(-2.0) * margin))
