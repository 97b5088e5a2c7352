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

    def select_and_register(self, model_uri: str, metrics: Mapping[str, float], run_id: str,
                            data_version: str | None = None, protocol: str | None = None,
                            servable: bool = True, not_servable_reason: str = "") -> dict:
        """The champion gate. `metrics[primary_metric]` is the run's VALIDATION score (the
        pipeline builds it from `val/` terms only). A run that may not be served (a sweep, a
        sliced-data run) never moves the alias. The candidate is compared with the champion only
        when both were trained on the same data version and evaluated under the same protocol,
        and must beat it by more than `min_improvement`; a champion from another data version or
        protocol is not comparable and is replaced by a servable run."""
        new = metrics.get(self.primary_metric)
        mv, old = self.current_champion()
        tags = dict(mv.tags or {}) if mv is not None else {}
        result = {"candidate": new, "previous": old, "previous_version": getattr(mv, "version", None),
                  "promoted": False, "version": None, "data_version": data_version, "protocol": protocol,
                  "reason": ""}
        if self.selection not in ("if_better", "always"):
            raise ValueError(f"tracking.selection must be if_better or always, not {self.selection!r}")
        if self.selection == "always" and self.alias == "champion":
            raise ValueError("tracking.selection=always registers a challenger whatever it scores: give it its own "
                             "alias (experiment=challenger); the champion alias moves only through the gate")
        client = mlflow.MlflowClient()
        comparable = mv is None or (tags.get("data_version") == data_version and tags.get("protocol") == protocol)
        challenger = self.selection == "always"   # e.g. experiment=challenger: its own alias, promoted by hand
        if challenger and self.register:
            result["reason"] = (f"tracking.selection=always: registered as {self.alias!r} whatever it scores "
                                f"({self.primary_metric} {new}); the champion alias is not touched")
        elif not servable:
            result["reason"] = f"not servable: {not_servable_reason}"
        elif not self.register:
            result["reason"] = "registration disabled (tracking.register=false)"
        elif mv is not None and not comparable:
            result["reason"] = (f"champion v{mv.version} was trained on data {tags.get('data_version')} under protocol "
                                f"{tags.get('protocol')}: not comparable with data {data_version} / protocol "
                                f"{protocol}; the run on the current data and protocol replaces it")
        elif not self.beats(new, old):
            result["reason"] = (f"{self.primary_metric} {new} does not beat the champion's {old} by more than "
                                f"{self.min_improvement}")
        else:
            result["reason"] = f"{self.primary_metric} {new} beats {old} by more than {self.min_improvement}"
        promote = self.register and (challenger or (servable and (not comparable or self.beats(new, old))))
        if not promote:
            log.info("selection: champion unchanged (%s)", result["reason"])
            client.set_tag(run_id, "selection", "not_servable" if not servable else "kept_champion")
            client.set_tag(run_id, "selection_reason", result["reason"][:5000])
            return result
        version = mlflow.register_model(model_uri, self.registered_model)
        for key, val in ((self.primary_metric, str(new)), ("run_id", run_id), ("data_version", data_version),
                         ("protocol", protocol)):
            client.set_model_version_tag(self.registered_model, version.version, key, str(val))
        client.set_registered_model_alias(self.registered_model, self.alias, version.version)
        client.set_tag(run_id, "selection", self.alias)
        client.set_tag(run_id, "selection_reason", result["reason"][:5000])
        result.update(promoted=True, version=str(version.version))
        log.info("selection: version %s is the new %s (%s)", version.version, self.alias, result["reason"])
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
