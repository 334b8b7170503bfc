"""Parts built as conf/ configures them. Constructors of the parts conf/ builds take no Python
default for a key their YAML sets (tests/experiments/test_one_home.py): the YAML and its comment
are the value's one home. A test that builds such a part by hand takes every key from the YAML
and gives only the settings it is about."""

from __future__ import annotations

from functools import cache
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

import experiments
from experiments import resolvers


@cache
def node(override: str, key: str) -> dict[str, Any]:
    """The resolved node at `key` of the config composed with `override` (e.g. task=vit)."""
    resolvers.register()  # what the entry point does
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=experiments.config_dir(), version_base="1.3"):
            cfg = compose("config", overrides=[override])
        return OmegaConf.to_container(OmegaConf.select(cfg, key), resolve=True)  # type: ignore[return-value]
    finally:
        GlobalHydra.instance().clear()


def configured(override: str, key: str, **settings: Any) -> Any:
    """The part at `key` of the config composed with `override`, built with `settings` on top of
    its YAML keys: configured("task=vit", "callbacks.patch_masking", fill="blur")."""
    from hydra.utils import get_class, instantiate

    values = {**node(override, key), **settings}
    target = get_class(values.pop("_target_"))
    # called directly, not through instantiate(): a test sees the part's own error, not Hydra's wrapper
    return target(**{k: instantiate(v) if isinstance(v, dict) and "_target_" in v else v for k, v in values.items()})
