"""A faster search for the bundle's kNN quality head, with the same answers.

The head's answer for a model is the mean score over the k training prompts
most similar to the query among the prompts that model was scored on. Models
come in groups scored on exactly the same prompts (one benchmark's models, the
product's models on SWE-bench...): `GroupedKNN` keeps each group's prompts as
one contiguous matrix and answers a whole group with one similarity product
and one partial sort for a batch of queries, touching only the groups of the
models asked for (the router asks only for the models its requests may be
routed to). Built when the bundle loads (`serving.scorer.knn_search`) and
checked there against the exact search on probes (a mismatch raises, and the
exact search is kept)."""
from __future__ import annotations

from typing import Sequence

import numpy as np


TIE = 1e-5     # cosine similarities closer than this are tied


class GroupedKNN:
    """The bundle's kNN quality head (`autoroute.bundle.KNNQuality`), grouped by scored prompts."""

    def __init__(self, knn, tolerance: float | None = 1e-4):
        self.knn = knn
        self.k = int(knn.k)
        have = ~np.isnan(knn.scores)
        self.col = {m: j for j, m in enumerate(knn.model_ids)}
        groups: dict[bytes, list[int]] = {}
        for j in range(have.shape[1]):
            if have[:, j].any():
                groups.setdefault(np.packbits(have[:, j]).tobytes(), []).append(j)
        self.groups = []            # (model columns, prompt embeddings [r, d], their scores [r, len(cols)])
        self.group_of = {}          # model column -> (group index, position in the group)
        for g, cols in enumerate(groups.values()):
            rows = np.flatnonzero(have[:, cols[0]])
            self.groups.append((np.array(cols), np.ascontiguousarray(knn.emb[rows], dtype=np.float32),
                                np.ascontiguousarray(knn.scores[np.ix_(rows, cols)], dtype=np.float32)))
            self.group_of.update({c: (g, i) for i, c in enumerate(cols)})
        if tolerance is not None:
            diff = self.check()
            if diff > tolerance:
                raise ValueError(f"the grouped kNN search differs from the exact one by {diff:.2g} on probes")

    def knows(self, model_ids: Sequence[str]) -> np.ndarray:
        return self.knn.knows(model_ids)

    def _group(self, g: int, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean score of each of the group's models over each query's k nearest prompts [n, m],
        whether the k-th and (k+1)-th nearest are tied, up to `TIE` [n])."""
        _, vecs, scores = self.groups[g]
        k = min(self.k, len(vecs))
        if k == len(vecs):
            return np.tile(scores.mean(0), (len(emb), 1)), np.zeros(len(emb), bool)
        sim = emb @ vecs.T
        part = np.argpartition(-sim, k, axis=1)          # [:, :k] the k nearest, [:, k] the next
        nn = part[:, :k]
        kth = np.take_along_axis(sim, nn, 1).min(1)
        # tied: within float32 rounding (the exact search's product runs over other rows, in other blocks)
        tied = np.take_along_axis(sim, part[:, k:k + 1], 1)[:, 0] >= kth - TIE
        return scores[nn].mean(1), tied

    def predict(self, emb: np.ndarray, model_ids: Sequence[str], chunk: int = 256) -> np.ndarray:
        return self._predict(emb, model_ids, chunk)[0]

    def _predict(self, emb: np.ndarray, model_ids: Sequence[str], chunk: int = 256):
        knn = self.knn
        emb = np.asarray(emb, dtype=np.float32)
        out = np.tile(np.array([knn.priors.get(m, 0.5) for m in model_ids], dtype=np.float64), (len(emb), 1))
        tied = np.zeros(out.shape, bool)
        want: dict[int, list[tuple[int, int]]] = {}      # group -> (output column, position in the group)
        for j, m in enumerate(model_ids):
            where = self.group_of.get(self.col.get(m, -1))
            if where is not None:
                want.setdefault(where[0], []).append((j, where[1]))
        for g, pairs in want.items():
            outs, pos = [p[0] for p in pairs], [p[1] for p in pairs]
            for s in range(0, len(emb), chunk):
                vals, t = self._group(g, emb[s:s + chunk])
                out[s:s + chunk, outs] = vals[:, pos]
                tied[s:s + chunk, outs] = t[:, None]
        return out, tied

    def check(self, n: int = 16) -> float:
        """Largest difference to the exact search on probes near training prompts, where the k-th
        nearest prompt is not tied with the next one (among exact ties either search may pick
        either prompt: both answers are the head's)."""
        rng = np.random.default_rng(0)
        emb = self.knn.emb[rng.integers(0, len(self.knn.emb), n)]
        emb = emb + 0.02 * rng.standard_normal(emb.shape).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        ids = list(self.knn.model_ids)
        got, tied = self._predict(emb, ids)
        diff = np.abs(self.knn.predict(emb, ids) - got)
        return float(diff[~tied].max()) if (~tied).any() else 0.0
