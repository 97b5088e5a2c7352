"""`python -m training.benchmark_quality [training.benchmark.run=champion|latest|<run_id>|train]`

Prints the quality table (every router and baseline side by side: MMLU/GSM8K
APGR and CPT held-out and out-of-domain, RouterBench cost to match the best
single model and quality at its cost, the classifier on held-out sources) and
logs it to the run in MLflow (`quality_table.json` + `benchmark_table.txt`).
With `train`, it first runs the whole pipeline (same overrides as training.run)."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import hydra  # noqa: E402
import mlflow  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from autoroute.config import register_resolvers  # noqa: E402

register_resolvers()

TARGETS = {"two_model/heldout/mmlu/{head}/apgr": 0.70, "two_model/heldout/gsm8k/{head}/apgr": 0.70,
           "routerbench/{head}/cost_ratio_to_match_best": 0.5, "classifier/test/macro_f1": 0.85}


def find_run(tracker, which: str) -> str:
    client = mlflow.MlflowClient()
    if which == "champion":
        mv, _ = tracker.current_champion()
        if mv is None:
            raise SystemExit(f"no {tracker.alias!r} in the registry {tracker.registered_model!r} at "
                             f"{tracker.tracking_uri}; run `python -m training.run` first")
        return mv.run_id
    if which == "latest":
        exp = client.get_experiment_by_name(tracker.experiment)
        runs = client.search_runs([exp.experiment_id], "metrics.primary > -1",
                                  order_by=["attributes.start_time DESC"], max_results=1) if exp else []
        if not runs:
            raise SystemExit(f"no finished run in experiment {tracker.experiment!r}")
        return runs[0].info.run_id
    return which


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from training.report import format_table, quality_table

    tracker = instantiate(cfg.tracking)
    mlflow.set_tracking_uri(tracker.tracking_uri)
    which = str(cfg.training.benchmark.run)
    if which == "train":
        from training.run import main as train_main
        train_main.__wrapped__(cfg)   # the undecorated pipeline entry, same config
        which = "latest"
    run_id = find_run(tracker, which)
    metrics = mlflow.MlflowClient().get_run(run_id).data.metrics
    text = format_table(metrics)
    checks = []
    for key, target in TARGETS.items():
        key = key.format(head=cfg.training.head)
        val = metrics.get(key)
        ok = val is not None and (val <= target if "cost_ratio" in key else val >= target)
        checks.append(f"  {key}: {'-' if val is None else f'{val:.3f}'} (target "
                      f"{'<=' if 'cost_ratio' in key else '>='} {target}) {'OK' if ok else 'NOT MET'}")
    text += "\ntargets:\n" + "\n".join(checks)
    print(f"run {run_id}\n{text}")
    with mlflow.start_run(run_id=run_id):
        mlflow.log_table(quality_table(metrics).reset_index(names="router"), "quality_table.json")
        mlflow.log_text(text, "benchmark_table.txt")


if __name__ == "__main__":
    main()
