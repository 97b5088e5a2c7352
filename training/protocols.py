"""What each evaluation protocol may train on, and the check that it does not
train on what it is scored on.

A protocol is a set of held-out near-duplicate groups (`dup_group`, one
MinHash grouping over every prompt of every table, see
``autoroute.data.build``) plus what identifies the held-out data itself:

- ``champion``: the served fit; holds out only the validation slice.
- ``heldout/<k>``: in-domain k-fold over the RouteLLM evaluation sets (fold k
  scored by a fit on the other folds): the secondary table.
- ``lobo/<benchmark>``: leave one benchmark out (MMLU, GSM8K): no row of the
  benchmark in any table (its RouteLLM evaluation set, its rows in other
  outcome sources, its labelled prompts) nor any row sharing a group with one,
  in any training input: preference outcomes and comparisons, the kNN head,
  the feedback comparisons and the classifier's fine-tuning prompts.
- ``loso/<subset>``: leave one AlpacaEval instruction set out, the same way.

Every protocol also leaves out the validation slice: a seeded share of the
remaining training groups on which every choice (the quality head's blend
weight, the champion gate) is made; test data is only reported.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from autoroute.data.dedup import near_duplicate_groups, normalize_text
from autoroute.data.splits import hash_fraction

from training.data import TrainingData

log = logging.getLogger(__name__)


@dataclass
class Holdout:
    """One protocol: what its fit may not see and what it scores."""
    name: str
    groups: set = field(default_factory=set)           # dup_groups no training input may hold
    benchmark: str | None = None                       # lobo: rows of this benchmark, by identity
    subset: tuple[str, str] | None = None              # loso: (comparison source, subset)
    fold: int | None = None                            # heldout: the scored fold


# ----------------------------------------------------------------------------- identity of held-out data
def _lower(s: pd.Series) -> pd.Series:
    return s.astype("string").str.lower().fillna("")


def benchmark_rows(data: TrainingData, bench: str, eval_sources: Sequence[str]) -> dict[str, np.ndarray]:
    """Boolean masks of the rows of each table that ARE benchmark `bench`."""
    o, c = data.outcomes, data.comparisons
    out = {"outcomes": (_lower(o["benchmark"]) == bench).to_numpy() if "benchmark" in o else np.zeros(len(o), bool)}
    out["outcomes"] |= o["source"].isin(eval_sources).to_numpy()
    out["comparisons"] = (_lower(c["benchmark"]) == bench).to_numpy() if "benchmark" in c else np.zeros(len(c), bool)
    for split, p in data.prompts.items():
        m = (_lower(p["source"]) == bench) | (_lower(p.get("source_label", pd.Series("", index=p.index))) == bench)
        out[f"prompts/{split}"] = m.to_numpy()
    return out


def subset_rows(data: TrainingData, source: str, subset: str) -> dict[str, np.ndarray]:
    c = data.comparisons
    m = (c["source"] == source) & (c["subset"].astype("string") == subset) if "subset" in c \
        else pd.Series(False, index=c.index)
    return {"comparisons": m.to_numpy()}


def _groups_of(data: TrainingData, masks: dict[str, np.ndarray]) -> set:
    groups: set = set()
    for name, m in masks.items():
        df = data.prompts[name.split("/")[1]] if name.startswith("prompts/") else getattr(data, name)
        if m.any() and "dup_group" in df:
            groups |= set(df.loc[m, "dup_group"].dropna().astype(str))
    return groups


def protocols(data: TrainingData, lobo: dict[str, Sequence[str]], loso_source: str | None,
              loso_subsets: Sequence[str], folds: Sequence[int]) -> list[Holdout]:
    """Every protocol of the run (the champion first)."""
    out = [Holdout("champion")]
    o = data.outcomes
    is_eval = o["source"].isin([s for ss in lobo.values() for s in ss])
    for k in folds:
        fold_rows = is_eval & (o["fold"].astype("Float64") == float(k))
        out.append(Holdout(f"heldout/{k}", set(o.loc[fold_rows, "dup_group"].dropna().astype(str)), fold=int(k)))
    for bench, sources in lobo.items():
        masks = benchmark_rows(data, bench, sources)
        out.append(Holdout(f"lobo/{bench}", _groups_of(data, masks), benchmark=bench))
    for s in loso_subsets:
        masks = subset_rows(data, loso_source, s)
        if masks["comparisons"].any():
            out.append(Holdout(f"loso/{s}", _groups_of(data, masks), subset=(loso_source, s)))
        else:
            log.warning("loso: no %s comparisons of subset %r; protocol skipped", loso_source, s)
    return out


# ----------------------------------------------------------------------------- validation slice
def validation_groups(data: TrainingData, fraction: float, seed: int, exclude: set) -> set:
    """A seeded share of the training groups of outcomes and comparisons (not evaluation data)."""
    o = data.outcomes[data.outcomes["split"] == "train"]
    c = data.comparisons[data.comparisons["split"] == "train"]
    groups = (set(o["dup_group"].dropna().astype(str)) | set(c["dup_group"].dropna().astype(str))) - exclude
    return {g for g in groups if hash_fraction(g, seed, "preference_validation", fraction)}


# ----------------------------------------------------------------------------- the leakage check
def feedback_leaks(texts: Sequence[str], held_texts: Sequence[str], near_dup: dict | None = None) -> np.ndarray:
    """Which feedback prompts are (near-)duplicates of held-out prompts (they have no dup_group)."""
    if not len(texts) or not len(held_texts):
        return np.zeros(len(texts), bool)
    nd = dict(near_dup or {})
    roots = near_duplicate_groups([normalize_text(t) for t in list(texts) + list(held_texts)],
                                  num_perm=int(nd.get("num_perm", 128)), bands=int(nd.get("bands", 32)),
                                  jaccard=float(nd.get("jaccard", 0.7)), max_chars=int(nd.get("max_chars", 3000)))
    held = set(roots[len(texts):].tolist())
    return np.array([r in held for r in roots[:len(texts)]], bool)


def check_no_leak(h: Holdout, inputs: dict[str, pd.DataFrame], data: TrainingData, lobo_sources: Sequence[str]) -> None:
    """Fail when any training input of protocol `h` holds a held-out row or a near duplicate of one.

    ``inputs``: name -> rows the fit learned from (``outcomes``, ``comparisons``, ``knn``,
    ``classifier``, ``feedback``), each with ``dup_group`` (feedback: with ``leak``)."""
    bad = {}
    for name, df in inputs.items():
        if df is None or not len(df):
            continue
        n = 0
        if "dup_group" in df:
            n += int(df["dup_group"].astype(str).isin(h.groups).sum())
        if h.benchmark is not None and "benchmark" in df:
            n += int((_lower(df["benchmark"]) == h.benchmark).sum())
        if h.benchmark is not None and "source" in df:
            n += int(df["source"].isin(lobo_sources).sum())
            if name == "classifier":
                n += int(((_lower(df["source"]) == h.benchmark)
                          | (_lower(df.get("source_label", pd.Series("", index=df.index))) == h.benchmark)).sum())
        if h.subset is not None and "subset" in df:
            n += int(((df["source"] == h.subset[0]) & (df["subset"].astype("string") == h.subset[1])).sum())
        if "leak" in df:
            n += int(df["leak"].sum())
        if n:
            bad[name] = n
    if bad:
        raise AssertionError(f"protocol {h.name}: training inputs hold held-out rows or near duplicates: {bad}")


__all__ = ["Holdout", "protocols", "benchmark_rows", "subset_rows", "validation_groups", "feedback_leaks",
           "check_no_leak"]
