"""The kNN quality head's fast search gives the exact search's answers."""
from __future__ import annotations

import numpy as np

from autoroute.bundle import KNNQuality
from autoroute.knn_search import GroupedKNN


def test_fast_search_equals_the_exact_search():
    rng = np.random.default_rng(3)
    emb = rng.standard_normal((3000, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    scores = rng.random((3000, 6)).astype(np.float32)
    scores[rng.random((3000, 6)) < np.array([0.0, 0.5, 0.9, 0.98, 0.999, 1.0])] = np.nan   # sparse models
    scores[:, 1] = np.where(np.isnan(scores[:, 2]), np.nan, scores[:, 1])     # m1 and m2: the same prompts
    knn = KNNQuality(emb, scores, [f"m{j}" for j in range(6)], k=20, priors={"m5": 0.3, "new": 0.7})
    fast = GroupedKNN(knn)
    q = rng.standard_normal((70, 16)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    ids = ["m0", "new", "m1", "m2", "m3", "m4", "m5"]
    exact, got = knn.predict(q, ids), fast.predict(q, ids)
    assert got.shape == (70, 7)
    np.testing.assert_allclose(got, exact, atol=1e-5)
    assert np.all(got[:, 1] == 0.7) and np.all(got[:, 6] == 0.3)      # no rows: the model's prior
    assert fast.knows(ids).tolist() == [True, False, True, True, True, True, False]
    assert len(fast.groups) == 5                                         # m1, m2 share their group


def test_ties_at_the_kth_neighbour_are_either_search_s_answer():
    emb = np.tile(np.eye(4, dtype=np.float32), (10, 1))                  # every prompt 10 times: ties
    scores = np.tile(np.array([[1.0], [0.0], [1.0], [0.0]], np.float32), (10, 1))
    knn = KNNQuality(emb, scores, ["a"], k=5)
    fast = GroupedKNN(knn)                                               # passes its own check
    got, tied = fast._predict(emb[:1], ["a"])
    assert tied[0, 0] and got[0, 0] == 1.0                                # the 10 nearest all score 1
