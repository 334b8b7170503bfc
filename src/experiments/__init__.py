"""The application: the Hydra entry point and the one run loop every task shares.

Importing it has no side effects: the config tree's resolvers are registered by the entry points
(experiments.resolvers.register).
"""

from __future__ import annotations

from pathlib import Path

from experiments.run_ids import RUN_ID_ENV, new_run_id, rank_suffix, run_id, shared_run_id, srun_tasks

__all__ = ["RUN_ID_ENV", "config_dir", "new_run_id", "rank_suffix", "run_id", "shared_run_id", "srun_tasks"]


def config_dir() -> str:
    """The Hydra config tree: inside an installed package, or conf/ at the root of a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parents[1] / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"no Hydra config tree (config.yaml) next to {here}: reinstall the package")
