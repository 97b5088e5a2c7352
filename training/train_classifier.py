"""Step 2: fine-tune the Tier 3 task classifier and evaluate it on the held-out
sources. Also a Hydra app of its own, the scale path:

    accelerate launch --num_processes 2 -m training.train_classifier experiment=tiny

runs the same code on 2 processes (or GPUs, or nodes)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from autoroute.classifier import ClassifierConfig, TaskClassifier, classification_report, train_classifier
from autoroute.config import register_resolvers
from autoroute.types import TASKS

from training.data import TrainingData

log = logging.getLogger(__name__)


def check_labels(cfg: ClassifierConfig) -> None:
    bad = [t for t in cfg.labels if t not in TASKS]
    if bad:
        raise ValueError(f"config classifier.labels: unknown tasks {bad}; tasks are {list(TASKS)}")


def run(cfg: ClassifierConfig, data: TrainingData, out_dir: str | Path, int8: bool = False
        ) -> tuple[TaskClassifier, dict, dict]:
    """Train, calibrate, evaluate on `test` (sources never seen in training); with
    `int8`, also the dynamic-int8 serving variant (``report["int8"]``)."""
    check_labels(cfg)
    tr, va, te = data.prompts["train"], data.prompts["validation"], data.prompts["test"]
    clf, stats = train_classifier(tr["prompt"].tolist(), tr["task"].tolist(), va["prompt"].tolist(),
                                  va["task"].tolist(), cfg, Path(out_dir) / "classifier_trainer",
                                  train_sources=tr["source"].tolist() if "source" in tr else None)
    te = te[te["task"].isin(clf.labels)]
    index = {t: i for i, t in enumerate(clf.labels)}
    probs = clf.predict_proba(te["prompt"].tolist(), progress=cfg.progress)
    report = classification_report(probs, te["task"].map(index).to_numpy(), clf.labels, cfg.calibration_bins)
    served = clf.quantized() if int8 else clf
    if int8:
        p8 = served.predict_proba(te["prompt"].tolist(), progress=cfg.progress)
        report["int8"] = classification_report(p8, te["task"].map(index).to_numpy(), clf.labels,
                                               cfg.calibration_bins)
    # the model as served on the validation split: what model selection may look at
    va = va[va["task"].isin(clf.labels)]
    report["validation"] = classification_report(served.predict_proba(va["prompt"].tolist()),
                                                 va["task"].map(index).to_numpy(), clf.labels, cfg.calibration_bins)
    if "source" in te:
        report["per_source_accuracy"] = {
            s: float((probs[m.to_numpy()].argmax(1) == te["task"].map(index).to_numpy()[m.to_numpy()]).mean())
            for s, m in ((s, te["source"] == s) for s in sorted(te["source"].unique()))}
    return clf, stats, report


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    import torch
    from hydra.core.hydra_config import HydraConfig

    torch.set_num_threads(int(cfg.training.num_threads))
    data = instantiate(cfg.training.data, seed=cfg.seed)
    out = Path(HydraConfig.get().runtime.output_dir)
    clf, stats, report = run(instantiate(cfg.classifier), data, out)
    if stats["is_main_process"]:
        clf.save(out / "classifier")
        summary = {"stats": stats, **{k: report[k] for k in ("accuracy", "macro_f1", "ece", "n")}}
        (out / "classifier_metrics.json").write_text(json.dumps(summary, indent=1))
        print(json.dumps(summary))


register_resolvers()

if __name__ == "__main__":
    main()
