"""The whole data pipeline on the hand-written fixtures in tests/fixtures, into a tmp dir."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from autoroute.catalog import Catalog
from autoroute.data import pipeline
from autoroute.data.dedup import normalize_text
from autoroute.data.io import stage_config

FIXTURES = Path(__file__).parent / "fixtures"
OFF = ["routellm_mmlu", "llmrouter", "alpaca_eval", "arena_hard", "codealpaca", "humaneval", "self_instruct",
       "summarization", "alpaca_seed"]


def fixture_config(tmp: Path, shared: Path | None = None, extra: tuple[str, ...] = ()):
    overrides = [f"paths.shared_data={shared or FIXTURES / 'shared_data'}", f"paths.data={tmp / 'data'}",
                 f"paths.priors={tmp / 'priors.yaml'}",
                 f"paths.authored={FIXTURES / 'authored'}",
                 *(f"data.sources.{s}.enabled=false" for s in OFF),
                 "data.sources.routerbench.benchmarks=[mbpp]", "data.max_malformed_fraction=0.5",
                 "data.prompts.test_groups=[translation:ted_zhen]", "data.prompts.validation_fraction=0.3",
                 "data.comparisons.test_fraction=0.3", *extra]
    return stage_config(overrides)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipeline")
    cfg = fixture_config(tmp)
    manifest = pipeline.run(cfg, verbose=False)
    processed = Path(cfg.paths.processed)
    return {"cfg": cfg, "manifest": manifest, "processed": processed,
            "prompts": {s: pd.read_parquet(processed / "prompts" / f"{s}.parquet")
                        for s in ("train", "validation", "test")},
            "comparisons": pd.read_parquet(processed / "comparisons.parquet"),
            "outcomes": pd.read_parquet(processed / "outcomes.parquet")}


def _train_eval_texts(b: dict) -> tuple[set[str], set[str]]:
    p, c, o = b["prompts"], b["comparisons"], b["outcomes"]
    train = pd.concat([p["train"]["prompt"], c.loc[c["split"] == "train", "prompt"],
                       o.loc[o["split"] == "train", "prompt"]])
    evaluation = pd.concat([p["validation"]["prompt"], p["test"]["prompt"], c.loc[c["split"] == "test", "prompt"],
                            o.loc[o["split"].isin(["test", "eval"]), "prompt"]])
    return set(train.map(normalize_text)), set(evaluation.map(normalize_text))


def test_no_prompt_text_in_both_training_and_evaluation(built):
    train, evaluation = _train_eval_texts(built)
    assert train and evaluation
    assert not train & evaluation


def test_leaks_were_really_removed(built):
    dropped = built["manifest"]["dropped"]
    # GSM8K (train questions included) is classifier test data only (data.prompts.never_train);
    # the RouterBench train prompt that near-duplicates a test prompt ("sub-array" vs "subarray")
    p = built["prompts"]
    assert "gsm8k" not in set(p["train"]["source"]) | set(p["validation"]["source"])
    assert (p["test"]["source"] == "gsm8k").any()
    assert dropped["outcomes_train_near_duplicate_of_evaluation"]["routerbench_mbpp"] == 2
    train = built["outcomes"].query("split == 'train'")["prompt"].tolist()
    assert not any("contiguous" in p for p in train)


def test_every_model_resolves_to_a_catalog_id(built):
    catalog = Catalog.from_config(built["cfg"].catalog)
    c, o = built["comparisons"], built["outcomes"]
    names = set(c["model_a"]) | set(c["model_b"]) | set(o["model"])
    assert {"gpt-4-1106-preview", "mixtral-8x7b-instruct", "claude-v1", "gpt-4"} <= names
    for name in names:
        assert catalog.try_resolve(name) == name, name


def test_malformed_row_is_reported_with_file_and_line(built):
    malformed = built["manifest"]["malformed"]
    assert [(Path(m["file"]).name, m["line"]) for m in malformed] == [("mbpp_test.csv", 4)]
    assert "gpt-4-1106-preview" in malformed[0]["reason"]
    info = built["manifest"]["sources"]["routerbench_mbpp"]
    assert {k: info[k] for k in ("rows_read", "rows_kept", "rows_malformed")} == {
        "rows_read": 7, "rows_kept": 6, "rows_malformed": 1}


def test_contaminated_routellm_prompt_dropped_and_folds_assigned(built):
    o = built["outcomes"]
    ev = o[o["source"] == "routellm_gsm8k"]
    assert not ev["prompt"].str.contains("Sara reads").any()
    assert set(ev["split"]) == {"eval"} and ev["fold"].between(0, 4).all()
    assert o.loc[o["split"] != "eval", "fold"].isna().all()
    assert o.loc[o["source"] == "routerbench_mbpp", "cost"].notna().all()


def test_schemas_and_values(built):
    c = built["comparisons"]
    assert set(c["winner"].dropna()) <= {"model_a", "model_b", "tie", "tie_bothbad"}
    assert c["preference"].between(0, 1).all() and c["preference"].notna().all()
    assert set(c["split"]) <= {"train", "test"}
    arena = c[c["source"] == "arena"].set_index("winner")
    assert arena.loc["tie_bothbad", "preference"] == 0.5
    for split, df in built["prompts"].items():
        assert list(df.columns[:5]) == ["prompt_id", "prompt", "task", "source", "source_label"]
        assert df["prompt_id"].is_unique
    assert set(built["prompts"]["test"]["source"]) >= {"translation", "authored"}


def test_translation_requests_built_from_sources(built):
    allp = pd.concat(built["prompts"].values())
    tr = allp[allp["source"] == "translation"]
    assert (tr["task"] == "translation").all()
    sentences = [json.loads(line)["source"] for name in ("ted_ende_sources.jsonl", "ted_zhen_sources.jsonl")
                 for line in (FIXTURES / "shared_data" / "prompts" / "translation" / name).open()]
    for sentence in sentences:   # every real source sentence is used in exactly one request
        assert tr["prompt"].str.contains(sentence, regex=False).sum() == 1, sentence
    assert len(set(tr["prompt"].str.split().str[0])) > 1   # instructions vary


def test_manifest_counts_match_outputs_and_card(built):
    m, b = built["manifest"], built
    for split, df in b["prompts"].items():
        assert m["outputs"]["prompts"][split]["rows"] == len(df)
    for split in ("train", "test"):
        assert m["outputs"]["comparisons"][split]["rows"] == int((b["comparisons"]["split"] == split).sum())
    card = (Path(b["cfg"].paths.data) / "README.md").read_text()
    for kind, splits in m["outputs"].items():
        for split, info in splits.items():
            assert re.search(rf"\| {kind} \| {split} \| {info['rows']} \|", card)


def test_embedded_default_runs_without_shared_data(tmp_path, capsys):
    cfg = fixture_config(tmp_path, shared=tmp_path / "no_such_folder")
    manifest = pipeline.run(cfg, verbose=True)
    out = capsys.readouterr().out
    assert "SKIPPED routerbench" in out and "not found" in out
    assert set(manifest["skipped_sources"]) >= {"routellm_gsm8k", "arena", "gsm8k", "translation"}
    test = pd.read_parquet(Path(cfg.paths.processed) / "prompts" / "test.parquet")
    assert set(test["source"]) == {"authored"} and set(test["task"]) == {"planning", "analysis"}
    assert manifest["outputs"]["outcomes"]["train"]["rows"] == 0


def test_rebuild_is_deterministic(built, tmp_path):
    cfg = fixture_config(tmp_path)
    pipeline.run(cfg, verbose=False)
    for name in ("comparisons.parquet", "outcomes.parquet", "prompts/train.parquet", "prompts/test.parquet"):
        again = pd.read_parquet(Path(cfg.paths.processed) / name)
        pd.testing.assert_frame_equal(again, pd.read_parquet(built["processed"] / name))


def test_missing_source_fails_loudly(tmp_path):
    shared = tmp_path / "shared"
    shutil.copytree(FIXTURES / "shared_data", shared)
    (shared / "arena" / "battles.jsonl").unlink()
    from autoroute.data.sources import SourceError
    with pytest.raises(SourceError, match="battles.jsonl"):
        pipeline.run(fixture_config(tmp_path, shared=shared), verbose=False)


def test_changed_format_fails_loudly(tmp_path):
    shared = tmp_path / "shared"
    shutil.copytree(FIXTURES / "shared_data", shared)
    path = shared / "routellm" / "gsm8k" / "gsm8k_responses.csv"
    path.write_text(path.read_text().replace("gpt-4-1106-preview,", "gpt4,", 1))
    from autoroute.data.sources import SourceError
    with pytest.raises(SourceError, match="columns"):
        pipeline.run(fixture_config(tmp_path, shared=shared), verbose=False)
    path.write_text(json.dumps({"prompt": 1}))  # no longer a CSV with the expected header
    with pytest.raises(SourceError):
        pipeline.run(fixture_config(tmp_path, shared=shared), verbose=False)
