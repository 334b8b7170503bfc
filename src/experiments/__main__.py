"""`python -m experiments [overrides]`: compose the config with Hydra and run it.

python -m experiments                                  # the VAE on FashionMNIST
python -m experiments task=vae model.latent_dim=8 logger=csv
python -m experiments -m task=vae model.latent_dim=2,8 # a sweep: one W&B group, a summary table
python -m experiments resume=logs/vae/runs/<run>       # continue a stopped run in its folder
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from experiments import config_dir
from experiments.lifecycle import resume_overrides


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def run_job(cfg: DictConfig) -> float | None:
    from experiments.run import run_safely  # heavy imports (torch, lightning) only once composed

    return run_safely(cfg)


def main() -> None:
    try:  # resume=<run folder>: the overrides that run was started with, in its own folder
        sys.argv[1:] = resume_overrides(sys.argv[1:])
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    run_job()


if __name__ == "__main__":
    main()
