"""Shared fixtures: the real config tree composed with Hydra. Helpers live in tests/helpers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import experiments

sys.path.insert(0, str(Path(__file__).parent / "helpers"))  # formats.py, wandb_reader.py


@pytest.fixture
def compose_cfg():
    """compose_cfg(*overrides) -> the composed DictConfig (Hydra's own keys included)."""

    def _compose(*overrides: str):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=experiments.config_dir(), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)

    yield _compose
    GlobalHydra.instance().clear()
