"""Running `python -m experiments` the way a user does, away from any network or account."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def offline(folder: Path) -> dict[str, str]:
    """The variables that keep a run away from any network or account: W&B offline with its caches
    under `folder`, the Hugging Face hub offline (the tests' process and every CLI it starts)."""
    return {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_CACHE_DIR": str(folder / "wandb-cache"),
        "WANDB_DATA_DIR": str(folder / "wandb-data"),
        "WANDB_CONFIG_DIR": str(folder / "wandb-config"),
        "HF_HUB_OFFLINE": "1",
    }


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment for `python -m experiments` that never reaches a network or a real account."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "EXPERIMENTS_"))}
    env.update(offline(tmp_path), PYTHONWARNINGS="ignore", **extra)
    return env


def cli_command(tmp_path: Path, *overrides: str) -> list[str]:
    """`python -m experiments` with logs under tmp_path/logs, no progress bar, then `overrides`."""
    flags = [o for o in overrides if o.startswith("-")]  # e.g. -m: argparse wants flags first
    rest = [o for o in overrides if not o.startswith("-")]
    logs = f"paths.log_dir={tmp_path / 'logs'}"
    return [sys.executable, "-m", "experiments", *flags, logs, "trainer.enable_progress_bar=false", *rest]


def run_cli(
    tmp_path: Path, *overrides: str, timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run `python -m experiments` from tmp_path (not the checkout) with logs under tmp_path/logs."""
    cmd = cli_command(tmp_path, *overrides)
    return subprocess.run(
        cmd, cwd=tmp_path, env=env or cli_env(tmp_path), capture_output=True, text=True, timeout=timeout
    )
