"""Scale path: the classifier training runs unchanged under
`accelerate launch --num_processes 2` on CPU (so more GPUs or nodes is a flag)."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_classifier_trains_under_accelerate_launch(training_env, tmp_path):
    launcher = ROOT / ".venv" / "bin" / "accelerate"
    out = tmp_path / "run"
    # accelerate's torchrun launcher (`--multi_gpu`) with the CPU/gloo backend: on CPU,
    # `--cpu` alone means one process unless an MPI hostfile is given
    cmd = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "training.train_classifier",
           *training_env["overrides"], "classifier.use_cpu=true", f"hydra.run.dir={out}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    summary = json.loads((out / "classifier_metrics.json").read_text())
    assert summary["stats"]["world_size"] == 2
    assert summary["stats"]["train_steps"] > 0 and 0 <= summary["macro_f1"] <= 1
    assert (out / "classifier" / "head.pt").exists()
