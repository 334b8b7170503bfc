"""experiments' Hydra plugins: the Optuna sweeper (hydra/sweeper=optuna_journal)."""
