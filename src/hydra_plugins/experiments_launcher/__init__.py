"""experiments' Hydra launchers: hydra-submitit-launcher's SLURM and local launchers, fitted to
the run (hydra/launcher=slurm, hydra/launcher=local; see launchers.py)."""
