"""Shared fixtures: the real config tree composed with Hydra, and a helper to run the CLI."""

from __future__ import annotations

import os
import subprocess
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


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment for `python -m experiments` that never reaches a network or a real account."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "EXPERIMENTS_"))}
    env.update(
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        WANDB_CACHE_DIR=str(tmp_path / "wandb-cache"),
        WANDB_DATA_DIR=str(tmp_path / "wandb-data"),
        WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"),
        HF_HUB_OFFLINE="1",
        PYTHONWARNINGS="ignore",
    )
    env.update(extra)
    return env


def run_cli(tmp_path: Path, *overrides: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m experiments` from tmp_path (not the checkout) with logs under tmp_path/logs."""
    cmd = [sys.executable, "-m", "experiments", f"paths.log_dir={tmp_path / 'logs'}", "trainer.enable_progress_bar=false", *overrides]
    return subprocess.run(cmd, cwd=tmp_path, env=env or cli_env(tmp_path), capture_output=True, text=True, timeout=timeout)
