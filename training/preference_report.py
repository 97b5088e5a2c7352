"""What the trained preference model predicts, measured on outcome rows it never
saw: calibration of the predicted quality (probability of a good answer) per
held-out split and source, the product models' predicted quality per source and
task beside their measured quality, and the cold-start check (a model's rows
held out: its features against its prior alone)."""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import pandas as pd

from autoroute import metrics as M
from autoroute.catalog import Catalog
from autoroute.preference import PreferenceConfig, PreferenceModel
from autoroute.scoring import prior_quality
from autoroute.types import TASKS

from training.data import TrainingData
from training.routing import Pool, PromptTable, fit_preference

log = logging.getLogger(__name__)
HELDOUT_SPLITS = ("validation", "test")


def heldout_outcomes(data: TrainingData, pool: Pool, splits: Sequence[str] = HELDOUT_SPLITS) -> pd.DataFrame:
    """Outcome rows of the held-out splits whose prompt no training row holds."""
    o = data.outcomes
    seen = set(pool.outcomes["prompt_id"]) | set(pool.comparisons["prompt_id"])
    return o[o["split"].isin(splits) & ~o["prompt_id"].isin(seen)].reset_index(drop=True)


def calibrate(pref: PreferenceModel, table: PromptTable, rows: pd.DataFrame) -> dict[str, float]:
    """Fit the preference model's logit map on `rows` (validation outcomes)."""
    if rows.empty:
        log.warning("no validation outcome rows: the preference model stays uncalibrated")
        return {}
    a, b = pref.calibrate(table.emb, rows.assign(prompt_idx=table.idx(rows["prompt_id"])))
    return {"preference/calibration/scale": a, "preference/calibration/shift": b,
            "preference/calibration/rows": float(len(rows))}


def _predict_rows(pref: PreferenceModel, table: PromptTable, rows: pd.DataFrame) -> np.ndarray:
    """The predicted quality of each row's model on each row's prompt."""
    out = np.full(len(rows), np.nan)
    for m, idx in rows.groupby("model").indices.items():
        r = table.idx(rows["prompt_id"].iloc[idx])
        out[idx] = pref.predict(table.emb[r], [m])[:, 0]
    return out


def calibration_metrics(pref: PreferenceModel, table: PromptTable, rows: pd.DataFrame,
                        prefix: str = "preference/calibration") -> dict[str, float]:
    """ECE, Brier, log-loss and AUC per held-out split (all sources) and per (split, source)."""
    if rows.empty:
        return {}
    p = _predict_rows(pref, table, rows)
    out = {}
    for split, g in rows.groupby("split"):
        ix = g.index.to_numpy()
        for k, v in M.quality_calibration(p[ix], g["score"].to_numpy(float)).items():
            out[f"{prefix}/{split}/all/{k}"] = v
        for source, gs in g.groupby("source"):
            jx = gs.index.to_numpy()
            for k, v in M.quality_calibration(p[jx], gs["score"].to_numpy(float)).items():
                out[f"{prefix}/{split}/{source}/{k}"] = v
    return out


def product_quality(pref: PreferenceModel, table: PromptTable, rows: pd.DataFrame, catalog: Catalog) -> pd.DataFrame:
    """Per offered model, held-out source and predicted task: mean predicted quality on
    the source's held-out prompts, the model's measured mean where it has rows there,
    and what the prediction rests on."""
    ids = [m for m in catalog.offered if m in pref.model_ids]
    evidence = dict(zip(ids, pref.evidence(ids)))
    recs = []
    for source, g in rows.groupby("source"):
        prompts = g["prompt_id"].drop_duplicates()
        r = table.idx(prompts)
        pred = pref.predict(table.emb[r], ids)
        task = np.array(TASKS)[table.task_probs[r].argmax(1)] if table.task_probs is not None else np.full(len(r), "")
        measured = g.pivot_table(index="prompt_id", columns="model", values="score", aggfunc="mean").reindex(prompts)
        for t in ["all", *sorted(set(task))]:
            sel = np.ones(len(r), bool) if t == "all" else task == t
            for j, m in enumerate(ids):
                meas = measured[m].to_numpy()[sel] if m in measured else np.array([])
                recs.append({"model": m, "source": source, "task": t, "prompts": int(sel.sum()),
                             "predicted": float(pred[sel, j].mean()),
                             "measured": float(np.nanmean(meas)) if np.isfinite(meas).any() else np.nan,
                             "evidence": evidence[m]})
    return pd.DataFrame(recs)


def product_metrics(table: pd.DataFrame, prefix: str = "preference/product") -> dict[str, float]:
    out = {}
    for rec in table[table["task"] == "all"].itertuples():
        out[f"{prefix}/{rec.source}/{rec.model}/predicted"] = rec.predicted
        if np.isfinite(rec.measured):
            out[f"{prefix}/{rec.source}/{rec.model}/measured"] = rec.measured
    return out


def cold_start(cfg: PreferenceConfig, table: PromptTable, pool: Pool, model: str, catalog: Catalog,
               model_features: pd.DataFrame, feature_sources: dict[str, str], priors: dict[str, float],
               eval_rows: pd.DataFrame) -> dict[str, float]:
    """Hold out every training row of `model`, refit, and score its rows in `eval_rows`
    through its features; beside it, its prior alone (the router's prior for the
    prompt's predicted task). Returns AUC / log-loss / Brier / ECE of both."""
    o, c = pool.outcomes, pool.comparisons
    blind = Pool(o[o["model"] != model], c[(c["model_a"] != model) & (c["model_b"] != model)], f"{pool.name}-no-{model}")
    fitted = fit_preference(cfg, table, blind, priors, model_features, feature_sources)
    rows = eval_rows[eval_rows["model"] == model]
    if rows.empty:
        raise ValueError(f"cold start: no evaluation rows of {model!r}")
    r = table.idx(rows["prompt_id"])
    y = rows["score"].to_numpy(float)
    cold = fitted.predict(table.emb[r], [model])[:, 0]
    cid = catalog.resolve(model)
    tasks = np.array(TASKS)[table.task_probs[r].argmax(1)]
    by_task = {t: float(prior_quality(catalog, [cid], t)[0][0]) for t in set(tasks)}
    prior = np.array([by_task[t] for t in tasks])
    out = {"rows": float(len(rows)), "evidence": fitted.evidence([model])[0]}
    for name, p in (("cold", cold), ("prior", prior)):
        for k, v in M.quality_calibration(p, y).items():
            if k != "n":
                out[f"{name}/{k}"] = v
    return out


__all__ = ["heldout_outcomes", "calibrate", "calibration_metrics", "product_quality", "product_metrics", "cold_start"]
