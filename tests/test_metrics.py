"""Behavioural tests of autoroute.metrics (synthetic data, run in well under a second)."""

import numpy as np
import pytest

from autoroute import metrics as M


def _synthetic(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    strong = (rng.random(n) < 0.8).astype(float)
    weak = (rng.random(n) < 0.6).astype(float)
    return strong, weak


def test_oracle_beats_random_beats_anti_oracle():
    strong, weak = _synthetic()
    oracle = M.two_model_sweep(M.oracle_two_model_scores(strong, weak), strong, weak)
    rnd = M.random_two_model(strong, weak)
    anti = M.two_model_sweep(-M.oracle_two_model_scores(strong, weak), strong, weak)
    assert rnd.apgr == pytest.approx(0.5, abs=1e-9)
    assert oracle.apgr > 0.9 and anti.apgr < 0.1
    assert oracle.apgr + anti.apgr == pytest.approx(1.0, abs=1e-9)  # symmetric reverse sweep
    assert oracle.cpt50 < rnd.cpt50 < anti.cpt50
    assert rnd.cpt50 == pytest.approx(0.5, abs=1e-9) and rnd.cpt80 == pytest.approx(0.8, abs=1e-9)


def test_curve_endpoints_and_ties():
    strong, weak = _synthetic(500, seed=1)
    share, q = M.routing_curve(np.zeros(500), strong, weak)  # one big tie group
    assert list(share) == [0.0, 1.0]
    assert q[0] == pytest.approx(weak.mean()) and q[-1] == pytest.approx(strong.mean())
    # a random score permutation ends at the same endpoints
    share, q = M.routing_curve(np.random.default_rng(0).random(500), strong, weak)
    assert share[0] == 0 and share[-1] == 1
    assert q[0] == pytest.approx(weak.mean()) and q[-1] == pytest.approx(strong.mean())


def test_tie_groups_equal_expected_random_tiebreak():
    strong = np.array([1, 1, 0, 1.0])
    weak = np.array([0, 1, 0, 0.0])
    scores = np.array([1.0, 1.0, 0.0, 0.0])
    share, q = M.routing_curve(scores, strong, weak)
    np.testing.assert_allclose(share, [0, 0.5, 1.0])
    np.testing.assert_allclose(q, [0.25, 0.5, 0.75])


def test_cpt_monotone_in_pct_and_nan_when_unreached():
    strong, weak = _synthetic(3000, seed=2)
    rng = np.random.default_rng(3)
    noisy = M.oracle_two_model_scores(strong, weak) + rng.normal(0, 1.0, 3000)
    r = M.two_model_sweep(noisy, strong, weak)
    cpts = [M.cpt(r.share, r.pgr, p) for p in np.linspace(0.05, 1.0, 20)]
    assert all(b >= a - 1e-12 for a, b in zip(cpts, cpts[1:]))
    assert np.isnan(M.cpt(r.share, r.pgr, 5.0))


def test_pgr_requires_a_gap():
    with pytest.raises(ValueError):
        M.pgr(0.5, 0.7, 0.7)


def _n_model_data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    # cheap model right on easy prompts, expensive model right nearly always
    easy = rng.random(n) < 0.6
    y = np.stack([easy.astype(float), (rng.random(n) < 0.95).astype(float)], 1)
    c = np.stack([np.full(n, 0.001), np.full(n, 0.01)], 1)
    return y, c, easy


def test_cost_quality_oracle_and_single_models():
    y, c, _ = _n_model_data()
    sc, sq = M.single_model_points(y, c)
    assert sc[1] == pytest.approx(4.0) and sq[1] == pytest.approx(y[:, 1].mean())
    orc = M.oracle_cost_quality(y, c)
    # the oracle reaches the expensive model's quality for much less money
    assert M.cost_to_match(orc, sq[1]) < 0.7 * sc[1]
    assert M.quality_at_cost(orc, sc[1]) >= sq[1]
    # the mixture frontier of single models interpolates linearly
    mix = M.random_router_curve(y, c)
    mid = (sc[0] + sc[1]) / 2
    assert M.quality_at_cost(mix, mid) == pytest.approx((sq[0] + sq[1]) / 2)
    assert np.isnan(M.quality_at_cost(mix, 0.0))
    assert np.isnan(M.cost_to_match(mix, 2.0))


def test_cost_quality_curve_informative_router_dominates_random():
    y, c, easy = _n_model_data(seed=4)
    pred = np.stack([np.where(easy, 0.9, 0.1), np.full(len(easy), 0.9)], 1)
    cur = M.cost_quality_curve(pred, y, c)
    assert cur.cost.min() == pytest.approx(c[:, 0].sum())  # large lam -> all cheap
    mix = M.random_router_curve(y, c)
    budget = 0.6 * c[:, 1].sum()
    assert M.quality_at_cost(cur, budget) > M.quality_at_cost(mix, budget) + 0.05


def test_upper_convex_hull_drops_dominated_points():
    fc, fq = M.upper_convex_hull(np.array([1, 2, 3, 4.0]), np.array([0.5, 0.55, 0.9, 0.8]))
    np.testing.assert_allclose(fc, [1, 3])
    np.testing.assert_allclose(fq, [0.5, 0.9])


def test_quality_calibration_perfect_and_overconfident():
    from autoroute.metrics import quality_calibration
    rng = np.random.default_rng(0)
    p = rng.uniform(0.05, 0.95, 20000)
    y = (rng.random(len(p)) < p).astype(float)
    good = quality_calibration(p, y)
    bad = quality_calibration(np.where(p > 0.5, 0.99, 0.01), y)
    assert good["ece"] < 0.02 and bad["ece"] > 0.2
    assert good["brier"] < bad["brier"] and good["logloss"] < bad["logloss"]
    assert 0.7 < good["auc"] < 0.9 and quality_calibration(1 - p, y)["auc"] < 0.3
    assert np.isnan(quality_calibration(p, np.full(len(p), 0.5))["auc"])
