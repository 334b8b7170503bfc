"""`python -m experiments [overrides]`: compose the config with Hydra and run it.

python -m experiments                                  # the VAE on FashionMNIST
python -m experiments task=vae model.latent_dim=8 logger=csv
python -m experiments -m task=vae model.latent_dim=2,8 # a sweep: one W&B group, a summary table
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from experiments import config_dir


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def main(cfg: DictConfig) -> float | None:
    from experiments.run import run_safely  # heavy imports (torch, lightning) only once composed

    return run_safely(cfg)


if __name__ == "__main__":
    main()
