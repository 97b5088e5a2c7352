"""The served learned scorer, composed once from its parts when the bundle
loads (config `serving.scorer`, each part a `_target_`):

    encoder backend   TorchEncoder (the classifier's PyTorch encoder, fp32 or
                      dynamic int8) or OnnxInt8Encoder (the same encoder
                      exported to ONNX Runtime with per-channel int8 weights)
    task head         the classifier's head on the pooled states (`from_pooled`)
    quality head      the bundle's preference model (and whatever it blends),
                      on the same embeddings (`BundleScorer.from_embeddings`)
    cache             an LRU of prompt text -> scores

One encoder pass per batch feeds both heads. `served_router` loads a bundle's
router with these parts from the `serving` config: the service runs it, and
the training run evaluates it (with the run's embedding cache in front of the
encoder, `CachedEncoder`), so what is evaluated is what is served. Nothing is swapped on a live
object: a backend that fails its check at start-up is not used, and the
composition says which backend it runs (`ComposedScorer.note`)."""
from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from autoroute.scoring import LearnedScorer, Scores

log = logging.getLogger(__name__)
ONNX_FILE = "encoder.int8-per-channel.onnx"      # in the bundle (training ships it) or the serving cache
PROBES = ("hello there", "Fix this bug: ```python\ndef add(a, b):\n    return a - b\n```",
          "Write a short poem about autumn leaves", "What is the capital of Australia?",
          "Summarize the main arguments of this article about climate policy and carbon taxes in Europe",
          "Prove that the square root of 2 is irrational", "Translate 'good night' into Spanish",
          "Review this pull request for security problems", "Plan a three-day trip to Kyoto on a budget")


class EncoderBackend(Protocol):
    note: str

    def pooled(self, texts: Sequence[str]) -> np.ndarray:
        """Mean-pooled encoder states [n, d] (before normalization), as `TaskClassifier.pooled`."""
        ...


class TorchEncoder:
    """The classifier's own PyTorch encoder; `quantize` = dynamic int8 Linear layers."""

    def __init__(self, classifier, quantize: bool = True, threads: int | None = 1, tag: str | None = None,
                 bundle_dir: str | Path | None = None):
        self.threads = threads              # (`tag`, `bundle_dir`: this backend reads and caches nothing)
        done = bool((classifier.meta or {}).get("quantized"))
        self.classifier = classifier.quantized() if quantize and not done else classifier
        self.dim = int(classifier.dim)
        self.note = f"PyTorch {'int8' if quantize or done else 'fp32'} encoder"

    def pooled(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode(texts)

    # the embedding cache's encoder protocol (autoroute.embeddings.EmbeddingCache)
    def fingerprint(self) -> str:
        return "pooled-" + self.classifier.fingerprint()

    def encode(self, texts: Sequence[str], progress: bool = False, desc: str = "encode") -> np.ndarray:
        if self.threads:
            import torch
            torch.set_num_threads(int(self.threads))
        return self.classifier.pooled(list(texts), progress, desc)


def export_int8(classifier, path: Path) -> Path:
    """Export the classifier's fp32 encoder (+ mean pooling) to ONNX and quantize it
    to int8 (per channel); written under a temporary name and renamed, so a crash
    never leaves a half-written file."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    class Pooled(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, ids, mask, tt):
            h = self.m(input_ids=ids, attention_mask=mask, token_type_ids=tt).last_hidden_state
            w = mask.unsqueeze(-1).to(h.dtype)
            return (h * w).sum(1) / w.sum(1).clamp(min=1e-9)

    if (classifier.meta or {}).get("quantized"):
        raise ValueError("the ONNX export needs the fp32 encoder (load the bundle with bundle.quantize=false)")
    path.parent.mkdir(parents=True, exist_ok=True)
    x = classifier.tokenizer(["an example prompt"], return_tensors="pt")
    tt = x.get("token_type_ids")
    if tt is None:
        tt = torch.zeros_like(x["input_ids"])
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        fp32 = Path(tmp) / "encoder.onnx"
        with torch.no_grad():
            torch.onnx.export(Pooled(classifier.model.encoder).eval(), (x["input_ids"], x["attention_mask"], tt),
                              str(fp32), input_names=["ids", "mask", "tt"], output_names=["pooled"],
                              dynamic_axes={"ids": {0: "b", 1: "s"}, "mask": {0: "b", 1: "s"},
                                            "tt": {0: "b", 1: "s"}, "pooled": {0: "b"}},
                              opset_version=17, dynamo=False)
        int8 = Path(tmp) / "encoder.int8.onnx"
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)
        os.replace(int8, path)
    return path


class OnnxInt8Encoder:
    """The classifier's encoder on ONNX Runtime with int8 weights: the one the bundle
    ships (training exports it), else exported once per champion into
    `cache_dir/<tag>/`, then loaded."""

    def __init__(self, classifier, cache_dir: str | Path, tag: str, threads: int = 1, chunk: int = 32,
                 max_length: int | None = None, bundle_dir: str | Path | None = None):
        import onnxruntime as ort

        shipped = Path(bundle_dir) / ONNX_FILE if bundle_dir is not None else None
        path = shipped if shipped is not None and shipped.exists() else \
            Path(cache_dir) / str(tag).replace(":", "-") / ONNX_FILE
        if not path.exists():
            log.info("exporting the champion's encoder to ONNX int8: %s", path)
            export_int8(classifier, path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.tokenizer = classifier.tokenizer
        self.max_length = int(max_length or classifier.max_length)
        self.dim = int(classifier.dim)
        self.chunk = chunk
        self.path = path
        self._fingerprint: str | None = None
        self.note = f"ONNX Runtime int8 encoder ({'shipped in the bundle' if path == shipped else 'exported at start-up'}, " \
                    f"max_length {self.max_length})"

    def pooled(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode(texts)

    # the embedding cache's encoder protocol (autoroute.embeddings.EmbeddingCache)
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            import hashlib
            h = hashlib.sha256(f"onnx-int8|{self.max_length}|".encode())
            with open(self.path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            self._fingerprint = "onnx-" + h.hexdigest()[:16]
        return self._fingerprint

    def encode(self, texts: Sequence[str], progress: bool = False, desc: str = "encode") -> np.ndarray:
        texts = [t if isinstance(t, str) else "" for t in texts]
        out = np.zeros((len(texts), self.dim), np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")   # little padding per chunk
        chunks = range(0, len(order), self.chunk)
        if progress:
            from tqdm.auto import tqdm
            chunks = tqdm(chunks, desc=desc, unit="batch")
        for k in chunks:
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


class CachedEncoder:
    """A backend behind an on-disk `EmbeddingCache` (keyed by the backend's fingerprint):
    the training run's evaluation reads the pooled states its one pass computed."""

    def __init__(self, backend, cache):
        self.backend, self.cache = backend, cache
        self.dim = backend.dim
        self.note = backend.note

    def pooled(self, texts: Sequence[str]) -> np.ndarray:
        return self.cache.encode(self.backend, list(texts), progress=False)


class ComposedScorer(LearnedScorer):
    """encoder backend -> task head + quality head, behind an LRU cache (size 0 = none)."""

    def __init__(self, bundle, encoder: EncoderBackend, cache_size: int = 4096, threads: int | None = None):
        self.bundle, self.encoder = bundle, encoder
        self.threads = threads
        self.models = tuple(bundle.models)
        self.sources = tuple(getattr(bundle, "sources", ()) or ())
        self.size = int(cache_size)
        self._cache: OrderedDict[str, tuple[np.ndarray | None, np.ndarray | None]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0
        self.note = encoder.note

    def _compute(self, texts: list[str], models: Sequence[str] | None) -> Scores:
        if self.threads:    # PyTorch's (OpenMP) thread count is per calling thread: the batch's worker thread
            import torch
            torch.set_num_threads(int(self.threads))
        emb, probs = self.bundle.classifier.from_pooled(self.encoder.pooled(texts))
        return self.bundle.from_embeddings(texts, emb, probs, models)

    def score(self, texts: Sequence[str], models: Sequence[str] | None = None) -> Scores:
        texts = list(texts)
        if self.size <= 0 or not texts:
            return self._compute(texts, models)
        view = None if models is None else tuple(models)        # cached per (models asked, prompt)
        rows: list[tuple | None] = []
        with self._lock:
            for t in texts:
                hit = self._cache.get((view, t))
                if hit is not None:
                    self._cache.move_to_end((view, t))
                rows.append(hit)
        missing = list(dict.fromkeys(t for t, r in zip(texts, rows) if r is None))
        fresh = None
        if missing:
            fresh = self._compute(missing, models)
            got = {t: (None if fresh.task_probs is None else fresh.task_probs[i],
                       None if fresh.quality is None else fresh.quality[i], fresh.models, fresh.sources)
                   for i, t in enumerate(missing)}
            with self._lock:
                self.misses += len(missing)
                for t, v in got.items():
                    self._cache[(view, t)] = v
                while len(self._cache) > self.size:
                    self._cache.popitem(last=False)
            rows = [r if r is not None else got[t] for r, t in zip(rows, texts)]
        with self._lock:
            self.hits += len(texts) - len(missing)
        probs = None if rows[0][0] is None else np.stack([r[0] for r in rows])
        quality = None if rows[0][1] is None else np.stack([r[1] for r in rows])
        return Scores(task_probs=probs, quality=quality, models=rows[0][2], sources=rows[0][3])


def max_difference(bundle, a: EncoderBackend, b: EncoderBackend, texts: Sequence[str] = PROBES) -> float:
    """How far two backends' answers are apart on `texts`: the larger of the mean total-variation
    distance between their task probabilities and the mean absolute difference in predicted
    quality (means: a kNN head's answer may jump when one neighbour changes)."""
    sa, sb = ComposedScorer(bundle, a, 0).score(texts), ComposedScorer(bundle, b, 0).score(texts)
    d = float(0.5 * np.abs(sa.task_probs - sb.task_probs).sum(1).mean()) if sa.task_probs is not None else 0.0
    if sa.quality is not None and sb.quality is not None:
        d = max(d, float(np.abs(sa.quality - sb.quality).mean()))
    return d


def numeric_threads(n: int | None) -> None:
    """The process's BLAS (numpy) and PyTorch thread pools, for the heads: on a small batch a
    pool of spinning BLAS threads burns more CPU than it saves (measured: serving/README.md)."""
    if n:
        import torch
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=int(n))
        torch.set_num_threads(int(n))


def compose_scorer(bundle, encoder: Callable[..., EncoderBackend], fallback: Callable[..., EncoderBackend],
                   cache_size: int = 4096, check_tolerance: float | None = 0.15, tag: str = "bundle",
                   bundle_dir: str | Path | None = None, embedding_cache=None, threads: int | None = None
                   ) -> ComposedScorer:
    """The served scorer of a bundle loaded with its fp32 encoder. `encoder` and
    `fallback` build backends from the classifier (partial `_target_`s); the first
    is used unless it cannot be built or, checked against the fp32 encoder on
    probe prompts, differs by more than `check_tolerance`. `embedding_cache` (an
    `autoroute.embeddings.EmbeddingCache`) goes in front of the chosen backend."""
    clf = bundle.classifier
    try:
        backend = encoder(classifier=clf, tag=tag, bundle_dir=bundle_dir)
        if check_tolerance is not None:
            diff = max_difference(bundle, backend, TorchEncoder(clf, quantize=False))
            if diff > check_tolerance:
                raise ValueError(f"it differs from the fp32 encoder by {diff:.3f} on probe prompts")
            backend.note += f", probe difference to fp32 {diff:.3f}"
    except Exception as err:  # serve on the fallback backend, and say why
        log.warning("encoder backend %s not used: %s: %s", getattr(encoder, "func", encoder), type(err).__name__, err)
        backend = fallback(classifier=clf)
        backend.note += f" (the configured backend was not used: {type(err).__name__}: {err})"
    if embedding_cache is not None:
        backend = CachedEncoder(backend, embedding_cache)
    return ComposedScorer(bundle, backend, cache_size, threads)


def served_router(folder: str | Path, serving, overrides: Sequence[str] = (), tag: str = "bundle",
                  live_tier4: Callable | None = None, embedding_cache=None):
    """A bundle's router as the service runs it, from the `serving` config group: the
    bundle loaded with its fp32 encoder, the scorer composed of `serving.encoder` (else
    `serving.scorer.fallback`), the bundle's heads, the kNN search and the LRU cache of
    `serving.scorer`; Tier 4 as `live_tier4(bundle table)`. `overrides`: dotlist edits of
    the bundle's config snapshot; `embedding_cache`: the training run's cached encoder pass."""
    from hydra.utils import instantiate

    from autoroute.bundle import load_router

    sc = serving.scorer
    numeric_threads(sc.get("threads"))

    def parts(scorer, user_pref):
        if scorer is not None:
            scorer = compose_scorer(scorer, instantiate(serving.encoder), instantiate(sc.fallback),
                                    int(sc.cache_size), sc.check_tolerance, tag, folder, embedding_cache,
                                    sc.get("threads"))
        return scorer, (live_tier4(user_pref) if live_tier4 is not None else user_pref)

    knn_search = instantiate(sc.knn_search) if sc.get("knn_search") is not None else None
    # the fp32 encoder: each backend makes its own int8 version
    return load_router(folder, overrides=[*overrides, "bundle.quantize=false"], parts=parts, knn_search=knn_search)
