"""Steps 3-5: the preference model's training sets per evaluation protocol
(`training.protocols`), its fits, the blend weight chosen on validation, the
baselines, and the evaluation sets (RouteLLM MMLU/GSM8K pairs, AlpacaEval judge
pairs, RouterBench and product-model outcome matrices). What the served router
decides on them is `training.served`.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from autoroute import metrics as M
from autoroute.bundle import blend
from autoroute.preference import PreferenceConfig, PreferenceModel

from training.data import TrainingData
from training.protocols import Holdout, feedback_leaks

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """Evaluation settings (config node `evaluation`)."""
    strong: str = "gpt-4-1106-preview"
    weak: str = "mixtral-8x7b-instruct"
    two_model_benchmarks: tuple[str, ...] = ("routellm_mmlu", "routellm_gsm8k")
    folds: int = 5
    nmodel_sources: tuple[str, ...] = ("routerbench_arc_challenge", "routerbench_mbpp", "routerbench_winogrande")
    nmodel_test_split: str = "test"
    drop_derived_comparisons: tuple[str, ...] = (
        "routerbench_arc_challenge", "routerbench_mbpp", "routerbench_winogrande", "llmrouter_dcrouter")
    comparison_splits: tuple[str, ...] = ("train",)
    outcome_splits: tuple[str, ...] = ("train",)
    champion_includes_eval_folds: bool = True
    knn_k: int = 20
    bucket_shrinkage: float = 5.0
    length_bins: int = 5
    baselines: tuple[str, ...] = ("random", "length", "knn", "classifier_prior", "oracle")
    # the quality head = w * mf + (1 - w) * knn, w chosen on the validation slice from this grid
    mf_weights: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    validation_fraction: float = 0.1
    # leave one benchmark out: benchmark -> its RouteLLM evaluation source(s)
    lobo: dict = field(default_factory=lambda: {"mmlu": ["routellm_mmlu"], "gsm8k": ["routellm_gsm8k"]})
    # leave one subset out: chat judge preferences of chat_strong vs chat_weak
    loso_source: str = "alpaca_eval"
    loso_subsets: tuple[str, ...] = ("selfinstruct", "oasst", "koala", "helpful_base")
    chat_strong: str = "gpt-4-1106-preview"
    chat_weak: str = "mixtral-8x7b-instruct-concise"
    # knob values per two-model sweep of the served router, per protocol family
    knob_points: dict = field(default_factory=lambda: {"lobo": 24, "loso": 30, "heldout": 12, "validation": 30})
    # the product's models on held-out outcome data: source -> the split it is scored on
    product_sources: dict = field(default_factory=dict)
    product_splits: tuple[str, ...] = ("test",)
    # the realistic mix at the default knob: prompts of these prompt sources and comparison sources
    mix_prompt_sources: tuple[str, ...] = ("arena_hard_v01", "arena_hard_v2")
    mix_comparison_sources: tuple[str, ...] = ("alpaca_eval",)
    mix_reference: str = "claude-opus-4.5"
    default_knob: float = 0.5


def prompt_key(prompt: str) -> str:
    return "h:" + hashlib.sha1(str(prompt).encode("utf-8", "replace")).hexdigest()[:16]


def _fb_ids(fb: pd.DataFrame) -> pd.Series:
    if "prompt_id" in fb and fb["prompt_id"].notna().all():
        return fb["prompt_id"].astype(str)
    return fb["prompt"].map(prompt_key)


# ----------------------------------------------------------------------------- prompt table
@dataclass
class PromptTable:
    """Every prompt the preference model and the evaluation see, once."""
    keys: list[str]
    texts: list[str]
    row: dict[str, int]
    emb: np.ndarray | None = None          # [n, d] normalized embeddings
    task_probs: np.ndarray | None = None   # [n, len(TASKS)]

    @classmethod
    def build(cls, data: TrainingData) -> "PromptTable":
        frames = [data.outcomes[["prompt_id", "prompt"]], data.comparisons[["prompt_id", "prompt"]]]
        fb = data.feedback_comparisons
        if len(fb):
            frames.append(pd.DataFrame({"prompt_id": _fb_ids(fb), "prompt": fb["prompt"]}))
        allp = pd.concat(frames, ignore_index=True).drop_duplicates("prompt_id")
        keys = allp["prompt_id"].astype(str).tolist()
        return cls(keys, allp["prompt"].astype(str).tolist(), {k: i for i, k in enumerate(keys)})

    def idx(self, prompt_ids: Sequence) -> np.ndarray:
        return np.array([self.row[str(p)] for p in prompt_ids], dtype=np.int64)


# ----------------------------------------------------------------------------- training sets
@dataclass
class Pool:
    """Rows a preference model (and the baselines) may learn from."""
    outcomes: pd.DataFrame
    comparisons: pd.DataFrame
    name: str = ""


def _drop_held(df: pd.DataFrame, h: Holdout, lobo_sources: Sequence[str], groups: set) -> pd.DataFrame:
    """Rows of `df` a fit under protocol `h` may learn from (also without the validation slice)."""
    keep = ~df["dup_group"].astype(str).isin(groups) if "dup_group" in df else pd.Series(True, index=df.index)
    if h.benchmark is not None:
        if "benchmark" in df:
            keep &= df["benchmark"].astype("string").str.lower().fillna("") != h.benchmark
        keep &= ~df["source"].isin(lobo_sources)
    if h.subset is not None and "subset" in df:
        keep &= ~((df["source"] == h.subset[0]) & (df["subset"].astype("string") == h.subset[1])).fillna(False)
    return df[keep.to_numpy()]


def feedback_rows(data: TrainingData) -> pd.DataFrame:
    fb = data.feedback_comparisons
    if not len(fb):
        return pd.DataFrame(columns=["prompt_id", "prompt", "model_a", "model_b", "winner", "source", "split"])
    fbc = pd.DataFrame({"prompt_id": _fb_ids(fb), "prompt": fb["prompt"], "model_a": fb["model_a"],
                        "model_b": fb["model_b"], "winner": fb["winner"] if "winner" in fb else "model_a",
                        "source": "feedback", "split": "train"})
    if "preference" in fb:
        fbc["preference"] = fb["preference"]
    return fbc


def training_pool(data: TrainingData, ev: EvalConfig, h: Holdout, val_groups: set,
                  held_texts: Sequence[str] = ()) -> Pool:
    """The rows protocol `h` learns from: training splits (+ the RouteLLM evaluation folds it
    does not score), without its held-out groups, the held-out data itself, nor the validation
    slice. ``held_texts``: the held-out prompts, to drop near-duplicate feedback prompts."""
    o, c = data.outcomes, data.comparisons
    is_eval = o["source"].isin(ev.two_model_benchmarks)
    base = o[o["split"].isin(ev.outcome_splits) & ~is_eval]
    if h.fold is not None:
        extra = o[is_eval & (o["fold"].astype("Float64") != float(h.fold)).fillna(True)]
    else:
        extra = o[is_eval] if ev.champion_includes_eval_folds else o.iloc[:0]
    outcomes = pd.concat([base, extra], ignore_index=True)
    comps = c[c["split"].isin(ev.comparison_splits) & ~c["source"].isin(ev.drop_derived_comparisons)]
    lobo_sources = ev.lobo.get(h.benchmark, ()) if h.benchmark else ()
    groups = h.groups | val_groups
    outcomes = _drop_held(outcomes, h, lobo_sources, groups)
    comps = _drop_held(comps, h, lobo_sources, groups)
    fb = feedback_rows(data)
    if len(fb) and len(held_texts):
        fb = fb[~feedback_leaks(fb["prompt"].tolist(), held_texts)]
    comps = pd.concat([comps, fb], ignore_index=True) if len(fb) else comps
    return Pool(outcomes.reset_index(drop=True), comps.reset_index(drop=True), h.name)


def classifier_prompts(data: TrainingData, holdouts: Sequence[Holdout], ev: EvalConfig) -> dict[str, pd.DataFrame]:
    """The classifier's fine-tuning input (train + validation prompts) without any prompt of a
    left-out benchmark or subset nor a near duplicate of one, so that one fine-tuned encoder
    serves every protocol; the test prompts are untouched (reported only)."""
    out = dict(data.prompts)
    for split in ("train", "validation"):
        df = out[split]
        for h in holdouts:
            if h.benchmark is not None or h.subset is not None:
                df = _drop_held(df.assign(source_label=df["source_label"]), h, (), h.groups)
                if h.benchmark is not None:   # labelled prompts name their benchmark in source / source_label
                    lab = df["source_label"].astype("string").str.lower().fillna("")
                    df = df[(df["source"].str.lower() != h.benchmark) & (lab != h.benchmark)]
        log.info("classifier %s prompts: %d of %d after leaving out %s", split, len(df), len(out[split]),
                 [h.name for h in holdouts if h.benchmark or h.subset])
        out[split] = df.reset_index(drop=True)
    return out


def fit_preference(cfg: PreferenceConfig, table: PromptTable, pool: Pool, priors: dict[str, float],
                   model_features: pd.DataFrame | None = None, feature_sources: dict[str, str] | None = None
                   ) -> PreferenceModel:
    """Fit on the pool. With `model_features` (autoroute.model_features), every model
    with a feature row is learned too, those without rows in the pool through their
    features alone (cold start)."""
    o = pool.outcomes.assign(prompt_idx=table.idx(pool.outcomes["prompt_id"]))[["prompt_idx", "model", "score", "source"]]
    c = pool.comparisons.assign(prompt_idx=table.idx(pool.comparisons["prompt_id"]))
    cols = ["prompt_idx", "model_a", "model_b", "winner"] + (["preference"] if "preference" in c else [])
    c = c[cols]
    if "preference" in c and c["preference"].isna().any():
        c = c.copy()
        from autoroute.preference import winner_to_target
        miss = c["preference"].isna()
        c.loc[miss, "preference"] = [winner_to_target(w) if isinstance(w, str) else np.nan
                                     for w in c.loc[miss, "winner"]]
        c = c[c["preference"].notna()]
    models = sorted(set(o["model"]) | set(c["model_a"]) | set(c["model_b"]))
    cold = [] if model_features is None else sorted(set(model_features.index) - set(models))
    log.info("preference fit %s: %d outcomes, %d comparisons, %d models (+%d through their features only)",
             pool.name, len(o), len(c), len(models), len(cold))
    return PreferenceModel(cfg).fit(table.emb, c, o, models + cold, priors=priors, model_features=model_features,
                                    feature_sources=feature_sources)


# ----------------------------------------------------------------------------- baselines
def _matrix(outcomes: pd.DataFrame, value: str = "score") -> pd.DataFrame:
    return outcomes.pivot_table(index="prompt_id", columns="model", values=value, aggfunc="mean")


class BucketPredictor:
    """Mean score per (bucket, model) from the pool, shrunk to the model's mean;
    a model absent from the pool gets its prior. bucket_fn(prompt rows) -> labels."""

    def __init__(self, pool: Pool, table: PromptTable, bucket_fn: Callable[[np.ndarray], np.ndarray],
                 priors: dict[str, float], shrinkage: float = 5.0):
        self.bucket_fn, self.priors = bucket_fn, priors
        mat = _matrix(pool.outcomes)
        b = bucket_fn(table.idx(mat.index))
        self.model_mean = mat.mean()
        self.tab: dict = {}
        for bucket in np.unique(b):
            sub = mat[b == bucket]
            n, s = sub.notna().sum(), sub.sum()
            self.tab[bucket] = (s + shrinkage * self.model_mean) / (n + shrinkage)

    def predict(self, rows: np.ndarray, models: Sequence[str]) -> np.ndarray:
        b = self.bucket_fn(rows)
        out = np.empty((len(rows), len(models)))
        for j, m in enumerate(models):
            base = float(self.model_mean.get(m, np.nan))
            if np.isnan(base):
                base = self.priors.get(m, 0.5)
            out[:, j] = [float(self.tab[x].get(m, base)) if x in self.tab and not np.isnan(
                self.tab[x].get(m, np.nan)) else base for x in b]
        return out


def knn_from_pool(pool: Pool, table: PromptTable, k: int = 20, priors: dict[str, float] | None = None):
    """The kNN quality head (autoroute.bundle.KNNQuality) over the pool's outcome matrix."""
    from autoroute.bundle import KNNQuality

    mat = _matrix(pool.outcomes)
    return KNNQuality(table.emb[table.idx(mat.index)], mat.to_numpy(np.float32), list(mat.columns), k, priors)


class KNNPredictor:
    """Mean score of each model over the k nearest pool prompts (cosine) it answered."""

    def __init__(self, pool: Pool, table: PromptTable, k: int = 20, priors: dict[str, float] | None = None):
        self.table, self.head = table, knn_from_pool(pool, table, k, priors)

    def predict(self, rows: np.ndarray, models: Sequence[str]) -> np.ndarray:
        return self.head.predict(self.table.emb[rows], models)


def make_baselines(names: Sequence[str], pool: Pool, table: PromptTable, ev: EvalConfig,
                   priors: dict[str, float]) -> dict[str, Callable[[np.ndarray, Sequence[str]], np.ndarray]]:
    """Predictors ``f(rows, models) -> [n, m]`` for the learnable baselines."""
    out = {}
    for name in names:
        if name == "length":
            lengths = np.array([len(t) for t in table.texts])
            pool_rows = table.idx(pool.outcomes["prompt_id"].unique())
            edges = np.quantile(lengths[pool_rows], np.linspace(0, 1, ev.length_bins + 1)[1:-1]) \
                if len(pool_rows) else np.array([])
            out[name] = BucketPredictor(pool, table, lambda r, e=edges: np.searchsorted(e, lengths[r]),
                                        priors, ev.bucket_shrinkage).predict
        elif name == "knn":
            out[name] = KNNPredictor(pool, table, ev.knn_k, priors).predict
        elif name == "classifier_prior":
            task = table.task_probs.argmax(1)
            out[name] = BucketPredictor(pool, table, lambda r: task[r], priors, ev.bucket_shrinkage).predict
        elif name not in ("random", "oracle"):
            raise ValueError(f"evaluation.baselines: unknown baseline {name!r} "
                             "(known: random, length, knn, classifier_prior, oracle)")
    return out


# ----------------------------------------------------------------------------- evaluation sets
@dataclass
class PairSet:
    """A two-model set: per prompt, the true score of the strong and of the weak model."""
    name: str
    strong: str
    weak: str
    meta: pd.DataFrame            # one row per prompt: prompt_id, prompt, source, dup_group (+ fold, subset, benchmark)
    s: np.ndarray
    w: np.ndarray

    def take(self, mask) -> "PairSet":
        m = np.asarray(mask, bool)
        return PairSet(self.name, self.strong, self.weak, self.meta[m].reset_index(drop=True), self.s[m], self.w[m])

    def __len__(self) -> int:
        return len(self.s)


def outcome_pairs(data: TrainingData, name: str, sources: Sequence[str], strong: str, weak: str,
                  splits: Sequence[str]) -> PairSet:
    o = data.outcomes
    rows = o[o["source"].isin(sources) & o["split"].isin(splits) & o["model"].isin([strong, weak])]
    mat = rows.pivot_table(index="prompt_id", columns="model", values="score", aggfunc="mean")
    mat = mat.dropna() if {strong, weak} <= set(mat.columns) else mat.iloc[:0].reindex(columns=[strong, weak])
    meta = rows.drop_duplicates("prompt_id").set_index("prompt_id").loc[mat.index].reset_index()
    return PairSet(name, strong, weak, meta, mat[strong].to_numpy(float), mat[weak].to_numpy(float))


def chat_pairs(data: TrainingData, name: str, source: str, strong: str, weak: str,
               splits: Sequence[str] | None = None) -> PairSet:
    """Judge preferences between `strong` and `weak`: strong's score = P(strong's answer is
    preferred), weak's = 1 - that (soft labels, so the oracle stays well below 1)."""
    c = data.comparisons
    c = c[(c["source"] == source) & (((c["model_a"] == strong) & (c["model_b"] == weak))
                                     | ((c["model_a"] == weak) & (c["model_b"] == strong)))]
    if splits is not None:
        c = c[c["split"].isin(splits)]
    pref = c["preference"].astype(float).where(c["model_a"] == strong, 1.0 - c["preference"].astype(float))
    df = c.assign(p=pref.to_numpy()).groupby("prompt_id", sort=True).agg(
        prompt=("prompt", "first"), source=("source", "first"), subset=("subset", "first"),
        split=("split", "first"), dup_group=("dup_group", "first"), p=("p", "mean")).reset_index()
    return PairSet(name, strong, weak, df.drop(columns="p"), df["p"].to_numpy(float), 1.0 - df["p"].to_numpy(float))


def allowed(meta: pd.DataFrame, h: Holdout, lobo_sources: Sequence[str], groups: set) -> np.ndarray:
    """Which prompts of a set protocol `h` may use for validation (none of its held-out data)."""
    keep = _drop_held(meta.assign(_i=np.arange(len(meta))), h, lobo_sources, groups)
    m = np.zeros(len(meta), bool)
    m[keep["_i"].to_numpy()] = True
    return m


# ----------------------------------------------------------------------------- fits per protocol
@dataclass
class Fit:
    holdout: Holdout
    pool: Pool
    preference: PreferenceModel
    knn: object | None
    mf_weight: float
    validation: dict = field(default_factory=dict)   # weight -> mean validation APGR

    def head(self, table: PromptTable, rows: np.ndarray, models: Sequence[str]) -> np.ndarray:
        """The quality head the bundle serves, on raw (cached) features."""
        mf = self.preference.predict(table.emb[rows], list(models))
        knn = self.knn.predict(table.emb[rows], list(models)) if self.knn is not None and self.mf_weight < 1 else None
        return blend(mf, knn, self.mf_weight)


def fit_protocol(pref_cfg: PreferenceConfig, table: PromptTable, data: TrainingData, ev: EvalConfig, h: Holdout,
                 val_groups: set, val_sets: Sequence[PairSet], priors: dict[str, float],
                 held_texts: Sequence[str] = (), model_features: pd.DataFrame | None = None,
                 feature_sources: dict[str, str] | None = None) -> Fit:
    """Fit the preference model and the kNN head on the protocol's pool; choose the blend weight
    on the validation slice (two-model APGR of each validation set), never on test data."""
    pool = training_pool(data, ev, h, val_groups, held_texts)
    pref = fit_preference(pref_cfg, table, pool, priors, model_features, feature_sources)
    weights = sorted(set(float(w) for w in ev.mf_weights))
    knn = knn_from_pool(pool, table, ev.knn_k, priors) if min(weights) < 1.0 else None
    lobo_sources = ev.lobo.get(h.benchmark, ()) if h.benchmark else ()
    preds = []
    for vs in val_sets:
        vs = vs.take(allowed(vs.meta, h, lobo_sources, h.groups))
        if len(vs) < 2 or np.allclose(vs.s, vs.w):
            continue
        rows = table.idx(vs.meta["prompt_id"])
        mf = pref.predict(table.emb[rows], [vs.strong, vs.weak])
        kn = knn.predict(table.emb[rows], [vs.strong, vs.weak]) if knn is not None else mf
        preds.append((vs, mf, kn))
    val = {}
    for w in weights:
        apgrs = []
        for vs, mf, kn in preds:
            p = blend(mf, kn, w)
            apgrs.append(M.two_model_sweep(p[:, 0] - p[:, 1], vs.s, vs.w).apgr)
        val[w] = float(np.mean(apgrs)) if apgrs else float("nan")
    finite = {w: v for w, v in val.items() if np.isfinite(v)}
    best = max(finite, key=lambda w: (finite[w], w)) if finite else max(weights)
    log.info("%s: blend weight %.2f chosen on validation %s", h.name, best, {k: round(v, 4) for k, v in val.items()})
    return Fit(h, pool, pref, knn if best < 1.0 else None, best, val)


def baseline_scores(fit: Fit, table: PromptTable, ev: EvalConfig, ps: PairSet, priors: dict[str, float]
                    ) -> dict[str, np.ndarray]:
    """Raw router scores (predicted strong - weak) of the head and of the learnable baselines."""
    rows = table.idx(ps.meta["prompt_id"])
    pair = [ps.strong, ps.weak]
    out = {"head": fit.head(table, rows, pair)}
    for name, f in make_baselines([b for b in ev.baselines if b not in ("random", "oracle")],
                                  fit.pool, table, ev, priors).items():
        out[name] = f(rows, pair)
    return {k: p[:, 0] - p[:, 1] for k, p in out.items()}


def fixed_baselines(ps: PairSet, names: Sequence[str]) -> dict[str, M.TwoModelResult]:
    out = {}
    if "random" in names:
        out["random"] = M.two_model_sweep(np.zeros(len(ps)), ps.s, ps.w)
    if "oracle" in names:
        out["oracle"] = M.two_model_sweep(M.oracle_two_model_scores(ps.s, ps.w), ps.s, ps.w)
    return out


def nmodel_matrix(data: TrainingData, sources: Sequence[str], splits: Sequence[str], models: Sequence[str] | None = None,
                  min_coverage: float = 0.95) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(score, cost) prompt x model matrices over the models (nearly) every prompt has."""
    o = data.outcomes
    rows = o[o["source"].isin(sources) & o["split"].isin(splits)]
    if models is not None:
        rows = rows[rows["model"].isin(models)]
    if rows.empty:
        return pd.DataFrame(), pd.DataFrame()
    score, cost = _matrix(rows), _matrix(rows, "cost").reindex_like(_matrix(rows))
    keep_m = [m for m in score.columns if score[m].notna().mean() > min_coverage]
    score, cost = score[keep_m], cost[keep_m]
    keep = score.notna().all(1)
    return score[keep], cost[keep]


__all__ = ["knn_from_pool", "EvalConfig", "PromptTable", "Pool", "training_pool", "fit_preference", "make_baselines",
           "prompt_key", "classifier_prompts", "PairSet", "outcome_pairs", "chat_pairs", "Fit", "fit_protocol",
           "baseline_scores", "fixed_baselines", "nmodel_matrix", "allowed", "feedback_rows"]
