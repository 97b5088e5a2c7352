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

from training.classifier_loso import ShiftCalibration
from training.data import TrainingData

log = logging.getLogger(__name__)


def check_labels(cfg: ClassifierConfig) -> None:
    bad = [t for t in cfg.labels if t not in TASKS]
    if bad:
        raise ValueError(f"config classifier.labels: unknown tasks {bad}; tasks are {list(TASKS)}")


def inputs_digest(data: TrainingData) -> str:
    """Which prompts the classifier was fine-tuned on (train + validation ids)."""
    import hashlib
    ids = sorted(data.prompts["train"]["prompt_id"].astype(str)) + ["|"] + \
        sorted(data.prompts["validation"]["prompt_id"].astype(str))
    return hashlib.sha1("\n".join(ids).encode()).hexdigest()[:12]


def run(cfg: ClassifierConfig, data: TrainingData, out_dir: str | Path, int8: bool = False,
        reuse: str | Path | None = None, shift: ShiftCalibration | None = None
        ) -> tuple[TaskClassifier, dict, dict]:
    """Train, calibrate, evaluate on `test` (sources never seen in training); with
    `int8`, also the dynamic-int8 serving variant (``report["int8"]``); the served
    variant on the validation split is ``report["validation"]`` (for selection).
    With `shift`, the temperature fitted on the validation split is multiplied by the
    factor and the per-label bias added that the leave-one-source-group-out benchmark
    measured on out-of-source predictions (`training.classifier_loso.ShiftCalibration`).

    `reuse`: the folder of a classifier an earlier run fine-tuned on exactly these
    prompts (checked), evaluated instead of trained again (to iterate on the later steps)."""
    check_labels(cfg)
    tr, va, te = data.prompts["train"], data.prompts["validation"], data.prompts["test"]
    digest = inputs_digest(data)
    if reuse:
        clf = TaskClassifier.load(reuse)
        if clf.meta.get("inputs_digest") != digest:
            raise ValueError(f"training.classifier_dir {reuse}: that classifier was fine-tuned on other prompts "
                             f"({clf.meta.get('inputs_digest')} != {digest}); train it again (classifier_dir=null)")
        stats = {"reused": 1}
    else:
        clf, stats = train_classifier(tr["prompt"].tolist(), tr["task"].tolist(), va["prompt"].tolist(),
                                      va["task"].tolist(), cfg, Path(out_dir) / "classifier_trainer",
                                      train_sources=tr["source"].tolist() if "source" in tr else None)
        clf.meta["inputs_digest"] = digest
    if shift is not None:
        shift.apply(clf)
        stats.update(temperature=clf.temperature, temperature_validation=clf.meta["temperature_validation"],
                     shift_factor=clf.meta["shift_factor"])
    te = te[te["task"].isin(clf.labels)]
    index = {t: i for i, t in enumerate(clf.labels)}
    probs = clf.predict_proba(te["prompt"].tolist(), progress=cfg.progress)
    report = classification_report(probs, te["task"].map(index).to_numpy(), clf.labels, cfg.calibration_bins)
    served = clf.quantized() if int8 else clf
    if int8:
        p8 = served.predict_proba(te["prompt"].tolist(), progress=cfg.progress)
        report["int8"] = classification_report(p8, te["task"].map(index).to_numpy(), clf.labels,
                                               cfg.calibration_bins)
    va = va[va["task"].isin(clf.labels)]
    if len(va):   # what the champion gate reads: the served classifier on the validation split
        pv = served.predict_proba(va["prompt"].tolist(), progress=cfg.progress)
        report["validation"] = classification_report(pv, va["task"].map(index).to_numpy(), clf.labels,
                                                     cfg.calibration_bins)
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
    clf, stats, report = run(instantiate(cfg.classifier), data, out,
                             shift=instantiate(cfg.training.classifier_shift))
    if stats["is_main_process"]:
        clf.save(out / "classifier")
        summary = {"stats": stats, **{k: report[k] for k in ("accuracy", "macro_f1", "ece", "n")}}
        (out / "classifier_metrics.json").write_text(json.dumps(summary, indent=1))
        print(json.dumps(summary))


register_resolvers()

if __name__ == "__main__":
    main()
