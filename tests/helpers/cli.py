"""Running `python -m experiments` the way a user does, away from any network or account."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


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


def run_cli(
    tmp_path: Path, *overrides: str, timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run `python -m experiments` from tmp_path (not the checkout) with logs under tmp_path/logs."""
    flags = [o for o in overrides if o.startswith("-")]  # e.g. -m: argparse wants flags first
    rest = [o for o in overrides if not o.startswith("-")]
    cmd = [
        sys.executable,
        "-m",
        "experiments",
        *flags,
        f"paths.log_dir={tmp_path / 'logs'}",
        "trainer.enable_progress_bar=false",
        *rest,
    ]
    return subprocess.run(
        cmd, cwd=tmp_path, env=env or cli_env(tmp_path), capture_output=True, text=True, timeout=timeout
    )
