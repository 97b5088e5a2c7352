"""`python -m training.benchmark_quality [training.benchmark.run=champion|latest|<run_id>|train]
[training.benchmark.classifier_loso=true]`

Prints the quality table (every router and baseline side by side: MMLU/GSM8K
APGR and CPT held-out and out-of-domain, RouterBench cost to match the best
single model and quality at its cost, the classifier on held-out sources) and
logs it to the run in MLflow (`quality_table.json` + `benchmark_table.txt`).
With `train`, it first runs the whole pipeline (same overrides as training.run).
With `classifier_loso`, it also runs the classifier's leave-one-source-group-out
protocol (training/classifier_loso.py, about 3-4 minutes per group on a 2-core
CPU) and logs its metrics, per-source table and confusion plot to the same run."""
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
           "routerbench/{head}/cost_ratio_to_match_best": 0.5, "classifier/loso_int8/macro_f1": 0.85,
           "classifier/loso_int8/accuracy": 0.88, "classifier/loso_int8/unsure_rate": 0.10,
           "classifier/loso_int8/ece": 0.08}
LOWER_IS_BETTER = ("cost_ratio", "unsure_rate", "ece")
CLASS_F1_TARGET = 0.75


def classifier_loso(cfg: DictConfig, run_id: str) -> tuple[str, dict[str, float]]:
    """Run the leave-one-source-group-out protocol and log it to `run_id`."""
    import tempfile
    from pathlib import Path

    import torch

    from autoroute.config import build_router
    from training import classifier_loso as L
    from training.report import plot_confusion

    torch.set_num_threads(int(cfg.training.num_threads))
    data = instantiate(cfg.training.data, seed=cfg.seed)
    clf_cfg = instantiate(cfg.classifier)
    with tempfile.TemporaryDirectory() as tmp:
        report = L.run(clf_cfg, data, instantiate(cfg.training.classifier_loso), tmp)
        report["served"] = L.served_report(report["predictions"], tuple(clf_cfg.labels),
                                           lambda scorer: build_router(cfg, scorer=scorer))
        text = L.format_report(report)
        metrics = L.metrics(report)
        per_class = {t: v for t, v in report["per_class_f1"].items()}
        worst = min(per_class, key=per_class.get)
        metrics["classifier/loso_int8/min_class_f1"] = per_class[worst]
        with mlflow.start_run(run_id=run_id):
            mlflow.log_metrics({k.replace("(", "").replace(")", ""): v for k, v in metrics.items()})
            for p in plot_confusion(report, Path(tmp), "classifier_loso_confusion.png",
                                    "classifier, leave-one-source-group-out, int8"):
                mlflow.log_artifact(str(p), "plots")
            report["per_source"].to_csv(Path(tmp) / "classifier_loso_per_source.csv", index=False)
            mlflow.log_artifact(str(Path(tmp) / "classifier_loso_per_source.csv"))
            mlflow.log_text(text, "classifier_loso.txt")
            mlflow.log_dict({k: v for k, v in report.items() if k not in ("per_source", "predictions")},
                            "classifier_loso_report.json")
    return text + f"\nlowest class F1: {worst} {per_class[worst]:.3f} (target >= {CLASS_F1_TARGET})", metrics


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
    if which == "new":   # a run of its own for the classifier protocol (no pipeline artifacts needed)
        with tracker.start(run_name="classifier_loso", tags={"kind": "classifier_loso"}) as run:
            tracker.log_config(cfg, cfg.paths.root, {})
            run_id = run.info.run_id
    else:
        run_id = find_run(tracker, which)
    metrics = mlflow.MlflowClient().get_run(run_id).data.metrics
    loso_text = ""
    if cfg.training.benchmark.classifier_loso:
        loso_text, loso_metrics = classifier_loso(cfg, run_id)
        metrics = {**metrics, **loso_metrics}
    text = format_table(metrics) + (f"\n{loso_text}" if loso_text else "")
    checks = []
    for key, target in TARGETS.items():
        key = key.format(head=cfg.training.head)
        val = metrics.get(key)
        lower = any(w in key for w in LOWER_IS_BETTER)
        ok = val is not None and (val <= target if lower else val >= target)
        checks.append(f"  {key}: {'-' if val is None else f'{val:.3f}'} (target "
                      f"{'<=' if lower else '>='} {target}) {'OK' if ok else 'NOT MET'}")
    if "classifier/loso_int8/min_class_f1" in metrics:
        val = metrics["classifier/loso_int8/min_class_f1"]
        checks.append(f"  every class F1 (lowest {val:.3f}) (target >= {CLASS_F1_TARGET}) "
                      f"{'OK' if val >= CLASS_F1_TARGET else 'NOT MET'}")
    text += "\ntargets:\n" + "\n".join(checks)
    print(f"run {run_id}\n{text}")
    with mlflow.start_run(run_id=run_id):
        mlflow.log_table(quality_table(metrics).reset_index(names="router"), "quality_table.json")
        mlflow.log_text(text, "benchmark_table.txt")


if __name__ == "__main__":
    main()
