"""Config groups instantiate; bad names and bad datasets stop with a message
that says what and where."""
from __future__ import annotations

import pandas as pd
import pytest
from hydra.utils import instantiate

from autoroute.config import load_config


@pytest.mark.parametrize("group", ["classifier", "preference", "tracking", "training.evaluation"])
@pytest.mark.parametrize("overrides", [[], ["experiment=tiny"], ["tracking=server"]])
def test_every_config_group_instantiates(group, overrides):
    cfg = load_config(overrides)
    node = cfg
    for part in group.split("."):
        node = node[part]
    assert instantiate(node) is not None


def test_experiment_tiny_is_a_delta():
    base, tiny = load_config([]), load_config(["experiment=tiny"])
    assert tiny.classifier.max_steps > 0 and base.classifier.max_steps == -1
    assert tiny.catalog == base.catalog and tiny.rules == base.rules


def _data(fixture_data):
    from training.data import load_data
    return load_data(str(fixture_data))


def test_unknown_model_in_config(fixture_data):
    from training.pipeline import check_config
    from training.routing import EvalConfig
    from autoroute.catalog import Catalog

    cfg = load_config(["training.evaluation.strong=gpt-9-ultra"])
    ev = instantiate(cfg.training.evaluation)
    with pytest.raises(ValueError, match=r"evaluation\.strong.*gpt-9-ultra"):
        check_config(cfg, Catalog.from_config(cfg.catalog), ev, _data(fixture_data))
    assert isinstance(ev, EvalConfig)


def test_unknown_dataset_in_config(fixture_data):
    from training.pipeline import check_config
    from autoroute.catalog import Catalog

    cfg = load_config(["training.evaluation.two_model_benchmarks=[routellm_mmlu,routellm_nope]"])
    with pytest.raises(ValueError, match="routellm_nope"):
        check_config(cfg, Catalog.from_config(cfg.catalog), instantiate(cfg.training.evaluation),
                     _data(fixture_data))


def test_unknown_task_in_config():
    from training.train_classifier import check_labels

    cfg = load_config(["classifier.labels=[coding,cooking]"])
    with pytest.raises(ValueError, match=r"classifier\.labels.*cooking"):
        check_labels(instantiate(cfg.classifier))


def test_wrong_schema_names_file_and_columns(fixture_data, tmp_path):
    import shutil

    from training.data import DataError, load_data

    shutil.copytree(fixture_data, tmp_path / "d")
    o = pd.read_parquet(tmp_path / "d" / "outcomes.parquet").drop(columns=["score"])
    o.to_parquet(tmp_path / "d" / "outcomes.parquet")
    with pytest.raises(DataError, match=r"outcomes\.parquet.*missing columns \['score'\]"):
        load_data(str(tmp_path / "d"))


def test_missing_dataset_folder_says_how_to_build_it(tmp_path):
    from training.data import DataError, load_data

    with pytest.raises(DataError, match="dvc repro"):
        load_data(str(tmp_path / "nowhere"))


def test_unknown_task_label_in_data(fixture_data, tmp_path):
    import shutil

    from training.data import DataError, load_data

    shutil.copytree(fixture_data, tmp_path / "d")
    p = tmp_path / "d" / "prompts" / "train.parquet"
    df = pd.read_parquet(p)
    df.loc[0, "task"] = "juggling"
    df.to_parquet(p)
    with pytest.raises(DataError, match="juggling"):
        load_data(str(tmp_path / "d"))
