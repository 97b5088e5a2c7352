"""The champion bundle: everything serving needs in one folder, and the
`LearnedScorer` that runs it.

Layout of a bundle folder::

    manifest.json          format, scored models and where each one's quality comes
                           from (sources), features mode, metrics, versions
    config.yaml            snapshot of catalog, rules, router settings (+ bundle options)
    classifier/            fine-tuned encoder + tokenizer, task head, temperature
    encoder.int8-per-channel.onnx
                           the same encoder on ONNX Runtime with int8 weights (what the
                           service runs; autoroute.compose), when the run exported it
    encoder/               only when features == "base": the frozen sentence encoder
    preference.pt          the N-model matrix-factorization preference model (with the
                           model features it scores cold-start models through)
    user_preference.json   Tier 4 per-user / per-org adjustments
    metrics.json           the evaluation metrics of the run that built it

With ``features: shared`` (the default) the preference model was trained on
the fine-tuned classifier encoder's embeddings, so one encoder pass per batch
feeds both the task head and the quality head.

MLflow and BentoML are imported lazily inside the helpers that need them.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from autoroute.scoring import LearnedScorer, Scores

log = logging.getLogger(__name__)

FORMAT = 1
BENTO_MODEL_NAME = "autoroute-router"
SNAPSHOT_KEYS = ("catalog", "rules", "router")


class KNNQuality:
    """Non-parametric quality head: the mean score of each model over the k
    nearest training prompts (cosine) it was scored on. Blended with the MF
    preference model (``quality = w * mf + (1 - w) * knn``) when a bundle ships it."""

    def __init__(self, emb: np.ndarray, scores: np.ndarray, model_ids: Sequence[str], k: int = 20,
                 priors: Mapping[str, float] | None = None):
        self.emb = np.asarray(emb, dtype=np.float32)          # [n, d] normalized
        self.scores = np.asarray(scores, dtype=np.float32)    # [n, m], NaN = not scored
        self.model_ids, self.k, self.priors = list(model_ids), int(k), dict(priors or {})
        self._col = {m: j for j, m in enumerate(self.model_ids)}
        self._scored = np.isfinite(self.scores).any(0)          # per column: any scored prompt

    def predict(self, emb: np.ndarray, model_ids: Sequence[str], chunk: int = 1024) -> np.ndarray:
        """``[n, len(model_ids)]``: one similarity product per chunk, then a top-k per
        model over only the prompts that model was scored on (cost ~ the number of
        scored (prompt, model) pairs, not models x prompts)."""
        col = {m: j for j, m in enumerate(self.model_ids)}
        if not hasattr(self, "_have"):
            self._have = {j: np.flatnonzero(~np.isnan(self.scores[:, j])) for j in range(len(self.model_ids))}
        out = np.empty((len(emb), len(model_ids)))
        for s in range(0, len(emb), chunk):
            sim = np.asarray(emb[s:s + chunk], dtype=np.float32) @ self.emb.T
            for j, m in enumerate(model_ids):
                rows = self._have.get(col[m]) if m in col else None
                if rows is None or len(rows) == 0:
                    out[s:s + chunk, j] = self.priors.get(m, 0.5)
                    continue
                k = min(self.k, len(rows))
                sub = sim[:, rows]
                nn = np.argpartition(-sub, k - 1, axis=1)[:, :k]
                out[s:s + chunk, j] = self.scores[rows[nn], col[m]].mean(1)
        return out

    def knows(self, model_ids: Sequence[str]) -> np.ndarray:
        """Per model: does the kNN head hold any scored prompt of it?"""
        col = self._col
        return np.array([m in col and bool(self._scored[col[m]]) for m in model_ids], dtype=bool)

    def save(self, path: str | Path) -> None:
        np.savez_compressed(path, emb=self.emb.astype(np.float16), scores=self.scores.astype(np.float16),
                            model_ids=np.array(self.model_ids), k=self.k,
                            priors=json.dumps(self.priors))

    @classmethod
    def load(cls, path: str | Path) -> "KNNQuality":
        with np.load(path) as z:
            return cls(z["emb"].astype(np.float32), z["scores"].astype(np.float32), list(z["model_ids"]),
                       int(z["k"]), json.loads(str(z["priors"])))


def blend(mf: np.ndarray, knn: np.ndarray | None, weight: float) -> np.ndarray:
    return mf if knn is None or weight >= 1.0 else weight * mf + (1.0 - weight) * knn


class BundleScorer(LearnedScorer):
    """Tier 3 task probabilities and per-model quality from one encoder pass."""

    def __init__(self, classifier, preference=None, models: Sequence[str] = (), pref_ids: Sequence[str] = (),
                 encoder=None, num_threads: int | None = None, knn: KNNQuality | None = None,
                 mf_weight: float = 1.0, embedding_cache=None, sources: Sequence[str] = ()):
        self.classifier = classifier
        self.preference = preference
        self.models = tuple(models)              # catalog ids, as the router knows them
        self._pref_ids = list(pref_ids or models)  # the same models as the preference model names them
        self.sources = tuple(sources)            # per model: learned / measured_prior / proxy_prior / family_prior
        self.encoder = encoder                   # separate encoder (features == "base"), else None
        self.num_threads = num_threads
        self.knn, self.mf_weight = knn, float(mf_weight)
        # an EmbeddingCache: the encoder's pooled states of texts seen before are read, not recomputed
        # (keyed by this classifier's fingerprint; evaluation runs with it, serving without)
        self.embedding_cache = embedding_cache

    @property
    def pref_ids(self) -> list[str]:
        """The scored models as the preference model names them (same order as `models`)."""
        return list(self._pref_ids)

    def score(self, texts: Sequence[str], models: Sequence[str] | None = None) -> Scores:
        import torch

        from autoroute.classifier import PooledEncoder

        if self.num_threads:
            torch.set_num_threads(int(self.num_threads))
        if self.embedding_cache is not None:
            pooled = self.embedding_cache.encode(PooledEncoder(self.classifier), list(texts), progress=False)
            emb, probs = self.classifier.from_pooled(pooled)
        else:
            emb, probs = self.classifier.forward_texts(list(texts))
        return self.from_embeddings(texts, emb, probs, models)

    def from_embeddings(self, texts: Sequence[str], emb: np.ndarray, probs: np.ndarray,
                        models: Sequence[str] | None = None) -> Scores:
        """The quality head on the encoder pass's embeddings (`classifier.from_pooled`), for
        `models` (catalog ids; None = all the bundle scores); the served scorer
        (autoroute.compose) runs the encoder pass itself."""
        if models is None:
            cols = range(len(self.models))
        else:
            want = set(models)
            cols = [j for j, m in enumerate(self.models) if m in want]
        cat_ids = tuple(self.models[j] for j in cols)
        pref_ids = [self._pref_ids[j] for j in cols]
        sources = tuple(self.sources[j] for j in cols) if self.sources else ()
        quality = None
        if self.preference is not None and cat_ids:
            feats = self.encoder.encode(list(texts)) if self.encoder is not None else emb
            quality = self.preference.predict(feats, pref_ids)
            if self.knn is not None and self.mf_weight < 1.0:
                # a model the kNN head has no rows of (cold start) keeps the MF prediction
                knn = np.where(self.knn.knows(pref_ids), self.knn.predict(feats, pref_ids), quality)
                quality = blend(quality, knn, self.mf_weight)
        return Scores(task_probs=probs, quality=quality, models=cat_ids, sources=sources)


# ----------------------------------------------------------------------------- save / load
def config_snapshot(cfg: DictConfig | Mapping, bundle_options: Mapping | None = None) -> DictConfig:
    """The parts of the config that rebuild the router, resolved."""
    snap = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in SNAPSHOT_KEYS if k in cfg}
    snap["bundle"] = {"quantize": True, "num_threads": 1, **dict(bundle_options or {})}
    return OmegaConf.create(snap)


def save_bundle(folder: str | Path, *, cfg: DictConfig, classifier, preference=None, user_preference=None,
                metrics: Mapping[str, Any] | None = None, info: Mapping[str, Any] | None = None,
                features: str = "shared", encoder=None, bundle_options: Mapping | None = None,
                knn: KNNQuality | None = None, mf_weight: float = 1.0, onnx_encoder: str | Path | None = None) -> Path:
    """Write a bundle folder (replacing it) and return its path. `onnx_encoder`: the
    classifier's int8 ONNX encoder file (autoroute.compose.export_int8), hard-linked in."""
    from autoroute.catalog import Catalog
    from autoroute.user_preference import save_user_preference

    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    snap = config_snapshot(cfg, bundle_options)
    OmegaConf.save(snap, folder / "config.yaml")
    if isinstance(classifier, (str, Path)):   # a saved classifier folder: linked, not rewritten
        import os
        shutil.copytree(classifier, folder / "classifier", copy_function=os.link)
        labels = json.loads((Path(classifier) / "classifier.json").read_text())["labels"]
    else:
        classifier.save(folder / "classifier")
        labels = list(classifier.labels)
    scored, pref_ids, sources = [], [], []
    if preference is not None:
        preference.save(folder / "preference.pt")
        catalog = Catalog.from_config(snap.catalog)
        # every catalog model the preference model has evidence for (its own rows or
        # its features); a model with neither is left to the router's catalog prior
        for m, src in zip(preference.model_ids, preference.evidence(preference.model_ids)):
            cid = catalog.try_resolve(m)
            if cid is not None and cid not in scored and src != "prior":
                scored.append(cid)
                pref_ids.append(m)
                sources.append(src)
    if features == "base":
        if encoder is None:
            raise ValueError("save_bundle: features='base' needs the encoder")
        encoder.model.save_pretrained(folder / "encoder")
        encoder.tokenizer.save_pretrained(folder / "encoder")
    if knn is not None and mf_weight < 1.0:
        knn.save(folder / "knn.npz")
    if onnx_encoder is not None:
        import os

        from autoroute.compose import ONNX_FILE
        os.link(onnx_encoder, folder / ONNX_FILE)
    if user_preference is not None:
        save_user_preference(user_preference, folder / "user_preference.json")
    (folder / "metrics.json").write_text(json.dumps(dict(metrics or {}), indent=1, default=float))
    manifest = {"format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "features": features,
                "models": scored, "preference_ids": pref_ids, "sources": sources,
                "preference_models": list(preference.model_ids) if preference is not None else [],
                "tasks": labels, "mf_weight": float(mf_weight) if knn is not None else 1.0,
                **dict(info or {})}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))
    return folder


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"{folder} is not an autoroute bundle (no manifest.json)")
    man = json.loads(path.read_text())
    if int(man.get("format", 0)) != FORMAT:
        raise ValueError(f"bundle {folder}: format {man.get('format')} is not supported (expected {FORMAT})")
    return man


def load_scorer(folder: str | Path, quantize: bool | None = None, num_threads: int | None = None,
                knn_search: Callable[[KNNQuality], Any] | None = None, embedding_cache=None) -> BundleScorer:
    """The learned scorer of a bundle; `quantize` defaults to the snapshot's bundle.quantize;
    `knn_search(knn)` builds another search with the same answers for the kNN head
    (autoroute.knn_search.GroupedKNN), kept only when it can be built."""
    from autoroute.classifier import TaskClassifier
    from autoroute.preference import PreferenceModel

    folder = Path(folder)
    man = read_manifest(folder)
    opts = OmegaConf.load(folder / "config.yaml").get("bundle", {}) or {}
    q = bool(opts.get("quantize", False)) if quantize is None else bool(quantize)
    clf = TaskClassifier.load(folder / "classifier", quantize=q)
    pref = PreferenceModel.load(folder / "preference.pt") if (folder / "preference.pt").exists() else None
    encoder = None
    if man.get("features") == "base":
        from autoroute.embeddings import Encoder, EncoderConfig
        encoder = Encoder(EncoderConfig(name_or_path=str(folder / "encoder"), quantize=q,
                                        max_length=clf.max_length))
    threads = num_threads if num_threads is not None else opts.get("num_threads")
    knn = KNNQuality.load(folder / "knn.npz") if (folder / "knn.npz").exists() else None
    if knn is not None and knn_search is not None:
        try:
            knn = knn_search(knn)
        except ValueError as err:
            log.warning("bundle %s: exact kNN search kept: %s", folder, err)
    return BundleScorer(clf, pref, man.get("models", []), man.get("preference_ids", []), encoder, threads,
                        knn=knn, mf_weight=float(man.get("mf_weight", 1.0)), embedding_cache=embedding_cache,
                        sources=man.get("sources", []))


def load_bundle_config(folder: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    snap = OmegaConf.load(Path(folder) / "config.yaml")
    if overrides:
        snap = OmegaConf.merge(snap, OmegaConf.from_dotlist(list(overrides)))
    return snap


def load_router(folder: str | Path, overrides: Sequence[str] = (), degraded_ok: bool = False,
                parts: Callable[[Any, Any], tuple[Any, Any]] | None = None,
                knn_search: Callable[[KNNQuality], Any] | None = None, embedding_cache=None):
    """The full router (catalog + rules + settings from the snapshot, the learned
    scorer, the Tier 4 table). `overrides` are dotlist edits of the snapshot,
    e.g. ``router.settings.cost_weight_max=0.5`` or ``bundle.quantize=false``.
    `parts(scorer, user_preference) -> (scorer, user_preference)` composes the
    served versions of the two (autoroute.compose) before the router is built.

    `embedding_cache` (an ``autoroute.embeddings.EmbeddingCache``): reuse the encoder states of
    prompts this classifier encoded before (the evaluation of a training run).

    With `degraded_ok`, a bundle whose learned parts cannot be loaded still
    gives a rules-only router marked ``degraded``; otherwise the error is raised."""
    from autoroute.config import build_router
    from autoroute.scoring import NoUserPreference
    from autoroute.user_preference import load_user_preference

    folder = Path(folder)
    cfg = load_bundle_config(folder, overrides)
    opts = cfg.get("bundle", {}) or {}
    try:
        scorer = load_scorer(folder, quantize=bool(opts.get("quantize", False)),
                             num_threads=opts.get("num_threads"), knn_search=knn_search,
                             embedding_cache=embedding_cache)
        up_path = folder / "user_preference.json"
        user_pref = load_user_preference(up_path) if up_path.exists() else NoUserPreference()
    except Exception as err:  # noqa: BLE001 - any broken learned part
        if not degraded_ok:
            raise
        log.warning("bundle %s: learned tiers unavailable (%s); serving rules and catalog priors only",
                    folder, err)
        return build_router(cfg, scorer=None, user_preference=NoUserPreference(), degraded=True)
    if parts is not None:
        scorer, user_pref = parts(scorer, user_pref)
    return build_router(cfg, scorer=scorer, user_preference=user_pref)


# ----------------------------------------------------------------------------- BentoML
def export_to_bentoml(folder: str | Path, name: str = BENTO_MODEL_NAME, labels: Mapping[str, str] | None = None,
                      metadata: Mapping[str, Any] | None = None) -> str:
    """Copy the bundle into the BentoML model store (BENTOML_HOME); returns the tag."""
    import bentoml

    folder = Path(folder)
    man = read_manifest(folder)
    meta = {"models": man.get("models", []), "features": man.get("features"), **dict(metadata or {})}
    with bentoml.models.create(name, labels=dict(labels or {}), metadata=_jsonable(meta),
                               module="autoroute.bundle") as model:
        shutil.copytree(folder, model.path, dirs_exist_ok=True)
    return str(model.tag)


def bentoml_bundle_path(tag: str = f"{BENTO_MODEL_NAME}:latest") -> Path:
    """The bundle folder of a model in the BentoML store."""
    import bentoml

    return Path(bentoml.models.get(tag).path)


def load_router_from_bentoml(tag: str = f"{BENTO_MODEL_NAME}:latest", overrides: Sequence[str] = (),
                             degraded_ok: bool = False):
    return load_router(bentoml_bundle_path(tag), overrides, degraded_ok)


def _jsonable(d: Mapping) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, (np.floating, np.integer)):
            v = v.item()
        if isinstance(v, float) and not np.isfinite(v):
            v = None
        out[str(k)] = v if isinstance(v, (str, int, float, bool, list, dict, type(None))) else str(v)
    return out


__all__ = ["BundleScorer", "KNNQuality", "blend", "save_bundle", "load_scorer", "load_router", "load_bundle_config", "read_manifest",
           "export_to_bentoml", "bentoml_bundle_path", "load_router_from_bentoml", "BENTO_MODEL_NAME",
           "config_snapshot"]
