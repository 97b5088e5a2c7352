"""The preference model on the product's kind of data (real rows of data/processed,
built here first when missing): a model whose per-prompt rows are all held out is
predicted, through its card's features, better than by its prior alone; and every
offered model in a decision of a trained bundle is scored from learned or measured
evidence, and the decision says which."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autoroute.catalog import Catalog
from autoroute.config import load_config
from autoroute.model_features import model_features
from autoroute.preference import PreferenceConfig
from autoroute.types import TASKS

from training.preference_report import cold_start
from training.routing import Pool, PromptTable

ROOT = Path(__file__).resolve().parents[1]
PROCESSED = ROOT / "data" / "processed"
HELD_OUT = "gpt-4o-mini"          # an offered model with real rows (ZeroEval) and its own Arena ratings
SOURCE = "zeroeval_crux"


def text_features(texts, dim: int = 64) -> np.ndarray:
    """A cheap deterministic prompt featurizer (character n-gram hashing + SVD): the
    cold-start mechanism does not depend on the prompt encoder, and this keeps the
    real-data slice fast (the pipeline's own numbers use the served encoder)."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import HashingVectorizer
    h = HashingVectorizer(n_features=2 ** 16, analyzer="char_wb", ngram_range=(3, 4),
                          alternate_sign=False).transform(list(texts))
    return TruncatedSVD(dim, random_state=0).fit_transform(h).astype(np.float32)


@pytest.fixture(scope="module")
def real_slice():
    """CRUXEval train prompts (every ZeroEval model but the held-out one learns from
    them) and, for the held-out model, CRUXEval validation and test prompts no
    training row holds."""
    if not (PROCESSED / "arena_ratings.parquet").exists():
        subprocess.run([str(Path(sys.executable).with_name("dvc")), "repro"], cwd=ROOT, check=True)
    o = pd.read_parquet(PROCESSED / "outcomes.parquet")
    o = o[o["source"] == SOURCE].reset_index(drop=True)
    rng = np.random.default_rng(0)

    def pick(split, n):
        ids = np.sort(o.loc[o["split"] == split, "prompt_id"].unique())
        return set(rng.permutation(ids)[:n])

    train_ids = pick("train", 300)
    eval_ids = pick("validation", 100) | pick("test", 200)
    rows = o[o["prompt_id"].isin(train_ids | eval_ids)].reset_index(drop=True)
    prompts = rows.drop_duplicates("prompt_id")
    keys = prompts["prompt_id"].astype(str).tolist()
    task = np.zeros((len(keys), len(TASKS)))
    task[:, TASKS.index("coding")] = 1.0       # CRUXEval: predict the output of a Python function
    table = PromptTable(keys, prompts["prompt"].tolist(), {k: i for i, k in enumerate(keys)},
                        text_features(prompts["prompt"]), task)
    cfg = load_config()
    catalog = Catalog.from_config(cfg.catalog)
    ratings = pd.read_parquet(PROCESSED / "arena_ratings.parquet")
    feats, sources = model_features(catalog, sorted(rows["model"].unique()), ratings, str(cfg.data.priors.reference))
    train = rows[rows["prompt_id"].isin(train_ids)]
    pool = Pool(train, pd.DataFrame(columns=["prompt_id", "model_a", "model_b", "winner"]), "crux-train")
    return table, pool, rows[rows["prompt_id"].isin(eval_ids)], catalog, feats, sources


def test_held_out_model_is_predicted_better_than_by_its_prior(real_slice):
    table, pool, eval_rows, catalog, feats, sources = real_slice
    assert (pool.outcomes["model"] == HELD_OUT).any() and sources[HELD_OUT] == "measured_prior"
    cfg = PreferenceConfig(dim=16, hidden=0, epochs=10, batch_size=512, lr=1e-2, dropout=0.0, prior_strength=5.0,
                           weight_decay=1.0)
    res = cold_start(cfg, table, pool, HELD_OUT, catalog, feats, sources, {}, eval_rows)
    print(json.dumps(res, indent=1))
    assert res["rows"] >= 250 and res["evidence"] == "measured_prior"
    # its prior alone: the router's prior for the task (Arena coding, as P(win) against the reference)
    assert res["cold/logloss"] < res["prior/logloss"] - 0.03
    assert res["cold/brier"] < res["prior/brier"] and res["cold/ece"] < res["prior/ece"]
    assert res["cold/auc"] > 0.52            # the prior is one number per task: AUC 0.5


def test_every_offered_model_in_a_decision_rests_on_evidence_and_says_which(tiny_run):
    from autoroute.bundle import load_router
    from autoroute.types import Request

    man = json.loads((tiny_run["bundle"] / "manifest.json").read_text())
    router = load_router(tiny_run["bundle"])
    offered = set(router.catalog.offered)
    assert offered <= set(man["models"])                     # the preference model scores every offered model
    evidence = dict(zip(man["models"], man["sources"]))
    prompts = ["The lighthouse keeper had not seen a ship in forty days when the letter arrived",
               "derivative of x^3 * sin(x)", "Tariffs versus subsidies as tools of industrial policy"]
    decisions = router.route_batch([Request.model_validate({"messages": [{"role": "user", "content": p}]})
                                    for p in prompts])
    learned = [d for d in decisions if d.tier == 3]
    assert learned
    for d in learned:
        assert set(d.scores) == offered
        for m in offered:
            assert d.score_sources[m] == evidence[m]
            assert d.score_sources[m] in ("learned", "measured_prior", "proxy_prior", "family_prior")
        assert d.score_sources["gpt-5.2"] == "family_prior"        # no rows, no Arena rating of its own
        assert d.score_sources["claude-haiku-4.5"] == "measured_prior"  # no rows, its own Arena ratings
