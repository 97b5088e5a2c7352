"""Stage `normalize`: raw tables -> the three normalized kinds in ``data/interim``.

    python -m autoroute.data.normalize [key=value ...]

- prompts.parquet: prompt_id, prompt, task, source, source_label, group
  (source labels mapped to the taxonomy; translation requests built from the
  TED source sentences; one summarization template drawn per document)
- comparisons.parquet: prompt_id, prompt, model_a, model_b, winner, preference, source
- outcomes.parquet: prompt_id, prompt, model, score, cost, source, benchmark, subject, split
  (modern sources: split empty here, set by `build`)
- arena_ratings.parquet: model, source_name, category, rating, q025, q975
Model names resolve through the catalog's alias table; an unknown name stops
the stage. Exact duplicates are dropped and every drop is counted by reason in
``data/interim/normalize_report.json``.
"""
from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from autoroute.catalog import Catalog
from autoroute.data.dedup import prompt_id, stable_hash
from autoroute.data import modern
from autoroute.data.io import data_params, read_json, stage_config, write_json, write_table
from autoroute.data.sources import SourceError
from autoroute.data.taxonomy import map_label

PROMPT_SOURCES = ["authored", "arena_hard_v01", "arena_hard_v2", "codealpaca", "humaneval", "gsm8k",
                  "llmrouter_query", "self_instruct", "alpaca_seed", "summarization", "translation",
                  "alpaca_eval_instructions", "zeroeval_prompts", "swebench_prompts"]
COMPARISON_SOURCES = ["arena", "alpaca_eval"]
OUTCOME_SOURCES = ["routellm_mmlu", "routellm_gsm8k", "routerbench_arc_challenge", "routerbench_mbpp",
                   "routerbench_winogrande", "llmrouter_dcrouter", *modern.OUTCOME_SOURCES]

FEW_SHOT_SOURCES = ("routerbench_arc_challenge", "routerbench_winogrande")

TRANSLATION_TEMPLATES = [
    "Translate the following into {lang}:\n\n{text}",
    "Can you translate this to {lang}? \"{text}\"",
    "{text}\n\nTranslate to {lang}.",
    "Please translate this {src} text into {lang}, keeping the tone natural:\n{text}",
    "How would you say this in {lang}?\n{text}",
    "I need a {lang} version of this for a presentation: {text}",
    "translate to {lang_lower} pls: {text}",
    "Render the passage below in {lang}. Only output the translation.\n\n{text}",
    "What's the {lang} translation of: {text}",
    "My colleague only reads {lang}. Could you translate this for them?\n\n{text}",
    "{src} -> {lang}:\n{text}",
    "Give me an accurate {lang} translation of the following {src} passage.\n\n\"\"\"\n{text}\n\"\"\"",
]
ZH_TEMPLATES = ["请把下面这段话翻译成{lang_zh}：\n{text}", "翻译成{lang_zh}：{text}", "{text}\n\n帮我翻译成{lang_zh}，谢谢"]
LANG_ZH = {"English": "英文", "Japanese": "日文", "Korean": "韩文", "French": "法文", "German": "德文"}


class Drops:
    """Rows left out on purpose, by reason and source (printed and in the manifest)."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def add(self, reason: str, source: str, n: int = 1) -> None:
        if n:
            self.counts[reason][source] += int(n)

    def to_dict(self) -> dict[str, dict[str, int]]:
        return {r: dict(sorted(s.items())) for r, s in sorted(self.counts.items())}


def _raw(raw: Path, name: str) -> pd.DataFrame | None:
    path = raw / f"{name}.parquet"
    return pd.read_parquet(path) if path.exists() else None


def translation_requests(df: pd.DataFrame, params: dict, seed: int) -> pd.DataFrame:
    """Requests from consecutive TED segments, with varied instructions and target languages."""
    rng = random.Random(seed)
    sizes = list(params["segments_per_request"])
    rows = []
    for (pair, doc), seg in df.sort_values(["pair", "doc", "seg_id"]).groupby(["pair", "doc"], sort=True):
        texts, i = seg["text"].tolist(), 0
        src = seg["source_language"].iloc[0]
        while i < len(texts):
            k = rng.choice(sizes)
            text = " ".join(texts[i:i + k]) if src != "Chinese" else "".join(texts[i:i + k])
            i += k
            langs = params["targets_from_chinese"] if src == "Chinese" else params["targets_from_english"]
            lang = rng.choice([lang for lang in langs if lang != src])
            templates = TRANSLATION_TEMPLATES + (ZH_TEMPLATES if src == "Chinese" and lang in LANG_ZH else [])
            prompt = rng.choice(templates).format(lang=lang, lang_lower=lang.lower(), src=src,
                                                  lang_zh=LANG_ZH.get(lang, lang), text=text)
            rows.append({"prompt": prompt, "source_label": f"ted_{pair}", "group": f"translation:ted_{pair}",
                         "target_language": lang})
    return pd.DataFrame(rows)


def summarization_requests(df: pd.DataFrame, seed: int, drops: Drops) -> pd.DataFrame:
    """One template per document (line i of every template file of a dataset is one document)."""
    templates = df.groupby("dataset")["source_label"].unique().to_dict()
    pick = df.apply(lambda r: sorted(templates[r["dataset"]])[
        stable_hash(seed, r["dataset"], r["line"]) % len(templates[r["dataset"]])] == r["source_label"], axis=1)
    drops.add("summarization_other_template_of_same_document", "summarization", int((~pick).sum()))
    out = df[pick].copy()
    out["group"] = "summarization:" + out["dataset"]
    return out


def build_prompts(raw: Path, params: dict, drops: Drops) -> pd.DataFrame:
    seed = int(params["seed"])
    frames = []
    for source in PROMPT_SOURCES:
        df = _raw(raw, source)
        if df is None:
            continue
        if source == "translation":
            df = translation_requests(df, params["translation"], seed)
        elif source == "summarization":
            df = summarization_requests(df, seed, drops)
        if source == "authored":
            df = df.assign(group="authored:" + df["task"] + ":" + df["source_label"])
        else:
            df = df.assign(task=[map_label(source, lab, p) for lab, p in zip(df["source_label"], df["prompt"])])
            if "group" not in df:
                by_label = source in ("llmrouter_query", "zeroeval_prompts")
                df["group"] = source + ":" + df["source_label"] if by_label else source
        unmapped = df["task"].isna()
        drops.add("unmapped_label", source, int(unmapped.sum()))
        frames.append(df.loc[~unmapped, ["prompt", "task", "source_label", "group"]].assign(source=source))
    prompts = pd.concat(frames, ignore_index=True)
    prompts.insert(0, "prompt_id", prompts["prompt"].map(prompt_id))
    dup = prompts.duplicated("prompt_id", keep="first")
    first_task = prompts.drop_duplicates("prompt_id").set_index("prompt_id")["task"]
    conflict = dup & (prompts["prompt_id"].map(first_task) != prompts["task"])
    for src, n in prompts[dup & ~conflict]["source"].value_counts().items():
        drops.add("duplicate_prompt", src, n)
    for src, n in prompts[conflict]["source"].value_counts().items():
        drops.add("duplicate_prompt_conflicting_task", src, n)
    return prompts[~dup].reset_index(drop=True)


def _resolve(catalog: Catalog, names: pd.Series, where: str) -> pd.Series:
    """Catalog ids of a source's model names (source-qualified aliases first)."""
    qualifier = modern.QUALIFIERS.get(where, where)
    ids = {n: catalog.resolve_in(qualifier, n) for n in names.unique()}
    unknown = sorted(n for n, i in ids.items() if i is None)
    if unknown:
        raise SourceError(f"{where}: model names not in the catalog alias table "
                          f"(add them to conf/catalog/benchmark.yaml): {unknown}")
    return names.map(ids)


def build_comparisons(raw: Path, catalog: Catalog, drops: Drops) -> pd.DataFrame:
    frames = []
    for source in COMPARISON_SOURCES:
        df = _raw(raw, source)
        if df is None:
            continue
        df = df.assign(source=source, model_a=_resolve(catalog, df["model_a"], source),
                       model_b=_resolve(catalog, df["model_b"], source))
        same = df["model_a"] == df["model_b"]
        drops.add("same_model_on_both_sides", source, int(same.sum()))
        frames.append(df[~same])
    if not frames:
        return pd.DataFrame(columns=["prompt_id", "prompt", "model_a", "model_b", "winner", "preference", "source"])
    out = pd.concat(frames, ignore_index=True).drop(columns=["file", "line"], errors="ignore")
    out.insert(0, "prompt_id", out["prompt"].map(prompt_id))
    out["winner"] = out["winner"].astype("object").where(out["winner"].notna(), None)
    return out


def build_outcomes(raw: Path, catalog: Catalog, drops: Drops, params: dict) -> pd.DataFrame:
    frames = []
    for source in OUTCOME_SOURCES:
        df = _raw(raw, source)
        if df is None:
            continue
        if source in modern.OUTCOME_SOURCES:
            df = modern.prepare_outcomes(source, df, params["modern"], drops)
        df = df.assign(source=source, model=_resolve(catalog, df["model"], source))
        df.insert(0, "prompt_id", df["prompt"].map(prompt_id))
        contaminated = _raw(raw, f"{source}_contaminated")
        if contaminated is not None:
            bad = df["prompt_id"].isin(set(contaminated["prompt"].map(prompt_id)))
            drops.add("routellm_contaminated_prompt", source, int(bad.sum()))
            df = df[~bad]
        # RouterBench ARC / Winogrande prompts share their 5-shot exemplars: near-duplicate
        # detection looks at the final block (the question itself)
        few_shot = source in FEW_SHOT_SOURCES
        if few_shot:
            df["dedup_text"] = df["prompt"].str.rsplit("\n\n", n=1).str[-1]
        elif "dedup_text" not in df:
            df["dedup_text"] = df["prompt"]
        dup = df.duplicated(["prompt_id", "model", "split"], keep="first")
        drops.add("duplicate_outcome", source, int(dup.sum()))
        frames.append(df[~dup])
    cols = ["prompt_id", "prompt", "model", "score", "cost", "source", "benchmark", "subject", "split", "dedup_text"]
    if not frames:
        return pd.DataFrame(columns=cols)
    out = pd.concat(frames, ignore_index=True)
    out["cost"] = out["cost"].astype("float64")
    return out[cols]


def run(cfg: DictConfig) -> dict:
    params = data_params(cfg)
    raw, interim = Path(cfg.paths.raw), Path(cfg.paths.interim)
    if not (raw / "ingest_report.json").exists():
        raise SourceError(f"{raw}/ingest_report.json missing: run the ingest stage first")
    catalog = Catalog.from_config(cfg.catalog)
    drops = Drops()
    prompts = build_prompts(raw, params, drops)
    comparisons = build_comparisons(raw, catalog, drops)
    outcomes = build_outcomes(raw, catalog, drops, params)
    ratings = modern.arena_ratings(raw, lambda names, where: _resolve(catalog, names, where))
    interim.mkdir(parents=True, exist_ok=True)
    write_table(ratings, interim / "arena_ratings.parquet")
    write_table(prompts, interim / "prompts.parquet")
    write_table(comparisons, interim / "comparisons.parquet")
    write_table(outcomes, interim / "outcomes.parquet")
    report = {"rows": {"prompts": len(prompts), "comparisons": len(comparisons), "outcomes": len(outcomes),
                       "arena_ratings": len(ratings)},
              "by_source": {"prompts": prompts["source"].value_counts().sort_index().to_dict(),
                            "comparisons": comparisons["source"].value_counts().sort_index().to_dict(),
                            "outcomes": outcomes["source"].value_counts().sort_index().to_dict()},
              "dropped": drops.to_dict(), "ingest": read_json(raw / "ingest_report.json")}
    write_json(report, interim / "normalize_report.json")
    return report


def main() -> None:
    report = run(stage_config())
    print("normalize:", ", ".join(f"{k} {v}" for k, v in report["rows"].items()))
    for kind, counts in report["by_source"].items():
        print(f"  {kind}: " + ", ".join(f"{s} {n}" for s, n in counts.items()))
    for reason, by_source in report["dropped"].items():
        print(f"  dropped {reason}: " + ", ".join(f"{s} {n}" for s, n in by_source.items()))


if __name__ == "__main__":
    main()
