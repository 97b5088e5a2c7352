"""The one small interface the learned tiers plug into, and the catalog prior
that stands in for any model the learned tiers know nothing about."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from autoroute.catalog import Catalog
from autoroute.types import TASKS


@dataclass
class Scores:
    """Learned outputs for a batch of prompts.

    task_probs: [n, len(TASKS)] calibrated task probabilities, or None.
    quality: [n, len(models)] predicted quality in [0, 1] for `models`, or None.
    sources: per model of `models`, where its quality comes from ("learned" when
        the preference model was trained on rows of that model; a cold-start
        model says which prior its embedding came from). Empty = all learned.
    """
    task_probs: np.ndarray | None
    quality: np.ndarray | None
    models: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()

    def source(self, j: int) -> str:
        return self.sources[j] if self.sources else "learned"


class LearnedScorer(ABC):
    """Tier 3 (task classifier) and the preference model behind one call, so an
    implementation can share one encoder pass between them."""

    #: catalog ids the quality head scores; others fall back to catalog priors
    models: tuple[str, ...] = ()

    @abstractmethod
    def score(self, texts: Sequence[str], models: Sequence[str] | None = None) -> Scores:
        """Scores of `texts`; `models`: the catalog ids the caller will read (None = every
        model the scorer knows). A scorer may compute only those, or all of them."""
        ...


@dataclass
class Tier4View:
    """Tier 4's view of a pool for one request.

    adjust: additive utility terms for the selection rule (bounded);
    logits: the learned preference of each model (0 = no evidence);
    source: per model, the level its preference mostly comes from
        ("user", "org", "global", or "" without evidence);
    rule_margin: a model preferred by at least this many logits over a rule's
        default, or over the selection's pick, replaces it (inf: never)."""
    adjust: np.ndarray
    logits: np.ndarray
    source: list[str]
    rule_margin: float = math.inf

    def overrides(self, default: int) -> int | None:
        """The pool index that replaces `default` (a rule's preference or the selection's pick), or None."""
        if len(self.logits) == 0 or not math.isfinite(self.rule_margin):
            return None
        best = int(np.argmax(self.logits))
        if best != default and self.logits[best] - self.logits[default] >= self.rule_margin:
            return best
        return None


class UserPreference(ABC):
    """Tier 4: per-user and per-organisation preferences, per task."""

    @abstractmethod
    def view(self, user_id: str | None, org_id: str | None, models: Sequence[str],
             task: str | None = None) -> Tier4View:
        ...

    def adjust(self, user_id: str | None, org_id: str | None, models: Sequence[str],
               task: str | None = None) -> np.ndarray:
        return self.view(user_id, org_id, models, task).adjust


class NoUserPreference(UserPreference):
    def view(self, user_id, org_id, models, task=None):
        return Tier4View(np.zeros(len(models)), np.zeros(len(models)), [""] * len(models))


class StaticUserPreference(UserPreference):
    """Fixed adjustments from a table ``{"user:<id>": {model: delta}, "org:<id>": {...}}``
    (task-agnostic; never replaces a rule's default)."""

    def __init__(self, table: Mapping[str, Mapping[str, float]] | None = None, max_boost: float = 0.2):
        self.table = {k: dict(v) for k, v in (table or {}).items()}
        self.max_boost = max_boost

    def view(self, user_id, org_id, models, task=None):
        out = np.zeros(len(models))
        for key in (f"org:{org_id}" if org_id else None, f"user:{user_id}" if user_id else None):
            row = self.table.get(key) if key else None
            if row:
                out += np.array([row.get(m, 0.0) for m in models])
        return Tier4View(np.clip(out, -self.max_boost, self.max_boost), np.zeros(len(models)), [""] * len(models))


def prior_quality(catalog: Catalog, models: Sequence[str], task: str | None,
                  default: float = 0.5) -> tuple[np.ndarray, list[str]]:
    """The quality every candidate gets when the learned tiers do not score it,
    and where that number comes from (one entry per model).

    A card's measured prior for `task` (conf/catalog/priors.yaml: P(win) against
    the reference model) with source ``measured_prior`` / ``proxy_prior`` /
    ``family_prior``; with no task, the mean over tasks (the weakest source of
    the ones averaged); a card without priors gets `default` (``default``)."""
    out, sources = np.empty(len(models)), []
    rank = {"measured": 0, "proxy": 1, "family": 2}
    for i, m in enumerate(models):
        priors = catalog.cards[m].priors
        if task in priors:
            out[i], src = priors[task].p, priors[task].source
        elif priors:
            vals = [priors[t] for t in TASKS if t in priors]
            out[i] = sum(v.p for v in vals) / len(vals)
            src = max((v.source for v in vals), key=rank.__getitem__)
        else:
            out[i], sources = default, sources + ["default"]
            continue
        sources.append(f"{src}_prior")
    return out, sources
