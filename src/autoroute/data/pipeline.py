"""Every data stage in order, without DVC: for machines without ``../shared/data``
(DVC refuses a missing dependency) and for tests.

    python -m autoroute.data.pipeline [key=value ...]
"""
from __future__ import annotations

from omegaconf import DictConfig

from pathlib import Path

import pandas as pd

from autoroute import priors
from autoroute.data import build, card, feedback_log, ingest, normalize
from autoroute.data.io import stage_config


def run(cfg: DictConfig, verbose: bool = True) -> dict:
    report = ingest.run(cfg)
    if verbose:
        ingest.print_report(report)
    normalize.run(cfg)
    manifest = build.run(cfg)
    if verbose:
        build.print_manifest(manifest)
    if len(pd.read_parquet(Path(cfg.paths.processed) / "arena_ratings.parquet")):
        priors.run(cfg)
    elif verbose:
        print(f"priors: no Arena ratings in the data; {cfg.paths.priors} left as it is")
    feedback_log.run(cfg)
    card.run(cfg)
    return manifest


def main() -> None:
    run(stage_config())


if __name__ == "__main__":
    main()
