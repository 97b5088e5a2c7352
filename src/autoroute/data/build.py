"""Stage `build`: interim tables -> ``data/processed`` with splits, folds and a manifest.

    python -m autoroute.data.build [key=value ...]

One near-duplicate grouping (MinHash) covers every prompt of every kind, and
one evaluation set of groups is built in this order:
1. fixed evaluation data: outcome validation/test/eval rows (RouterBench and
   LLMRouter test files, RouteLLM MMLU/GSM8K, ZeroEval GSM8K, the held-out
   SWE-bench repositories and ZeroEval groups: `modern.assign_splits`) and the
   classifier's held-out sources;
2. classifier validation: a seeded share of the remaining prompt groups, taken
   only from groups no preference data uses;
3. comparison test: comparisons whose prompt is already evaluation data, plus
   a seeded share of the other Arena / AlpacaEval prompt groups.
Every training row (of any kind) whose group is evaluation data is dropped and
counted, so no prompt text, nor a near-duplicate of it, is on both sides.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from autoroute.data import modern
from autoroute.data.dedup import near_duplicate_groups, stable_hash
from autoroute.data.io import data_params, read_json, stage_config, write_json, write_table
from autoroute.data.normalize import Drops
from autoroute.data.splits import assign_folds, hash_fraction, pick_groups, stratified_cap
from autoroute.types import TASKS

PROMPT_COLS = ["prompt_id", "prompt", "task", "source", "source_label", "group", "dup_group"]
COMPARISON_COLS = ["prompt_id", "prompt", "model_a", "model_b", "winner", "preference", "source", "subset", "split",
                   "dup_group"]
OUTCOME_COLS = ["prompt_id", "prompt", "model", "score", "cost", "source", "benchmark", "subject", "split", "fold",
                "dup_group"]
EVAL_SPLITS = ("validation", "test", "eval")
OUTCOME_SPLITS = ("train", "validation", "test", "eval")


def group_prompts(tables: list[pd.DataFrame], nd: dict) -> dict[str, str]:
    """prompt_id -> near-duplicate group key (the smallest prompt_id in the group)."""
    texts = pd.concat([t.assign(dedup_text=t["dedup_text"] if "dedup_text" in t else t["prompt"].map(modern.dedup_view))[
        ["prompt_id", "dedup_text"]] for t in tables]).drop_duplicates("prompt_id")
    texts = texts.sort_values("prompt_id").reset_index(drop=True)
    roots = near_duplicate_groups(texts["dedup_text"].tolist(), num_perm=int(nd["num_perm"]), bands=int(nd["bands"]),
                                  jaccard=float(nd["jaccard"]), max_chars=int(nd["max_chars"]))
    ids = texts["prompt_id"].to_numpy()
    return dict(zip(ids, ids[roots]))


def authored_test_rows(prompts: pd.DataFrame, fraction: float, seed: int) -> pd.Series:
    """A seeded share of the rows of every authored style group (task x source_label) held out
    for the classifier test: every style keeps most of its rows in training. (The
    leave-one-source-group-out protocol holds out the authored prompts as a whole.)"""
    authored = prompts["source"] == "authored"
    return authored & prompts["prompt_id"].map(lambda k: hash_fraction(k, seed, "authored_test", fraction))


def derive_pairs(outcomes: pd.DataFrame, sources: list[str], include_ties: bool, seed: int) -> pd.DataFrame:
    """Pairwise comparisons from per-prompt outcomes: the higher score wins."""
    cols = ["prompt_id", "prompt", "model", "score", "source", "split", "dup_group"]
    o = outcomes.loc[outcomes["source"].isin(sources), cols]
    pairs = o.merge(o[["prompt_id", "source", "split", "model", "score"]], on=["prompt_id", "source", "split"],
                    suffixes=("_a", "_b"))
    pairs = pairs[pairs["model_a"] < pairs["model_b"]]
    diff = pairs["score_a"] - pairs["score_b"]
    if not include_ties:
        pairs, diff = pairs[diff != 0], diff[diff != 0]
    both_bad = (pairs["score_a"] == 0) & (pairs["score_b"] == 0)
    winner = np.select([diff > 0, diff < 0, both_bad], ["model_a", "model_b", "tie_bothbad"], "tie")
    out = pd.DataFrame({"prompt_id": pairs["prompt_id"], "prompt": pairs["prompt"], "model_a": pairs["model_a"],
                        "model_b": pairs["model_b"], "winner": winner,
                        "preference": np.select([diff > 0, diff < 0], [1.0, 0.0], 0.5),
                        "source": "derived_" + pairs["source"], "subset": None, "split": pairs["split"],
                        "dup_group": pairs["dup_group"]}).reset_index(drop=True)
    # random side per pair so model_a is not always the alphabetically first model
    swap = np.array([stable_hash(seed, "side", p, a) % 2 == 1 for p, a in zip(out["prompt_id"], out["model_a"])],
                    dtype=bool)
    flip = {"model_a": "model_b", "model_b": "model_a"}
    out.loc[swap, ["model_a", "model_b"]] = out.loc[swap, ["model_b", "model_a"]].to_numpy()
    out.loc[swap, "winner"] = out.loc[swap, "winner"].map(lambda w: flip.get(w, w))
    out.loc[swap, "preference"] = 1.0 - out.loc[swap, "preference"]
    return out


def _counts(df: pd.DataFrame, col: str) -> dict[str, int]:
    return {str(k): int(v) for k, v in df[col].value_counts().sort_index().items()}


def run(cfg: DictConfig) -> dict:
    t0 = time.time()
    params = data_params(cfg)
    seed = int(params["seed"])
    interim, processed = Path(cfg.paths.interim), Path(cfg.paths.processed)
    prompts = pd.read_parquet(interim / "prompts.parquet")
    comparisons = pd.read_parquet(interim / "comparisons.parquet")
    # the instruction set a prompt comes from (AlpacaEval: selfinstruct, oasst, koala, helpful_base),
    # for leave-one-subset-out evaluation; null for sources without subsets
    subset = comparisons["dataset"] if "dataset" in comparisons else pd.Series(None, index=comparisons.index)
    comparisons["subset"] = subset.astype("object").where(subset.notna() & (subset != ""), None)
    outcomes = pd.read_parquet(interim / "outcomes.parquet")
    ratings = pd.read_parquet(interim / "arena_ratings.parquet")
    drops = Drops()

    groups = group_prompts([prompts, comparisons, outcomes], params["near_dup"])
    for df in (prompts, comparisons, outcomes):
        df["dup_group"] = df["prompt_id"].map(groups)

    # 1. fixed evaluation data
    outcomes = modern.assign_splits(outcomes, params["modern"], seed)
    evaluation = set(outcomes.loc[outcomes["split"].isin(EVAL_SPLITS), "dup_group"])
    pp = params["prompts"]
    held = prompts["group"].isin(set(pp["test_groups"]))
    held |= authored_test_rows(prompts, float(pp["authored_test_fraction"]), seed)
    prompts["split"] = np.where(held, "test", "train")
    evaluation |= set(prompts.loc[prompts["split"] == "test", "dup_group"])
    # benchmarks evaluated leave-one-benchmark-out (GSM8K, MMLU): classifier test only, and
    # no near-duplicate of them in the classifier's (= the shared encoder's) training data
    never = prompts["group"].isin(list(pp.get("never_train") or []))
    prompts.loc[never, "split"] = "test"
    classifier_only = set(prompts.loc[never, "dup_group"])

    # 2. classifier validation, from groups no preference data uses
    busy = set(comparisons["dup_group"]) | set(outcomes["dup_group"])
    pool = prompts[(prompts["split"] == "train") & ~prompts["dup_group"].isin(evaluation | busy | classifier_only)]
    for _, rows in pool.groupby("task"):
        val = pick_groups(rows["dup_group"].value_counts(), float(pp["validation_fraction"]), seed, "validation")
        prompts.loc[prompts.index.isin(rows.index) & prompts["dup_group"].isin(val), "split"] = "validation"
        evaluation |= val

    # 3. comparison test
    outcome_train = set(outcomes.loc[outcomes["split"] == "train", "dup_group"])
    frac = float(params["comparisons"]["test_fraction"])
    sampled = {g for g in set(comparisons["dup_group"]) - evaluation - outcome_train
               if hash_fraction(g, seed, "comparison_test", frac)}
    evaluation |= sampled
    comparisons["split"] = np.where(comparisons["dup_group"].isin(evaluation), "test", "train")

    # 4. no training row may share a group with evaluation data
    def drop_leaks(df: pd.DataFrame, name: str, extra: set[str] = frozenset()) -> pd.DataFrame:
        leak = (df["split"] == "train") & df["dup_group"].isin(evaluation | extra)
        for src, n in df.loc[leak, "source"].value_counts().items():
            drops.add(f"{name}_train_near_duplicate_of_evaluation", src, n)
        return df[~leak]
    prompts = drop_leaks(prompts, "prompts", classifier_only)
    outcomes = drop_leaks(outcomes, "outcomes").copy()

    # 5. derived comparisons from the (leak-free) outcomes
    cp = params["comparisons"]
    derived = derive_pairs(outcomes, list(cp["derive_from"]), bool(cp["derived_include_ties"]), seed)
    comparisons = pd.concat([comparisons[COMPARISON_COLS], derived[COMPARISON_COLS]], ignore_index=True)

    # 6. caps on the classifier sets (sampling, not a quality drop: counted separately)
    for split, key in (("train", "max_train_per_task"), ("validation", "max_validation_per_task"),
                       ("test", "max_test_per_task")):
        part = prompts[prompts["split"] == split]
        keep = stratified_cap(part, "task", int(pp[key]), seed, f"cap_{split}")
        for src, n in part.loc[~keep, "source"].value_counts().items():
            drops.add(f"prompts_{split}_over_cap_per_task", src, n)
        prompts = prompts.drop(index=part.index[~keep])

    # 7. folds of the RouteLLM evaluation benchmarks, near-duplicate groups kept together
    outcomes["fold"] = pd.Series(pd.NA, index=outcomes.index, dtype="Int64")
    ev = outcomes["split"] == "eval"
    outcomes.loc[ev, "fold"] = assign_folds(outcomes.loc[ev, "dup_group"], int(params["outcomes"]["folds"]), seed)

    processed.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation", "test"):
        part = prompts[prompts["split"] == split].sort_values(["task", "source", "prompt_id"])
        write_table(part[PROMPT_COLS], processed / "prompts" / f"{split}.parquet")
    write_table(comparisons.sort_values(["source", "split", "prompt_id", "model_a", "model_b"], kind="stable"),
                processed / "comparisons.parquet")
    write_table(outcomes.sort_values(["source", "split", "prompt_id", "model"])[OUTCOME_COLS],
                processed / "outcomes.parquet")
    write_table(ratings, processed / "arena_ratings.parquet")

    normalize_report = read_json(interim / "normalize_report.json")
    dropped = normalize_report["dropped"] | drops.to_dict()
    ingest = normalize_report["ingest"]
    for issue in ingest["malformed"]:
        src = issue["source"]
        dropped.setdefault("malformed_row", {})
        dropped["malformed_row"][src] = dropped["malformed_row"].get(src, 0) + 1
    group_sizes = pd.Series(list(groups.values())).value_counts()
    manifest = {
        "outputs": {
            "prompts": {s: {"rows": int((prompts["split"] == s).sum()),
                            "by_source": _counts(prompts[prompts["split"] == s], "source"),
                            "by_task": {t: int(((prompts["split"] == s) & (prompts["task"] == t)).sum())
                                        for t in TASKS}}
                        for s in ("train", "validation", "test")},
            "comparisons": {s: {"rows": int((comparisons["split"] == s).sum()),
                                "prompts": int(comparisons.loc[comparisons["split"] == s, "prompt_id"].nunique()),
                                "by_source": _counts(comparisons[comparisons["split"] == s], "source")}
                            for s in ("train", "test")},
            "outcomes": {s: {"rows": int((outcomes["split"] == s).sum()),
                             "prompts": int(outcomes.loc[outcomes["split"] == s, "prompt_id"].nunique()),
                             "by_source": _counts(outcomes[outcomes["split"] == s], "source")}
                         for s in OUTCOME_SPLITS},
        },
        "modern_splits": modern.split_summary(outcomes),
        "arena_ratings": {"rows": len(ratings), "models": int(ratings["model"].nunique()),
                          "categories": int(ratings["category"].nunique())},
        "authored_by_task": {s: _counts(prompts[(prompts["split"] == s) & (prompts["source"] == "authored")], "task")
                             for s in ("train", "validation", "test")},
        "models": sorted(set(comparisons["model_a"]) | set(comparisons["model_b"]) | set(outcomes["model"])),
        "near_duplicates": {"texts": len(groups), "groups": int(len(group_sizes)),
                            "texts_in_multi_member_groups": int(group_sizes[group_sizes > 1].sum()),
                            "largest_group": int(group_sizes.max()) if len(group_sizes) else 0},
        "evaluation_groups": len(evaluation),
        "dropped": dropped,
        "sources": ingest["sources"],
        "skipped_sources": ingest["skipped"],
        "malformed": ingest["malformed"],
        "params": params,
    }
    write_json(manifest, processed / "manifest.json")
    print(f"build: done in {time.time() - t0:.1f}s")
    return manifest


def print_manifest(m: dict) -> None:
    for kind, splits in m["outputs"].items():
        for split, info in splits.items():
            print(f"  {kind}/{split}: {info['rows']} rows  " + ", ".join(f"{s} {n}" for s, n in info["by_source"].items()))
    for split, info in m["outputs"]["prompts"].items():
        print(f"  prompts/{split} by task: " + ", ".join(f"{t} {n}" for t, n in info["by_task"].items()))
    nd = m["near_duplicates"]
    print(f"  near-duplicates: {nd['texts']} texts in {nd['groups']} groups (largest {nd['largest_group']})")
    for reason, by_source in m["dropped"].items():
        print(f"  dropped {reason}: " + ", ".join(f"{s} {n}" for s, n in by_source.items()))
    for name, why in m["skipped_sources"].items():
        print(f"  SKIPPED source {name}: {why}")


def main() -> None:
    print_manifest(run(stage_config()))


if __name__ == "__main__":
    main()
