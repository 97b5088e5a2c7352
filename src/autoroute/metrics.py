"""Routing evaluation metrics (pure numpy).

Two-model routing (RouteLLM protocol)
-------------------------------------
A router assigns every prompt a score; the higher the score, the more the prompt
"needs" the strong model.  Sweeping a threshold from +inf to -inf routes a growing
share of prompts to the strong model and traces a curve of *quality* (mean score of
the answers actually served) against *strong-call share* in [0, 1].

* ``PGR(q) = (q - q_weak) / (q_strong - q_weak)`` (performance gap recovered).
* ``APGR`` = area under the PGR curve over the call share in [0, 1].  A random
  router scores 0.5 exactly; the oracle scores above 1 whenever the weak model is
  sometimes right where the strong one is wrong (PGR is not clipped).
* ``CPT(p)`` = the smallest strong-call share at which PGR reaches ``p``
  (e.g. ``p = 0.5`` for CPT(50%)).

Ties in router scores are handled exactly: inside a group of tied scores the curve is
interpolated linearly, which is the expectation under random tie-breaking.  A constant
router therefore has APGR 0.5, like the random router.

N-model routing with costs
--------------------------
Given a predicted-quality matrix ``pred [n_prompts, n_models]``, each prompt's model is
chosen by the served selection rule (:mod:`autoroute.selection`) at a knob value.
Sweeping the knob from 1 (best predicted quality) to 0 (cheapest model) gives a set of
(total cost, mean true quality) points.  Randomly mixing two routing policies achieves
any point on the segment between them, so the achievable cost-quality frontier is the
upper convex hull of the points (same convention as RouterBench's AIQ).
``cost_to_match`` and ``quality_at_cost`` read that frontier.

Predicted quality
-----------------
``quality_calibration``: how well a predicted probability of a good answer matches
the observed outcomes (ECE over equal-width bins, Brier score, log-loss, AUC).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from autoroute.selection import SelectionConfig, knob_grid, pick_batch

__all__ = [
    "TwoModelResult",
    "CostQualityCurve",
    "routing_curve",
    "pgr",
    "apgr",
    "cpt",
    "two_model_sweep",
    "two_model_points",
    "random_two_model",
    "oracle_two_model_scores",
    "route_n_models",
    "cost_quality_curve",
    "upper_convex_hull",
    "cost_to_match",
    "quality_at_cost",
    "single_model_points",
    "oracle_cost_quality",
    "random_router_curve",
    "quality_calibration",
]


# --------------------------------------------------------------------------------------
# Two-model routing
# --------------------------------------------------------------------------------------
def routing_curve(
    router_scores: np.ndarray, strong: np.ndarray, weak: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Quality vs strong-call share for a threshold sweep over ``router_scores``.

    Args:
        router_scores: ``[n]`` higher = route to the strong model first.
        strong: ``[n]`` true score (0/1 or graded) of the strong model per prompt.
        weak: ``[n]`` true score of the weak model per prompt.

    Returns:
        ``(share, quality)``: breakpoints of the piecewise-linear curve, ``share``
        increasing from 0 to 1.  Breakpoints sit at tie-group boundaries so that
        linear interpolation in between equals the random-tie-breaking expectation.
    """
    s = np.asarray(router_scores, dtype=float).ravel()
    strong = np.asarray(strong, dtype=float).ravel()
    weak = np.asarray(weak, dtype=float).ravel()
    n = s.size
    if not (strong.size == weak.size == n) or n == 0:
        raise ValueError("router_scores, strong and weak must be non-empty and of equal length")
    if np.isnan(s).any():
        raise ValueError("router_scores contains NaN")
    order = np.argsort(-s, kind="stable")
    gain = (strong - weak)[order]
    cum_gain = np.concatenate([[0.0], np.cumsum(gain)])
    s_sorted = s[order]
    # indices k (number of prompts routed to strong) at the end of each tie group
    ends = np.flatnonzero(np.diff(s_sorted) != 0) + 1
    ks = np.concatenate([[0], ends, [n]])
    share = ks / n
    quality = (weak.sum() + cum_gain[ks]) / n
    return share, quality


def pgr(quality: np.ndarray | float, q_weak: float, q_strong: float) -> np.ndarray:
    """Performance gap recovered: ``(q - q_weak) / (q_strong - q_weak)`` (not clipped)."""
    gap = q_strong - q_weak
    if abs(gap) < 1e-12:
        raise ValueError("strong and weak models have the same quality: PGR undefined")
    return (np.asarray(quality, dtype=float) - q_weak) / gap


def apgr(share: np.ndarray, pgr_values: np.ndarray) -> float:
    """Area under the piecewise-linear PGR curve over the call share in [0, 1]."""
    share = np.asarray(share, dtype=float)
    y = np.asarray(pgr_values, dtype=float)
    return float(np.sum(np.diff(share) * (y[1:] + y[:-1]) / 2.0))


def cpt(share: np.ndarray, pgr_values: np.ndarray, pct: float) -> float:
    """Call-performance threshold: minimum strong-call share reaching ``PGR >= pct``.

    ``pct`` is a fraction (0.5 for CPT(50%)).  Uses linear interpolation on the
    curve; returns ``nan`` if the curve never reaches ``pct``.
    """
    share = np.asarray(share, dtype=float)
    y = np.asarray(pgr_values, dtype=float)
    hit = np.flatnonzero(y >= pct - 1e-12)
    if hit.size == 0:
        return float("nan")
    j = int(hit[0])
    if j == 0:
        return float(share[0])
    x0, x1, y0, y1 = share[j - 1], share[j], y[j - 1], y[j]
    return float(x0 + (pct - y0) * (x1 - x0) / (y1 - y0))


@dataclass
class TwoModelResult:
    """Result of a two-model threshold sweep."""

    share: np.ndarray
    quality: np.ndarray
    pgr: np.ndarray
    apgr: float
    cpt50: float
    cpt80: float
    q_strong: float
    q_weak: float


def two_model_sweep(
    router_scores: np.ndarray, strong: np.ndarray, weak: np.ndarray
) -> TwoModelResult:
    """Full RouteLLM-style evaluation of one router: curve, APGR, CPT(50%), CPT(80%)."""
    share, quality = routing_curve(router_scores, strong, weak)
    q_s = float(np.mean(strong))
    q_w = float(np.mean(weak))
    p = pgr(quality, q_w, q_s)
    return TwoModelResult(
        share=share,
        quality=quality,
        pgr=p,
        apgr=apgr(share, p),
        cpt50=cpt(share, p, 0.5),
        cpt80=cpt(share, p, 0.8),
        q_strong=q_s,
        q_weak=q_w,
    )


def two_model_points(share: np.ndarray, quality: np.ndarray, q_strong: float, q_weak: float) -> TwoModelResult:
    """The same evaluation from measured (strong-call share, quality) points of a router swept
    over its knob (the served Router's decisions). The end points always-weak ``(0, q_weak)``
    and always-strong ``(1, q_strong)`` close the curve; between measured points it is linear
    (a random mixture of the two neighbouring knob settings reaches any point in between)."""
    x = np.concatenate([[0.0], np.asarray(share, dtype=float), [1.0]])
    y = np.concatenate([[q_weak], np.asarray(quality, dtype=float), [q_strong]])
    order = np.lexsort((y, x))
    x, y = x[order], y[order]
    p = pgr(y, q_weak, q_strong)
    return TwoModelResult(share=x, quality=y, pgr=p, apgr=apgr(x, p), cpt50=cpt(x, p, 0.5), cpt80=cpt(x, p, 0.8),
                          q_strong=float(q_strong), q_weak=float(q_weak))


def random_two_model(strong: np.ndarray, weak: np.ndarray) -> TwoModelResult:
    """Random router reference (exact expectation: a constant score, APGR = 0.5)."""
    return two_model_sweep(np.zeros(len(strong)), strong, weak)


def oracle_two_model_scores(strong: np.ndarray, weak: np.ndarray) -> np.ndarray:
    """Router scores of the oracle: the true gain ``strong - weak`` of each prompt."""
    return np.asarray(strong, dtype=float) - np.asarray(weak, dtype=float)


# --------------------------------------------------------------------------------------
# N-model routing with costs
# --------------------------------------------------------------------------------------
@dataclass
class CostQualityCurve:
    """Cost-quality points of a router swept over its cost-quality knob.

    ``cost`` is the total true dollar cost over the prompts, ``quality`` the mean true
    score; ``frontier_cost/quality`` is the upper convex hull (achievable by mixing).
    """

    knobs: np.ndarray
    cost: np.ndarray
    quality: np.ndarray
    frontier_cost: np.ndarray = field(default_factory=lambda: np.zeros(0))
    frontier_quality: np.ndarray = field(default_factory=lambda: np.zeros(0))


def route_n_models(
    pred_quality: np.ndarray, cost_estimate: np.ndarray, knob: float, selection: SelectionConfig | None = None
) -> np.ndarray:
    """The served selection rule (:func:`autoroute.selection.pick_batch`) per prompt at one knob value.

    ``cost_estimate`` is ``[n_models]`` or ``[n_prompts, n_models]`` dollars.
    """
    return pick_batch(pred_quality, cost_estimate, knob, selection or SelectionConfig())


def upper_convex_hull(cost: np.ndarray, quality: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upper-left convex hull of (cost, quality) points, returned with increasing cost.

    Only the non-decreasing part is kept: a point is on the frontier if no mixture of
    other points reaches at least its quality for at most its cost.
    """
    c = np.asarray(cost, dtype=float)
    q = np.asarray(quality, dtype=float)
    order = np.lexsort((-q, c))
    c, q = c[order], q[order]
    hull: list[tuple[float, float]] = []
    for x, y in zip(c, q):
        if hull and y <= hull[-1][1]:
            continue  # dominated: costs more (or the same) for no more quality
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            # remove hull[-1] if it lies on or below the segment hull[-2] -> (x, y)
            if (y2 - y1) * (x - x1) <= (y - y1) * (x2 - x1):
                hull.pop()
            else:
                break
        hull.append((x, y))
    arr = np.array(hull, dtype=float).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def cost_quality_curve(
    pred_quality: np.ndarray,
    true_scores: np.ndarray,
    costs: np.ndarray,
    knobs: np.ndarray | None = None,
    cost_estimate: np.ndarray | None = None,
    selection: SelectionConfig | None = None,
) -> CostQualityCurve:
    """Sweep the router's cost-quality knob through the served selection rule and
    record (total cost, quality).

    Args:
        pred_quality: ``[n, m]`` predicted quality in [0, 1] per prompt and model.
        true_scores: ``[n, m]`` true score of each model's answer.
        costs: ``[n, m]`` true dollar cost of calling each model on each prompt.
        knobs: knob values to sweep (default: a dense grid over [0, 1]).
        cost_estimate: the cost the router believes (``[m]`` or ``[n, m]``); defaults
            to the per-model mean of ``costs``.  Pass estimates derived from training
            data to avoid using the realised test costs.
        selection: the selection settings (cost weight, unknown prices) as served.

    Returns:
        A :class:`CostQualityCurve` including its upper convex hull.
    """
    pred = np.asarray(pred_quality, dtype=float)
    y = np.asarray(true_scores, dtype=float)
    c = np.asarray(costs, dtype=float)
    if not (pred.shape == y.shape == c.shape):
        raise ValueError("pred_quality, true_scores and costs must have the same shape")
    est = c.mean(axis=0) if cost_estimate is None else np.asarray(cost_estimate, dtype=float)
    knobs = knob_grid(201) if knobs is None else np.asarray(knobs, dtype=float)
    rows = np.arange(pred.shape[0])
    tot_cost = np.empty(knobs.size)
    qual = np.empty(knobs.size)
    for k, knob in enumerate(knobs):
        ch = route_n_models(pred, est, knob, selection)
        tot_cost[k] = c[rows, ch].sum()
        qual[k] = y[rows, ch].mean()
    fc, fq = upper_convex_hull(tot_cost, qual)
    return CostQualityCurve(knobs, tot_cost, qual, fc, fq)


def cost_to_match(curve: CostQualityCurve, target_quality: float) -> float:
    """Minimum total cost on the frontier reaching ``target_quality`` (nan if never)."""
    fc, fq = curve.frontier_cost, curve.frontier_quality
    if fq.size == 0 or fq.max() < target_quality - 1e-12:
        return float("nan")
    j = int(np.flatnonzero(fq >= target_quality - 1e-12)[0])
    if j == 0:
        return float(fc[0])
    return float(fc[j - 1] + (target_quality - fq[j - 1]) * (fc[j] - fc[j - 1]) / (fq[j] - fq[j - 1]))


def quality_at_cost(curve: CostQualityCurve, budget: float) -> float:
    """Best frontier quality with total cost ``<= budget`` (nan if even the cheapest exceeds it)."""
    fc, fq = curve.frontier_cost, curve.frontier_quality
    if fc.size == 0 or budget < fc[0] - 1e-12:
        return float("nan")
    if budget >= fc[-1]:
        return float(fq[-1])
    return float(np.interp(budget, fc, fq))


def single_model_points(true_scores: np.ndarray, costs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(total cost, mean quality) of always calling each model; arrays of length m."""
    y = np.asarray(true_scores, dtype=float)
    c = np.asarray(costs, dtype=float)
    return c.sum(axis=0), y.mean(axis=0)


def oracle_cost_quality(true_scores: np.ndarray, costs: np.ndarray) -> CostQualityCurve:
    """Oracle router: knows the true scores and costs of every prompt."""
    y = np.asarray(true_scores, dtype=float)
    c = np.asarray(costs, dtype=float)
    return cost_quality_curve(y, y, c, knobs=knob_grid(401), cost_estimate=c)


def random_router_curve(true_scores: np.ndarray, costs: np.ndarray) -> CostQualityCurve:
    """Non-learned reference: random mixtures of single models (their convex hull)."""
    sc, sq = single_model_points(true_scores, costs)
    fc, fq = upper_convex_hull(sc, sq)
    return CostQualityCurve(np.full(sc.size, np.nan), sc, sq, fc, fq)


def quality_calibration(pred: np.ndarray, outcome: np.ndarray, bins: int = 10) -> dict[str, float]:
    """Calibration of predicted quality ``pred`` (in [0, 1]) against observed scores
    ``outcome`` (0/1, or graded in [0, 1]): ``ece`` (|mean predicted - mean observed|
    per equal-width bin of the prediction, weighted by the bin's share), ``brier``,
    ``logloss``, ``auc`` (NaN unless both outcomes 0 and 1 occur) and ``n``."""
    p = np.clip(np.asarray(pred, dtype=float), 1e-6, 1 - 1e-6)
    y = np.asarray(outcome, dtype=float)
    if p.shape != y.shape or p.ndim != 1:
        raise ValueError("quality_calibration: pred and outcome must be 1-d arrays of the same length")
    if len(p) == 0:
        return {"n": 0, "ece": float("nan"), "brier": float("nan"), "logloss": float("nan"), "auc": float("nan")}
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    ece = sum(abs(p[which == b].mean() - y[which == b].mean()) * (which == b).mean()
              for b in range(bins) if (which == b).any())
    auc = float("nan")
    pos, neg = y == 1, y == 0
    if pos.any() and neg.any() and (pos | neg).all():
        from scipy.stats import rankdata
        r = rankdata(p)
        auc = float((r[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * neg.sum()))
    return {"n": int(len(p)), "ece": float(ece), "brier": float(np.mean((p - y) ** 2)),
            "logloss": float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))), "auc": auc}
