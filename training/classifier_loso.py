"""Leave-one-source-group-out evaluation of the Tier 3 task classifier: every
labelled source's prompts are classified by a model fine-tuned without that
source (nor any near-duplicate of its prompts).

    python -m training.benchmark_quality training.benchmark.classifier_loso=true

Protocol (``conf/training/default.yaml`` ``classifier_loso``): the sources are
partitioned into a handful of groups of related origin (arena prompts,
instruction sets, code sources, benchmark queries, the summarization and
translation templates, the authored prompts). For each group, the served
classifier config plus the `fine_tune` delta (a shorter fine-tune: the only
difference from the served model, and measured by `training.benchmark_quality`
beside it) is trained on the classifier `train` split minus the group's sources
and minus every row whose near-duplicate group holds one of the group's
prompts, temperature-scaled on the `validation` rows left, quantized to int8
as served, and run on every prompt of the group (all splits). The pooled
predictions give accuracy, macro-F1, per-class F1, the confusion matrix, ECE
and the unsure rate (confidence under the router's `classifier_min_confidence`);
per source the same. Each fold's confidence is the served one: its validation
temperature times the shift factor (`ShiftCalibration`) fitted on the other folds'
out-of-source logits; the factor fitted on all folds is printed as the served config. Beside it, two baselines on the same folds: the majority
class of the fold's training rows and the Tier 2 keyword hints.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from autoroute.classifier import (ClassifierConfig, TaskClassifier, classification_report,
                                  expected_calibration_error, fit_shift, fit_temperature, softmax,
                                  train_classifier)
from autoroute.scoring import LearnedScorer, Scores
from autoroute.signals import extract
from autoroute.types import Request

from training.data import TrainingData

log = logging.getLogger(__name__)


@dataclass
class LosoConfig:
    """Source groups held out one at a time and the per-fold fine-tune delta."""
    groups: dict[str, list[str]] = field(default_factory=dict)
    fine_tune: dict = field(default_factory=dict)     # ClassifierConfig fields changed per fold
    min_confidence: float = 0.5                       # the router's classifier_min_confidence
    quantize: bool = True                             # report the int8 model, as served
    only: list[str] | None = None                     # run these groups only (a quick look); null = all
    max_eval_per_source_task: int | None = None       # seeded sample of each (source, task) held out; null = all
    seed: int = 0
    # fine_tune: the served recipe per fold (with the `fine_tune` delta); frozen: the base
    # encoder (int8 when quantize) + a logistic-regression head per fold, temperature-scaled
    # on the fold's validation rows: a cheap proxy whose gap to fine_tune is measured
    encoder: str = "fine_tune"
    embedding_cache: str | None = None                # frozen: on-disk cache of the base encoder's embeddings
    save_dir: str | None = None                       # each fold's predictions, written as it finishes and
                                                      # reused when the same fold (same settings, data) reruns


def check_groups(cfg: LosoConfig, sources: set[str]) -> None:
    """Every source in the data sits in exactly one group, and every named source exists."""
    seen: dict[str, str] = {}
    for g, members in cfg.groups.items():
        for s in members:
            if s in seen:
                raise ValueError(f"classifier_loso.groups: source {s!r} is in {seen[s]!r} and {g!r}")
            seen[s] = g
    missing = sorted(sources - set(seen))
    if missing:
        raise ValueError(f"classifier_loso.groups: sources {missing} are in no group; every source must be "
                         f"held out once")
    unknown = sorted(set(seen) - sources)
    if unknown:
        raise ValueError(f"classifier_loso.groups: sources {unknown} are not in the data (sources: {sorted(sources)})")


def fold(prompts: dict[str, pd.DataFrame], sources: list[str]
         ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(train, validation, held-out) for holding out `sources`: the held-out rows are
    every split's rows of those sources; train/validation lose those sources and every
    row sharing a near-duplicate group with a held-out row."""
    held = pd.concat([df[df["source"].isin(sources)] for df in prompts.values()], ignore_index=True)
    near = set(held["dup_group"]) if "dup_group" in held else set()

    def keep(df: pd.DataFrame) -> pd.DataFrame:
        out = df[~df["source"].isin(sources)]
        return out[~out["dup_group"].isin(near)] if "dup_group" in out else out
    return keep(prompts["train"]), keep(prompts["validation"]), held


def keyword_tasks(texts: list[str], fallback: str) -> list[str]:
    """The Tier 2 keyword baseline: the task with the largest intent-hint weight, else `fallback`."""
    out = []
    for t in texts:
        hints = extract(Request.from_prompt(t or " ")).task_hints
        out.append(max(hints.items(), key=lambda kv: kv[1])[0] if hints else fallback)
    return out


def _report(probs: np.ndarray, y: np.ndarray, labels: tuple[str, ...], min_conf: float, bins: int) -> dict:
    rep = classification_report(probs, y, labels, bins)
    rep["unsure_rate"] = float((probs.max(1) < min_conf).mean()) if len(probs) else float("nan")
    return rep


def _hard(pred: list[str], labels: tuple[str, ...]) -> np.ndarray:
    index = {t: i for i, t in enumerate(labels)}
    p = np.zeros((len(pred), len(labels)))
    p[np.arange(len(pred)), [index[t] for t in pred]] = 1.0
    return p


def run(clf_cfg: ClassifierConfig, data: TrainingData, cfg: LosoConfig, out_dir: str | Path,
        bias_l2: float | None = None) -> dict:
    """Train one classifier per held-out group; returns the pooled and per-source report.
    Each fold's probabilities carry the shift calibration fitted on the other folds'
    out-of-source logits (`cross_fold_shift`); the report's ``shift`` is the fit on all
    folds: the served `training.classifier_shift`."""
    prompts = {k: v[v["task"].isin(clf_cfg.labels)] for k, v in data.prompts.items()}
    sources = set().union(*(set(df["source"]) for df in prompts.values()))
    check_groups(cfg, sources)
    fold_cfg = dataclasses.replace(clf_cfg, **dict(cfg.fine_tune))
    labels = tuple(fold_cfg.labels)
    if cfg.encoder not in ("fine_tune", "frozen"):
        raise ValueError(f"classifier_loso.encoder: {cfg.encoder!r} is not fine_tune or frozen")
    frozen = _FrozenHead(fold_cfg, cfg.quantize, cfg.embedding_cache) if cfg.encoder == "frozen" else None
    test_ids = set(prompts["test"]["prompt_id"]) if "test" in prompts else set()
    frames, folds = [], {}
    for name, members in cfg.groups.items():
        if cfg.only and name not in cfg.only:
            continue
        members = [s for s in members if s in sources]
        tr, va, held = fold(prompts, members)
        if cfg.max_eval_per_source_task:
            held = held.sample(frac=1.0, random_state=cfg.seed).groupby(["source", "task"], sort=True).head(
                cfg.max_eval_per_source_task).reset_index(drop=True)
        if held.empty:
            continue
        saved = _fold_path(cfg, fold_cfg, name, members, data)
        if saved is not None and saved.exists():
            frames.append(pd.read_parquet(saved))
            folds[name] = json.loads(saved.with_suffix(".json").read_text())
            log.info("loso fold %s: reused %s", name, saved)
            continue
        t0 = time.time()
        if frozen is not None:
            z, t_val = frozen.fit_logits(tr, va, held)
            n_train = len(tr)
        else:
            clf, stats = train_classifier(tr["prompt"].tolist(), tr["task"].tolist(), va["prompt"].tolist(),
                                          va["task"].tolist(), fold_cfg, Path(out_dir) / f"loso_{name}",
                                          train_sources=tr["source"].tolist())
            served: TaskClassifier = clf.quantized() if cfg.quantize else clf
            z, t_val, n_train = served.logits(held["prompt"].tolist()), clf.temperature, stats["train_examples"]
        majority = tr["task"].value_counts().idxmax()
        frames.append(held[["prompt_id", "prompt", "task", "source"]].assign(
            fold=name, split=np.where(held["prompt_id"].isin(test_ids), "test", "train_validation"),
            majority=majority, keyword=keyword_tasks(held["prompt"].tolist(), majority),
            temperature_validation=t_val, **{f"z_{t}": z[:, i] for i, t in enumerate(labels)}))
        folds[name] = {"sources": members, "train_rows": len(tr), "validation_rows": len(va), "held_out": len(held),
                       "train_examples": n_train, "temperature_validation": t_val,
                       "seconds": round(time.time() - t0, 1)}
        log.info("loso fold %s: %s", name, folds[name])
        if saved is not None:
            saved.parent.mkdir(parents=True, exist_ok=True)
            frames[-1].to_parquet(saved)
            saved.with_suffix(".json").write_text(json.dumps(folds[name]))
    if not frames:
        raise ValueError("classifier_loso: no group held out any prompt")
    pred = pd.concat(frames, ignore_index=True)
    shift = cross_fold_shift(pred, labels, bias_l2, fold_cfg.calibration_bins)
    probs = shift.pop("probs")
    pred = pred.assign(shift_factor=pred["fold"].map(shift["factors"]), pred=[labels[i] for i in probs.argmax(1)],
                       confidence=probs.max(1), **{f"p_{t}": probs[:, i] for i, t in enumerate(labels)})
    for name in folds:
        folds[name]["shift_factor"] = shift["factors"][name]
    other = 0.01 if bias_l2 is None else None
    shift["other_variant"] = {"bias_l2": other} | variant_report(pred, labels, other, fold_cfg.calibration_bins)
    return summarize(pred, labels, cfg.min_confidence, fold_cfg.calibration_bins) | {
        "folds": folds, "predictions": pred, "shift": shift}


def _fold_path(cfg: LosoConfig, fold_cfg: ClassifierConfig, name: str, members: list[str],
               data: TrainingData) -> Path | None:
    """Where a fold's predictions are kept: the name holds a hash of everything that decides them."""
    if not cfg.save_dir:
        return None
    key = json.dumps({"fold": dataclasses.asdict(fold_cfg) | {"progress": None}, "members": sorted(members),
                      "encoder": cfg.encoder, "quantize": cfg.quantize, "eval": cfg.max_eval_per_source_task,
                      "seed": cfg.seed, "logits": 1,
                      "data": {k: v for k, v in sorted(data.versions.items())
                                                 if k.startswith("prompts/")}}, sort_keys=True, default=str)
    return Path(cfg.save_dir) / f"{cfg.encoder}_{name}_{hashlib.sha1(key.encode()).hexdigest()[:10]}.parquet"


class _FrozenHead:
    """The frozen-encoder proxy: base-encoder embeddings (cached) + a balanced logistic
    regression on the fold's training rows, temperature-scaled on its validation rows."""

    def __init__(self, clf_cfg: ClassifierConfig, quantize: bool, embedding_cache: str | None):
        from autoroute.embeddings import EmbeddingCache, Encoder, EncoderConfig

        self.labels = tuple(clf_cfg.labels)
        self.encoder = Encoder(EncoderConfig(name_or_path=clf_cfg.encoder, max_length=clf_cfg.max_length,
                                             quantize=quantize))
        self.cache = EmbeddingCache(embedding_cache)
        self.seed = clf_cfg.seed

    def fit_logits(self, tr: pd.DataFrame, va: pd.DataFrame, held: pd.DataFrame) -> tuple[np.ndarray, float]:
        """(the held-out rows' logits, the temperature fitted on the validation rows)."""
        from sklearn.linear_model import LogisticRegression

        index = {t: i for i, t in enumerate(self.labels)}
        x_tr, x_va, x_ho = (self.cache.encode(self.encoder, df["prompt"].tolist(), progress=False)
                            for df in (tr, va, held))
        y_tr, y_va = tr["task"].map(index).to_numpy(), va["task"].map(index).to_numpy()
        head = LogisticRegression(C=10.0, class_weight="balanced", max_iter=2000, random_state=self.seed)
        head.fit(x_tr, y_tr)

        def logits(x: np.ndarray) -> np.ndarray:   # columns in label order, absent classes very unlikely
            out = np.full((len(x), len(self.labels)), -30.0)
            out[:, head.classes_] = head.decision_function(x)
            return out
        return logits(x_ho), fit_temperature(logits(x_va), y_va)


# ----------------------------------------------------------------------------- shift calibration
@dataclass
class ShiftCalibration:
    """The classifier's confidence on sources it never saw (config `training.classifier_shift`).

    The temperature fitted on the validation split is in-domain: on a new source the
    classifier is right less often than its confidence says, and its class priors differ.
    The leave-one-source-group-out benchmark measures both on the recipe's own
    out-of-source predictions: a factor on the validation temperature and a per-label
    bias (`autoroute.classifier.fit_shift` on every fold model's held-out logits divided
    by that model's validation temperature); it prints them as this config. The served
    classifier's temperature is its validation temperature times `factor`, plus `bias`.
    In the benchmark itself each fold is scored with the shift fitted on the other
    folds' predictions only (its own source never calibrates it)."""
    factor: float = 1.0
    bias: dict[str, float] = field(default_factory=dict)   # task -> logit bias; missing tasks 0
    # the benchmark fits a per-label bias with this ridge, null = the factor only (a bias moves
    # the argmax, not only the confidence: measured, it cost macro-F1 on held-out sources)
    bias_l2: float | None = None

    def apply(self, clf: TaskClassifier) -> TaskClassifier:
        if not self.factor >= 1.0 or not np.isfinite(self.factor):
            raise ValueError(f"training.classifier_shift.factor: {self.factor} must be a number >= 1")
        unknown = sorted(set(self.bias) - set(clf.labels))
        if unknown:
            raise ValueError(f"training.classifier_shift.bias: {unknown} are not classifier labels {list(clf.labels)}")
        t_val = float(clf.meta.get("temperature_validation", clf.temperature))
        clf.temperature = t_val * float(self.factor)
        clf.bias = tuple(float(self.bias.get(t, 0.0)) for t in clf.labels) if self.bias else None
        clf.meta.update(temperature_validation=t_val, shift_factor=float(self.factor))
        return clf


def cross_fold_shift(pred: pd.DataFrame, labels: tuple[str, ...], bias_l2: float | None = None,
                     bins: int = 15) -> dict:
    """The shift fitted on out-of-source logits: per fold on the other folds' rows (its
    probabilities), and on all folds (the served config); `bias_l2` None = the factor only."""
    z = pred[[f"z_{t}" for t in labels]].to_numpy() / pred["temperature_validation"].to_numpy()[:, None]
    y = pred["task"].map({t: i for i, t in enumerate(labels)}).to_numpy()

    def fit(m: np.ndarray) -> tuple[float, np.ndarray]:
        if not m.any():
            return 1.0, np.zeros(len(labels))
        t, b = fit_shift(z[m], y[m], bias_l2) if bias_l2 is not None else (fit_temperature(z[m], y[m]), 0 * z[0])
        return max(1.0, t), b
    probs, factors = np.zeros_like(z), {}
    for f in pred["fold"].unique():
        m = (pred["fold"] == f).to_numpy()
        t, b = fit(~m)
        probs[m], factors[f] = softmax(z[m] / t + b), t
    t, b = fit(np.ones(len(y), bool))
    return {"probs": probs, "factors": factors, "factor": t,
            "bias": {lab: round(float(v), 4) for lab, v in zip(labels, b)} if bias_l2 is not None else {},
            "ece": expected_calibration_error(probs, y, bins)}


def choose_min_confidence(confidence: np.ndarray, correct: np.ndarray,
                          grid: Sequence[float] = tuple(np.round(np.arange(0.2, 0.91, 0.05), 2))) -> float:
    """The unsure threshold for the router: a task label shown is worth +1 when right and
    -1 when wrong, an unsure one 0 (the preference model decides); the threshold in `grid`
    maximizing the total on these predictions (calibrated: about 0.5)."""
    confidence, correct = np.asarray(confidence), np.asarray(correct, dtype=float)
    gains = [float(((2 * correct - 1) * (confidence >= t)).sum()) for t in grid]
    return float(grid[int(np.argmax(gains))])


def summarize(pred: pd.DataFrame, labels: tuple[str, ...], min_conf: float, bins: int = 15) -> dict:
    """Pooled report, baselines, and a per-source table from the fold predictions."""
    index = {t: i for i, t in enumerate(labels)}
    probs = pred[[f"p_{t}" for t in labels]].to_numpy()
    y = pred["task"].map(index).to_numpy()
    out = _report(probs, y, labels, min_conf, bins)
    out["baselines"] = {b: classification_report(_hard(pred[b].tolist(), labels), y, labels, bins)
                        for b in ("majority", "keyword")}
    rows = []
    for src, m in pred.groupby("source").groups.items():
        r = _report(probs[m], y[m], labels, min_conf, bins)
        rows.append({"source": src, "fold": pred.loc[m, "fold"].iloc[0], "n": r["n"], "accuracy": r["accuracy"],
                     "macro_f1": r["macro_f1"], "unsure_rate": r["unsure_rate"], "ece": r["ece"],
                     "keyword_accuracy": float((pred.loc[m, "keyword"] == pred.loc[m, "task"]).mean())})
    out["per_source"] = pd.DataFrame(rows).sort_values("source").reset_index(drop=True)
    if "temperature_validation" in pred:   # the same folds with the in-domain temperature only (no shift factor)
        z = pred[[f"z_{t}" for t in labels]].to_numpy()
        p_in = softmax(z / pred["temperature_validation"].to_numpy()[:, None])
        out["validation_temperature"] = {"ece": expected_calibration_error(p_in, y, bins),
                                         "unsure_rate": float((p_in.max(1) < min_conf).mean())}
        out["per_source"]["ece_validation_temperature"] = [
            expected_calibration_error(p_in[pred["source"].to_numpy() == s_], y[pred["source"].to_numpy() == s_], bins)
            for s_ in out["per_source"]["source"]]
    out["min_confidence"] = unsure_threshold(pred, probs, y)
    return out


def variant_report(pred: pd.DataFrame, labels: tuple[str, ...], bias_l2: float | None, bins: int = 15) -> dict:
    """accuracy / macro-F1 / ECE of the same folds under another shift variant (a diagnostic)."""
    probs = cross_fold_shift(pred, labels, bias_l2, bins)["probs"]
    rep = classification_report(probs, pred["task"].map({t: i for i, t in enumerate(labels)}).to_numpy(), labels,
                                bins)
    return {k: rep[k] for k in ("accuracy", "macro_f1", "ece")}


def unsure_threshold(pred: pd.DataFrame, probs: np.ndarray, y: np.ndarray) -> dict:
    """The router's unsure threshold chosen on these out-of-source predictions (rows of the
    train/validation splits only, never test): `choose_min_confidence` on all folds (the
    value for `router.settings.classifier_min_confidence`), and cross-fitted: each fold's
    unsure rate at the threshold chosen on the other folds' rows."""
    conf, correct = probs.max(1), probs.argmax(1) == y
    ok = (pred["split"] != "test").to_numpy() if "split" in pred else np.ones(len(pred), bool)
    unsure = np.zeros(len(pred), bool)
    by_fold = {}
    for f in pred["fold"].unique():
        m = (pred["fold"] == f).to_numpy()
        by_fold[f] = choose_min_confidence(conf[ok & ~m], correct[ok & ~m]) if (ok & ~m).any() else 0.5
        unsure[m] = conf[m] < by_fold[f]
    return {"chosen": choose_min_confidence(conf[ok], correct[ok]), "by_fold": by_fold,
            "crossfit_unsure_rate": float(unsure.mean()),
            "crossfit_accuracy_when_sure": float(correct[~unsure].mean()) if (~unsure).any() else float("nan")}


class _FoldProbs(LearnedScorer):
    """The fold models' task probabilities, looked up by prompt: the router runs on them as
    it runs on the served classifier (no quality head: catalog priors)."""

    def __init__(self, probs: dict[str, np.ndarray]):
        self.probs = probs

    def score(self, texts, models=None):
        return Scores(task_probs=np.stack([self.probs[t] for t in texts]), quality=None)


def served_tasks(pred: pd.DataFrame, labels: tuple[str, ...], make_router) -> list[str]:
    """The task the router reports for each held-out prompt (a single user message, no
    Space): Tier 2 signal rules first, then the fold's classifier; unsure -> general."""
    probs = pred[[f"p_{t}" for t in labels]].to_numpy()
    router = make_router(_FoldProbs(dict(zip(pred["prompt"], probs))))
    out = []
    for i in range(0, len(pred), 256):
        out += [d.task for d in router.route_batch([Request.from_prompt(t) for t in pred["prompt"].iloc[i:i + 256]])]
    return out


def served_report(pred: pd.DataFrame, labels: tuple[str, ...], make_router) -> dict:
    """accuracy / macro-F1 of the router's reported task ("general" counts as wrong)."""
    from sklearn.metrics import f1_score

    task = served_tasks(pred, labels, make_router)
    y, p = pred["task"].tolist(), task
    return {"accuracy": float(np.mean([a == b for a, b in zip(y, p)])),
            "macro_f1": float(f1_score(y, p, labels=sorted(set(y)), average="macro", zero_division=0)),
            "general_rate": float(np.mean([t == "general" for t in p])),
            "tier2_rate": float(np.mean([a != labels[int(np.argmax(r))] and a != "general"
                                         for a, r in zip(p, pred[[f"p_{t}" for t in labels]].to_numpy())]))}


def metrics(report: dict, prefix: str = "classifier/loso_int8") -> dict[str, float]:
    """Flat metric names for MLflow."""
    out = {f"{prefix}/{k}": float(report[k]) for k in ("accuracy", "macro_f1", "ece", "unsure_rate", "n")}
    out.update({f"{prefix}/f1/{t}": v for t, v in report["per_class_f1"].items()})
    for b, r in report["baselines"].items():
        out[f"{prefix}/baseline_{b}/macro_f1"] = float(r["macro_f1"])
        out[f"{prefix}/baseline_{b}/accuracy"] = float(r["accuracy"])
    for k, v in (report.get("served") or {}).items():
        out[f"{prefix}/router_task/{k}"] = float(v)
    for k, v in (report.get("validation_temperature") or {}).items():
        out[f"{prefix}/validation_temperature/{k}"] = float(v)
    if report.get("shift"):
        out[f"{prefix}/shift/factor"] = float(report["shift"]["factor"])
    mc = report.get("min_confidence") or {}
    out.update({f"{prefix}/min_confidence/{k}": float(v) for k, v in mc.items() if k != "by_fold"})
    for row in report["per_source"].itertuples():
        out[f"{prefix}/source/{row.source}/accuracy"] = float(row.accuracy)
        out[f"{prefix}/source/{row.source}/macro_f1"] = float(row.macro_f1)
    return out


def format_report(report: dict, title: str = "classifier, leave-one-source-group-out (int8 as served)") -> str:
    fmt = lambda v: f"{v:.3f}"  # noqa: E731
    lines = [f"== {title}",
             f"accuracy {report['accuracy']:.3f}, macro-F1 {report['macro_f1']:.3f}, ECE {report['ece']:.3f}, "
             f"unsure {report['unsure_rate']:.3f}, n {report['n']}"]
    for b, r in report["baselines"].items():
        lines.append(f"baseline {b}: accuracy {r['accuracy']:.3f}, macro-F1 {r['macro_f1']:.3f}")
    if report.get("served"):
        sv = report["served"]
        lines.append(f"task as the router reports it (Tier 2 rules first, unsure -> general): accuracy "
                     f"{sv['accuracy']:.3f}, macro-F1 {sv['macro_f1']:.3f}, general {sv['general_rate']:.3f}")
    if report.get("validation_temperature"):
        vt = report["validation_temperature"]
        lines.append(f"same folds, in-domain (validation) temperature only: ECE {vt['ece']:.3f}, "
                     f"unsure {vt['unsure_rate']:.3f}")
    if report.get("shift"):
        sh = report["shift"]
        lines.append(f"shift calibration (each fold: fitted on the other folds' out-of-source logits): factors "
                     + ", ".join(f"{k} {v:.2f}" for k, v in sh["factors"].items()))
        lines.append(f"served config, fitted on all folds: training.classifier_shift.factor={sh['factor']:.4f} "
                     f"training.classifier_shift.bias={json.dumps(sh['bias'], separators=(',', ':'))}")
        ov = sh["other_variant"]
        lines.append(f"the other variant ({'factor only' if ov['bias_l2'] is None else 'factor + per-label bias'}): "
                     f"accuracy {ov['accuracy']:.3f}, macro-F1 {ov['macro_f1']:.3f}, ECE {ov['ece']:.3f}")
    if report.get("min_confidence"):
        mc = report["min_confidence"]
        lines.append(f"unsure threshold chosen on the train/validation rows: {mc['chosen']:.2f}; cross-fitted "
                     f"(each fold at the other folds' choice {mc['by_fold']}): unsure "
                     f"{mc['crossfit_unsure_rate']:.3f}, accuracy when sure {mc['crossfit_accuracy_when_sure']:.3f}")
    lines.append("per class F1: " + ", ".join(f"{t} {v:.3f}" for t, v in report["per_class_f1"].items()))
    lines.append(report["per_source"].to_string(index=False, float_format=fmt))
    if "folds" in report:
        lines.append("folds: " + "; ".join(f"{k}: train {v['train_examples']} ex, held out {v['held_out']}, "
                                           f"T {v.get('temperature_validation', v['temperature']):.2f} x shift "
                                           f"{v.get('shift_factor', 1.0):.2f}, {v['seconds']}s"
                                           for k, v in report["folds"].items()))
    return "\n".join(lines)


__all__ = ["LosoConfig", "check_groups", "fold", "keyword_tasks", "run", "ShiftCalibration", "cross_fold_shift",
           "choose_min_confidence", "summarize", "served_report", "metrics",
           "format_report"]
