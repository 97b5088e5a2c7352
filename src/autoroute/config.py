"""Composing the Hydra config outside a Hydra app (CLI, service, notebooks)
and building the router from it."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf

from autoroute.catalog import Catalog


def project_root() -> Path:
    """The folder holding conf/ and pyproject.toml (the checkout), else the cwd."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "conf" / "config.yaml").is_file() and (parent / "pyproject.toml").is_file():
            return parent
    return Path.cwd()


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("autoroute_root"):
        OmegaConf.register_new_resolver("autoroute_root", lambda: str(project_root()))


def conf_dir() -> Path:
    return project_root() / "conf"


def load_config(overrides: Sequence[str] = (), config_name: str = "config",
                config_dir: str | Path | None = None) -> DictConfig:
    """Compose the config tree with Hydra-style overrides (``catalog=[benchmark]``)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    register_resolvers()
    try:
        with initialize_config_dir(config_dir=str(config_dir or conf_dir()), version_base="1.3"):
            return compose(config_name, overrides=list(overrides))
    except HydraException as err:
        raise ValueError(f"config: {err}") from err


def build_router(cfg: DictConfig, scorer=None, user_preference=None, degraded: bool = False):
    """The router from a composed config; a trained scorer may be passed in."""
    from hydra.utils import instantiate

    from autoroute.router import Router

    catalog = Catalog.from_config(cfg.catalog)
    rules = OmegaConf.to_container(cfg.rules, resolve=True)
    rcfg = cfg.router
    settings = instantiate(rcfg.settings)
    if scorer is None and rcfg.get("scorer") is not None:
        scorer = instantiate(rcfg.scorer)
    if user_preference is None and rcfg.get("user_preference") is not None:
        user_preference = instantiate(rcfg.user_preference)
    return Router(catalog, rules, scorer=scorer, user_preference=user_preference, settings=settings,
                  degraded=degraded)
