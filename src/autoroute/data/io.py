"""Config loading and table I/O shared by the pipeline stages."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from autoroute.config import load_config


def stage_config(argv: Sequence[str] | None = None) -> DictConfig:
    """The composed config with ``key=value`` overrides from the command line."""
    overrides = list(sys.argv[1:] if argv is None else argv)
    return load_config(overrides)


def data_params(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg.data, resolve=True)


def _quiet() -> None:
    import datasets

    datasets.disable_progress_bars()


def write_table(df: pd.DataFrame, path: Path) -> None:
    """Parquet through HF `datasets`, so `datasets.load_dataset('parquet', ...)` reads it back."""
    from datasets import Dataset

    _quiet()

    path.parent.mkdir(parents=True, exist_ok=True)
    Dataset.from_pandas(df.reset_index(drop=True), preserve_index=False).to_parquet(str(path))


def read_table(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)


def write_json(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))
