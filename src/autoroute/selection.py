"""The one selection rule. Given a pool that already passed the hard
constraints, each candidate's predicted quality (probability of a good
answer) and estimated cost, pick the model for a request.

Used by the Router (every tier ends here), by every evaluation
(`pick_batch` over prompts x models) and by the proxy's `auto:floor` /
`auto:nitro` variants, so what is evaluated is what is served.

Modes:
- ``auto``: maximise ``quality - lambda(knob) * relative_log_cost`` where the
  relative log-cost is in [0, 1] within the pool and
  ``lambda = cost_weight * (1 - knob) / knob`` (knob 1 = best quality, knob 0
  = cheapest). Ties go to the higher quality, then to the cheaper model, so
  raising the knob never lowers the chosen quality and a model that is worse
  and dearer than another is never chosen.
- ``floor``: the cheapest model whose quality is at least ``(1 - floor_band)``
  of the best candidate's.
- ``nitro``: the fastest model (catalog ``speed``) within ``(1 - nitro_band)``
  of the best candidate's quality.

Every choice is explained relative to the best candidate: "expected 97% of
Claude Opus 4.5's quality at 31% of its cost".
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

MODES = ("auto", "floor", "nitro")


@dataclass(frozen=True)
class SelectionConfig:
    cost_weight: float = 0.15           # lambda at knob 0.5, in quality units per unit of relative log-cost
    unknown_price: str = "pessimistic"  # an unknown price counts as the priciest known one
    floor_band: float = 0.05            # auto:floor: within 5% of the best predicted quality
    nitro_band: float = 0.08            # auto:nitro: within 8% of the best predicted quality

    def __post_init__(self):
        if self.cost_weight < 0:
            raise ValueError("selection cost_weight must be >= 0")
        for name in ("floor_band", "nitro_band"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"selection {name} must be in [0, 1)")


@dataclass(frozen=True)
class Choice:
    """The outcome of one selection over a pool (indices into the pool)."""
    index: int
    order: list[int]            # the pool ranked, chosen first
    utility: np.ndarray         # the ranking score of each candidate
    best: int                   # the candidate with the best predicted quality
    quality_vs_best: float      # chosen quality / best quality
    cost_vs_best: float | None  # chosen cost / best candidate's cost (None: a price is unknown)


def lam(knob: float, cost_weight: float) -> float:
    """The cost weight the knob stands for (knob in [0, 1])."""
    knob = min(max(float(knob), 0.0), 1.0)
    return cost_weight * (1.0 - knob) / max(knob, 1e-6)


def relative_log_cost(costs: np.ndarray) -> np.ndarray:
    """Per row, ``log1p(c / min) / log1p(max / min)`` in [0, 1]; NaN (unknown) counts as the max.

    ``costs``: ``[m]`` or ``[n, m]`` dollars."""
    c = np.asarray(costs, dtype=float)
    flat = c.ndim == 1
    c = np.atleast_2d(c)
    known = ~np.isnan(c)
    hi = np.where(known.any(1), np.nanmax(np.where(known, c, -np.inf), axis=1), 0.0)[:, None]
    c = np.where(known, c, hi)
    lo = np.maximum(c.min(axis=1, keepdims=True), 1e-9)
    span = np.log1p(hi / lo)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(span > 0, np.log1p(c / lo) / np.where(span > 0, span, 1.0), 0.0)
    return rel[0] if flat else rel


def _as_costs(costs: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if c is None else float(c) for c in costs], dtype=float)


def choose(quality: Sequence[float], costs: Sequence[float | None], knob: float, cfg: SelectionConfig,
           mode: str = "auto", speeds: Sequence[float] | None = None,
           adjust: Sequence[float] | None = None) -> Choice:
    """Select one model from a pool. ``adjust``: additive Tier 4 terms on the utility."""
    if mode not in MODES:
        raise ValueError(f"selection mode {mode!r}: use one of {', '.join(MODES)}")
    q = np.asarray(quality, dtype=float)
    if q.ndim != 1 or len(q) == 0:
        raise ValueError("selection needs a non-empty pool")
    c = _as_costs(costs)
    if cfg.unknown_price != "pessimistic" and np.isnan(c).any() and not np.isnan(c).all():
        raise ValueError("selection: unknown prices must be filtered out before selection "
                         "unless unknown_price is pessimistic")
    rel = relative_log_cost(c)
    adj = np.zeros(len(q)) if adjust is None else np.asarray(adjust, dtype=float)
    sort_cost = np.where(np.isnan(c), np.inf, c)
    best = int(np.lexsort((sort_cost, -q))[0])                 # best quality, cheaper on ties
    if mode == "auto":
        util = q - lam(knob, cfg.cost_weight) * rel + adj
    else:
        band = cfg.floor_band if mode == "floor" else cfg.nitro_band
        ok = q >= q[best] * (1.0 - band) - 1e-12
        if mode == "floor":
            primary = -rel                                  # cheaper is better
        else:
            if speeds is None:
                raise ValueError("selection mode nitro needs the models' speeds")
            primary = np.asarray(speeds, dtype=float)
        # inside the band: the primary criterion; outside: below every candidate inside, by quality
        floor = float(primary[ok].min()) - 1.0
        util = np.where(ok, primary, floor - (q[best] - q)) + adj
    # rank: utility, then quality, then cheaper
    order = [int(i) for i in np.lexsort((sort_cost, -q, -util))]
    chosen = order[0]
    _, qv, cv = relative(q, c, chosen)
    return Choice(chosen, order, util, best, qv, cv)


def relative(quality: Sequence[float], costs: Sequence[float | None], chosen: int) -> tuple[int, float, float | None]:
    """(index of the best-quality candidate, chosen quality / its quality, chosen cost / its cost or None)."""
    q, c = np.asarray(quality, dtype=float), _as_costs(costs) if not isinstance(costs, np.ndarray) else costs
    best = int(np.lexsort((np.where(np.isnan(c), np.inf, c), -q))[0])
    qv = float(q[chosen] / q[best]) if q[best] > 0 else 1.0
    cv = None
    if not (np.isnan(c[chosen]) or np.isnan(c[best])) and c[best] > 0:
        cv = float(c[chosen] / c[best])
    return best, qv, cv


def pick_batch(quality: np.ndarray, costs: np.ndarray, knob: float, cfg: SelectionConfig,
               mode: str = "auto", speeds: np.ndarray | None = None) -> np.ndarray:
    """The same rule over ``[n, m]`` quality and cost (cost ``[m]`` broadcasts): chosen column per row.
    Identical to calling :func:`choose` per row (tests check it), vectorized for evaluation."""
    q = np.asarray(quality, dtype=float)
    c = np.broadcast_to(np.asarray(costs, dtype=float), q.shape)
    if mode != "auto":
        return np.array([choose(q[i], list(c[i]), knob, cfg, mode, speeds).index for i in range(len(q))],
                        dtype=np.int64)
    rel = relative_log_cost(c)
    util = q - lam(knob, cfg.cost_weight) * rel
    sort_cost = np.where(np.isnan(c), np.inf, c)
    # lexicographic argmax per row: utility, then quality, then cheaper
    top = util >= util.max(axis=1, keepdims=True) - 0.0
    qq = np.where(top, q, -np.inf)
    top &= qq >= qq.max(axis=1, keepdims=True)
    cc = np.where(top, sort_cost, np.inf)
    top &= cc <= cc.min(axis=1, keepdims=True)
    return np.argmax(top, axis=1)


def explain(quality_vs_best: float, cost_vs_best: float | None, best_name: str) -> str:
    """"expected 97% of Claude Opus 4.5's quality at 31% of its cost" (empty when the best itself was chosen)."""
    if quality_vs_best >= 1.0 - 1e-12 and (cost_vs_best is None or cost_vs_best >= 1.0 - 1e-12):
        return ""
    text = f"expected {quality_vs_best:.0%} of {best_name}'s quality"
    return text + (f" at {cost_vs_best:.0%} of its cost" if cost_vs_best is not None else "")


def knob_grid(n: int = 41) -> np.ndarray:
    """Knob values for sweeps: dense near both ends, where lambda changes fastest."""
    t = np.linspace(0.0, 1.0, n)
    return np.unique(np.round(0.5 - 0.5 * np.cos(math.pi * t), 6))


__all__ = ["SelectionConfig", "Choice", "MODES", "choose", "pick_batch", "explain", "relative", "lam", "relative_log_cost",
           "knob_grid"]
