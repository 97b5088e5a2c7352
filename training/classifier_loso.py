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
per source the same. Beside it, two baselines on the same folds: the majority
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

import numpy as np
import pandas as pd

from autoroute.classifier import ClassifierConfig, TaskClassifier, classification_report, train_classifier
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


def run(clf_cfg: ClassifierConfig, data: TrainingData, cfg: LosoConfig, out_dir: str | Path) -> dict:
    """Train one classifier per held-out group; returns the pooled and per-source report."""
    prompts = {k: v[v["task"].isin(clf_cfg.labels)] for k, v in data.prompts.items()}
    sources = set().union(*(set(df["source"]) for df in prompts.values()))
    check_groups(cfg, sources)
    fold_cfg = dataclasses.replace(clf_cfg, **dict(cfg.fine_tune))
    labels = tuple(fold_cfg.labels)
    index = {t: i for i, t in enumerate(labels)}
    if cfg.encoder not in ("fine_tune", "frozen"):
        raise ValueError(f"classifier_loso.encoder: {cfg.encoder!r} is not fine_tune or frozen")
    frozen = _FrozenHead(fold_cfg, cfg) if cfg.encoder == "frozen" else None
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
            probs, stats = frozen.fit_predict(tr, va, held)
        else:
            clf, stats = train_classifier(tr["prompt"].tolist(), tr["task"].tolist(), va["prompt"].tolist(),
                                          va["task"].tolist(), fold_cfg, Path(out_dir) / f"loso_{name}",
                                          train_sources=tr["source"].tolist())
            served: TaskClassifier = clf.quantized() if cfg.quantize else clf
            probs = served.predict_proba(held["prompt"].tolist())
        majority = tr["task"].value_counts().idxmax()
        frames.append(held[["prompt_id", "prompt", "task", "source"]].assign(
            fold=name, pred=[labels[i] for i in probs.argmax(1)], confidence=probs.max(1),
            majority=majority, keyword=keyword_tasks(held["prompt"].tolist(), majority),
            **{f"p_{t}": probs[:, i] for i, t in enumerate(labels)}))
        folds[name] = {"sources": members, "train_rows": len(tr), "validation_rows": len(va), "held_out": len(held),
                       "train_examples": stats["train_examples"], "temperature": stats["temperature"],
                       "seconds": round(time.time() - t0, 1)}
        log.info("loso fold %s: %s", name, folds[name])
        if saved is not None:
            saved.parent.mkdir(parents=True, exist_ok=True)
            frames[-1].to_parquet(saved)
            saved.with_suffix(".json").write_text(json.dumps(folds[name]))
    if not frames:
        raise ValueError("classifier_loso: no group held out any prompt")
    pred = pd.concat(frames, ignore_index=True)
    return summarize(pred, labels, cfg.min_confidence, fold_cfg.calibration_bins) | {"folds": folds,
                                                                                       "predictions": pred}


def _fold_path(cfg: LosoConfig, fold_cfg: ClassifierConfig, name: str, members: list[str],
               data: TrainingData) -> Path | None:
    """Where a fold's predictions are kept: the name holds a hash of everything that decides them."""
    if not cfg.save_dir:
        return None
    key = json.dumps({"fold": dataclasses.asdict(fold_cfg) | {"progress": None}, "members": sorted(members),
                      "encoder": cfg.encoder, "quantize": cfg.quantize, "eval": cfg.max_eval_per_source_task,
                      "seed": cfg.seed, "data": {k: v for k, v in sorted(data.versions.items())
                                                 if k.startswith("prompts/")}}, sort_keys=True, default=str)
    return Path(cfg.save_dir) / f"{cfg.encoder}_{name}_{hashlib.sha1(key.encode()).hexdigest()[:10]}.parquet"


class _FrozenHead:
    """The frozen-encoder proxy: base-encoder embeddings (cached) + a balanced logistic
    regression on the fold's training rows, temperature-scaled on its validation rows."""

    def __init__(self, clf_cfg: ClassifierConfig, cfg: LosoConfig):
        from autoroute.embeddings import EmbeddingCache, Encoder, EncoderConfig

        self.labels = tuple(clf_cfg.labels)
        self.encoder = Encoder(EncoderConfig(name_or_path=clf_cfg.encoder, max_length=clf_cfg.max_length,
                                             quantize=cfg.quantize))
        self.cache = EmbeddingCache(cfg.embedding_cache)
        self.seed = clf_cfg.seed

    def fit_predict(self, tr: pd.DataFrame, va: pd.DataFrame, held: pd.DataFrame) -> tuple[np.ndarray, dict]:
        from sklearn.linear_model import LogisticRegression

        from autoroute.classifier import fit_temperature, softmax

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
        temperature = fit_temperature(logits(x_va), y_va)
        return softmax(logits(x_ho), temperature), {"train_examples": len(tr), "temperature": temperature}


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
    return out


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
    lines.append("per class F1: " + ", ".join(f"{t} {v:.3f}" for t, v in report["per_class_f1"].items()))
    lines.append(report["per_source"].to_string(index=False, float_format=fmt))
    if "folds" in report:
        lines.append("folds: " + "; ".join(f"{k}: train {v['train_examples']} ex, held out {v['held_out']}, "
                                           f"{v['seconds']}s" for k, v in report["folds"].items()))
    return "\n".join(lines)


__all__ = ["LosoConfig", "check_groups", "fold", "keyword_tasks", "run", "summarize", "served_report", "metrics",
           "format_report"]
