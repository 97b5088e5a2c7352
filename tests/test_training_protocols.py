"""Leave-one-benchmark-out and leave-one-subset-out: no prompt of the held-out
benchmark (or subset), nor a near duplicate of one, in ANY training input of
the protocol's fit: preference outcomes and comparisons, the kNN head, the
feedback comparisons and the classifier's fine-tuning prompts."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training import protocols as P
from training import routing
from training.data import TrainingData

MMLU_Q = "Which of the following best describes the function of mitochondria in eukaryotic cells? A) B) C) D)"
MMLU_NEAR = MMLU_Q + " Answer with the letter."
GSM_Q = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many?"


def _data() -> TrainingData:
    o = pd.DataFrame([
        # the RouteLLM MMLU evaluation set (its own source) and GSM8K
        dict(prompt_id="m1", prompt=MMLU_Q, model="gpt-4-1106-preview", score=1.0, source="routellm_mmlu",
             benchmark="mmlu", split="eval", fold=0, dup_group="g_m1"),
        dict(prompt_id="m1", prompt=MMLU_Q, model="mixtral-8x7b-instruct", score=0.0, source="routellm_mmlu",
             benchmark="mmlu", split="eval", fold=0, dup_group="g_m1"),
        dict(prompt_id="s1", prompt=GSM_Q, model="gpt-4-1106-preview", score=1.0, source="routellm_gsm8k",
             benchmark="gsm8k", split="eval", fold=1, dup_group="g_s1"),
        # MMLU rows inside another outcome source (by identity: benchmark column)
        dict(prompt_id="l1", prompt="A different MMLU question about law", model="gemma-2-9b-it", score=1.0,
             source="llmrouter_dcrouter", benchmark="MMLU", split="train", fold=None, dup_group="g_l1"),
        # a near duplicate of an MMLU prompt in another source (same dup_group)
        dict(prompt_id="r1", prompt=MMLU_NEAR, model="claude-2", score=1.0, source="routerbench_arc_challenge",
             benchmark="arc_challenge", split="train", fold=None, dup_group="g_m1"),
        # clean training rows
        dict(prompt_id="r2", prompt="Which gas do plants absorb?", model="claude-2", score=1.0,
             source="routerbench_arc_challenge", benchmark="arc_challenge", split="train", fold=None,
             dup_group="g_r2"),
    ])
    c = pd.DataFrame([
        dict(prompt_id="a1", prompt="Write a poem about autumn", model_a="gpt-4-1106-preview",
             model_b="mixtral-8x7b-instruct-concise", winner=None, preference=0.7, source="alpaca_eval",
             subset="koala", split="train", dup_group="g_a1"),
        dict(prompt_id="a2", prompt="How do I bake bread?", model_a="gpt-4-1106-preview",
             model_b="mixtral-8x7b-instruct-concise", winner=None, preference=0.4, source="alpaca_eval",
             subset="oasst", split="train", dup_group="g_a2"),
        # an arena prompt that is a near duplicate of the MMLU question
        dict(prompt_id="x1", prompt=MMLU_NEAR, model_a="claude-2", model_b="yi-34b-chat", winner="model_a",
             preference=1.0, source="arena", subset=None, split="train", dup_group="g_m1"),
        # an arena prompt that is a near duplicate of a koala instruction
        dict(prompt_id="x2", prompt="Write a poem about autumn!", model_a="claude-2", model_b="yi-34b-chat",
             winner="model_b", preference=0.0, source="arena", subset=None, split="train", dup_group="g_a1"),
        dict(prompt_id="x3", prompt="Plan a trip to Rome", model_a="claude-2", model_b="yi-34b-chat",
             winner="model_b", preference=0.0, source="arena", subset=None, split="train", dup_group="g_x3"),
    ])
    prompts = {
        "train": pd.DataFrame([
            dict(prompt_id="p1", prompt="Some GSM8K training question about apples", task="math", source="gsm8k",
                 source_label="gsm8k_train", group="gsm8k", dup_group="g_p1"),
            dict(prompt_id="p2", prompt="An MMLU question used as a labelled prompt", task="analysis",
                 source="llmrouter_query", source_label="mmlu", group="llmrouter_query:mmlu", dup_group="g_p2"),
            dict(prompt_id="p3", prompt=MMLU_NEAR, task="analysis", source="authored", source_label="x",
                 group="authored:x", dup_group="g_m1"),
            dict(prompt_id="p4", prompt="Write a function that reverses a list", task="coding",
                 source="codealpaca", source_label="code_alpaca_2k", group="codealpaca", dup_group="g_p4"),
        ]),
        "validation": pd.DataFrame([
            dict(prompt_id="p5", prompt=GSM_Q + " (copy)", task="math", source="authored", source_label="y",
                 group="authored:y", dup_group="g_s1"),
            dict(prompt_id="p6", prompt="Translate hello to French", task="translation", source="authored",
                 source_label="z", group="authored:z", dup_group="g_p6"),
        ]),
        "test": pd.DataFrame(columns=["prompt_id", "prompt", "task", "source", "source_label", "group", "dup_group"]),
    }
    fb = pd.DataFrame([dict(prompt=MMLU_Q, model_a="claude-2", model_b="yi-34b-chat", winner="model_a"),
                       dict(prompt="Tell me a joke about cats and dogs please", model_a="claude-2",
                            model_b="yi-34b-chat", winner="model_b")])
    return TrainingData(prompts, c, o, fb, pd.DataFrame())


EV = routing.EvalConfig(drop_derived_comparisons=(), mf_weights=(0.5,))


def _holdouts(data):
    return {h.name: h for h in P.protocols(data, dict(EV.lobo), EV.loso_source, EV.loso_subsets, [0, 1])}


def test_lobo_mmlu_holds_no_mmlu_prompt_nor_near_duplicate_in_any_input():
    data = _data()
    h = _holdouts(data)["lobo/mmlu"]
    held_texts = [MMLU_Q, MMLU_NEAR]
    pool = routing.training_pool(data, EV, h, set(), held_texts)
    assert set(pool.outcomes["prompt_id"]) == {"s1", "r2"}            # GSM8K stays: only MMLU is left out
    assert "x1" not in set(pool.comparisons["prompt_id"])              # the arena near duplicate
    fb = pool.comparisons[pool.comparisons["source"] == "feedback"]
    assert fb["prompt"].tolist() == ["Tell me a joke about cats and dogs please"]
    clf = routing.classifier_prompts(data, [h], EV)
    assert set(clf["train"]["prompt_id"]) == {"p1", "p4"}               # MMLU-labelled and near duplicate gone
    # the kNN head is built from the pool's outcome matrix only
    table = routing.PromptTable.build(data)
    table.emb = np.eye(len(table.texts), 8, dtype=np.float32)
    knn = routing.knn_from_pool(pool, table, 2)
    assert len(knn.emb) == pool.outcomes["prompt_id"].nunique()
    inputs = {"outcomes": pool.outcomes, "comparisons": pool.comparisons, "knn": pool.outcomes,
              "classifier": pd.concat([clf["train"], clf["validation"]])}
    P.check_no_leak(h, inputs, data, EV.lobo["mmlu"])                 # passes


@pytest.mark.parametrize("table", ["outcomes", "comparisons", "knn", "classifier", "feedback"])
def test_the_leakage_check_catches_each_training_input(table):
    data = _data()
    h = _holdouts(data)["lobo/mmlu"]
    raw = {"outcomes": data.outcomes, "comparisons": data.comparisons, "knn": data.outcomes,
           "classifier": data.prompts["train"],
           "feedback": data.feedback_comparisons.assign(
               leak=P.feedback_leaks(data.feedback_comparisons["prompt"].tolist(), [MMLU_Q]))}
    with pytest.raises(AssertionError, match="lobo/mmlu"):
        P.check_no_leak(h, {table: raw[table]}, data, EV.lobo["mmlu"])


def test_lobo_gsm8k_drops_the_benchmark_by_identity_and_by_near_duplicate():
    data = _data()
    h = _holdouts(data)["lobo/gsm8k"]
    pool = routing.training_pool(data, EV, h, set())
    assert "s1" not in set(pool.outcomes["prompt_id"]) and "m1" in set(pool.outcomes["prompt_id"])
    clf = routing.classifier_prompts(data, [h], EV)
    assert "p1" not in set(clf["train"]["prompt_id"])                   # a GSM8K training question
    assert "p5" not in set(clf["validation"]["prompt_id"])              # near duplicate of a GSM8K test question


def test_loso_leaves_the_subset_and_its_near_duplicates_out():
    data = _data()
    hs = _holdouts(data)
    assert {"loso/koala", "loso/oasst"} <= set(hs) and "loso/selfinstruct" not in hs   # no rows: skipped
    pool = routing.training_pool(data, EV, hs["loso/koala"], set())
    ids = set(pool.comparisons["prompt_id"])
    assert "a1" not in ids and "x2" not in ids and {"a2", "x3"} <= ids


def test_validation_slice_is_out_of_every_fit_and_in_domain_folds_hold_their_fold_out():
    data = _data()
    hs = _holdouts(data)
    pool = routing.training_pool(data, EV, hs["champion"], {"g_r2", "g_x3"})
    assert "r2" not in set(pool.outcomes["prompt_id"]) and "x3" not in set(pool.comparisons["prompt_id"])
    fold0 = routing.training_pool(data, EV, hs["heldout/0"], set())
    assert "m1" not in set(fold0.outcomes["prompt_id"]) and "s1" in set(fold0.outcomes["prompt_id"])
