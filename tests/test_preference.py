"""Behavioural tests of autoroute.preference (tiny synthetic problems, a few seconds)."""

import numpy as np
import pandas as pd
import pytest
import torch

from autoroute.preference import PreferenceConfig, PreferenceModel, winner_to_target

torch.set_num_threads(1)
FAST = dict(dim=8, hidden=0, epochs=30, batch_size=256, lr=3e-2, dropout=0.0, prior_strength=1.0)


def _two_topics(n=400, seed=0):
    """Prompts of topic 0 (x[:,0] > 0): 'coder' wins; topic 1: 'writer' wins."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    topic = (x[:, 0] > 0).astype(int)
    return x, topic


def test_learns_clear_synthetic_preference_from_comparisons():
    x, topic = _two_topics()
    rng = np.random.default_rng(1)
    rows = []
    for i in range(len(x)):
        for _ in range(3):
            better = "coder" if topic[i] == 1 else "writer"
            a, b = ("coder", "writer") if rng.random() < 0.5 else ("writer", "coder")
            winner = "model_a" if a == better else "model_b"
            if rng.random() < 0.1:
                winner = "tie"
            rows.append((i, a, b, winner))
    comp = pd.DataFrame(rows, columns=["prompt_idx", "model_a", "model_b", "winner"])
    m = PreferenceModel(PreferenceConfig(**FAST)).fit(x, comp, None, ["coder", "writer"])
    xt, tt = _two_topics(200, seed=5)
    p = m.predict(xt, ["coder", "writer"])
    acc = np.mean((p[:, 0] > p[:, 1]) == (tt == 1))
    assert acc > 0.9
    assert p.min() >= 0 and p.max() <= 1


def test_learns_from_outcomes_and_soft_preferences():
    x, topic = _two_topics(seed=2)
    out = pd.DataFrame(
        [(i, "strong", 1.0) for i in range(len(x))]
        + [(i, "weak", float(topic[i] == 0)) for i in range(len(x))],
        columns=["prompt_idx", "model", "score"],
    )
    soft = pd.DataFrame({"prompt_idx": np.arange(len(x)), "model_a": "weak", "model_b": "judge_fav",
                         "preference": np.where(topic == 0, 0.8, 0.2)})
    m = PreferenceModel(PreferenceConfig(**FAST)).fit(x, soft, out, ["strong", "weak", "judge_fav"])
    p = m.predict(x, ["strong", "weak"])
    gain = p[:, 0] - p[:, 1]
    assert gain[topic == 1].mean() > gain[topic == 0].mean() + 0.3
    assert np.mean(p[topic == 1, 1] < 0.5) > 0.9


def test_ties_are_half_and_pure_ties_learn_no_preference():
    assert winner_to_target("tie") == 0.5 and winner_to_target("tie_bothbad") == 0.5
    assert winner_to_target("model_a") == 1.0 and winner_to_target("model_b") == 0.0
    with pytest.raises(ValueError):
        winner_to_target("draw")
    x, _ = _two_topics(200, seed=3)
    comp = pd.DataFrame({"prompt_idx": np.arange(200), "model_a": "a", "model_b": "b",
                         "winner": np.where(np.arange(200) % 2 == 0, "tie", "tie_bothbad")})
    m = PreferenceModel(PreferenceConfig(**FAST)).fit(x, comp, None, ["a", "b"])
    z = m.predict_logits(x, ["a", "b"])
    assert np.abs(z[:, 0] - z[:, 1]).max() < 0.3


def test_bothbad_ties_can_lower_quality():
    x, _ = _two_topics(200, seed=3)
    comp = pd.DataFrame({"prompt_idx": np.arange(200), "model_a": "a", "model_b": "b", "winner": "tie_bothbad"})
    cfg = PreferenceConfig(**{**FAST, "bothbad_outcome_weight": 1.0})
    m = PreferenceModel(cfg).fit(x, comp, None, ["a", "b"])
    assert m.predict(x, ["a", "b"]).mean() < 0.3


def test_priors_for_unseen_and_rare_models():
    x, topic = _two_topics(seed=4)
    out = pd.DataFrame({"prompt_idx": np.arange(len(x)), "model": "seen", "score": np.ones(len(x))})
    out = pd.concat([out, pd.DataFrame({"prompt_idx": [0, 1], "model": "rare", "score": [1.0, 1.0]})])
    cfg = PreferenceConfig(**{**FAST, "prior_strength": 50.0})
    m = PreferenceModel(cfg).fit(x, None, out, ["seen", "rare"], priors={"rare": 0.3, "unseen": 0.7})
    p = m.predict(x, ["seen", "rare", "unseen"])
    assert p[:, 0].mean() > 0.9
    assert abs(p[:, 1].mean() - 0.3) < 0.15  # two observations barely move the prior
    np.testing.assert_allclose(p[:, 2], 0.7, atol=1e-9)


def test_save_load_roundtrip_and_determinism(tmp_path):
    x, topic = _two_topics(seed=6)
    out = pd.DataFrame({"prompt_idx": np.arange(len(x)), "model": "m1", "score": topic.astype(float)})
    cfg = PreferenceConfig(**{**FAST, "hidden": 16, "dropout": 0.1})
    m1 = PreferenceModel(cfg).fit(x, None, out, ["m1", "m2"], priors={"m2": 0.4})
    m2 = PreferenceModel(cfg).fit(x, None, out, ["m1", "m2"], priors={"m2": 0.4})
    np.testing.assert_array_equal(m1.predict(x, ["m1", "m2"]), m2.predict(x, ["m1", "m2"]))
    path = tmp_path / "pref.pt"
    m1.save(path)
    m3 = PreferenceModel.load(path)
    assert m3.config == cfg and m3.model_ids == ["m1", "m2"]
    np.testing.assert_array_equal(m1.predict(x, ["m2", "m1", "new"]), m3.predict(x, ["m2", "m1", "new"]))
    with pytest.raises(ValueError):
        m3.predict(x[:, :3], ["m1"])


def _skills_world(n=400, seed=0):
    """Models with a coding and a writing skill; prompts of a coding (x0 > 0) or writing topic.
    P(correct) = sigmoid(2 * skill of the prompt's topic). Features = the skills, observed with noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    topic = (x[:, 0] > 0).astype(int)
    skills = {f"m{i}": rng.normal(size=2) for i in range(10)}
    skills["new"] = np.array([1.5, -1.5])          # a strong coder, a poor writer
    rows = []
    for m, s in skills.items():
        p = 1 / (1 + np.exp(-2 * s[topic]))
        rows += [(i, m, float(y)) for i, y in enumerate(rng.random(n) < p)]
    out = pd.DataFrame(rows, columns=["prompt_idx", "model", "score"])
    feats = pd.DataFrame({m: s + rng.normal(scale=0.1, size=2) for m, s in skills.items()},
                         index=["coding", "writing"]).T
    return x, out, feats


def test_cold_start_model_is_scored_through_its_features():
    x, out, feats = _skills_world()
    train = out[out["model"] != "new"]
    models = sorted(out["model"].unique())
    m = PreferenceModel(PreferenceConfig(**{**FAST, "learned_min_rows": 20})).fit(
        x, None, train, models, model_features=feats, feature_sources={"new": "measured_prior"})
    held = out[out["model"] == "new"]
    p = m.predict(x[held["prompt_idx"].to_numpy()], ["new"])[:, 0]
    y = held["score"].to_numpy()
    prior = np.full_like(p, 0.5)                      # its prior alone (no rows, default prior)
    ll = lambda q: -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))  # noqa: E731
    assert ll(p) < ll(prior) - 0.1
    from sklearn.metrics import roc_auc_score
    assert roc_auc_score(y, p) > 0.75
    assert m.evidence(["new", "m0", "unknown"]) == ["measured_prior", "learned", "prior"]
    # without features a model without rows predicts its prior exactly
    bare = PreferenceModel(PreferenceConfig(**FAST)).fit(x, None, train, [m for m in models if m != "new"])
    assert np.allclose(bare.predict(x[:5], ["new"]), 0.5)


def test_cold_start_state_survives_save_load(tmp_path):
    x, out, feats = _skills_world(n=200)
    m = PreferenceModel(PreferenceConfig(**FAST)).fit(x, None, out[out["model"] != "new"],
                                                      sorted(out["model"].unique()), model_features=feats,
                                                      feature_sources={"new": "family_prior"})
    m.save(tmp_path / "p.pt")
    back = PreferenceModel.load(tmp_path / "p.pt")
    assert np.allclose(back.predict(x[:20], ["new", "m1"]), m.predict(x[:20], ["new", "m1"]))
    assert back.evidence(["new", "m1"]) == ["family_prior", "learned"] and back.feature_names == ["coding", "writing"]


def test_calibration_fixes_an_overconfident_model():
    x, out, feats = _skills_world(n=300)
    m = PreferenceModel(PreferenceConfig(**{**FAST, "epochs": 60, "lr": 0.1, "weight_decay": 0.0})).fit(
        x[:150], None, out[out["prompt_idx"] < 150], sorted(out["model"].unique()))
    held = out[out["prompt_idx"] >= 150].copy()
    held["prompt_idx"] -= 150
    from autoroute.metrics import quality_calibration
    def ll():
        p = np.concatenate([m.predict(x[150:][g["prompt_idx"].to_numpy()], [k])[:, 0] for k, g in held.groupby("model")])
        y = np.concatenate([g["score"].to_numpy() for _, g in held.groupby("model")])
        return quality_calibration(p, y)["logloss"]
    before = ll()
    a, b = m.calibrate(x[150:], held)
    assert ll() < before and 0.05 <= a <= 5.0


def _two_sources_world(seed=0, n=600):
    """Models measured on disjoint sources: A, B on a hard source, C, D on an easy one; A is as good as C and
    B as D (their priors say so, as Arena ratings do across sources), the sources differ by 3 logits."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(2 * n, 16)).astype(np.float32)     # the same prompt distribution in both sources
    level = {"A": 0.5, "B": -0.5, "C": 0.5, "D": -0.5}
    rows = []
    for p in range(2 * n):
        src, models, shift = ("hard", "AB", -1.5) if p < n else ("easy", "CD", 1.5)
        for m in models:
            y = float(rng.random() < 1 / (1 + np.exp(-(level[m] + shift))))
            rows.append({"prompt_idx": p, "model": m, "score": y, "source": src})
    priors = {m: 1 / (1 + np.exp(-v)) for m, v in {**level, "E": 0.5}.items()}   # E: a model without rows
    return emb, pd.DataFrame(rows), priors


def test_source_offsets_keep_a_hard_source_out_of_its_models_levels():
    emb, outcomes, priors = _two_sources_world()
    cfg = dict(dim=8, hidden=0, epochs=30, batch_size=512, w_outcome_pairs=0.0, seed=0)
    pred = {}
    for on in (True, False):
        m = PreferenceModel(PreferenceConfig(**cfg, source_offsets=on)).fit(emb, None, outcomes, list("ABCDE"),
                                                                            priors=priors)
        pred[on] = m.predict(emb[:200], list("ABCDE")).mean(0)
        if on:
            off = m.source_offsets
            assert off["easy"] - off["hard"] > 1.5                          # the offsets took the sources' gap
    a, b, c, d, e = pred[True]
    assert abs(a - c) < 0.1 and abs(b - d) < 0.1 and a > b and c > d     # equal models predicted equal
    assert abs(e - a) < 0.1 and abs(e - c) < 0.1                         # ... and a model without rows at its prior
    a0, _, c0, _, _ = pred[False]
    assert c0 - a0 > 0.3                                                 # without them the easy source's models win
