"""The champion's encoder pass on ONNX Runtime with int8 weights (per-channel):
the one pass shared by the task classifier and the preference model, about 3x
faster than PyTorch's dynamic int8 on this kind of CPU; the rest of the
bundle's scorer is left as it is.

The fp32 encoder of the bundle is exported once per champion version to
`cache_dir/<tag>/encoder.int8-per-channel.onnx` (atomic rename, so a crash never leaves a
half-written file), and checked against PyTorch on probe prompts at start-up;
a mismatch or any export problem keeps the PyTorch scorer (and says why)."""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from autoroute.scoring import Scores

log = logging.getLogger("autoroute.serving")
PROBES = ("hello there", "Fix this bug: ```python\ndef add(a, b):\n    return a - b\n```",
          "Write a short poem about autumn leaves", "What is the capital of Australia?",
          "Summarize the main arguments of this article about climate policy and carbon taxes in Europe")


def _pooling_module(encoder):
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, ids, mask, tt):
            h = self.m(input_ids=ids, attention_mask=mask, token_type_ids=tt).last_hidden_state
            w = mask.unsqueeze(-1).to(h.dtype)
            return (h * w).sum(1) / w.sum(1).clamp(min=1e-9)

    return Pooled(encoder).eval()


def export_int8(classifier, path: Path) -> Path:
    """Export the classifier's fp32 encoder (+ mean pooling) to ONNX and quantize it to int8."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path.parent.mkdir(parents=True, exist_ok=True)
    x = classifier.tokenizer(["an example prompt"], return_tensors="pt")
    tt = x.get("token_type_ids")
    if tt is None:
        tt = torch.zeros_like(x["input_ids"])
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        fp32 = Path(tmp) / "encoder.onnx"
        with torch.no_grad():
            torch.onnx.export(_pooling_module(classifier.model.encoder), (x["input_ids"], x["attention_mask"], tt),
                              str(fp32), input_names=["ids", "mask", "tt"], output_names=["pooled"],
                              dynamic_axes={"ids": {0: "b", 1: "s"}, "mask": {0: "b", 1: "s"},
                                            "tt": {0: "b", 1: "s"}, "pooled": {0: "b"}},
                              opset_version=17, dynamo=False)
        int8 = Path(tmp) / "encoder.int8.onnx"
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)
        os.replace(int8, path)
    return path


class OrtEncoder:
    """`TaskClassifier.pooled` on ONNX Runtime: same inputs, same outputs."""

    def __init__(self, classifier, onnx_path: Path, threads: int = 1, chunk: int = 32):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        self.tokenizer = classifier.tokenizer
        self.max_length = int(classifier.max_length)
        self.dim = int(classifier.dim)
        self.chunk = chunk

    def pooled(self, texts: Sequence[str], progress: bool = False, desc: str = "encode") -> np.ndarray:
        texts = [t if isinstance(t, str) else "" for t in texts]
        out = np.zeros((len(texts), self.dim), np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")   # little padding per chunk
        for k in range(0, len(order), self.chunk):
            idx = order[k:k + self.chunk]
            enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="np")
            tt = enc.get("token_type_ids")
            if tt is None:
                tt = np.zeros_like(enc["input_ids"])
            out[idx] = self.session.run(None, {"ids": enc["input_ids"].astype(np.int64),
                                               "mask": enc["attention_mask"].astype(np.int64),
                                               "tt": tt.astype(np.int64)})[0]
        return out


def _diff(a: Scores, b: Scores) -> float:
    d = float(np.abs(a.task_probs - b.task_probs).max()) if a.task_probs is not None else 0.0
    if a.quality is not None and b.quality is not None:
        d = max(d, float(np.abs(a.quality - b.quality).max()))
    return d


def accelerate(scorer, cache_dir: str | Path, tag: str, threads: int = 1, max_diff: float = 0.2):
    """Move the scorer's encoder pass (`scorer.classifier.pooled`) to ONNX Runtime
    int8; everything else in the scorer (task head, preference model, kNN, ...)
    stays as the bundle made it. Returns (scorer, what was done). The scorer
    must come from a bundle loaded with bundle.quantize=false (fp32 encoder);
    when ONNX cannot be used it is quantized with PyTorch instead."""
    clf = getattr(scorer, "classifier", None)

    def keep_torch(why: str):
        if clf is not None and not (clf.meta or {}).get("quantized"):
            scorer.classifier = clf.quantized()
        log.warning("encoder stays on PyTorch (int8): %s", why)
        return scorer, f"PyTorch int8 encoder ({why})"

    if clf is None or not hasattr(clf, "pooled") or getattr(scorer, "encoder", None) is not None:
        return keep_torch("scorer layout not supported")
    if (clf.meta or {}).get("quantized"):
        return scorer, "PyTorch int8 encoder (the bundle was loaded quantized)"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return keep_torch("onnxruntime is not installed")
    path = Path(cache_dir) / tag.replace(":", "-") / "encoder.int8-per-channel.onnx"
    try:
        if not path.exists():
            log.info("exporting the champion's encoder to ONNX int8: %s", path)
            export_int8(clf, path)
        ref = scorer.score(list(PROBES))
        torch_pooled = clf.pooled
        clf.pooled = OrtEncoder(clf, path, threads).pooled      # instance attribute shadows the method
        diff = _diff(ref, scorer.score(list(PROBES)))
        if diff > max_diff:
            clf.pooled = torch_pooled
            return keep_torch(f"ONNX int8 differs from fp32 by {diff:.3f} on probe prompts")
    except Exception as err:  # keep serving on PyTorch
        log.exception("ONNX acceleration failed")
        return keep_torch(f"ONNX export failed: {type(err).__name__}: {err}")
    clf.model.encoder = None            # the torch encoder weights are not needed any more
    return scorer, f"ONNX Runtime int8 encoder (max probe difference {diff:.3f})"


class FastKNN:
    """The bundle's kNN quality head with the same answer, computed from the
    `top` most similar training prompts at once instead of one top-k per model
    (one partition per query instead of one per model: ~50x less work with ~90
    models). A model with fewer than k scored prompts among them falls back to
    the exact per-model search."""

    def __init__(self, knn, top: int = 2048):
        self.knn = knn
        self.k = int(knn.k)
        self.top = min(int(top), len(knn.emb))
        self.have = ~np.isnan(knn.scores)
        self.filled = np.nan_to_num(knn.scores, nan=0.0)
        self.col = {m: j for j, m in enumerate(knn.model_ids)}
        self.total = self.have.sum(0)

    def knows(self, model_ids: Sequence[str]) -> np.ndarray:
        return self.knn.knows(model_ids)

    def predict(self, emb: np.ndarray, model_ids: Sequence[str], chunk: int = 1024) -> np.ndarray:
        knn, k = self.knn, self.k
        cols = np.array([self.col.get(m, -1) for m in model_ids])
        known = (cols >= 0) & np.array([c >= 0 and self.total[c] > 0 for c in cols])
        out = np.array([[knn.priors.get(m, 0.5) for m in model_ids]] * len(emb), dtype=np.float64)
        if not known.any():
            return out
        kc = cols[known]
        sim = np.asarray(emb, dtype=np.float32) @ knn.emb.T
        n = sim.shape[1]
        cand = np.argpartition(-sim, self.top - 1, axis=1)[:, :self.top] if self.top < n else \
            np.tile(np.arange(n), (len(emb), 1))
        order = np.argsort(-np.take_along_axis(sim, cand, 1), axis=1, kind="stable")
        cand = np.take_along_axis(cand, order, 1)
        need = np.minimum(k, self.total[kc])
        for q in range(len(emb)):
            rows = cand[q]
            hv = self.have[rows][:, kc]
            take = hv & (np.cumsum(hv, axis=0) <= need)
            got = take.sum(0)
            vals = (self.filled[rows][:, kc] * take).sum(0) / np.maximum(got, 1)
            short = got < need
            if short.any():             # exact search for those models
                idx = np.flatnonzero(short)
                exact = knn.predict(emb[q:q + 1], [knn.model_ids[kc[i]] for i in idx])[0]
                vals[idx] = exact
            out[q, known] = vals
        return out


def accelerate_knn(scorer, tol: float = 1e-4):
    """FastKNN in place of the scorer's kNN head when it gives the same answers on probes."""
    knn = getattr(scorer, "knn", None)
    if knn is None or getattr(scorer, "mf_weight", 1.0) >= 1.0:
        return scorer, None
    try:
        fast = FastKNN(knn)
        # probes near training prompts: equal answers up to the order among exactly tied neighbours
        rng = np.random.default_rng(0)
        emb = knn.emb[rng.integers(0, len(knn.emb), 16)]
        emb = emb + 0.02 * rng.standard_normal(emb.shape).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        ids = list(getattr(scorer, "_pref_ids", scorer.models))
        diff = float(np.abs(knn.predict(emb, ids) - fast.predict(emb, ids)).max())
    except Exception as err:
        log.exception("fast kNN failed")
        return scorer, f"exact kNN ({type(err).__name__}: {err})"
    if diff > tol:
        return scorer, f"exact kNN (the fast search differs by {diff:.2g})"
    scorer.knn = fast
    return scorer, f"fast kNN (max difference {diff:.1g})"
