"""What the preference model knows about a model before it has seen any of its
answers: one numeric row per model from its catalog card.

- family: the provider, one-hot;
- price tier: log10 of the output and input price per 1M tokens (unknown = NaN);
- release order: the release month parsed from a dated id or alias
  (``claude-opus-4-5-20251101``, ``gpt-4o-2024-08-06``), as a fractional year;
- measured priors: per task, ``logit(p)`` of the card's prior (Arena category
  ratings as a win probability against the reference model, or a proxy / family
  prior where the model has no rating of its own), the interval width, and the
  share of tasks whose prior is measured / proxy / family.

The preference model standardizes the columns and maps them to each model's
embedding and bias (``v_m = W f_m + u_m``); a model with no per-prompt rows is
scored through them. ``feature_sources`` says which evidence each row rests on,
in the words a decision uses (``measured_prior``, ``proxy_prior``, ``family_prior``).
"""
from __future__ import annotations

import math
import re
from collections import Counter
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from autoroute.catalog import Catalog, ModelCard
from autoroute.types import TASKS

# prior source on a card -> the score source a decision reports
SCORE_SOURCE = {"measured": "measured_prior", "proxy": "proxy_prior", "family": "family_prior"}
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


def card_features(card: ModelCard, providers: Sequence[str]) -> dict[str, float]:
    f: dict[str, float] = {f"provider={p}": float(card.provider == p) for p in providers}
    out, inp = card.price.output, card.price.input
    f["log_price_out"] = math.log10(out) if out else float("nan")
    f["log_price_in"] = math.log10(inp) if inp else float("nan")
    f["released"] = release_year(card)
    priors = dict(card.priors)
    for t in TASKS:
        f[f"prior_logit/{t}"] = _logit(priors[t].p) if t in priors else float("nan")
    if priors:
        f["prior_logit/mean"] = float(np.mean([_logit(p.p) for p in priors.values()]))
        f["prior_width"] = float(np.mean([p.hi - p.lo for p in priors.values()]))
        kinds = Counter(p.source for p in priors.values())
        for k in SCORE_SOURCE:
            f[f"prior_share/{k}"] = kinds.get(k, 0) / len(priors)
    else:
        f["prior_logit/mean"] = f["prior_width"] = float("nan")
        for k in SCORE_SOURCE:
            f[f"prior_share/{k}"] = 0.0
    return f


def prior_source(card: ModelCard) -> str | None:
    """What a card's priors mostly rest on, as a score source; None without priors."""
    if not card.priors:
        return None
    kinds = Counter(p.source for p in card.priors.values())
    # the weaker kind wins a tie: a decision should not overstate its evidence
    order = {"measured": 0, "proxy": 1, "family": 2}
    kind = max(kinds, key=lambda k: (kinds[k], order[k]))
    return SCORE_SOURCE[kind]


def model_features(catalog: Catalog, model_ids: Iterable[str]) -> tuple[pd.DataFrame, dict[str, str]]:
    """Feature rows (index = the given model ids) for the models the catalog knows,
    and per model the evidence its features rest on. Models without a card are
    left out (the preference model gives them zero features: they are learned from
    their own rows only)."""
    providers = sorted({c.provider for c in catalog.cards.values()})
    rows, sources = {}, {}
    for m in dict.fromkeys(model_ids):
        cid = catalog.try_resolve(m)
        if cid is None:
            continue
        card = catalog.cards[cid]
        rows[m] = card_features(card, providers)
        src = prior_source(card)
        if src is not None:
            sources[m] = src
    return pd.DataFrame.from_dict(rows, orient="index"), sources


__all__ = ["model_features", "card_features", "prior_source", "release_year", "SCORE_SOURCE"]
