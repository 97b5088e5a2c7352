"""What the preference model knows about a model before it has seen any of its
answers: one numeric row per model from its catalog card.

- family: the provider, one-hot (providers with at least MIN_FAMILY cards);
- price tier: log10 of the output and input price per 1M tokens (unknown = NaN,
  with a has_price flag);
- release order: the release month parsed from a dated id or alias
  (``claude-opus-4-5-20251101``, ``gpt-4o-2024-08-06``), as a fractional year;
- measured priors: per task, ``logit(p)`` of the card's prior (Arena category
  ratings as a win probability against the reference model, or a proxy / family
  prior where the model has no rating of its own), its mean and interval width.
  What kind of evidence a prior is (measured / proxy / family) is not a feature:
  it says how far to trust the row, not how good the model is.

The preference model standardizes the columns and maps them to each model's
embedding and bias (``v_m = W f_m + u_m``); a model with no per-prompt rows is
scored through them. ``feature_sources`` says which evidence each row rests on,
in the words a decision uses (``measured_prior``, ``proxy_prior``, ``family_prior``).
"""
from __future__ import annotations

import math
import re
from collections import Counter
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from autoroute.catalog import Catalog, ModelCard, Prior
from autoroute.priors import TASK_CATEGORIES, estimate, to_prior
from autoroute.types import TASKS

# prior source on a card -> the score source a decision reports
SCORE_SOURCE = {"measured": "measured_prior", "proxy": "proxy_prior", "family": "family_prior"}
MIN_FAMILY = 3   # a provider with fewer cards gets no family column of its own
_DATE = re.compile(r"(20[12]\d)-?(0[1-9]|1[0-2])(?:-?[0-3]\d)?(?!\d)")


def release_year(card: ModelCard) -> float:
    """The release month of a model as a fractional year, from a dated id or alias; NaN if none."""
    for name in card.names():
        m = _DATE.search(name)
        if m:
            return int(m.group(1)) + (int(m.group(2)) - 1) / 12.0
    return float("nan")


def _logit(p: float) -> float:
    p = min(max(float(p), 1e-3), 1 - 1e-3)
    return math.log(p / (1 - p))


def measured_priors(ratings: pd.DataFrame, model: str, reference: str) -> dict[str, Prior]:
    """Per task, the Arena prior of a model rated in `ratings` (the same scale and
    category table as the product cards' priors, autoroute.priors)."""
    out = {}
    for t in TASKS:
        est = estimate(ratings, model, reference, TASK_CATEGORIES[t][0])
        if est:
            out[t] = to_prior(*est[:3], "measured", [model])
    return out


def card_features(card: ModelCard, providers: Sequence[str], priors: Mapping[str, Prior] | None = None
                  ) -> dict[str, float]:
    """One model's feature row; `priors` default to the card's own."""
    f: dict[str, float] = {f"provider={p}": float(card.provider == p) for p in providers}
    out, inp = card.price.output, card.price.input
    f["log_price_out"] = math.log10(out) if out else float("nan")
    f["log_price_in"] = math.log10(inp) if inp else float("nan")
    f["has_price"] = float(bool(out and inp))
    f["released"] = release_year(card)
    f["has_release"] = float(not math.isnan(f["released"]))
    priors = dict(card.priors if priors is None else priors)
    for t in TASKS:
        f[f"prior_logit/{t}"] = _logit(priors[t].p) if t in priors else float("nan")
    if priors:
        f["prior_logit/mean"] = float(np.mean([_logit(p.p) for p in priors.values()]))
        f["prior_width"] = float(np.mean([p.hi - p.lo for p in priors.values()]))
    else:
        f["prior_logit/mean"] = f["prior_width"] = float("nan")
    f["has_prior"] = float(bool(priors))
    return f


def prior_source(priors: Mapping[str, Prior]) -> str | None:
    """What a model's priors mostly rest on, as a score source; None without priors."""
    if not priors:
        return None
    kinds = Counter(p.source for p in priors.values())
    # the weaker kind wins a tie: a decision should not overstate its evidence
    order = {"measured": 0, "proxy": 1, "family": 2}
    kind = max(kinds, key=lambda k: (kinds[k], order[k]))
    return SCORE_SOURCE[kind]


def model_features(catalog: Catalog, model_ids: Iterable[str], ratings: pd.DataFrame | None = None,
                   reference: str | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
    """Feature rows (index = the given model ids) for the models the catalog knows,
    and per model the evidence its features rest on. A card's own priors (the
    product models: measured / proxy / family) come first; any other model rated
    in `ratings` (data/processed/arena_ratings.parquet: model, category, rating,
    q025, q975) gets its measured priors against `reference`, so the map from
    priors to quality is learned from every rated model with rows. Models without
    a card are left out (the preference model gives them zero features)."""
    per = Counter(c.provider for c in catalog.cards.values())
    providers = sorted(p for p, n in per.items() if n >= MIN_FAMILY)   # rarer families share the zero row
    rated = set(ratings["model"]) if ratings is not None else set()
    ref = catalog.resolve(reference) if reference else None
    rows, sources = {}, {}
    for m in dict.fromkeys(model_ids):
        cid = catalog.try_resolve(m)
        if cid is None:
            continue
        card = catalog.cards[cid]
        priors = dict(card.priors)
        if not priors and cid in rated and ref is not None:
            priors = measured_priors(ratings, cid, ref)
        rows[m] = card_features(card, providers, priors)
        src = prior_source(priors)
        if src is not None:
            sources[m] = src
    return pd.DataFrame.from_dict(rows, orient="index"), sources


__all__ = ["model_features", "card_features", "measured_priors", "prior_source", "release_year", "SCORE_SOURCE"]
