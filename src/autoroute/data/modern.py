"""The product's own models: ``../shared/data/modern`` (SWE-bench Verified
bash-only outcomes, ZeroEval outcomes, Chatbot Arena category ratings).

Readers (stage `ingest`), the per-source preparation of their outcomes and the
Arena ratings table (stage `normalize`), and their splits (stage `build`):

- SWE-bench Verified: `resolved` 0/1 per issue and model, with the real dollar
  `cost_usd` of the run as `cost`; the prompt is the issue text. Split by
  repository (`data.modern.swebench.repository_splits`): no repository is in
  two splits. Models listed in `data.modern.swebench.drop_models` are left out
  and counted (the "Claude 3.7 Sonnet" rows do not add up to its published score).
- ZeroEval: correctness 0/1 per prompt and model. GSM8K questions are the
  RouteLLM GSM8K evaluation questions: benchmark `gsm8k`, split
  `data.modern.zeroeval.gsm8k_split` (evaluation only, never training). MATH
  level 5 and CRUXEval: seeded train / validation / test over near-duplicate
  groups. A task whose prompt file has no question text at all is skipped
  and named (the shared copy has none for MATH level 5).
- Arena category ratings: one row per (catalog id, category) with the rating
  and its 95% interval; two source names resolving to one id stop the stage.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from autoroute.catalog import Catalog
from autoroute.data.sources import Report, SourceError, _collect, _csv, _text
from autoroute.data.splits import hash_fraction

SWEBENCH_OUTCOMES = "swebench_verified_bash_only_outcomes.csv"
SWEBENCH_PROMPTS = "swebench_verified_prompts.csv"
ZEROEVAL_OUTCOMES = "zeroeval_outcomes.csv"
ZEROEVAL_PROMPTS = "zeroeval_prompts.csv"
ARENA_RATINGS = "arena_category_ratings.csv"

# ZeroEval task -> (outcome table, benchmark)
ZEROEVAL_TASKS = {"gsm": ("zeroeval_gsm8k", "gsm8k"), "math-l5": ("zeroeval_math", "math"),
                  "crux": ("zeroeval_crux", "cruxeval")}
OUTCOME_SOURCES = ["swebench_verified", *(t for t, _ in ZEROEVAL_TASKS.values())]
# source table -> the qualifier of its source-qualified aliases (``zeroeval:deepseek-chat``)
QUALIFIERS = {"swebench_verified": "swebench", "arena_ratings": "arena",
              **{t: "zeroeval" for t, _ in ZEROEVAL_TASKS.values()}}
RATING_COLS = ["model", "source_name", "category", "rating", "q025", "q975"]


def _unit_int(value: str, key: str) -> float:
    if str(value).strip() not in ("0", "1"):
        raise ValueError(f"field {key!r}: expected 0 or 1, got {str(value)[:30]!r}")
    return float(value)


def _number(value: str, key: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"field {key!r}: not a number: {str(value)[:30]!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"field {key!r}: {x} is not finite")
    return x


def repository(instance_id: str) -> str:
    """``django__django-11099`` -> ``django/django``."""
    owner_repo = instance_id.rsplit("-", 1)[0]
    if "__" not in owner_repo:
        raise ValueError(f"instance_id {instance_id!r} is not <owner>__<repo>-<number>")
    return owner_repo.replace("__", "/", 1)


# --------------------------------------------------------------------------- readers (stage ingest)

def read_swebench(root: Path, report: Report) -> dict[str, list[dict]]:
    prompts: list[dict] = []
    path = root / SWEBENCH_PROMPTS
    _collect(report, "swebench_verified_prompts", path, _csv(path, ["instance_id", "problem_statement"]),
             lambda r: {"instance_id": _text(r, "instance_id"), "prompt": _text(r, "problem_statement"),
                        "repo": repository(r["instance_id"])}, prompts)
    by_id = {p["instance_id"]: p for p in prompts}
    rows: list[dict] = []
    path = root / SWEBENCH_OUTCOMES

    def parse(r: dict) -> dict:
        iid = _text(r, "instance_id")
        if iid not in by_id:
            raise ValueError(f"instance_id {iid!r} not in {SWEBENCH_PROMPTS}")
        cost = _number(r.get("cost_usd"), "cost_usd")
        if cost < 0:
            raise ValueError(f"field 'cost_usd': negative cost {cost}")
        return {"prompt": by_id[iid]["prompt"], "model": _text(r, "model"), "score": _unit_int(r["resolved"], "resolved"),
                "cost": cost, "benchmark": "swebench_verified", "subject": by_id[iid]["repo"], "split": None,
                "instance_id": iid, "api_calls": int(_number(r.get("api_calls"), "api_calls")),
                "entry_date": str(r.get("entry_date", ""))}
    _collect(report, "swebench_verified", path,
             _csv(path, ["model", "instance_id", "resolved", "cost_usd", "api_calls"]), parse, rows)
    return {"swebench_verified": rows}


def read_zeroeval(root: Path, report: Report) -> dict[str, list[dict]]:
    path = root / ZEROEVAL_PROMPTS
    questions: dict[tuple[str, str], str] = {}
    empty: dict[str, int] = {}
    for _, r in _csv(path, ["task", "id", "question"]):
        task = r["task"]
        if task not in ZEROEVAL_TASKS:
            raise SourceError(f"{path}: unknown task {task!r} (format changed?)")
        questions[(task, r["id"])] = r["question"] or ""
        empty[task] = empty.get(task, 0) + (not (r["question"] or "").strip())
    totals = {t: sum(1 for k in questions if k[0] == t) for t in ZEROEVAL_TASKS}
    missing = {t for t in ZEROEVAL_TASKS if totals[t] and empty.get(t) == totals[t]}
    for task in missing:
        table = ZEROEVAL_TASKS[task][0]
        report.skipped[table] = (f"{ZEROEVAL_PROMPTS} has no question text for any of its {totals[task]} "
                                 f"{task} prompts: its outcomes cannot be used per prompt")
    report.files["zeroeval_prompts"].append(str(path))
    report.read["zeroeval_prompts"] = len(questions)
    report.kept["zeroeval_prompts"] = len(questions) - sum(empty.values())
    tables: dict[str, list[dict]] = {t: [] for t, _ in ZEROEVAL_TASKS.values()}
    rows: list[dict] = []
    path = root / ZEROEVAL_OUTCOMES

    def parse(r: dict) -> list[dict]:
        task = _text(r, "task")
        if task not in ZEROEVAL_TASKS:
            raise ValueError(f"unknown task {task!r}")
        key = (task, _text(r, "id"))
        if key not in questions:
            raise ValueError(f"{task} prompt {key[1]!r} not in {ZEROEVAL_PROMPTS}")
        if not questions[key].strip():
            raise ValueError(f"{task} prompt {key[1]!r} has no question text")
        table, bench = ZEROEVAL_TASKS[task]
        return [{"table": table, "prompt": questions[key], "model": _text(r, "model"),
                 "score": _unit_int(r["correct"], "correct"), "cost": None, "benchmark": bench, "subject": task,
                 "split": None, "item_id": key[1], "note": str(r.get("note") or "")}]
    skipped = {t: 0 for t in missing}

    def usable(items):
        for line, r in items:
            if r.get("task") in missing:
                skipped[r["task"]] += 1
            else:
                yield line, r
    _collect(report, "zeroeval", path, usable(_csv(path, ["task", "id", "model", "correct"])), parse, rows)
    for task, n in skipped.items():
        report.skipped[ZEROEVAL_TASKS[task][0]] += f" ({n} outcome rows left out)"
    for row in rows:
        tables[row.pop("table")].append(row)
    return {t: r for t, r in tables.items() if r}


def read_arena_ratings(root: Path, report: Report) -> dict[str, list[dict]]:
    rows: list[dict] = []
    path = root / ARENA_RATINGS

    def parse(r: dict) -> dict:
        rating, lo, hi = (_number(r.get(k), k) for k in ("rating", "q025", "q975"))
        if not lo <= rating <= hi:
            raise ValueError(f"interval [{lo}, {hi}] does not contain the rating {rating}")
        return {"category": _text(r, "category"), "model": _text(r, "model"), "rating": rating, "q025": lo,
                "q975": hi}
    _collect(report, "arena_ratings", path, _csv(path, ["category", "model", "rating", "q025", "q975"]), parse, rows)
    return {"arena_ratings": rows}


def read_modern(name: str, root: Path, report: Report) -> dict[str, list[dict]]:
    if name == "swebench_verified":
        return read_swebench(root, report)
    if name == "zeroeval":
        return read_zeroeval(root, report)
    if name == "arena_ratings":
        return read_arena_ratings(root, report)
    raise SourceError(f"unknown modern source {name!r}")


# --------------------------------------------------------------------------- stage normalize

def prepare_outcomes(source: str, df: pd.DataFrame, params: dict, drops) -> pd.DataFrame:
    """Leave out the suspect models; CRUXEval prompts share a long instruction, so
    near-duplicate detection looks at the code block."""
    if source == "swebench_verified":
        suspect = df["model"].isin(list(params["swebench"]["drop_models"]))
        drops.add("suspect_model_rows", source, int(suspect.sum()))
        df = df[~suspect]
    if source == "zeroeval_crux":
        df = df.assign(dedup_text=df["prompt"].map(dedup_view))
    return df


def dedup_view(prompt: str) -> str:
    """The part of a prompt near-duplicate detection compares: for CRUXEval (the shared
    instruction, then a ``[PYTHON]`` block) the code block, else the whole prompt. Every
    table that holds a CRUXEval prompt (outcomes, labelled prompts) must group it by
    the same view, or the shared instruction joins every CRUXEval prompt in one group."""
    i = prompt.find("[PYTHON]")
    return prompt[i:] if i >= 0 else prompt


def arena_ratings(raw: Path, resolve) -> pd.DataFrame:
    """The Arena category ratings under catalog ids; `resolve(source, names)` maps names."""
    path = raw / "arena_ratings.parquet"
    if not path.exists():
        return pd.DataFrame(columns=RATING_COLS)
    df = pd.read_parquet(path).rename(columns={"model": "source_name"})
    df["model"] = resolve(df["source_name"], "arena_ratings")
    names = df.groupby("model")["source_name"].nunique()
    clash = names[names > 1]
    if len(clash):
        detail = {m: sorted(df.loc[df["model"] == m, "source_name"].unique()) for m in clash.index}
        raise SourceError(f"arena_ratings: several Arena models resolve to one catalog id {detail}: give each "
                          "version its own id in conf/catalog")
    return df[RATING_COLS].sort_values(["model", "category"]).reset_index(drop=True)


# --------------------------------------------------------------------------- stage build

def assign_splits(outcomes: pd.DataFrame, params: dict, seed: int) -> pd.DataFrame:
    """Splits of the modern outcome sources (their interim `split` is empty).

    SWE-bench: by repository, from the config table (a repository the table does
    not name stops the stage). ZeroEval GSM8K: `gsm8k_split` (evaluation only).
    Other ZeroEval tasks: seeded shares of near-duplicate groups."""
    out = outcomes
    swe = out["source"] == "swebench_verified"
    if swe.any():
        table = {repo: split for split, repos in params["swebench"]["repository_splits"].items() for repo in repos}
        repos = out.loc[swe, "subject"]
        unknown = sorted(set(repos) - set(table))
        if unknown:
            raise SourceError(f"swebench_verified: repositories {unknown} are in no split of "
                              "data.modern.swebench.repository_splits (conf/data/default.yaml)")
        out.loc[swe, "split"] = repos.map(table)
    ze = params["zeroeval"]
    gsm = out["source"] == "zeroeval_gsm8k"
    out.loc[gsm, "split"] = str(ze["gsm8k_split"])
    rest = out["source"].str.startswith("zeroeval_") & ~gsm
    if rest.any():
        fr = ze["split_fractions"]
        test_f, val_f = float(fr["test"]), float(fr["validation"])

        def pick(group: str) -> str:
            if hash_fraction(group, seed, "zeroeval_test", test_f):
                return "test"
            return "validation" if hash_fraction(group, seed, "zeroeval_validation", val_f / (1 - test_f)) else "train"
        out.loc[rest, "split"] = out.loc[rest, "dup_group"].map(pick)
    return out


def split_summary(outcomes: pd.DataFrame) -> dict:
    """Per modern source and split: prompts, rows and (SWE-bench) repositories."""
    out: dict = {}
    for source in OUTCOME_SOURCES:
        df = outcomes[outcomes["source"] == source]
        if df.empty:
            continue
        out[source] = {}
        for split, part in df.groupby("split", sort=True):
            info = {"prompts": int(part["prompt_id"].nunique()), "rows": len(part),
                    "models": int(part["model"].nunique())}
            if source == "swebench_verified":
                info["repositories"] = sorted(part["subject"].unique())
                info["mean_cost_usd"] = round(float(np.nanmean(part["cost"])), 4)
            out[source][str(split)] = info
    return out
