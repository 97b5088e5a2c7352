"""Step 5: evaluate what is served. Each protocol's fit is written as a bundle
(`autoroute.bundle.save_bundle`; the run's classifier and its int8 ONNX encoder
hard-linked, not copied), loaded back with `autoroute.compose.served_router`
exactly as the service composes it from the `serving` config (the encoder
backend it runs - the int8 ONNX encoder by default - the task and quality
heads, the kNN search, rules, the selection rule and its settings), and its
decisions on held-out prompts are read from `Router.sweep` (= `route_batch` at
each knob value: tiers and scorer run once per batch).

The encoder's pooled states come from the run's embedding cache, filled by
one pass of that same backend (`served_encoder`) over every prompt, in
length-sorted batches as `route_batch` encodes a large batch; `check_cache`
measures how far that is from encoding each prompt alone (dynamic int8
quantizes activations per batch).

Knob values for a two-model sweep are placed at quantiles of the switch points
of the protocol's raw head predictions (where decisions can change), so the
curve is sampled evenly in share of strong calls; the curve itself is made of
the Router's decisions only.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from autoroute import metrics as M
from autoroute.router import Router
from autoroute.selection import knob_grid, relative_log_cost
from autoroute.types import Policy, Request

log = logging.getLogger(__name__)


def requests(texts: Sequence[str], candidates: Sequence[str] | None) -> list[Request]:
    """One request per prompt; with `candidates`, a policy approving exactly them (so a prompt
    the sensitive-data rule flags is still decided among the candidates, as for an organisation
    that approved them)."""
    if not candidates:
        return [Request.from_prompt(t) for t in texts]
    policy = Policy(approved_models=list(candidates))
    return [Request.from_prompt(t, candidates=list(candidates), policy=policy) for t in texts]


def effective_lead(router: Router, texts: Sequence[str], strong: str, weak: str, dq: np.ndarray) -> np.ndarray:
    """The strong model's predicted quality lead per unit of the selection's cost penalty:
    strong wins when ``dq > lambda * (rel_cost_strong - rel_cost_weak)``. Costs are estimated
    here from the catalog prices and the prompt length (only to place knob values)."""
    cpt = float(router.rules.get("chars_per_token", 4.0))
    out = router.output_tokens(Request.from_prompt("x"), None)
    cs, cw = (router.catalog.cards[router.catalog.resolve(m)] for m in (strong, weak))
    gap = np.empty(len(texts))
    for i, t in enumerate(texts):
        tok = max(1, int(len(t) / cpt))
        a, b = cs.estimate_cost(tok, out), cw.estimate_cost(tok, out)
        rel = relative_log_cost(np.array([np.nan if a is None else a, np.nan if b is None else b]))
        gap[i] = rel[0] - rel[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(gap > 1e-12, np.asarray(dq, float) / np.where(gap > 1e-12, gap, 1.0), np.inf * np.sign(dq))


def switch_knobs(lead: np.ndarray, cost_weight: float, n: int) -> np.ndarray:
    """Knob values at (quantiles of) the points where two-model decisions switch: strong is
    chosen when its effective lead (`effective_lead`) exceeds ``lambda(knob)``, i.e. above knob
    ``w / (w + lead)``."""
    lead = np.asarray(lead, dtype=float)
    lead = lead[np.isfinite(lead)]
    lead = lead[lead > 0]
    ks = np.unique(cost_weight / (cost_weight + lead)) if len(lead) else np.zeros(0)
    # every switch point when there are at most n of them, else n quantiles of them
    qs = ks if len(ks) <= n else np.quantile(ks, np.linspace(0, 1, n), method="nearest")
    # just above each switch point, plus both ends of the knob
    pts = np.concatenate([[0.0, 1.0], np.clip(qs + 1e-9, 0.0, 1.0)])
    return np.unique(np.round(pts, 9))


@dataclass
class TwoModelSweep:
    """Per prompt (rows) and knob (columns): did the served router pick the strong model."""
    knobs: np.ndarray
    strong_chosen: np.ndarray            # [n_knobs, n]
    tier_share: dict = field(default_factory=dict)


def sweep_two_model(router: Router, texts: Sequence[str], strong: str, weak: str, knobs: np.ndarray
                    ) -> TwoModelSweep:
    decisions = router.sweep(requests(texts, [strong, weak]), knobs)
    chosen = np.array([[d.selected_model == strong for d in row] for row in decisions], dtype=bool)
    mid = decisions[int(np.argmin(np.abs(np.asarray(knobs) - 0.5)))]
    tiers = np.array([d.tier for d in mid])
    return TwoModelSweep(np.asarray(knobs), chosen, {int(t): float((tiers == t).mean()) for t in np.unique(tiers)})


def two_model_result(sw: TwoModelSweep, strong_score: np.ndarray, weak_score: np.ndarray
                     ) -> M.TwoModelResult | None:
    """None when the two models have the same mean quality on the set (PGR undefined)."""
    s, w = np.asarray(strong_score, float), np.asarray(weak_score, float)
    if abs(s.mean() - w.mean()) < 1e-12:
        return None
    share = sw.strong_chosen.mean(1)
    quality = np.where(sw.strong_chosen, s[None, :], w[None, :]).mean(1)
    return M.two_model_points(share, quality, float(s.mean()), float(w.mean()))


def concat(sweeps: Sequence[TwoModelSweep]) -> TwoModelSweep:
    """Sweeps of several protocols over the same knobs, pooled (each scored its own prompts)."""
    tiers: dict = {}
    n = sum(sw.strong_chosen.shape[1] for sw in sweeps)
    for sw in sweeps:
        for t, v in sw.tier_share.items():
            tiers[t] = tiers.get(t, 0.0) + v * sw.strong_chosen.shape[1] / max(n, 1)
    return TwoModelSweep(sweeps[0].knobs, np.concatenate([sw.strong_chosen for sw in sweeps], axis=1), tiers)


# ----------------------------------------------------------------------------- N models
@dataclass
class NModelSweep:
    models: list[str]
    curve: M.CostQualityCurve
    single_cost: np.ndarray
    single_quality: np.ndarray
    best: int
    mix: dict                        # model -> share of decisions at the default knob
    metrics: dict
    baselines: dict = field(default_factory=dict)   # name -> CostQualityCurve of raw-score baselines


def sweep_n_model(router: Router, texts: Sequence[str], models: Sequence[str], score: np.ndarray,
                  cost: np.ndarray, knobs: np.ndarray | None = None, default_knob: float = 0.5) -> NModelSweep:
    """The served router over `models` (candidates) on prompts with true ``score`` and ``cost``
    ``[n, m]`` (NaN cost: the catalog's estimate for the prompt). Cost to match the best single
    model and quality at its cost read the frontier (upper convex hull) of the knob sweep."""
    knobs = np.unique(np.concatenate([knob_grid(41) if knobs is None else knobs, [default_knob]]))
    reqs = requests(texts, models)
    decisions = router.sweep(reqs, knobs)
    col = {m: j for j, m in enumerate(models)}
    y = np.asarray(score, float)
    c = np.array(cost, float)
    if np.isnan(c).any():
        first = decisions[0]
        for i, d in enumerate(first):
            out = router.output_tokens(reqs[i], d.task)
            for j, m in enumerate(models):
                if np.isnan(c[i, j]):
                    est = router.catalog.cards[m].estimate_cost(d.estimated_tokens, out)
                    c[i, j] = np.nan if est is None else est
    rows = np.arange(len(texts))
    tot, qual = np.empty(len(knobs)), np.empty(len(knobs))
    mix = {}
    for k, row in enumerate(decisions):
        ch = np.array([col[d.selected_model] for d in row])
        tot[k], qual[k] = c[rows, ch].sum(), y[rows, ch].mean()
        if abs(knobs[k] - default_knob) < 1e-12:
            mix = {m: float((ch == j).mean()) for j, m in enumerate(models)}
    fc, fq = M.upper_convex_hull(tot, qual)
    curve = M.CostQualityCurve(knobs, tot, qual, fc, fq)
    sc, sq = M.single_model_points(y, c)
    best = int(np.lexsort((sc, -sq))[0])
    ctm = M.cost_to_match(curve, sq[best])
    metrics = {"n_prompts": len(texts), "best_model_quality": float(sq[best]), "best_model_cost": float(sc[best]),
               "router/cost_to_match_best": ctm,
               "router/cost_ratio_to_match_best": ctm / sc[best] if sc[best] > 0 else float("nan"),
               "router/quality_at_best_cost": M.quality_at_cost(curve, sc[best]),
               "router/quality_at_half_best_cost": M.quality_at_cost(curve, sc[best] / 2)}
    return NModelSweep(list(models), curve, sc, sq, best, mix, metrics)


# ----------------------------------------------------------------------------- realistic mix
def mix_report(router: Router, texts: Sequence[str], reference: str, knob: float = 0.5) -> dict:
    """At one knob over the offered models: decision mix, mean expected quality and estimated
    cost of the served choices against always calling `reference` (both as the router predicts)."""
    decisions = router.sweep(requests(texts, None), [knob])[0]
    picked = [d.selected_model for d in decisions]
    q = np.array([d.scores[d.selected_model] for d in decisions])
    q_ref = np.array([d.scores.get(reference, np.nan) for d in decisions])
    cost = np.array([d.estimated_cost if d.estimated_cost is not None else np.nan for d in decisions])
    reqs = requests(texts, None)
    card = router.catalog.cards[reference]
    ref_cost = np.array([card.estimate_cost(d.estimated_tokens, router.output_tokens(r, d.task)) or np.nan
                         for r, d in zip(reqs, decisions)])
    models, counts = np.unique(picked, return_counts=True)
    tiers = np.array([d.tier for d in decisions])
    sources = [d.score_sources.get(d.selected_model, "?") for d in decisions]
    src, src_n = np.unique(sources, return_counts=True)
    return {"n": len(texts), "knob": knob, "reference": reference,
            "mix": {m: float(n / len(texts)) for m, n in zip(models, counts)},
            "tiers": {int(t): float((tiers == t).mean()) for t in np.unique(tiers)},
            "score_sources": {s: float(n / len(texts)) for s, n in zip(src, src_n)},
            "mean_expected_quality": float(q.mean()), "reference_expected_quality": float(np.nanmean(q_ref)),
            "quality_vs_reference": float(q.mean() / np.nanmean(q_ref)),
            "mean_quality_vs_best": float(np.mean([d.quality_vs_best for d in decisions])),
            "cost": float(np.nansum(cost)), "reference_cost": float(np.nansum(ref_cost)),
            "cost_vs_reference": float(np.nansum(cost) / np.nansum(ref_cost))}


def check_cache(router: Router, texts: Sequence[str], knob: float = 0.5) -> dict:
    """How the cached encoder states (the run's batched pass: length-sorted batches, as
    ``route_batch`` encodes a large batch) compare with the served encoder run on each prompt
    alone (a single ``route`` call). The dynamic-int8 encoder quantizes activations per batch,
    so a prompt's states depend a little on its batch; this measures how much, on the quality
    scores and on the decisions at `knob`."""
    from autoroute.compose import ComposedScorer

    sc = router.scorer
    fresh = ComposedScorer(sc.bundle, sc.encoder.backend, 0)     # the served backend without the cache
    cached = sc.score(list(texts))
    alone = [fresh.score([t]) for t in texts]
    q_alone = np.concatenate([a.quality for a in alone]) if cached.quality is not None else None
    p_alone = np.concatenate([a.task_probs for a in alone])
    single = Router(router.catalog, router.rules, fresh, router.user_preference, router.settings)
    reqs = requests(texts, None)
    a = [d.selected_model for d in router.sweep(reqs, [knob])[0]]
    b = [single.route(r.model_copy(update={"cost_quality": knob})).selected_model for r in reqs]
    return {"max_abs_diff_task_probs": float(np.abs(cached.task_probs - p_alone).max()),
            "max_abs_diff_quality": float(np.abs(cached.quality - q_alone).max()) if q_alone is not None else 0.0,
            "mean_abs_diff_quality": float(np.abs(cached.quality - q_alone).mean()) if q_alone is not None else 0.0,
            "decision_agreement": float(np.mean([x == y for x, y in zip(a, b)])), "n": len(texts)}


# ----------------------------------------------------------------------------- the served encoder
def export_onnx_encoder(clf, folder: Path) -> Path:
    """Write the classifier's int8 ONNX encoder (what the service runs) into `folder`;
    every bundle of the run hard-links it."""
    from autoroute.compose import ONNX_FILE, export_int8
    return export_int8(clf, Path(folder) / ONNX_FILE)


def served_encoder(clf, serving, folder: Path, tag: str):
    """The encoder backend the service composes for `clf` (`serving.encoder`, checked against the
    fp32 encoder on probes, else `serving.scorer.fallback`), reading the int8 ONNX encoder the run
    exported into `folder` (else exporting one under `serving.encoder.cache_dir/<tag>`)."""
    from hydra.utils import instantiate

    from autoroute.bundle import BundleScorer
    from autoroute.compose import compose_scorer

    sc = serving.scorer
    return compose_scorer(BundleScorer(clf), instantiate(serving.encoder), instantiate(sc.fallback), 0,
                          sc.check_tolerance, tag, folder).encoder


def served_classifier_report(clf, backend, frame, bins: int = 15) -> dict:
    """Accuracy, macro-F1, ECE, per-class F1 of the served encoder backend + the task head on
    the prompts of `frame` (a prompts split)."""
    from autoroute.classifier import classification_report
    frame = frame[frame["task"].isin(clf.labels)]
    index = {t: i for i, t in enumerate(clf.labels)}
    _, probs = clf.from_pooled(backend.pooled(frame["prompt"].tolist()))
    return classification_report(probs, frame["task"].map(index).to_numpy(), clf.labels, bins)


__all__ = ["export_onnx_encoder", "served_encoder", "served_classifier_report", "switch_knobs", "sweep_two_model", "two_model_result", "concat", "TwoModelSweep", "sweep_n_model",
           "NModelSweep", "mix_report", "check_cache", "requests"]
