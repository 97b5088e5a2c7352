"""Step 1: load the DVC-built datasets, check their schema, optionally slice
them (experiment=tiny), and attach the feedback log's comparisons."""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from autoroute.types import TASKS

log = logging.getLogger(__name__)

SCHEMAS: dict[str, tuple[str, ...]] = {
    "prompts": ("prompt_id", "prompt", "task", "source"),
    "comparisons": ("prompt_id", "prompt", "model_a", "model_b", "winner", "source", "split"),
    "outcomes": ("prompt_id", "prompt", "model", "score", "cost", "source", "split"),
    "feedback_comparisons": ("prompt", "model_a", "model_b"),
}


class DataError(ValueError):
    """A dataset that is missing or does not have the expected schema."""


@dataclass
class Limits:
    """Deterministic slicing for quick runs; null = everything."""
    prompts_per_task: int | None = None       # per split, per task
    outcome_prompts_per_source: int | None = None
    comparisons_per_source: int | None = None


@dataclass
class TrainingData:
    prompts: dict[str, pd.DataFrame]            # train / validation / test
    comparisons: pd.DataFrame
    outcomes: pd.DataFrame
    feedback_comparisons: pd.DataFrame
    feedback_events: pd.DataFrame
    versions: dict[str, str] = field(default_factory=dict)   # file -> content hash
    manifest: dict = field(default_factory=dict)

    def summary(self) -> dict[str, int]:
        out = {f"prompts_{k}": len(v) for k, v in self.prompts.items()}
        out.update(comparisons=len(self.comparisons), outcomes=len(self.outcomes),
                   outcome_prompts=int(self.outcomes["prompt_id"].nunique()) if len(self.outcomes) else 0,
                   feedback_comparisons=len(self.feedback_comparisons), feedback_events=len(self.feedback_events))
        return out


def _hash(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def check_schema(df: pd.DataFrame, kind: str, where: Path | str) -> pd.DataFrame:
    missing = [c for c in SCHEMAS[kind] if c not in df.columns]
    if missing:
        raise DataError(f"dataset {where}: missing columns {missing}; a {kind} table needs "
                        f"{list(SCHEMAS[kind])} (has {list(df.columns)})")
    if kind == "prompts":
        bad = sorted(set(df["task"].dropna()) - set(TASKS))
        if bad:
            raise DataError(f"dataset {where}: unknown task labels {bad}; tasks are {list(TASKS)}")
    if kind == "outcomes" and len(df):
        s = pd.to_numeric(df["score"], errors="coerce")
        if s.isna().any() or (s < 0).any() or (s > 1).any():
            raise DataError(f"dataset {where}: column 'score' must be numbers in [0, 1]")
    return df


def _read(path: Path, kind: str, required: bool = True) -> pd.DataFrame | None:
    if not path.exists():
        if required:
            raise DataError(f"dataset {path} does not exist: run `dvc repro` (or point "
                            f"training.data.dir at a folder holding the processed tables)")
        return None
    try:
        df = pd.read_parquet(path)
    except Exception as err:  # noqa: BLE001 - a corrupt file is a data error
        raise DataError(f"dataset {path}: cannot be read as Parquet ({err})") from err
    return check_schema(df, kind, path)


def _sample_groups(df: pd.DataFrame, by: str, key: str, n: int | None, seed: int) -> pd.DataFrame:
    """Keep at most n distinct `key`s per value of `by` (all rows of a kept key)."""
    if not n or df.empty:
        return df
    keep = []
    for _, g in df.groupby(by, sort=True):
        ids = np.array(sorted(g[key].astype(str).unique()))
        rng = np.random.default_rng(seed)
        keep.extend(rng.permutation(ids)[:n].tolist())
    return df[df[key].astype(str).isin(set(keep))].reset_index(drop=True)


def _read_feedback_events(db: Path) -> pd.DataFrame:
    """The feedback log's events with their decisions' tasks (autoroute.feedback owns the format)."""
    from autoroute.feedback import read_feedback
    return read_feedback(db) if db.exists() else pd.DataFrame()


def load_data(dir: str, feedback_db: str | None = None, limits: Limits | dict | None = None,
              seed: int = 0, train_sources_exclude: Sequence[str] = ()) -> TrainingData:
    """Read `dir`/{prompts/*.parquet, comparisons, outcomes, feedback_comparisons}.parquet."""
    root = Path(dir)
    lim = Limits(**limits) if isinstance(limits, dict) else (limits or Limits())
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist: run `dvc repro` first "
                        "(or use `experiment=tiny training.data.dir=<fixture folder>`)")
    versions: dict[str, str] = {}
    prompts = {}
    for split in ("train", "validation", "test"):
        p = root / "prompts" / f"{split}.parquet"
        df = _read(p, "prompts")
        df = _sample_groups(df.assign(_row=np.arange(len(df))), "task", "_row", lim.prompts_per_task, seed)
        prompts[split] = df.drop(columns="_row")
        versions[f"prompts/{split}"] = _hash(p)
    comp_path, out_path = root / "comparisons.parquet", root / "outcomes.parquet"
    comparisons = _sample_groups(_read(comp_path, "comparisons"), "source", "prompt_id",
                                 lim.comparisons_per_source, seed)
    outcomes = _sample_groups(_read(out_path, "outcomes"), "source", "prompt_id",
                              lim.outcome_prompts_per_source, seed)
    versions["comparisons"], versions["outcomes"] = _hash(comp_path), _hash(out_path)
    if train_sources_exclude:
        comparisons = comparisons[~comparisons["source"].isin(train_sources_exclude)]
    fb_path = root / "feedback_comparisons.parquet"
    fb = _read(fb_path, "feedback_comparisons", required=False)
    if fb is not None:
        versions["feedback_comparisons"] = _hash(fb_path)
    events = _read_feedback_events(Path(feedback_db)) if feedback_db else pd.DataFrame()
    manifest = {}
    if (root / "manifest.json").exists():
        manifest = json.loads((root / "manifest.json").read_text())
        versions["manifest"] = _hash(root / "manifest.json")
    data = TrainingData(prompts, comparisons.reset_index(drop=True), outcomes.reset_index(drop=True),
                        fb if fb is not None else pd.DataFrame(columns=list(SCHEMAS["feedback_comparisons"])),
                        events, versions, manifest)
    log.info("data: %s", data.summary())
    return data


def check_names(data: TrainingData, models: Sequence[str], benchmarks: Sequence[str], where: str) -> None:
    """Every model and dataset the config names must exist in the data."""
    have_models = set(data.outcomes["model"]) | set(data.comparisons["model_a"]) | set(data.comparisons["model_b"])
    unknown = [m for m in models if m not in have_models]
    if unknown:
        raise DataError(f"config {where}: models {unknown} have no outcomes or comparisons in the data "
                        f"(known: {sorted(have_models)[:30]})")
    have_sources = set(data.outcomes["source"])
    missing = [b for b in benchmarks if b not in have_sources]
    if missing:
        raise DataError(f"config {where}: datasets {missing} are not outcome sources in the data "
                        f"(sources: {sorted(have_sources)})")


__all__ = ["DataError", "Limits", "TrainingData", "load_data", "check_schema", "check_names", "SCHEMAS"]
