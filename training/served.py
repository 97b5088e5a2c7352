"""The classifier as it is served, measured with the run: the champion's
encoder exported to ONNX Runtime with per-channel int8 weights (shipped in the
bundle, so the service loads it instead of exporting it again) and scored on
the held-out test prompts through the served composition (autoroute.compose),
beside the fp32 and PyTorch-int8 numbers the classifier step logs."""
from __future__ import annotations

from pathlib import Path

from autoroute.classifier import TaskClassifier, classification_report
from autoroute.compose import ONNX_FILE, OnnxInt8Encoder, export_int8


def ship_onnx_encoder(clf: TaskClassifier, bundle_dir: Path) -> Path:
    """Write the int8 ONNX encoder into the bundle folder."""
    return export_int8(clf, Path(bundle_dir) / ONNX_FILE)


def served_classifier_report(clf: TaskClassifier, bundle_dir: Path, data, bins: int = 15) -> dict:
    """Accuracy, macro-F1, ECE, per-class F1 of the ONNX int8 encoder + the task head on `test`."""
    te = data.prompts["test"]
    te = te[te["task"].isin(clf.labels)]
    index = {t: i for i, t in enumerate(clf.labels)}
    enc = OnnxInt8Encoder(clf, cache_dir=Path(bundle_dir), tag="-", bundle_dir=bundle_dir)
    _, probs = clf.from_pooled(enc.pooled(te["prompt"].tolist()))
    return classification_report(probs, te["task"].map(index).to_numpy(), clf.labels, bins)
