"""Readers for every source in ``../shared/data`` and for the project's authored
prompts, with row validation.

Each reader returns one flat table (a list of dicts) per source and records in
a `Report` every malformed row with its file and line (JSON arrays: item
index; CSV: the line the record starts on). Rows are never silently dropped:
a malformed row is counted, listed and left out, and a source whose share of
malformed rows passes `max_malformed_fraction`, or whose file or columns are
missing, raises `SourceError` (its format changed).
"""
from __future__ import annotations

import ast
import csv
import gzip
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from autoroute.types import TASKS

csv.field_size_limit(2**31 - 1)


class SourceError(RuntimeError):
    """A source is missing or its format changed: the stage must stop."""


@dataclass
class Issue:
    source: str
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class Report:
    """Rows read, kept and malformed per source, and the sources skipped."""
    shared_root: str = ""
    read: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    kept: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    issues: list[Issue] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    files: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def bad(self, source: str, file: Path | str, line: int, reason: str) -> None:
        self.issues.append(Issue(source, str(file), line, reason))

    def malformed(self, source: str) -> int:
        return sum(1 for i in self.issues if i.source == source)

    def to_dict(self) -> dict[str, Any]:
        return {
            "shared_root": self.shared_root,
            "skipped": dict(self.skipped),
            "sources": {s: {"files": sorted(set(self.files[s])), "rows_read": self.read[s],
                            "rows_kept": self.kept[s], "rows_malformed": self.malformed(s)}
                        for s in sorted(self.read)},
            "malformed": [vars(i) for i in self.issues],
        }


# --------------------------------------------------------------------------- helpers

def _text(row: dict, key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise ValueError(f"field {key!r} missing or not a string")
    if not value.strip():
        raise ValueError(f"field {key!r} is empty")
    return value


def _bool_score(value: Any, key: str) -> float:
    text = str(value).strip()
    if text in ("True", "true", "1", "1.0"):
        return 1.0
    if text in ("False", "false", "0", "0.0"):
        return 0.0
    raise ValueError(f"field {key!r}: expected True/False, got {text[:30]!r}")


def _unit_float(value: Any, key: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"field {key!r}: not a number: {str(value)[:30]!r}") from None
    if math.isnan(x) or not 0.0 <= x <= 1.0:
        raise ValueError(f"field {key!r}: {x} outside [0, 1]")
    return x


def _need(path: Path) -> Path:
    if not path.exists():
        raise SourceError(f"source file missing: {path} (the shared data folder is incomplete)")
    return path


def _jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(_need(path), "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as err:
                yield lineno, err


def _json_items(path: Path) -> Iterator[tuple[int, Any]]:
    with open(_need(path), encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, list):
        raise SourceError(f"{path}: expected a JSON array, got {type(data).__name__} (format changed?)")
    yield from enumerate(data)


def _csv(path: Path, required: list[str]) -> Iterator[tuple[int, dict]]:
    with open(_need(path), newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise SourceError(f"{path}: columns {missing} missing (format changed?)")
        start = reader.line_num + 1
        for row in reader:
            yield start, row
            start = reader.line_num + 1


def _collect(report: Report, source: str, path: Path, items: Iterator[tuple[int, Any]],
             parse: Callable[[Any], list[dict] | dict], out: list[dict]) -> None:
    """Run `parse` on every (line, record); malformed records go to the report."""
    report.files[source].append(str(path))
    for line, record in items:
        report.read[source] += 1
        try:
            if isinstance(record, Exception):
                raise ValueError(f"invalid JSON: {record}")
            if not isinstance(record, dict):
                raise ValueError(f"expected an object, got {type(record).__name__}")
            rows = parse(record)
        except (ValueError, KeyError, TypeError, SyntaxError) as err:
            report.bad(source, path, line, str(err))
            continue
        for row in rows if isinstance(rows, list) else [rows]:
            row.setdefault("file", path.name)
            row.setdefault("line", line)
            out.append(row)
        report.kept[source] += 1


def check_malformed(report: Report, source: str, max_fraction: float) -> None:
    read, bad = report.read[source], report.malformed(source)
    if read == 0:
        raise SourceError(f"{source}: no rows read (empty or missing source)")
    if bad / read > max_fraction:
        sample = "; ".join(str(i) for i in report.issues if i.source == source)[:600]
        raise SourceError(f"{source}: {bad}/{read} malformed rows exceed {max_fraction:.0%} "
                          f"(format changed?): {sample}")


# --------------------------------------------------------------------------- outcome sources

ROUTELLM_MODELS = ["mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"]


def read_routellm(root: Path, bench: str, report: Report) -> dict[str, list[dict]]:
    """RouteLLM eval responses: per-prompt correctness of its strong and weak model."""
    source = f"routellm_{bench}"
    files = sorted(root.glob("mmlu_*.csv")) if bench == "mmlu" else [root / "gsm8k_responses.csv"]
    if not files:
        raise SourceError(f"{root}: no mmlu_<subject>.csv files")
    rows: list[dict] = []
    for path in files:
        subject = path.stem.removeprefix("mmlu_") if bench == "mmlu" else "gsm8k"

        def parse(r: dict, subject=subject) -> list[dict]:
            prompt = _text(r, "prompt")
            return [{"prompt": prompt, "model": m, "score": _bool_score(r.get(m), m), "cost": None,
                     "benchmark": bench, "subject": subject, "split": "eval"} for m in ROUTELLM_MODELS]
        _collect(report, source, path, _csv(path, ["prompt", *ROUTELLM_MODELS]), parse, rows)
    contaminated: list[dict] = []
    cpath = root / "contaminated_prompts.jsonl"
    _collect(report, f"{source}_contaminated", cpath, _jsonl(cpath),
             lambda r: {"prompt": _text(r, "eval_prompt"), "source": source}, contaminated)
    return {source: rows, f"{source}_contaminated": contaminated}


def read_routerbench(root: Path, benchmarks: list[str], report: Report) -> dict[str, list[dict]]:
    """RouterBench slice: 0/1 score and dollar cost of 11 models per prompt."""
    out: dict[str, list[dict]] = {}
    for bench in benchmarks:
        name = "winogrande" if bench == "winograde" else bench
        source = f"routerbench_{name}"
        rows: list[dict] = []
        for split in ("train", "test"):
            path = _need(root / f"{bench}_{split}.csv")
            with open(path, newline="", encoding="utf-8") as fh:
                header = next(csv.reader(fh))
            models = [c.removesuffix("|total_cost") for c in header if c.endswith("|total_cost")]
            if not models:
                raise SourceError(f"{path}: no '<model>|total_cost' columns (format changed?)")

            def parse(r: dict, split=split, models=models) -> list[dict]:
                raw = _text(r, "prompt")
                try:
                    parts = ast.literal_eval(raw) if raw.startswith("[") else [raw]
                except (ValueError, SyntaxError):
                    parts = [raw]
                prompt = "\n".join(str(p) for p in parts)
                if not prompt.strip():
                    raise ValueError("empty prompt")
                result = []
                for m in models:
                    cost = float(r[f"{m}|total_cost"])
                    if math.isnan(cost) or cost < 0:
                        raise ValueError(f"{m}|total_cost: bad cost {cost}")
                    result.append({"prompt": prompt, "model": m, "score": _unit_float(r[m], m), "cost": cost,
                                   "benchmark": name, "subject": r.get("eval_name") or name, "split": split,
                                   "sample_id": r.get("sample_id", "")})
                return result
            _collect(report, source, path, _csv(path, ["prompt", "sample_id", *models]), parse, rows)
        out[source] = rows
    return out


def read_llmrouter(root: Path, report: Report) -> dict[str, list[dict]]:
    """LLMRouter: dcrouter 0/1 scores of 9 models, task-named queries, model prices."""
    queries: list[dict] = []
    for split in ("train", "test"):
        path = root / f"query_{split}.jsonl"
        _collect(report, "llmrouter_query", path, _jsonl(path),
                 lambda r, split=split: {"prompt": _text(r, "query"), "source_label": _text(r, "task_name"),
                                         "split": split}, queries)
    task_of = {q["prompt"].strip(): q["source_label"] for q in queries}
    outcomes: list[dict] = []
    for split in ("train", "test"):
        path = root / f"dcrouter_{split}.json"

        def parse(r: dict, split=split) -> list[dict]:
            prompt = _text(r, "question")
            scores = r.get("scores")
            if not isinstance(scores, dict) or not scores:
                raise ValueError("field 'scores' missing or empty")
            return [{"prompt": prompt, "model": m, "score": _unit_float(s, m), "cost": None,
                     "benchmark": task_of.get(prompt.strip(), "unknown"), "subject": str(r.get("cluster_id", "")),
                     "split": split} for m, s in scores.items()]
        _collect(report, "llmrouter_dcrouter", path, _json_items(path), parse, outcomes)
    path = _need(root / "llm_candidates.json")
    with open(path, encoding="utf-8") as fh:
        cands = json.load(fh)
    prices = []
    for name, spec in cands.items():
        report.read["llmrouter_candidates"] += 1
        try:
            prices.append({"model": name, "input_price": float(spec["input_price"]),
                           "output_price": float(spec["output_price"]), "api_name": str(spec.get("model", ""))})
            report.kept["llmrouter_candidates"] += 1
        except (KeyError, TypeError, ValueError) as err:
            report.bad("llmrouter_candidates", path, 0, f"model {name!r}: {err}")
    report.files["llmrouter_candidates"].append(str(path))
    return {"llmrouter_query": queries, "llmrouter_dcrouter": outcomes, "llmrouter_candidates": prices}


# --------------------------------------------------------------------------- comparison sources

def read_alpaca_eval(root: Path, report: Report) -> dict[str, list[dict]]:
    """AlpacaEval: GPT-4-Turbo judge preference of model_b over model_a, in [1, 2]."""
    instructions: dict[int, dict] = {}
    ipath = root / "instructions.jsonl"
    inst_rows: list[dict] = []
    _collect(report, "alpaca_eval_instructions", ipath, _jsonl(ipath),
             lambda r: {"id": int(r["id"]), "prompt": _text(r, "instruction"), "dataset": str(r.get("dataset", ""))},
             inst_rows)
    instructions = {r["id"]: r for r in inst_rows}
    rows: list[dict] = []
    apath = root / "annotations.jsonl"

    def parse(r: dict) -> dict:
        iid = int(r["instruction_id"])
        if iid not in instructions:
            raise ValueError(f"instruction_id {iid} not in instructions.jsonl")
        pref = float(r["preference"])
        if math.isnan(pref) or not 1.0 <= pref <= 2.0:
            raise ValueError(f"preference {pref} outside [1, 2]")
        return {"prompt": instructions[iid]["prompt"], "model_a": _text(r, "model_a"), "model_b": _text(r, "model_b"),
                "winner": None, "preference": 2.0 - pref, "dataset": instructions[iid]["dataset"]}
    _collect(report, "alpaca_eval", apath, _jsonl(apath), parse, rows)
    # the instructions are also a labelled-prompt source (labelled by rules, taxonomy.py)
    labelled = [{"prompt": r["prompt"], "source_label": r["dataset"] or "alpaca_eval", "file": r["file"],
                 "line": r["line"]} for r in inst_rows]
    return {"alpaca_eval": rows, "alpaca_eval_instructions": labelled}


ARENA_WINNERS = {"model_a": "model_a", "model_b": "model_b", "tie": "tie", "tie (bothbad)": "tie_bothbad"}


def read_arena(root: Path, report: Report) -> dict[str, list[dict]]:
    """Chatbot Arena battles: human pairwise votes; the first user turn is the prompt."""
    scores: dict[str, float] = {}
    rpath = root / "rated_battles.jsonl"
    rated: list[dict] = []
    _collect(report, "arena_rated", rpath, _jsonl(rpath),
             lambda r: {"question_id": _text(r, "question_id"), "mean_score": float(r["mean_score"])}, rated)
    scores = {r["question_id"]: r["mean_score"] for r in rated}
    rows: list[dict] = []
    path = root / "battles.jsonl"

    def parse(r: dict) -> dict:
        winner = r.get("winner")
        if winner not in ARENA_WINNERS:
            raise ValueError(f"winner {winner!r} not one of {sorted(ARENA_WINNERS)}")
        turns = r.get("turns")
        if not isinstance(turns, list) or not turns or not isinstance(turns[0], str) or not turns[0].strip():
            raise ValueError("field 'turns' missing or empty")
        w = ARENA_WINNERS[winner]
        pref = {"model_a": 1.0, "model_b": 0.0}.get(w, 0.5)
        return {"prompt": turns[0], "model_a": _text(r, "model_a"), "model_b": _text(r, "model_b"), "winner": w,
                "preference": pref, "turns": len(turns), "language": str(r.get("language", "")),
                "question_id": _text(r, "question_id"), "mean_score": scores.get(r["question_id"])}
    _collect(report, "arena", path, _jsonl(path), parse, rows)
    return {"arena": rows}


# --------------------------------------------------------------------------- labelled prompt sources

def _with_input(instruction: str, inp: Any) -> str:
    inp = inp.strip() if isinstance(inp, str) else ""
    return f"{instruction.strip()}\n\n{inp}" if inp else instruction.strip()


def read_prompts(name: str, root: Path, report: Report) -> dict[str, list[dict]]:
    """Task-labelled prompt sources; `source_label` is the source's own label."""
    rows: list[dict] = []
    if name == "arena_hard":
        v1, v2 = [], []
        p = root / "v0.1_question.jsonl"
        _collect(report, "arena_hard_v01", p, _jsonl(p),
                 lambda r: {"prompt": _text(r, "prompt"), "source_label": _text(r, "cluster")}, v1)
        p = root / "v2.0_question.jsonl"
        _collect(report, "arena_hard_v2", p, _jsonl(p),
                 lambda r: {"prompt": _text(r, "prompt"), "source_label": _text(r, "subcategory")}, v2)
        return {"arena_hard_v01": v1, "arena_hard_v2": v2}
    if name == "codealpaca":
        for fname in ("code_alpaca_2k.json", "new_codealpaca.json"):
            p = root / fname
            _collect(report, name, p, _json_items(p),
                     lambda r, f=fname: {"prompt": _with_input(_text(r, "instruction"), r.get("input")),
                                         "source_label": f.removesuffix(".json")}, rows)
    elif name == "humaneval":
        p = root / "HumanEval.jsonl.gz"
        _collect(report, name, p, _jsonl(p),
                 lambda r: {"prompt": _text(r, "prompt"), "source_label": "humaneval"}, rows)
    elif name == "gsm8k":
        for split in ("train", "test"):   # test_socratic repeats the test questions: not read
            p = root / f"{split}.jsonl"
            _collect(report, name, p, _jsonl(p),
                     lambda r, s=split: {"prompt": _text(r, "question"), "source_label": f"gsm8k_{s}"}, rows)
    elif name in ("self_instruct", "alpaca_seed"):
        fname, label = (("user_oriented_instructions.jsonl", "motivation_app") if name == "self_instruct"
                        else ("seed_tasks.jsonl", "name"))
        p = root / fname

        def parse(r: dict) -> dict:
            inst = r.get("instances") or [{}]
            return {"prompt": _with_input(_text(r, "instruction"), inst[0].get("input")),
                    "source_label": _text(r, label)}
        _collect(report, name, p, _jsonl(p), parse, rows)
    elif name == "summarization":
        files = sorted(root.glob("*.jsonl"))
        if not files:
            raise SourceError(f"{root}: no summarization template files")
        for p in files:
            dataset = next((d for d in ("cnn_dailymail", "gigaword", "multi_news", "samsum", "xsum")
                            if p.stem.startswith(d)), None)
            if dataset is None:
                raise SourceError(f"{p}: unknown summarization dataset (format changed?)")
            _collect(report, name, p, _jsonl(p),
                     lambda r, t=p.stem, d=dataset: {"prompt": _text(r, "prompt"), "source_label": t,
                                                     "dataset": d}, rows)
    elif name == "translation":
        for pair in ("ende", "zhen"):
            p = root / f"ted_{pair}_sources.jsonl"
            _collect(report, name, p, _jsonl(p),
                     lambda r, pair=pair: {"text": _text(r, "source"), "source_language": _text(r, "source_language"),
                                           "doc": _text(r, "doc"), "seg_id": int(r["seg_id"]),
                                           "pair": pair}, rows)
    else:
        raise SourceError(f"unknown prompt source {name!r}")
    return {name: rows}


def read_modern_prompts(root: Path, spec: dict, report: Report) -> dict[str, list[dict]]:
    """Prompt files of the product's own models' benchmarks (``modern/``) as labelled
    prompts: ZeroEval tasks listed in ``spec.zeroeval_tasks`` and the SWE-bench
    Verified issue texts. ZeroEval's MATH level 5 rows carry no question text in the
    shared file, so it is not listed; its GSM8K rows are the GSM8K test questions."""
    tasks = set(spec.get("zeroeval_tasks") or [])
    zeroeval: list[dict] = []
    p = root / "zeroeval_prompts.csv"
    _collect(report, "zeroeval_prompts_labelled", p, ((line, r) for line, r in _csv(p, ["task", "id", "question"])
                                             if r["task"] in tasks),
             lambda r: {"prompt": _text(r, "question"), "source_label": _text(r, "task"), "id": r["id"]}, zeroeval)
    swebench: list[dict] = []
    p = root / "swebench_verified_prompts.csv"
    _collect(report, "swebench_prompts", p, _csv(p, ["instance_id", "problem_statement"]),
             lambda r: {"prompt": _text(r, "problem_statement"), "source_label": r.get("repo_owner") or "swebench",
                        "id": _text(r, "instance_id")}, swebench)
    return {"zeroeval_prompts": zeroeval, "swebench_prompts": swebench}


def read_authored(folder: Path, report: Report) -> dict[str, list[dict]]:
    """The project's own labelled prompts: ``data/authored/*.jsonl``."""
    rows: list[dict] = []
    files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    if not files:
        raise SourceError(f"no authored prompts in {folder}: the embedded default data is missing")

    def parse(r: dict) -> dict:
        task = _text(r, "task")
        if task not in TASKS:
            raise ValueError(f"task {task!r} not in the taxonomy")
        if r.get("source", "authored") != "authored":
            raise ValueError(f"source {r.get('source')!r} is not 'authored'")
        return {"prompt": _text(r, "prompt"), "task": task, "source_label": str(r.get("source_label") or task)}
    for p in files:
        _collect(report, "authored", p, _jsonl(p), parse, rows)
    return {"authored": rows}


# --------------------------------------------------------------------------- all sources

def read_source(name: str, root: Path, spec: dict, report: Report) -> dict[str, list[dict]]:
    if not root.is_dir():
        raise SourceError(f"source {name!r}: folder {root} missing")
    if name in ("routellm_mmlu", "routellm_gsm8k"):
        return read_routellm(root, name.removeprefix("routellm_"), report)
    if name == "routerbench":
        return read_routerbench(root, list(spec.get("benchmarks", [])), report)
    if name == "llmrouter":
        return read_llmrouter(root, report)
    if name == "alpaca_eval":
        return read_alpaca_eval(root, report)
    if name == "arena":
        return read_arena(root, report)
    if name in ("swebench_verified", "zeroeval", "arena_ratings"):
        from autoroute.data.modern import read_modern
        return read_modern(name, root, report)
    if name == "modern_prompts":
        return read_modern_prompts(root, spec, report)
    return read_prompts(name, root, report)
