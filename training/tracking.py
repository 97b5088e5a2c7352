"""MLflow tracking, champion selection in the Model Registry, and the BentoML
export of the champion (config group `tracking`)."""
from __future__ import annotations

import json
import logging
import math
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import mlflow
import pandas as pd
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class RouterPyfunc(mlflow.pyfunc.PythonModel):
    """The champion bundle as an MLflow pyfunc: a frame with a `prompt` column
    (optional `cost_quality`, `user_id`, `org_id`) -> one decision per row."""

    def load_context(self, context):
        from autoroute.bundle import load_router
        self.router = load_router(context.artifacts["bundle"])

    def predict(self, context, model_input, params=None):
        from autoroute.types import Request

        df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame({"prompt": list(model_input)})
        reqs = [Request.from_prompt(str(r["prompt"]), cost_quality=float(r.get("cost_quality", 0.5) or 0.5),
                                    user_id=r.get("user_id"), org_id=r.get("org_id"))
                for r in df.to_dict("records")]
        decisions = self.router.route_batch(reqs)
        return pd.DataFrame([{"selected_model": d.selected_model, "task": d.task, "tier": d.tier,
                              "confidence": d.confidence, "reason": d.reason} for d in decisions])


def git_sha(root: str | Path) -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (sha or "unknown") + ("-dirty" if dirty else "")
    except Exception:  # noqa: BLE001
        return "unknown"


def _finite(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out[k.replace("@", "_")] = f
    return out


def flat_params(cfg: Mapping, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flat_params(v, key + "."))
        else:
            out[key] = str(v)[:500]
    return out


@dataclass
class Tracker:
    """Where runs go and how the champion is chosen."""
    tracking_uri: str
    experiment: str = "autoroute"
    artifact_location: str | None = None
    registered_model: str = "autoroute-router"
    alias: str = "champion"
    primary_metric: str = "primary"
    greater_is_better: bool = True
    min_improvement: float = 0.0
    register: bool = True
    selection: str = "if_better"     # if_better: the alias moves only on a better primary metric;
                                     # always: a challenger (alias `challenger`) is registered whatever it scores
    bentoml_home: str | None = None
    bento_model: str = "autoroute-router"
    export_bentoml: bool = True
    pip_requirements: tuple[str, ...] = ("autoroute",)

    # ------------------------------------------------------------------ runs
    def start(self, run_name: str | None = None, tags: Mapping[str, str] | None = None):
        mlflow.set_tracking_uri(self.tracking_uri)
        if mlflow.get_experiment_by_name(self.experiment) is None:
            kw = {"artifact_location": self.artifact_location} if self.artifact_location else {}
            mlflow.create_experiment(self.experiment, **kw)
        mlflow.set_experiment(self.experiment)
        return mlflow.start_run(run_name=run_name, tags=dict(tags or {}))

    def log_config(self, cfg: DictConfig, root: str, versions: Mapping[str, str]) -> None:
        resolved = OmegaConf.to_container(cfg, resolve=True)
        mlflow.log_dict(resolved, "config/resolved.yaml")
        params = {k: v for k, v in flat_params(resolved).items()
                  if k.split(".")[0] in ("seed", "classifier", "preference", "training", "evaluation")}
        items = list(params.items())
        for i in range(0, len(items), 90):
            mlflow.log_params(dict(items[i:i + 90]))
        mlflow.set_tags({"git_sha": git_sha(root), **{f"data.{k}": v for k, v in versions.items()}})
        mlflow.log_dict(dict(versions), "data_versions.json")

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        m = _finite(metrics)
        items = list(m.items())
        for i in range(0, len(items), 500):
            mlflow.log_metrics(dict(items[i:i + 500]), step=step)

    # ------------------------------------------------------------------ models
    def log_bundle(self, bundle_dir: str | Path) -> str:
        """Log the bundle as a pyfunc model in the current run; returns its model URI."""
        info = mlflow.pyfunc.log_model(name="router", python_model=RouterPyfunc(),
                                       artifacts={"bundle": str(bundle_dir)},
                                       pip_requirements=list(self.pip_requirements))
        return info.model_uri

    def current_champion(self) -> tuple[Any, float | None]:
        client = mlflow.MlflowClient()
        try:
            mv = client.get_model_version_by_alias(self.registered_model, self.alias)
        except mlflow.exceptions.MlflowException:
            return None, None
        val = mv.tags.get(self.primary_metric) if mv.tags else None
        if val is None and mv.run_id:
            val = client.get_run(mv.run_id).data.metrics.get(self.primary_metric)
        return mv, (float(val) if val is not None else None)

    def beats(self, new: float, old: float | None) -> bool:
        if new is None or not math.isfinite(new):
            return False
        if old is None:
            return True
        return new > old + self.min_improvement if self.greater_is_better else new < old - self.min_improvement

    def select_and_register(self, model_uri: str, metrics: Mapping[str, float], run_id: str) -> dict:
        """Register `model_uri` under the alias only if it beats the current champion."""
        new = metrics.get(self.primary_metric)
        mv, old = self.current_champion()
        result = {"candidate": new, "previous": old, "previous_version": getattr(mv, "version", None),
                  "promoted": False, "version": None}
        if self.selection not in ("if_better", "always"):
            raise ValueError(f"tracking.selection must be if_better or always, not {self.selection!r}")
        if not self.register or (self.selection == "if_better" and not self.beats(new, old)):
            log.info("selection: %s %s does not beat the champion (%s); champion unchanged",
                     self.primary_metric, new, old)
            mlflow.MlflowClient().set_tag(run_id, "selection", "kept_champion")
            return result
        client = mlflow.MlflowClient()
        version = mlflow.register_model(model_uri, self.registered_model)
        client.set_model_version_tag(self.registered_model, version.version, self.primary_metric, str(new))
        client.set_model_version_tag(self.registered_model, version.version, "run_id", run_id)
        client.set_registered_model_alias(self.registered_model, self.alias, version.version)
        client.set_tag(run_id, "selection", self.alias)
        result.update(promoted=True, version=str(version.version))
        log.info("selection: version %s is the new %s (%s %.4f > %s)", version.version, self.alias,
                 self.primary_metric, new, old)
        return result

    def export_champion(self, bundle_dir: str | Path, labels: Mapping[str, str], metadata: Mapping) -> str | None:
        if not self.export_bentoml:
            return None
        if self.bentoml_home:
            os.environ["BENTOML_HOME"] = str(self.bentoml_home)
        from autoroute.bundle import export_to_bentoml
        return export_to_bentoml(bundle_dir, self.bento_model, labels, metadata)


def log_json(obj: Any, name: str) -> None:
    mlflow.log_text(json.dumps(obj, indent=1, default=str), name)


__all__ = ["Tracker", "RouterPyfunc", "git_sha", "flat_params", "log_json"]
