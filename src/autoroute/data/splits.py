"""Deterministic, seeded split and fold assignment over near-duplicate groups.

Every choice hashes (seed, purpose, key) with `stable_hash`, so a split does
not depend on row order, process or platform, and a whole near-duplicate
group always lands on one side.
"""
from __future__ import annotations

from typing import Iterable

import pandas as pd

from autoroute.data.dedup import stable_hash


def hash_order(keys: Iterable[str], seed: int, purpose: str) -> list[str]:
    return sorted(set(keys), key=lambda k: stable_hash(seed, purpose, k))


def hash_fraction(key: str, seed: int, purpose: str, fraction: float) -> bool:
    return stable_hash(seed, purpose, key) % 1_000_000 < fraction * 1_000_000


def pick_groups(sizes: pd.Series, fraction: float, seed: int, purpose: str, *, keep_one: bool = True) -> set[str]:
    """Groups (index of `sizes`, values = rows) in hash order until `fraction` of the rows is covered.

    With `keep_one`, at least one group is picked and at least one is left when there are two or more."""
    total, picked, covered = int(sizes.sum()), set(), 0
    order = hash_order(sizes.index, seed, purpose)
    for g in order:
        if covered >= fraction * total and (picked or not keep_one):
            break
        if keep_one and len(order) > 1 and len(picked) == len(order) - 1:
            break
        picked.add(g)
        covered += int(sizes[g])
    return picked


def stratified_cap(df: pd.DataFrame, by: str, cap: int, seed: int, purpose: str) -> pd.Series:
    """Boolean mask keeping at most `cap` rows per value of `by`, drawn round-robin across
    sources (so a huge source does not crowd out a small one), in hash order inside a source."""
    h = df["prompt_id"].map(lambda k: stable_hash(seed, purpose, k))
    order = df.assign(_h=h).sort_values([by, "source", "_h"])
    order["_rank"] = order.groupby([by, "source"]).cumcount()
    order = order.sort_values([by, "_rank", "_h"])
    keep_idx = order.groupby(by).head(cap).index
    return df.index.isin(keep_idx)


def assign_folds(groups: pd.Series, folds: int, seed: int) -> pd.Series:
    """Fold 0..folds-1 per row from its near-duplicate group."""
    return groups.map(lambda g: stable_hash(seed, "fold", g) % folds).astype("Int64")
