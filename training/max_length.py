"""`python -m training.max_length [training.max_length.lengths=[32,64,128]]`: how the
encoder's `max_length` trades classifier quality for latency, on the real data.

For each value the task classifier is fine-tuned with a shorter recipe
(`training.max_length.fine_tune`, a delta of the `classifier` group, the same
seed for every value), exported to the int8 ONNX encoder the service runs, and
measured on the VALIDATION prompts (accuracy, macro-F1, ECE) - the choice reads
validation only. Latency is the served encoder's CPU time per prompt on the
same prompts, alone (one request) and in batches of 32 (the micro-batcher
under load), one thread. The table is printed and written to
`<hydra run dir>/max_length.csv`; serving/README.md keeps the one that chose
`classifier.max_length`."""
from __future__ import annotations

import dataclasses
import logging
import statistics
import tempfile
import time
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig

from autoroute.config import register_resolvers

log = logging.getLogger(__name__)
register_resolvers()


def encoder_cpu_ms(enc, texts: list[str], batch: int) -> float:
    """Median CPU milliseconds per prompt of the encoder over `texts` in batches of `batch`."""
    per = []
    for k in range(0, len(texts) - batch + 1, batch):
        c0 = time.process_time()
        enc.pooled(texts[k:k + batch])
        per.append((time.process_time() - c0) * 1000 / batch)
    return float(statistics.median(per))


def measure(cfg: DictConfig, value: int, data, out: Path) -> dict:
    import torch

    from autoroute.classifier import classification_report, train_classifier
    from autoroute.compose import ONNX_FILE, OnnxInt8Encoder, export_int8

    torch.set_num_threads(int(cfg.training.num_threads))
    ccfg = dataclasses.replace(instantiate(cfg.classifier), max_length=int(value), progress=False,
                               **dict(cfg.training.max_length.fine_tune))
    tr, va = data.prompts["train"], data.prompts["validation"]
    t0 = time.time()
    clf, stats = train_classifier(tr["prompt"].tolist(), tr["task"].tolist(), va["prompt"].tolist(),
                                  va["task"].tolist(), ccfg, out / f"trainer-{value}",
                                  train_sources=tr["source"].tolist())
    train_s = time.time() - t0
    folder = out / f"max_length_{value}"
    export_int8(clf, folder / ONNX_FILE)
    enc = OnnxInt8Encoder(clf, cache_dir=folder, tag="-", threads=1, bundle_dir=folder)
    va = va[va["task"].isin(clf.labels)]
    texts = va["prompt"].tolist()
    index = {t: i for i, t in enumerate(clf.labels)}
    _, probs = clf.from_pooled(enc.pooled(texts))
    rep = classification_report(probs, va["task"].map(index).to_numpy(), clf.labels, ccfg.calibration_bins)
    rng = np.random.default_rng(0)
    sample = [texts[i] for i in rng.permutation(len(texts))]
    return {"max_length": value, "val_accuracy": rep["accuracy"], "val_macro_f1": rep["macro_f1"],
            "val_ece": rep["ece"], "n": rep["n"], "alone_cpu_ms": encoder_cpu_ms(enc, sample[:200], 1),
            "batch32_cpu_ms": encoder_cpu_ms(enc, sample, 32), "train_s": train_s,
            "train_steps": stats["train_steps"]}


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    logging.basicConfig(level=logging.INFO)
    data = instantiate(cfg.training.data)
    out_dir = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    rows = []
    with tempfile.TemporaryDirectory(prefix="max-length-") as tmp:
        for v in cfg.training.max_length.lengths:
            rows.append(measure(cfg, int(v), data, Path(tmp)))
            log.info("max_length %s: %s", v, rows[-1])
    table = pd.DataFrame(rows)
    table.to_csv(out_dir / "max_length.csv", index=False)
    print(table.to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
