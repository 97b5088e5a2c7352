"""Small, fast checks of the training building blocks."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from autoroute.classifier import expected_calibration_error, fit_temperature, softmax


def test_temperature_scaling_fixes_overconfidence():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 2000)
    logits = rng.normal(size=(2000, 4))
    logits[np.arange(2000), y] += 1.0
    logits *= 6.0                                   # overconfident
    t = fit_temperature(logits, y)
    assert t > 2.0
    assert expected_calibration_error(softmax(logits, t), y) < expected_calibration_error(softmax(logits), y)


def test_ece_is_zero_for_perfect_calibration():
    probs = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(probs, np.array([0, 1])) == pytest.approx(0.0)


def test_encoder_cache_round_trip(tmp_path):
    from autoroute.embeddings import EmbeddingCache, Encoder, EncoderConfig

    enc = Encoder(EncoderConfig(max_length=32))
    texts = ["write a sorting function", "translate hello into French", "write a sorting function"]
    cache = EmbeddingCache(tmp_path)
    a = cache.encode(enc, texts, progress=False)
    b = cache.encode(enc, texts[:2], progress=False)            # served from disk
    assert a.shape == (3, 384) and np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-4)
    assert np.allclose(a[:2], b) and np.allclose(a[0], a[2])
    q = Encoder(EncoderConfig(max_length=32, quantize=True)).encode(texts[:2])
    assert (np.sum(q * a[:2], axis=1) > 0.95).all()              # int8 stays close to fp32


def test_knn_and_bucket_baselines_learn_from_the_pool():
    from training.routing import BucketPredictor, KNNPredictor, Pool, PromptTable

    keys = [f"p{i}" for i in range(40)]
    table = PromptTable(keys, [("x" * (i + 1)) for i in range(40)], {k: i for i, k in enumerate(keys)})
    table.emb = np.eye(2)[[i % 2 for i in range(40)]].astype(np.float32)
    rows = [{"prompt_id": k, "model": m, "score": float((i % 2 == 0) == (m == "a"))}
            for i, k in enumerate(keys) for m in ("a", "b")]
    pool = Pool(pd.DataFrame(rows), pd.DataFrame())
    knn = KNNPredictor(pool, table, k=5).predict(np.array([0, 1]), ["a", "b", "unseen"])
    assert knn[0, 0] == 1.0 and knn[0, 1] == 0.0 and knn[1, 0] == 0.0 and knn[0, 2] == 0.5
    parity = lambda r: r % 2  # noqa: E731
    bucket = BucketPredictor(pool, table, parity, {}, shrinkage=0.0).predict(np.array([2, 3]), ["a", "b"])
    assert np.allclose(bucket, [[1, 0], [0, 1]])
