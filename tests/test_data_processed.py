"""Checks on the real processed data of `dvc repro` (built here first when it is missing)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from autoroute.catalog import Catalog
from autoroute.config import load_config
from autoroute.data.dedup import normalize_text
from autoroute.types import TASKS

ROOT = Path(__file__).resolve().parents[1]
PROCESSED = ROOT / "data" / "processed"


@pytest.fixture(scope="module")
def data():
    if not (PROCESSED / "manifest.json").exists():
        dvc = Path(sys.executable).with_name("dvc")
        subprocess.run([str(dvc), "repro"], cwd=ROOT, check=True)
    return {"prompts": {s: pd.read_parquet(PROCESSED / "prompts" / f"{s}.parquet")
                        for s in ("train", "validation", "test")},
            "comparisons": pd.read_parquet(PROCESSED / "comparisons.parquet", columns=["prompt", "model_a", "model_b",
                                                                                        "split", "preference"]),
            "outcomes": pd.read_parquet(PROCESSED / "outcomes.parquet", columns=["prompt", "model", "split", "fold",
                                                                                  "score", "source"]),
            "manifest": json.loads((PROCESSED / "manifest.json").read_text())}


def test_no_prompt_in_training_and_evaluation(data):
    """The never_train benchmark rows (GSM8K, MMLU) are classifier-only evaluation data: they are
    kept out of the classifier's training (test below); the preference model's outcome rows of
    those benchmarks are its own training data (its leave-one-benchmark-out drops them per fold)."""
    p, c, o = data["prompts"], data["comparisons"], data["outcomes"]
    never = set(load_config().data.prompts.never_train)
    train = set(pd.concat([p["train"]["prompt"], c.loc[c["split"] == "train", "prompt"],
                           o.loc[o["split"] == "train", "prompt"]]).drop_duplicates().map(normalize_text))
    test = p["test"][~p["test"]["group"].isin(never)]
    ev = set(pd.concat([p["validation"]["prompt"], test["prompt"], c.loc[c["split"] == "test", "prompt"],
                        o.loc[o["split"] != "train", "prompt"]]).drop_duplicates().map(normalize_text))
    assert not train & ev


def test_models_resolve_and_values_in_range(data):
    catalog = Catalog.from_config(load_config().catalog)
    c, o = data["comparisons"], data["outcomes"]
    for name in set(c["model_a"]) | set(c["model_b"]) | set(o["model"]):
        assert catalog.try_resolve(name) == name
    assert c["preference"].between(0, 1).all() and o["score"].between(0, 1).all()
    assert o.loc[o["split"] == "eval", "fold"].between(0, 4).all()


def test_every_task_in_classifier_test(data):
    assert set(data["prompts"]["test"]["task"]) == set(TASKS)


def test_card_counts_match_manifest(data):
    card = (ROOT / "data" / "README.md").read_text()
    for kind, splits in data["manifest"]["outputs"].items():
        for split, info in splits.items():
            assert re.search(rf"\| {kind} \| {split} \| {info['rows']} \|", card), (kind, split)
    for split in ("train", "validation", "test"):
        assert len(data["prompts"][split]) == data["manifest"]["outputs"]["prompts"][split]["rows"]


def test_gsm8k_and_mmlu_never_in_classifier_training(data):
    """The classifier's (= the shared encoder's) training data holds no GSM8K or MMLU prompt nor
    a near-duplicate of one: those benchmarks are evaluated leave-one-benchmark-out."""
    p, o = data["prompts"], data["outcomes"]
    never = set(load_config().data.prompts.never_train)
    assert {"gsm8k", "llmrouter_query:gsm8k", "llmrouter_query:mmlu"} <= never
    fit = pd.concat([p["train"], p["validation"]])
    assert not fit["group"].isin(never).any()
    assert {"gsm8k", "llmrouter_query:mmlu"} <= set(p["test"]["group"])   # held out, evaluated
    bench = set(p["test"].loc[p["test"]["group"].isin(never), "dup_group"])
    bench |= set(o.loc[o["source"].isin(["routellm_gsm8k", "routellm_mmlu"]), "prompt"].map(normalize_text))
    assert not fit["dup_group"].isin(bench).any()
    assert not fit["prompt"].map(normalize_text).isin(bench).any()


def test_modern_splits_on_the_real_data(data):
    o = pd.read_parquet(PROCESSED / "outcomes.parquet", columns=["prompt", "source", "subject", "split", "dup_group"])
    swe = o[o["source"] == "swebench_verified"]
    assert len(swe) and (swe.groupby("subject")["split"].nunique() == 1).all()
    assert set(swe["split"]) == {"train", "validation", "test"}
    gsm = o[o["source"] == "zeroeval_gsm8k"]
    assert len(gsm) and set(gsm["split"]) == {"test"}
    train = o[o["split"] == "train"]
    assert not set(gsm["dup_group"]) & set(train["dup_group"])
    assert not set(gsm["prompt"].map(normalize_text)) & set(data["prompts"]["train"]["prompt"].map(normalize_text))


def test_committed_priors_are_what_the_data_gives():
    """conf/catalog/priors.yaml is a DVC output: it must match a fresh computation."""
    import yaml

    from autoroute.priors import compute

    cfg = load_config()
    ratings = pd.read_parquet(PROCESSED / "arena_ratings.parquet")
    fresh = compute(Catalog.from_config({"models": cfg.catalog.models}), ratings,
                    dict(cfg.data.priors))
    committed = yaml.safe_load(Path(cfg.paths.priors).read_text())["priors"]
    assert committed == fresh
