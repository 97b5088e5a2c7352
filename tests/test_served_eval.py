"""The evaluation reads the served router's own decisions: `Router.sweep` is
`route_batch` at each knob, and a two-model sweep of the router at the switch
knobs reproduces the RouteLLM threshold sweep of its quality scores exactly."""
from __future__ import annotations

import numpy as np
import pytest

from autoroute import metrics as M
from autoroute.config import build_router, load_config
from autoroute.scoring import LearnedScorer, Scores
from autoroute.selection import relative_log_cost
from autoroute.types import TASKS
from training import served

STRONG, WEAK = "gpt-4-1106-preview", "mixtral-8x7b-instruct"
PROMPTS = [f"Question {i}: what is the capital of country number {i} and why is it there?" for i in range(60)]


class FixedScorer(LearnedScorer):
    """Per prompt a fixed quality for the two models (by prompt text), confident task."""
    models = (STRONG, WEAK)

    def __init__(self, quality: dict[str, tuple[float, float]]):
        self.quality = quality
        self.calls = 0

    def score(self, texts, models=None):
        self.calls += 1
        probs = np.zeros((len(texts), len(TASKS)))
        probs[:, TASKS.index("simple_qa")] = 1.0
        return Scores(probs, np.array([self.quality[t] for t in texts]), self.models)


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    q = {t: (float(rng.uniform(0.4, 1.0)), float(rng.uniform(0.2, 0.9))) for t in PROMPTS}
    scorer = FixedScorer(q)
    return build_router(load_config(), scorer=scorer), scorer, q


def test_sweep_is_route_batch_at_each_knob_with_one_scorer_call(setup):
    router, scorer, _ = setup
    reqs = served.requests(PROMPTS[:20], [STRONG, WEAK])
    knobs = [0.1, 0.5, 0.93]
    before = scorer.calls
    swept = router.sweep(reqs, knobs)
    assert scorer.calls == before + 1
    for k, row in zip(knobs, swept):
        batch = router.route_batch([r.model_copy(update={"cost_quality": k}) for r in reqs])
        assert [d.selected_model for d in row] == [d.selected_model for d in batch]
        assert [d.scores for d in row] == [d.scores for d in batch]


def test_router_sweep_at_switch_knobs_equals_the_threshold_sweep(setup):
    router, _, q = setup
    rng = np.random.default_rng(1)
    strong_true = rng.integers(0, 2, len(PROMPTS)).astype(float)
    weak_true = rng.integers(0, 2, len(PROMPTS)).astype(float)
    dq = np.array([q[t][0] - q[t][1] for t in PROMPTS])
    # strong wins when dq > lambda * (its relative log-cost - the weak one's): the lead per unit
    # of cost penalty, from the costs the router itself estimated for each prompt
    decisions = router.route_batch(served.requests(PROMPTS, [STRONG, WEAK]))
    lead = []
    for d, x in zip(decisions, dq):
        cost = {d.selected_model: d.estimated_cost, **{a.model: a.estimated_cost for a in d.alternatives}}
        rel = relative_log_cost(np.array([cost[STRONG], cost[WEAK]]))
        lead.append(x / (rel[0] - rel[1]))
    lead = np.array(lead)
    knobs = served.switch_knobs(lead, router.settings.cost_weight, len(PROMPTS) * 4)
    sw = served.sweep_two_model(router, PROMPTS, STRONG, WEAK, knobs)
    got = served.two_model_result(sw, strong_true, weak_true)
    # the router can only send prompts with a positive lead to the strong model; the rest of
    # the curve is the mixture up to always-strong
    want_share, want_q = M.routing_curve(np.where(lead > 0, lead, -1.0), strong_true, weak_true)
    keep = want_share <= (lead > 0).mean() + 1e-12
    want = M.two_model_points(want_share[keep], want_q[keep], strong_true.mean(), weak_true.mean())
    assert got.apgr == pytest.approx(want.apgr, abs=1e-9)
    assert sw.strong_chosen[0].sum() == 0 and sw.strong_chosen[-1].sum() == (lead > 0).sum()
    # the knob placement the pipeline uses (catalog prices, prompt length) puts a knob at each switch
    est = served.effective_lead(router, PROMPTS, STRONG, WEAK, dq)
    assert np.corrcoef(est, lead)[0, 1] > 0.99


def test_two_model_points_of_random_mixing_is_one_half():
    r = M.two_model_points(np.array([0.25, 0.5]), np.array([0.25, 0.5]), 1.0, 0.0)
    assert r.apgr == pytest.approx(0.5) and r.cpt50 == pytest.approx(0.5)


def test_n_model_sweep_reads_true_costs_and_reports_the_mix(setup):
    router, _, q = setup
    y = np.array([[1.0, 0.0]] * 30 + [[1.0, 1.0]] * 30)
    c = np.array([[10.0, 1.0]] * 60)
    nm = served.sweep_n_model(router, PROMPTS, [STRONG, WEAK], y, c)
    assert nm.metrics["best_model_cost"] == pytest.approx(600.0) and nm.models[nm.best] == STRONG
    assert set(nm.mix) == {STRONG, WEAK} and sum(nm.mix.values()) == pytest.approx(1.0)
    assert nm.curve.cost.max() <= 600.0 + 1e-9 and nm.curve.cost.min() >= 60.0 - 1e-9


def test_product_harness_fills_unknown_costs_from_the_catalog(setup):
    """Outcome data without dollar costs (e.g. ZeroEval) is costed with the catalog's estimate for
    each prompt, as the router itself estimates it."""
    router, _, _ = setup
    y = np.array([[1.0, 0.0]] * 30 + [[1.0, 1.0]] * 30)
    nm = served.sweep_n_model(router, PROMPTS, [STRONG, WEAK], y, np.full((60, 2), np.nan))
    decisions = router.route_batch(served.requests(PROMPTS, [STRONG]))
    assert nm.single_cost[0] == pytest.approx(sum(d.estimated_cost for d in decisions), rel=1e-6)
    assert 0 < nm.single_cost[1] < nm.single_cost[0]
    assert nm.single_cost[1] - 1e-9 <= nm.curve.cost.min() <= nm.curve.cost.max() <= nm.single_cost[0] + 1e-9
