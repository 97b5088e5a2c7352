"""The one selection rule: properties of `autoroute.selection` and that the
Router, the evaluation and the auto variants all go through it."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoroute import metrics as M
from autoroute.selection import SelectionConfig, choose, pick_batch, relative_log_cost
from autoroute.types import Request

CFG = SelectionConfig()
quals = st.lists(st.floats(0.01, 1.0), min_size=2, max_size=8)


def _pool(draw_q, seed):
    rng = np.random.default_rng(seed)
    q = np.asarray(draw_q)
    c = rng.uniform(1e-5, 1e-1, len(q))
    return q, c


@settings(max_examples=200, deadline=None)
@given(quals, st.integers(0, 10_000), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_raising_the_knob_never_lowers_expected_quality(q, seed, k1, k2):
    q, c = _pool(q, seed)
    lo, hi = sorted((k1, k2))
    assert q[choose(q, list(c), hi, CFG).index] >= q[choose(q, list(c), lo, CFG).index] - 1e-12


@settings(max_examples=200, deadline=None)
@given(quals, st.integers(0, 10_000), st.floats(0.0, 1.0), st.sampled_from(["auto", "floor", "nitro"]))
def test_a_model_worse_and_dearer_than_another_is_never_chosen(q, seed, knob, mode):
    q, c = _pool(q, seed)
    speeds = np.ones(len(q)) * 100  # equal speeds: nitro must fall back on quality and cost
    i = choose(q, list(c), knob, CFG, mode, speeds).index
    dominated = (q >= q[i]) & (c <= c[i]) & ((q > q[i]) | (c < c[i]))
    assert not dominated.any()


@settings(max_examples=200, deadline=None)
@given(quals, st.integers(0, 10_000), st.floats(0.0, 0.5))
def test_floor_is_the_cheapest_model_within_its_band(q, seed, band):
    q, c = _pool(q, seed)
    cfg = SelectionConfig(floor_band=band)
    ch = choose(q, list(c), 0.5, cfg, "floor")
    assert q[ch.index] >= (1 - band) * q.max() - 1e-12
    inside = q >= (1 - band) * q.max() - 1e-12
    assert c[ch.index] == pytest.approx(c[inside].min())
    assert ch.quality_vs_best >= 1 - band - 1e-12


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.0, 1.0))
def test_batch_rule_is_the_single_rule(seed, knob):
    rng = np.random.default_rng(seed)
    q = rng.uniform(0, 1, (20, 5)).round(2)   # rounded: ties happen
    c = rng.choice([1e-4, 1e-3, 1e-2, 5e-2], (20, 5))
    got = pick_batch(q, c, knob, CFG)
    want = [choose(q[i], list(c[i]), knob, CFG).index for i in range(len(q))]
    assert list(got) == want


def test_unknown_price_counts_as_the_priciest():
    rel = relative_log_cost(np.array([1e-3, np.nan, 1e-2]))
    assert rel[1] == pytest.approx(1.0) == rel[2] and rel[0] < rel[2]
    ch = choose([0.9, 0.9, 0.9], [1e-3, None, 1e-2], 0.5, CFG)
    assert ch.index == 0


def test_knob_ends_are_cheapest_and_best():
    q, c = [0.5, 0.7, 0.9], [1e-4, 1e-3, 1e-2]
    assert choose(q, c, 0.0, CFG).index == 0
    assert choose(q, c, 1.0, CFG).index == 2


def test_evaluation_curve_runs_the_served_rule():
    rng = np.random.default_rng(0)
    pred = rng.uniform(0, 1, (50, 3))
    y = (rng.uniform(0, 1, (50, 3)) < pred).astype(float)
    costs = np.tile([1e-4, 1e-3, 1e-2], (50, 1))
    cur = M.cost_quality_curve(pred, y, costs, knobs=np.array([0.0, 0.3, 1.0]))
    for k, knob in enumerate(cur.knobs):
        ch = pick_batch(pred, costs.mean(0), knob, CFG)
        assert cur.cost[k] == pytest.approx(costs[np.arange(50), ch].sum())


def test_router_decision_states_quality_and_cost_relative_to_the_best():
    from autoroute.config import build_router, load_config

    router = build_router(load_config([]))
    d = router.route(Request.from_prompt("Compare PostgreSQL and MySQL for an analytics workload", cost_quality=0.2))
    assert d.best_model in d.scores and d.scores[d.best_model] == max(d.scores.values())
    assert d.quality_vs_best == pytest.approx(d.scores[d.selected_model] / d.scores[d.best_model], abs=1e-5)
    if d.selected_model != d.best_model:
        assert f"of {router.catalog.cards[d.best_model].display_name}'s quality" in d.reason
    assert set(d.score_sources) == set(d.scores)


def test_router_floor_variant_stays_in_band_and_uses_the_output_token_table():
    from autoroute.config import build_router, load_config

    router = build_router(load_config([]))
    req = Request.from_prompt("Summarize the following meeting notes in five bullet points: we met, we talked.",
                              variant="floor")
    d = router.route(req)
    assert d.quality_vs_best >= 1 - router.settings.floor_band - 1e-9
    inside = [m for m, q in d.scores.items() if q >= (1 - router.settings.floor_band) * max(d.scores.values()) - 1e-9]
    known = [a.estimated_cost for a in d.alternatives if a.model in inside and a.estimated_cost is not None]
    assert d.estimated_cost is not None and all(d.estimated_cost <= c + 1e-12 for c in known)
    table = router.rules["expected_output_tokens"]
    card = router.catalog.cards[d.selected_model]
    assert d.estimated_cost == pytest.approx(card.estimate_cost(d.estimated_tokens, table.get(d.task, table["default"])))
