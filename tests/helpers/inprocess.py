"""Running an experiment in the test process, through Hydra's compose API, as lightning-hydra-template's
tests do: the same config tree and the same run loop as the CLI, without a new interpreter importing
torch and Lightning for every case. A handful of real CLI tests (tests/e2e/test_cli.py) cover the
front door itself.
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

import experiments


def run_experiment(tmp_path: Path, *overrides: str) -> tuple[int, Path]:
    """Compose the config with `overrides` (logs under tmp_path/logs) and run it as one job:
    (exit code, run folder). The environment is the tests' offline one (conftest.py)."""
    from experiments.run import run_safely

    os.environ.pop(experiments.RUN_ID_ENV, None)  # a new launch: a new folder
    GlobalHydra.instance().clear()
    overrides = [f"paths.log_dir={tmp_path / 'logs'}", "trainer.enable_progress_bar=false", *overrides]
    with initialize_config_dir(config_dir=experiments.config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    out = Path(cfg.hydra.run.dir)  # its record (.hydra/overrides.yaml ...) is written by the run as it claims it
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out)
        cfg.hydra.job.name = "experiments"
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # as @hydra.main hands it to the task: Hydra's own node lives in HydraConfig
    try:
        run_safely(cfg)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        GlobalHydra.instance().clear()
    return code, out
