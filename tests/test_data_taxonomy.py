"""The source-label -> task mapping and the alias table."""
from __future__ import annotations

from pathlib import Path

import pytest

from autoroute.catalog import Catalog
from autoroute.config import load_config
from autoroute.data.taxonomy import LLMROUTER_TASKS, SUMMARIZATION_TEMPLATES, map_label, mapping_tables
from autoroute.types import TASKS

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def test_every_mapped_task_is_in_the_taxonomy():
    for name, mapping in mapping_tables().items():
        tasks = mapping.values() if isinstance(mapping, dict) else [t for t, _ in mapping]
        assert set(tasks) <= set(TASKS), name


@pytest.mark.parametrize("source,label,prompt,task", [
    ("llmrouter_query", "gsm8k", "", "math"),
    ("llmrouter_query", "trivia_qa", "", "simple_qa"),
    ("arena_hard_v2", "creative_writing", "", "creative_writing"),
    ("codealpaca", "code_alpaca_2k", "Fix the bug in this function.\n\ndef f(): retur 1", "debugging"),
    ("codealpaca", "code_alpaca_2k", "Write a function that sorts a list.", "coding"),
    ("arena_hard_v01", "Bug-Related German Translation", "", "translation"),
    ("arena_hard_v01", "Python Web Scraping", "", "coding"),
    ("self_instruct", "Leetcode", "Identify and fix bugs in the given code and rewrite it", "debugging"),
    ("alpaca_seed", "plan_a_trip", "Make a list of things to do in Paris.", "planning"),
    ("summarization", "samsum_Write_a_dialogue_that_match_this_summary", "", "creative_writing"),
    ("humaneval", "humaneval", "def f(x):", "coding"),
    ("gsm8k", "gsm8k_train", "Tom has 3 apples and buys 5 more. How many does he have?", "math"),
    ("translation", "ted_ende", "Translate the following into German: Hello.", "translation"),
    ("summarization", "xsum_DOC_tldr", "", "summarization"),
    ("summarization", "cnn_dailymail_3_0_0_news_stock", "", "analysis"),
    ("llmrouter_query", "mbpp", "", "coding"),
    ("llmrouter_query", "agentverse-logicgrid", "", "math"),
    ("llmrouter_query", "commongen", "", "creative_writing"),
    ("arena_hard_v2", "math", "", "math"),
    ("arena_hard_v01", "Research Trends in AI", "", "research"),
    ("codealpaca", "new_codealpaca", "Review the following code and suggest improvements.", "code_review"),
    ("self_instruct", "Grammarly", "Rewrite the given text to sound more professional.", "creative_writing"),
    ("alpaca_seed", "summarize_article", "Summarize the article below in two sentences.", "summarization"),
    ("zeroeval_prompts", "crux", "You are given a Python function and an assertion ...", "coding"),
    ("swebench_prompts", "django", "QuerySet.ordered is wrong for GROUP BY queries", "debugging"),
    ("alpaca_eval_instructions", "helpful_base", "How do I wrap a present neatly?", "simple_qa"),
    ("alpaca_eval_instructions", "koala", "Write a poem about the sea.", "creative_writing"),
    ("alpaca_eval_instructions", "oasst", "Translate this into French: good morning", "translation"),
    ("alpaca_eval_instructions", "oasst", "Write a Python function that reverses a string.", "coding"),
    ("authored", "essay", "", None),     # authored rows carry their task; no mapping from a label
])
def test_mapping_examples(source, label, prompt, task):
    assert map_label(source, label, prompt) == task


def test_every_prompt_source_has_a_mapping():
    from autoroute.data.normalize import PROMPT_SOURCES
    for source in PROMPT_SOURCES:
        map_label(source, "x", "x")   # raises KeyError for a source without a mapping


def test_unknown_labels_are_unmapped_not_guessed():
    assert map_label("llmrouter_query", "some_new_task") is None
    assert map_label("arena_hard_v01", "Xyzzy Plugh") is None
    assert map_label("zeroeval_prompts", "math-l6") is None


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
def test_real_sources_have_a_mapping_for_every_label():
    stems = {p.stem for p in (SHARED / "prompts" / "summarization").glob("*.jsonl")}
    assert stems == set(SUMMARIZATION_TEMPLATES)
    import json
    names = {json.loads(x)["task_name"] for x in (SHARED / "llmrouter" / "query_train.jsonl").open()}
    assert names == set(LLMROUTER_TASKS)


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
def test_alias_table_covers_every_model_name_in_the_sources():
    import csv
    import json
    catalog = Catalog.from_config(load_config().catalog)
    names: set[str] = set()
    for line in (SHARED / "arena" / "battles.jsonl").open():
        r = json.loads(line)
        names |= {r["model_a"], r["model_b"]}
    for line in (SHARED / "alpaca_eval" / "annotations.jsonl").open():
        r = json.loads(line)
        names |= {r["model_a"], r["model_b"]}
    for path in (SHARED / "routerbench").glob("*.csv"):
        header = next(csv.reader(path.open()))
        names |= {c.removesuffix("|total_cost") for c in header if c.endswith("|total_cost")}
    names |= set(json.loads((SHARED / "llmrouter" / "llm_candidates.json").read_text()))
    names |= set(json.loads((SHARED / "llmrouter" / "dcrouter_test.json").read_text())[0]["scores"])
    names |= {"mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"}
    assert len(names) >= 29 + 58
    assert sorted(n for n in names if catalog.try_resolve(n) is None) == []
