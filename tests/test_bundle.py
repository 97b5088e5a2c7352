"""The champion bundle: one encoder pass for both heads, the router it rebuilds,
int8 serving, degraded mode, BentoML and MLflow pyfunc round trips."""
from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest

from autoroute.bundle import load_router, load_scorer, read_manifest
from autoroute.types import TASKS, Request

from conftest import PY, ROOT

PROMPT = "Compute the determinant of a 3x3 matrix whose rows are 1 2 3, 4 5 6, 7 8 10"


def test_manifest_lists_scored_catalog_models(tiny_run):
    man = read_manifest(tiny_run["bundle"])
    assert man["features"] == "shared"
    assert "gpt-4-1106-preview" in man["models"] and "mixtral-8x7b-instruct" in man["models"]
    assert man["tasks"] == list(TASKS)


@pytest.mark.parametrize("quantize", [False, True])
def test_scorer_runs_one_encoder_pass(tiny_run, quantize):
    scorer = load_scorer(tiny_run["bundle"], quantize=quantize)
    calls = []
    scorer.classifier.model.encoder.register_forward_hook(lambda *a: calls.append(1))
    s = scorer.score([PROMPT, "hi, translate 'good morning' into German"])
    assert len(calls) == 1                                  # both heads from one batch pass
    assert s.task_probs.shape == (2, len(TASKS))
    assert np.allclose(s.task_probs.sum(1), 1.0, atol=1e-4)
    assert s.quality.shape == (2, len(scorer.models)) and ((s.quality >= 0) & (s.quality <= 1)).all()


def test_int8_and_fp32_agree(tiny_run):
    fp32, int8 = (load_scorer(tiny_run["bundle"], quantize=q) for q in (False, True))
    a, b = (s.classifier.forward_texts([PROMPT])[0] for s in (fp32, int8))
    assert float((a * b).sum()) > 0.9         # cosine of the sentence embeddings (tiny model; full: ~0.99)
    fp32.mf_weight = int8.mf_weight = 1.0                            # the MF head alone (kNN neighbours may flip)
    qa, qb = fp32.score([PROMPT]).quality[0], int8.score([PROMPT]).quality[0]
    # the tiny encoder (4 steps) drifts under int8 mostly as a common offset: the models' order holds
    # (max per-model difference measured 0.12 on the real-data tiny run, mean 0.054, rank correlation 0.97)
    assert np.abs(qa - qb).mean() < 0.1 and np.abs(qa - qb).max() < 0.2
    # linear agreement across the ~140 models (a broken int8 path gives ~0); ranks of the many near-tied
    # tiny-run predictions are too noisy to assert on (Spearman seen between 0.77 and 0.97 across runs)
    assert np.corrcoef(qa, qb)[0, 1] > 0.75


def test_load_router_decides_with_the_learned_tier(tiny_run):
    router = load_router(tiny_run["bundle"])
    d = router.route(Request.from_prompt(PROMPT, candidates=["gpt-4-1106-preview", "mixtral-8x7b-instruct"]))
    assert d.selected_model in ("gpt-4-1106-preview", "mixtral-8x7b-instruct")
    assert d.tier in (3, 4) and not d.degraded
    assert set(d.scores) == {"gpt-4-1106-preview", "mixtral-8x7b-instruct"}


def test_low_confidence_falls_back_to_the_space_default(tiny_run):
    router = load_router(tiny_run["bundle"], overrides=["router.settings.classifier_min_confidence=1.0"])
    d = router.route(Request.from_prompt(PROMPT))
    assert "Space default" in d.reason and d.tier == 3        # the router says it fell back


def test_degraded_ok_serves_rules_when_the_learned_parts_are_broken(tiny_run, tmp_path):
    broken = shutil.copytree(tiny_run["bundle"], tmp_path / "b")
    shutil.rmtree(broken / "classifier")
    with pytest.raises(Exception):
        load_router(broken)
    router = load_router(broken, degraded_ok=True)
    assert router.degraded and router.scorer is None
    assert router.route(Request.from_prompt(PROMPT)).degraded


def test_bentoml_round_trip(tiny_run):
    code = ("from autoroute.bundle import load_router_from_bentoml; from autoroute.types import Request;"
            f"r = load_router_from_bentoml(); print(r.route(Request.from_prompt({PROMPT!r})).selected_model)")
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=180,
                         env={**os.environ, "BENTOML_HOME": str(tiny_run["bentoml_home"])})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip()


def test_mlflow_pyfunc_champion_predicts(tiny_run):
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(tiny_run["tracking_uri"])
    model = mlflow.pyfunc.load_model("models:/autoroute-router@champion")
    out = model.predict(pd.DataFrame({"prompt": [PROMPT, "Write a haiku about rain"]}))
    assert list(out.columns[:3]) == ["selected_model", "task", "tier"] and len(out) == 2
