"""The training pipeline behind `python -m training.run`: data -> task
classifier -> preference model -> baselines -> evaluation -> selection ->
registration. Every piece arrives instantiated from the config."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from autoroute.catalog import Catalog
from autoroute.classifier import ClassifierConfig, TaskClassifier
from autoroute.embeddings import EmbeddingCache, Encoder, EncoderConfig
from autoroute.preference import PreferenceConfig
from autoroute.scoring import prior_quality
from autoroute.types import RoutingError

from training import report as R
from training import routing, train_classifier
from training.data import TrainingData, check_names
from training.tracking import Tracker, log_json

log = logging.getLogger(__name__)


class _Pooled:
    """Adapter: the classifier's pooled encoder states for the embedding cache."""

    def __init__(self, clf: TaskClassifier):
        self.clf, self.dim = clf, clf.dim

    def fingerprint(self) -> str:
        return "pooled-" + self.clf.fingerprint()

    def encode(self, texts, progress=False, desc="encode"):
        return self.clf.pooled(texts, progress, desc)


def check_config(cfg: DictConfig, catalog: Catalog, ev: routing.EvalConfig, data: TrainingData) -> None:
    """Names in the config must exist in the catalog and in the data."""
    for key in ("strong", "weak"):
        try:
            catalog.resolve(getattr(ev, key))
        except RoutingError as err:
            raise ValueError(f"config evaluation.{key}: {err}") from err
    check_names(data, [ev.strong, ev.weak], list(ev.two_model_benchmarks) + list(ev.nmodel_sources),
                "evaluation (strong/weak/two_model_benchmarks/nmodel_sources)")


def model_priors(catalog: Catalog, models) -> dict[str, float]:
    """Measured prior quality (mean over tasks) for data models whose card has priors."""
    out = {}
    for m in models:
        cid = catalog.try_resolve(m)
        if cid and catalog.cards[cid].priors:
            out[m] = float(prior_quality(catalog, [cid], None)[0][0])
    return out


def embed(cfg: DictConfig, clf: TaskClassifier, table: routing.PromptTable, features: str) -> None:
    cache = EmbeddingCache(cfg.training.embedding_cache)
    t0 = time.time()
    # the serving encoder (int8 when the bundle serves int8) computes the training features too
    enc_clf = clf.quantized() if cfg.training.bundle.quantize else clf
    pooled = cache.encode(_Pooled(enc_clf), table.texts, progress=cfg.training.progress, desc="encode prompts")
    emb, probs = clf.from_pooled(pooled)
    if features == "base":
        enc = Encoder(EncoderConfig(name_or_path=clf.meta.get("encoder_source"), max_length=clf.max_length))
        emb = cache.encode(enc, table.texts, progress=cfg.training.progress, desc="embed (base encoder)")
    elif features != "shared":
        raise ValueError(f"config training.features: {features!r} is not shared or base")
    table.emb, table.task_probs = emb, probs
    log.info("embedded %d prompts in %.1fs", len(table.texts), time.time() - t0)


def run(cfg: DictConfig, tracker: Tracker, data: TrainingData, clf_cfg: ClassifierConfig,
        pref_cfg: PreferenceConfig, ev: routing.EvalConfig, out_dir: Path) -> float:
    t_start = time.time()
    torch.set_num_threads(int(cfg.training.num_threads))
    catalog = Catalog.from_config(cfg.catalog)
    check_config(cfg, catalog, ev, data)
    train_classifier.check_labels(clf_cfg)
    metrics: dict[str, float] = {f"data/{k}": v for k, v in data.summary().items()}
    with tracker.start(run_name=cfg.training.run_name, tags=dict(cfg.training.tags or {})) as run:
        tracker.log_config(cfg, cfg.paths.root, data.versions)
        # ---- task classifier
        t0 = time.time()
        clf, stats, clf_report = train_classifier.run(clf_cfg, data, out_dir, int8=cfg.training.bundle.quantize)
        metrics.update({f"classifier/{k}": v for k, v in stats.items() if isinstance(v, (int, float))})
        metrics.update(R.classifier_metrics(clf_report))
        if "int8" in clf_report:   # what the int8 serving encoder scores
            metrics.update(R.classifier_metrics(clf_report["int8"], "classifier/test_int8"))
        metrics.update(R.classifier_metrics(clf_report["validation"], "classifier/validation"))
        metrics["time/classifier_s"] = time.time() - t0
        tracker.log_metrics(metrics)
        # ---- features (one pass of the fine-tuned encoder) and the preference model
        t0 = time.time()
        table = routing.PromptTable.build(data)
        embed(cfg, clf, table, cfg.training.features)
        metrics["time/embed_s"] = time.time() - t0
        models_in_data = sorted(set(data.outcomes["model"]) | set(data.comparisons["model_a"])
                                | set(data.comparisons["model_b"]))
        priors = model_priors(catalog, models_in_data)
        t0 = time.time()
        champ_pool = routing.training_pool(data, ev, "champion")
        preference = routing.fit_preference(pref_cfg, table, champ_pool, priors)
        metrics["time/preference_s"] = time.time() - t0
        from hydra.utils import instantiate

        from autoroute.user_preference import fit_tier4
        user_pref = fit_tier4(data.feedback_events, instantiate(cfg.router.tier4))
        metrics["tier4/profiles"] = sum(1 for k in user_pref.table if k != "global")
        metrics["tier4/feedback_events"] = len(data.feedback_events)
        # ---- baselines + evaluation
        t0 = time.time()
        two = routing.evaluate_two_model(data, table, ev, pref_cfg, priors, progress=cfg.training.progress)
        nm = routing.evaluate_n_model(data, table, ev, preference, champ_pool, priors)
        metrics.update(R.two_model_metrics(two))
        metrics.update(R.n_model_metrics(nm))
        metrics["time/evaluate_s"] = time.time() - t0
        metrics[tracker.primary_metric] = R.primary_metric(metrics, list(cfg.training.primary_terms))
        table_text = R.format_table(metrics)
        print(table_text)
        plots = out_dir / "plots"
        plots.mkdir(parents=True, exist_ok=True)
        for p in R.plot_two_model(two, plots) + R.plot_n_model(nm, plots) + R.plot_confusion(clf_report, plots):
            import mlflow
            mlflow.log_artifact(str(p), "plots")
        log_json(clf_report, "classifier_report.json")
        R.quality_table(metrics).to_csv(out_dir / "quality_table.csv")
        import mlflow
        mlflow.log_artifact(str(out_dir / "quality_table.csv"))
        mlflow.log_text(table_text, "quality_table.txt")
        # ---- bundle, selection, registration
        metrics["time/total_before_register_s"] = time.time() - t_start
        tracker.log_metrics(metrics)
        bundle_dir = out_dir / "bundle"
        from autoroute.bundle import save_bundle
        info = {"run_id": run.info.run_id, "git_sha": mlflow.get_run(run.info.run_id).data.tags.get("git_sha"),
                "data_versions": data.versions, "primary_metric": metrics[tracker.primary_metric]}
        knn = routing.knn_from_pool(champ_pool, table, ev.knn_k, priors) if ev.mf_weight < 1.0 else None
        save_bundle(bundle_dir, cfg=cfg, classifier=clf, preference=preference, user_preference=user_pref,
                    metrics=metrics, info=info, features=cfg.training.features,
                    bundle_options=OmegaConf.to_container(cfg.training.bundle, resolve=True),
                    knn=knn, mf_weight=ev.mf_weight)
        if cfg.training.bundle.get("onnx", False):   # the encoder as served: shipped and measured
            from training.served import served_classifier_report, ship_onnx_encoder
            t0 = time.time()
            ship_onnx_encoder(clf, bundle_dir)
            served = R.classifier_metrics(served_classifier_report(clf, bundle_dir, data, clf_cfg.calibration_bins),
                                          "classifier/test_served_onnx_int8")
            served["time/onnx_export_s"] = time.time() - t0
            metrics.update(served)
            tracker.log_metrics(served)
        model_uri = tracker.log_bundle(bundle_dir)
        selection = tracker.select_and_register(model_uri, metrics, run.info.run_id)
        if selection["promoted"]:
            selection["bento_tag"] = tracker.export_champion(
                bundle_dir, labels={"alias": tracker.alias, "version": selection["version"]},
                metadata={"run_id": run.info.run_id, tracker.primary_metric: metrics[tracker.primary_metric]})
        log_json(selection, "selection.json")
        metrics["time/total_s"] = time.time() - t_start
        tracker.log_metrics({"time/total_s": metrics["time/total_s"]})
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float))
        (out_dir / "selection.json").write_text(json.dumps(selection, indent=1, default=str))
        log.info("run %s: %s = %.4f in %.0fs; selection %s", run.info.run_id, tracker.primary_metric,
                 metrics[tracker.primary_metric], metrics["time/total_s"], selection)
    return float(metrics[tracker.primary_metric])


def seed_everything(seed: int) -> None:
    import random

    from transformers import set_seed
    random.seed(seed)
    np.random.seed(seed)
    set_seed(seed)


__all__ = ["run", "seed_everything", "check_config", "model_priors"]
