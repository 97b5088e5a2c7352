"""`python -m training.run [key=value ...] [experiment=<name>] [--multirun]`:
train the task classifier and the preference model, evaluate them beside the
baselines, log everything to MLflow, and register the winner (MLflow alias
`champion` + BentoML model store) when it beats the champion on validation;
sweeps and sliced-data runs never replace it. Returns the primary (validation)
metric, for sweepers."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from autoroute.config import register_resolvers  # noqa: E402

register_resolvers()


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from pathlib import Path

    from hydra.types import RunMode

    from training import pipeline

    os.environ["BENTOML_HOME"] = str(cfg.paths.bentoml_home)
    pipeline.seed_everything(cfg.seed)
    tracker = instantiate(cfg.tracking)
    data = instantiate(cfg.training.data, seed=cfg.seed)
    return pipeline.run(cfg, tracker, data, clf_cfg=instantiate(cfg.classifier),
                        pref_cfg=instantiate(cfg.preference), ev=instantiate(cfg.training.evaluation),
                        out_dir=Path(HydraConfig.get().runtime.output_dir),
                        sweep=HydraConfig.get().mode == RunMode.MULTIRUN)


if __name__ == "__main__":
    main()
