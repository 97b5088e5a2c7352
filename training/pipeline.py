"""The training pipeline behind `python -m training.run`: data -> task
classifier -> preference model per protocol -> the served router's evaluation
-> selection on validation -> registration. Every piece arrives instantiated
from the config.

Every number in the tables is a decision of the router a user gets: each
protocol's fit is saved as a bundle, loaded as the service composes it and swept over
its knob (`training.served`); baselines sit beside it. Choices (the quality
head's blend weight, the champion gate) read the validation slice only."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from autoroute import metrics as M
from autoroute.bundle import save_bundle
from autoroute.catalog import Catalog
from autoroute.classifier import ClassifierConfig, TaskClassifier
from autoroute.compose import served_router
from autoroute.embeddings import EmbeddingCache, Encoder, EncoderConfig
from autoroute.model_features import model_features
from autoroute.preference import PreferenceConfig
from autoroute.scoring import prior_quality
from autoroute.types import RoutingError

from training import preference_report as PR
from training import protocols as P
from training import report as R
from training import routing, served, train_classifier
from training.data import TrainingData, check_names
from training.tracking import Tracker, log_json

log = logging.getLogger(__name__)


def check_config(cfg: DictConfig, catalog: Catalog, ev: routing.EvalConfig, data: TrainingData) -> None:
    """Selection reads validation metrics only; names in the config must exist in the catalog and the data."""
    bad = [t for t in cfg.training.primary_terms if not str(t).startswith("val/")]
    if bad:
        raise ValueError(f"config training.primary_terms: {bad} are not validation metrics (val/...); "
                         "selection may read validation metrics only")
    for key in ("strong", "weak", "chat_strong", "chat_weak", "mix_reference"):
        try:
            catalog.resolve(getattr(ev, key))
        except RoutingError as err:
            raise ValueError(f"config evaluation.{key}: {err}") from err
    check_names(data, [ev.strong, ev.weak], list(ev.two_model_benchmarks) + list(ev.nmodel_sources),
                "evaluation (strong/weak/two_model_benchmarks/nmodel_sources)")


def model_priors(catalog: Catalog, models) -> dict[str, float]:
    """Measured prior quality (mean over tasks) of the models (data ids or catalog ids) whose card has priors."""
    out = {}
    for m in models:
        cid = catalog.try_resolve(m)
        if cid and catalog.cards[cid].priors:
            out[m] = float(prior_quality(catalog, [cid], None)[0][0])
    return out


def arena_ratings(cfg: DictConfig) -> tuple[pd.DataFrame | None, str]:
    """The Arena category ratings the data pipeline built (None when absent) and the
    reference model of the priors' scale."""
    path = Path(cfg.training.data.dir) / "arena_ratings.parquet"
    return (pd.read_parquet(path) if path.exists() else None), str(cfg.data.priors.reference)


def embed(cfg: DictConfig, clf: TaskClassifier, table: routing.PromptTable, features: str, backend) -> None:
    """The features of every prompt: one pass of the served encoder `backend` (the service's
    int8 ONNX encoder by default; `served.served_encoder`), cached by its fingerprint."""
    cache = EmbeddingCache(cfg.training.embedding_cache)
    t0 = time.time()
    pooled = cache.encode(backend, table.texts, progress=cfg.training.progress, desc="encode prompts")
    emb, probs = clf.from_pooled(pooled)
    if features == "base":
        enc = Encoder(EncoderConfig(name_or_path=clf.meta.get("encoder_source"), max_length=clf.max_length))
        emb = cache.encode(enc, table.texts, progress=cfg.training.progress, desc="embed (base encoder)")
    elif features != "shared":
        raise ValueError(f"config training.features: {features!r} is not shared or base")
    table.emb, table.task_probs = emb, probs
    log.info("embedded %d prompts in %.1fs", len(table.texts), time.time() - t0)


def _digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def data_version(cfg: DictConfig, data: TrainingData) -> str:
    """Content hashes of every table read plus the slicing limits: runs are comparable only on the same."""
    return _digest({"versions": data.versions, "limits": OmegaConf.to_container(cfg.training.data.limits)})


def protocol_version(cfg: DictConfig) -> str:
    """The evaluation protocol and the selection terms: runs are comparable only on the same."""
    return _digest({"evaluation": OmegaConf.to_container(cfg.training.evaluation, resolve=True),
                    "primary_terms": list(cfg.training.primary_terms), "seed": cfg.seed})


def servable(cfg: DictConfig, sweep: bool) -> tuple[bool, str]:
    """Whether this run may replace the served champion: never a sweep, a sliced-data run
    (experiment=tiny) or a run marked not servable."""
    limits = OmegaConf.to_container(cfg.training.data.limits) or {}
    if sweep:
        return False, "a sweep (--multirun) run"
    if any(v is not None for v in limits.values()):
        return False, f"trained on sliced data (training.data.limits {limits})"
    if not cfg.training.get("servable", True):
        return False, "training.servable is false"
    return True, ""


def _name(h: P.Holdout) -> str:
    return h.name.replace("/", "_")


def run(cfg: DictConfig, tracker: Tracker, data: TrainingData, clf_cfg: ClassifierConfig,
        pref_cfg: PreferenceConfig, ev: routing.EvalConfig, out_dir: Path, sweep: bool = False) -> float:
    t_start = time.time()
    torch.set_num_threads(int(cfg.training.num_threads))
    catalog = Catalog.from_config(cfg.catalog)
    check_config(cfg, catalog, ev, data)
    train_classifier.check_labels(clf_cfg)
    may_serve, why_not = servable(cfg, sweep)
    versions = {"data_version": data_version(cfg, data), "protocol": protocol_version(cfg)}
    metrics: dict[str, float] = {f"data/{k}": v for k, v in data.summary().items()}
    tags = {**dict(cfg.training.tags or {}), **versions, "servable": str(may_serve).lower()}
    with tracker.start(run_name=cfg.training.run_name, tags=tags) as run:
        import mlflow
        tracker.log_config(cfg, cfg.paths.root, data.versions)
        folds = sorted(data.outcomes.loc[data.outcomes["source"].isin(ev.two_model_benchmarks), "fold"]
                       .dropna().astype(int).unique())[:ev.folds]
        holdouts = P.protocols(data, dict(ev.lobo), ev.loso_source, ev.loso_subsets, folds)
        # ---- task classifier: its fine-tuning input holds no left-out benchmark or subset
        t0 = time.time()
        clf_data = dataclasses.replace(data, prompts=routing.classifier_prompts(data, holdouts, ev))
        clf, stats, clf_report = train_classifier.run(clf_cfg, clf_data, out_dir, int8=cfg.training.bundle.quantize,
                                                      reuse=cfg.training.get("classifier_dir"),
                                                      shift=instantiate(cfg.training.classifier_shift))
        metrics.update({f"classifier/{k}": v for k, v in stats.items() if isinstance(v, (int, float))})
        metrics.update(R.classifier_metrics(clf_report))
        if "int8" in clf_report:   # the PyTorch int8 encoder (the CLI's and the MLflow model's)
            metrics.update(R.classifier_metrics(clf_report["int8"], "classifier/test_int8"))
        metrics["time/classifier_s"] = time.time() - t0
        clf_dir = out_dir / "classifier"
        clf.save(clf_dir)
        clf_inputs = dict(clf_data.prompts)
        # ---- the encoder as served (int8 ONNX by default): shipped in every bundle, measured on the
        # held-out prompts, and the one pass every feature and every evaluated decision reads
        t0 = time.time()
        onnx = served.export_onnx_encoder(clf, out_dir) if cfg.training.bundle.get("onnx", False) else None
        backend = served.served_encoder(clf, cfg.serving, out_dir, f"run-{run.info.run_id}")
        mlflow.set_tag("served_encoder", backend.note)
        bins = clf_cfg.calibration_bins
        metrics.update(R.classifier_metrics(served.served_classifier_report(clf, backend, data.prompts["test"], bins),
                                            "classifier/test_served"))
        metrics.update(R.classifier_metrics(served.served_classifier_report(clf, backend, clf_data.prompts["validation"],
                                                                            bins), "val/classifier"))
        metrics["time/served_encoder_s"] = time.time() - t0
        # ---- features (one pass of the served encoder), validation slice, protocols
        t0 = time.time()
        table = routing.PromptTable.build(data)
        embed(cfg, clf, table, cfg.training.features, backend)
        metrics["time/embed_s"] = time.time() - t0
        models_in_data = sorted(set(data.outcomes["model"]) | set(data.comparisons["model_a"])
                                | set(data.comparisons["model_b"]))
        priors = model_priors(catalog, models_in_data + list(catalog.offered))
        feats, feat_src = (model_features(catalog, models_in_data + list(catalog.offered), *arena_ratings(cfg))
                           if cfg.training.model_features else (None, None))
        from autoroute.user_preference import fit_tier4
        user_pref = fit_tier4(data.feedback_events, instantiate(cfg.router.tier4))
        metrics["tier4/profiles"] = sum(1 for k in user_pref.table if k != "global")
        metrics["tier4/feedback_events"] = len(data.feedback_events)
        val_groups = P.validation_groups(data, ev.validation_fraction, cfg.seed, set())
        in_val = lambda ps: ps.take(ps.meta["dup_group"].astype(str).isin(val_groups))  # noqa: E731
        val_sets = [in_val(routing.outcome_pairs(data, "routerbench", ev.nmodel_sources, ev.strong, ev.weak, ["train"])),
                    in_val(routing.chat_pairs(data, "chat", ev.loso_source, ev.chat_strong, ev.chat_weak, ["train"]))]
        cache = EmbeddingCache(cfg.training.embedding_cache)
        ctx = _Ctx(cfg, ev, data, table, pref_cfg, priors, val_groups, val_sets, clf_dir, clf_inputs, user_pref,
                   cache, out_dir / "bundles", metrics, feats, feat_src, onnx, f"run-{run.info.run_id}")
        # ---- the champion fit, served: validation (the gate), RouterBench, product models, the mix
        t0 = time.time()
        champ = ctx.fit(holdouts[0])
        held = PR.heldout_outcomes(data, champ.pool)
        metrics.update(PR.calibration_metrics(champ.preference, table, held))
        product = PR.product_quality(champ.preference, table, held, catalog)
        metrics.update(PR.product_metrics(product))
        for m in cfg.training.cold_start_models or []:
            cs = PR.cold_start(pref_cfg, table, champ.pool, m, catalog, feats, feat_src, priors,
                               data.outcomes[data.outcomes["model"] == m])
            metrics.update({f"preference/cold_start/{m}/{k}": v for k, v in cs.items() if k != "evidence"})
        champ_dir = ctx.bundle(champ, out_dir / "bundle", info={})
        router = ctx.served(champ_dir)
        nm = evaluate_champion(ctx, champ, router, metrics)
        metrics["time/champion_s"] = time.time() - t0
        # ---- the two-model protocols (in-domain folds, leave one benchmark out, leave one subset out)
        t0 = time.time()
        two = evaluate_two_model(ctx, [h for h in holdouts if h.name != "champion"])
        metrics.update(R.two_model_metrics(two))
        metrics["time/two_model_s"] = time.time() - t0
        metrics[tracker.primary_metric] = R.primary_metric(metrics, list(cfg.training.primary_terms))
        table_text = R.format_table(metrics)
        print(table_text)
        plots = out_dir / "plots"
        plots.mkdir(parents=True, exist_ok=True)
        for p in R.plot_two_model(two, plots) + R.plot_n_model(nm, plots) + R.plot_confusion(clf_report, plots):
            mlflow.log_artifact(str(p), "plots")
        log_json(clf_report, "classifier_report.json")
        R.quality_table(metrics).to_csv(out_dir / "quality_table.csv")
        mlflow.log_artifact(str(out_dir / "quality_table.csv"))
        product.to_csv(out_dir / "product_quality.csv", index=False)
        mlflow.log_artifact(str(out_dir / "product_quality.csv"))
        mlflow.log_text(table_text, "quality_table.txt")
        # ---- bundle, selection, registration
        metrics["time/total_before_register_s"] = time.time() - t_start
        tracker.log_metrics(metrics)
        info = {"run_id": run.info.run_id, "git_sha": mlflow.get_run(run.info.run_id).data.tags.get("git_sha"),
                "data_versions": data.versions, "primary_metric": metrics[tracker.primary_metric], **versions}
        bundle_dir = ctx.bundle(champ, out_dir / "bundle", info=info, metrics=metrics)
        model_uri = tracker.log_bundle(bundle_dir)
        selection = tracker.select_and_register(model_uri, metrics, run.info.run_id, versions["data_version"],
                                                versions["protocol"], may_serve, why_not)
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


@dataclasses.dataclass
class _Ctx:
    """What every protocol's fit and evaluation shares within one run."""
    cfg: DictConfig
    ev: routing.EvalConfig
    data: TrainingData
    table: routing.PromptTable
    pref_cfg: PreferenceConfig
    priors: dict
    val_groups: set
    val_sets: list
    clf_dir: Path
    clf_inputs: dict
    user_pref: object
    cache: EmbeddingCache
    bundles: Path
    metrics: dict
    feats: object = None           # autoroute.model_features rows (cold start), or None
    feat_src: dict | None = None
    onnx: Path | None = None       # the run's int8 ONNX encoder, hard-linked into every bundle
    tag: str = "run"               # names the run's bundles for the served composition

    def served(self, folder: Path):
        """The bundle's router as the service composes it, reading the run's cached encoder pass."""
        return served_router(folder, self.cfg.serving, tag=self.tag, embedding_cache=self.cache)

    def fit(self, h: P.Holdout) -> routing.Fit:
        held_texts = ()
        if len(self.data.feedback_comparisons) and h.groups:
            held_texts = self.table_texts(h.groups)
        fit = routing.fit_protocol(self.pref_cfg, self.table, self.data, self.ev, h, self.val_groups,
                                   self.val_sets, self.priors, held_texts, self.feats, self.feat_src)
        if self.cfg.training.calibrate_preference:   # as served: Platt map on held-out validation outcomes
            held = PR.heldout_outcomes(self.data, fit.pool)
            PR.calibrate(fit.preference, self.table, held[held["split"] == "validation"])
        lobo_sources = self.ev.lobo.get(h.benchmark, ()) if h.benchmark else ()
        inputs = {"outcomes": fit.pool.outcomes, "comparisons": fit.pool.comparisons,
                  "knn": fit.pool.outcomes if fit.knn is not None else None,
                  "classifier": self._classifier_rows()}
        fb = fit.pool.comparisons[fit.pool.comparisons["source"] == "feedback"]
        if len(fb) and held_texts:
            inputs["feedback"] = fb.assign(leak=P.feedback_leaks(fb["prompt"].tolist(), held_texts))
        if h.benchmark is not None or h.subset is not None or h.fold is not None:
            P.check_no_leak(h, inputs, self.data, lobo_sources)
        self.metrics[f"head/{h.name}/mf_weight"] = fit.mf_weight
        self.metrics.update({f"head/{h.name}/val_apgr_w{w:g}": v for w, v in fit.validation.items()})
        return fit

    def _classifier_rows(self):
        import pandas as pd
        return pd.concat([self.clf_inputs["train"], self.clf_inputs["validation"]], ignore_index=True)

    def table_texts(self, groups: set) -> list[str]:
        import pandas as pd
        frames = [self.data.outcomes[["prompt", "dup_group"]], self.data.comparisons[["prompt", "dup_group"]]]
        allp = pd.concat(frames, ignore_index=True)
        return allp.loc[allp["dup_group"].astype(str).isin(groups), "prompt"].drop_duplicates().tolist()

    def bundle(self, fit: routing.Fit, folder: Path, info: dict, metrics: dict | None = None) -> Path:
        return save_bundle(folder, cfg=self.cfg, classifier=self.clf_dir, preference=fit.preference,
                           user_preference=self.user_pref, metrics=metrics or {},
                           info={**info, "protocol_name": fit.holdout.name}, features=self.cfg.training.features,
                           bundle_options=OmegaConf.to_container(self.cfg.training.bundle, resolve=True),
                           knn=fit.knn, mf_weight=fit.mf_weight, onnx_encoder=self.onnx)

    @property
    def cost_weight(self) -> float:
        return float(self.cfg.router.settings.cost_weight)


def evaluate_champion(ctx: _Ctx, champ: routing.Fit, router, metrics: dict) -> served.NModelSweep | None:
    ev, data, table = ctx.ev, ctx.data, ctx.table
    # the served router reads the cached encoder states only if they are the served encoder's
    sample = ctx.table.texts[:: max(1, len(ctx.table.texts) // 24)][:24]
    metrics.update({f"served/batch_vs_alone/{k}": v for k, v in served.check_cache(router, sample).items()})
    # validation: two-model sets and the N-model slice, through the served router (what the gate reads)
    for vs in ctx.val_sets:
        if len(vs) < 2:
            continue
        dq = champ.head(table, table.idx(vs.meta["prompt_id"]), [vs.strong, vs.weak])
        lead = served.effective_lead(router, vs.meta["prompt"].tolist(), vs.strong, vs.weak, dq[:, 0] - dq[:, 1])
        knobs = served.switch_knobs(lead, ctx.cost_weight, ev.knob_points["validation"])
        sw = served.sweep_two_model(router, vs.meta["prompt"].tolist(), vs.strong, vs.weak, knobs)
        r = served.two_model_result(sw, vs.s, vs.w)
        metrics[f"val/two_model/{vs.name}/router/apgr"] = r.apgr if r is not None else float("nan")
        metrics[f"val/two_model/{vs.name}/n"] = len(vs)
    score, cost = routing.nmodel_matrix(data, ev.nmodel_sources, ["train"])
    vmask = data.outcomes.drop_duplicates("prompt_id").set_index("prompt_id").loc[score.index, "dup_group"] \
        .astype(str).isin(ctx.val_groups).to_numpy() if len(score) else np.zeros(0, bool)
    if vmask.sum() >= 2:
        vs = served.sweep_n_model(router, _texts(data, score.index[vmask]), list(score.columns),
                                  score[vmask].to_numpy(), cost[vmask].to_numpy(), default_knob=ev.default_knob)
        metrics.update({f"val/routerbench/{k}": v for k, v in vs.metrics.items()})
    # RouterBench test: N models, real dollars
    score, cost = routing.nmodel_matrix(data, ev.nmodel_sources, [ev.nmodel_test_split])
    nm = None
    if len(score):
        texts = _texts(data, score.index)
        nm = served.sweep_n_model(router, texts, list(score.columns), score.to_numpy(), cost.to_numpy(),
                                  default_knob=ev.default_knob)
        metrics.update({f"routerbench/{k}": v for k, v in nm.metrics.items()})
        metrics.update({f"routerbench/router/mix/{m}": v for m, v in nm.mix.items()})
        rows = table.idx(score.index)
        train = champ.pool.outcomes[champ.pool.outcomes["source"].isin(ev.nmodel_sources)]
        est = train.groupby("model")["cost"].mean().reindex(score.columns)
        est = est.fillna(cost.mean()).to_numpy()
        preds = {"head": champ.head(table, rows, list(score.columns))}
        preds.update({n: f(rows, list(score.columns)) for n, f in routing.make_baselines(
            [b for b in ev.baselines if b not in ("random", "oracle")], champ.pool, table, ev, ctx.priors).items()})
        y, c = score.to_numpy(float), cost.to_numpy(float)
        curves = {n: M.cost_quality_curve(p, y, c, cost_estimate=est) for n, p in preds.items()}
        if "random" in ev.baselines:
            curves["random"] = M.random_router_curve(y, c)
        if "oracle" in ev.baselines:
            curves["oracle"] = M.oracle_cost_quality(y, c)
        q_best, c_best = nm.single_quality[nm.best], nm.single_cost[nm.best]
        for n, cv in curves.items():
            ctm = M.cost_to_match(cv, q_best)
            metrics[f"routerbench/{n}/cost_to_match_best"] = ctm
            metrics[f"routerbench/{n}/cost_ratio_to_match_best"] = ctm / c_best if c_best > 0 else float("nan")
            metrics[f"routerbench/{n}/quality_at_best_cost"] = M.quality_at_cost(cv, c_best)
            metrics[f"routerbench/{n}/quality_at_half_best_cost"] = M.quality_at_cost(cv, c_best / 2)
        nm.baselines = curves
    # the product's models on held-out outcome data (plugs in when the data has them)
    for src, split in dict(ev.product_sources).items():
        offered = set(router.catalog.offered)
        score, cost = routing.nmodel_matrix(data, [src], [split])
        keep = [m for m in score.columns if m in offered]
        if len(score) < 2 or len(keep) < 2:
            log.warning("product models: %s/%s has %d prompts and offered models %s; skipped", src, split,
                        len(score), keep)
            continue
        pm = served.sweep_n_model(router, _texts(data, score.index), keep, score[keep].to_numpy(),
                                  cost[keep].to_numpy(), default_knob=ev.default_knob)
        metrics.update({f"product/{src}/{k}": v for k, v in pm.metrics.items()})
        metrics.update({f"product/{src}/router/mix/{m}": v for m, v in pm.mix.items()})
        metrics[f"product/{src}/best_model_is/{keep[pm.best]}"] = 1.0
    # the realistic mix at the default knob
    texts = mix_prompts(data, ev)
    if texts:
        rep = served.mix_report(router, texts, router.catalog.resolve(ev.mix_reference), ev.default_knob)
        log_json(rep, "mix_report.json")
        metrics.update({f"mix/{k}": v for k, v in rep.items() if isinstance(v, (int, float))})
        metrics.update({f"mix/share/{m}": v for m, v in rep["mix"].items()})
        metrics.update({f"mix/tier/{t}": v for t, v in rep["tiers"].items()})
        metrics.update({f"mix/source/{s}": v for s, v in rep["score_sources"].items()})
    return nm


def _texts(data: TrainingData, prompt_ids) -> list[str]:
    first = data.outcomes.drop_duplicates("prompt_id").set_index("prompt_id")["prompt"]
    return first.loc[list(prompt_ids)].astype(str).tolist()


def mix_prompts(data: TrainingData, ev: routing.EvalConfig) -> list[str]:
    import pandas as pd
    frames = [p.loc[p["source"].isin(ev.mix_prompt_sources), "prompt"] for p in data.prompts.values()]
    c = data.comparisons
    frames.append(c.loc[c["source"].isin(ev.mix_comparison_sources), "prompt"])
    return pd.concat(frames).astype(str).drop_duplicates().tolist()


def evaluate_two_model(ctx: _Ctx, holdouts: list[P.Holdout]) -> dict:
    """(family, bench, router) -> TwoModelResult for the served router and the baselines, each
    prompt scored by the protocol that held it out; the families' sweeps share their knobs."""
    ev, data, table = ctx.ev, ctx.data, ctx.table
    bench_of = {s: b for b, srcs in ev.lobo.items() for s in srcs}
    rl = routing.outcome_pairs(data, "routellm", ev.two_model_benchmarks, ev.strong, ev.weak, ["eval"])
    rl.meta["bench"] = rl.meta["source"].map(bench_of)
    chat = routing.chat_pairs(data, "chat", ev.loso_source, ev.chat_strong, ev.chat_weak)
    chat.meta["bench"] = "chat"
    jobs = []    # (family, holdout, fit-bundle, {bench: PairSet})
    for h in holdouts:
        if h.fold is not None:
            fam, sets = "heldout", _by_bench(rl.take(rl.meta["fold"].astype("Float64") == float(h.fold)))
        elif h.benchmark is not None:
            fam, sets = "lobo", _by_bench(rl.take(rl.meta["bench"] == h.benchmark))
        else:
            fam, sets = "loso", {"chat": chat.take(chat.meta["subset"].astype(str) == h.subset[1])}
        sets = {b: ps for b, ps in sets.items() if len(ps)}
        if not sets:
            continue
        for ps in sets.values():   # what is scored is held out by construction
            missing = set(ps.meta["dup_group"].astype(str)) - h.groups
            assert not missing, f"{h.name}: {len(missing)} scored prompts are not held out"
        fit = ctx.fit(h)
        raw = {b: routing.baseline_scores(fit, table, ev, ps, ctx.priors) for b, ps in sets.items()}
        jobs.append((fam, h, ctx.bundle(fit, ctx.bundles / _name(h), info={}), sets, raw))
        del fit
    results: dict = {}
    for fam in ("heldout", "lobo", "loso"):
        fj = [j for j in jobs if j[0] == fam]
        for bench in sorted({b for j in fj for b in j[3]}):
            parts = [(h, bdir, sets[bench], raw[bench]) for _, h, bdir, sets, raw in fj if bench in sets]
            s = np.concatenate([p[2].s for p in parts])
            w = np.concatenate([p[2].w for p in parts])
            if abs(s.mean() - w.mean()) < 1e-12:
                log.warning("%s/%s: strong and weak have the same quality; APGR undefined, skipped", fam, bench)
                continue
            for name in parts[0][3]:
                sc = np.concatenate([p[3][name] for p in parts])
                results[(fam, bench, name)] = M.two_model_sweep(sc, s, w)
            pooled = routing.PairSet(bench, parts[0][2].strong, parts[0][2].weak, None, s, w)
            results.update({(fam, bench, n): r for n, r in routing.fixed_baselines(pooled, ev.baselines).items()})
            routers = [ctx.served(p[1]) for p in parts]
            lead = np.concatenate([served.effective_lead(r, p[2].meta["prompt"].tolist(), p[2].strong, p[2].weak,
                                                         p[3]["head"]) for r, p in zip(routers, parts)])
            knobs = served.switch_knobs(lead, ctx.cost_weight, ev.knob_points[fam])
            sweeps = []
            for router, (h, bdir, ps, _) in zip(routers, parts):
                sw = served.sweep_two_model(router, ps.meta["prompt"].tolist(), ps.strong, ps.weak, knobs)
                sweeps.append(sw)
                r = served.two_model_result(sw, ps.s, ps.w) if fam == "loso" else None
                if r is not None:
                    results[(fam, f"chat_{h.subset[1]}", "router")] = r
            pooled_sw = served.concat(sweeps)
            results[(fam, bench, "router")] = served.two_model_result(pooled_sw, s, w)
            ctx.metrics.update({f"two_model/{fam}/{bench}/router/tier{t}_share": v
                                for t, v in pooled_sw.tier_share.items()})
            ctx.metrics[f"two_model/{fam}/{bench}/router/knobs"] = len(knobs)
    return results


def _by_bench(ps: routing.PairSet) -> dict:
    return {b: ps.take(ps.meta["bench"] == b) for b in sorted(ps.meta["bench"].dropna().unique())}


def seed_everything(seed: int) -> None:
    import random

    from transformers import set_seed
    random.seed(seed)
    np.random.seed(seed)
    set_seed(seed)


__all__ = ["run", "seed_everything", "check_config", "model_priors", "data_version", "protocol_version", "servable",
           "evaluate_two_model", "evaluate_champion", "mix_prompts"]
