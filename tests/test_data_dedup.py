"""Normalization, prompt ids, MinHash near-duplicates and seeded splits."""
from __future__ import annotations

import pandas as pd

from autoroute.data.dedup import near_duplicate_groups, normalize_text, prompt_id
from autoroute.data.splits import assign_folds, pick_groups, stratified_cap


def test_prompt_id_ignores_case_spacing_and_punctuation():
    assert prompt_id("What is  the capital of France?") == prompt_id("what is the capital of france")
    assert prompt_id("What is the capital of France?") != prompt_id("What is the capital of Spain?")
    assert normalize_text("Ｆｕｌｌ-width\tTEXT!") == "full width text"


def test_near_duplicates_grouped_and_distinct_prompts_kept_apart():
    base = ("The quarterly report shows revenue grew by twelve percent while operating costs fell, "
            "driven mostly by lower cloud spending and a smaller marketing budget in the second half.")
    texts = [base, base.replace("twelve", "eleven"), "Write a haiku about the sea at night.",
             "Translate 'good morning' into Japanese.", base + " Summarize it."]
    groups = near_duplicate_groups(texts, jaccard=0.7)
    assert groups[0] == groups[1] == groups[4]
    assert len({groups[0], groups[2], groups[3]}) == 3


def test_group_picks_and_folds_are_seeded_and_deterministic():
    sizes = pd.Series({f"g{i}": 1 + i % 3 for i in range(50)})
    a, b = pick_groups(sizes, 0.2, 7, "v"), pick_groups(sizes, 0.2, 7, "v")
    assert a == b and 0 < len(a) < 50 and pick_groups(sizes, 0.2, 8, "v") != a
    folds = assign_folds(pd.Series(["x", "y", "x"]), 5, 1)
    assert folds[0] == folds[2] and folds.between(0, 4).all()


def test_stratified_cap_keeps_small_sources():
    df = pd.DataFrame({"prompt_id": [f"p{i}" for i in range(110)], "task": "math",
                       "source": ["big"] * 100 + ["small"] * 10})
    keep = stratified_cap(df, "task", 20, 0, "cap")
    assert keep.sum() == 20 and df[keep]["source"].value_counts()["small"] == 10
