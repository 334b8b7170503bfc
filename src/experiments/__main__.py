"""`python -m experiments [overrides]`: compose the config with Hydra and run it.

python -m experiments                                  # the VAE on FashionMNIST
python -m experiments task=vae model.latent_dim=8 logger=csv
python -m experiments -m task=vae model.latent_dim=2,8 # a sweep: one W&B group, a summary table
python -m experiments resume=logs/vae/runs/<run>       # continue a stopped run in its folder
python -m experiments eval=logs/vae/runs/<run>         # evaluate a finished run again, into logs/vae/evals/
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys

import hydra
from omegaconf import DictConfig

from experiments import config_dir, heartbeat, resolvers
from experiments.evaluate import eval_overrides
from experiments.lifecycle import resume_overrides
from experiments.run_ids import rank_suffix

# The program's entry (and what a SLURM job unpickles run_job from): the config tree's resolvers.
resolvers.register()


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def run_job(cfg: DictConfig):  # -> RunRecord | lifecycle.JobFailed (a sweeper, a launcher read it)
    # the first line within a second or two of the command, before torch and Lightning load (seconds more)
    print(f"{cfg.task_name}: starting in {cfg.paths.output_dir}", flush=True)
    # from that line on, never 10 s without one (loading torch and Lightning takes that on a busy machine);
    # rank 0 only: the process whose log has no rank suffix
    with heartbeat.Heartbeat() if rank_suffix() == "" else contextlib.nullcontext():
        from experiments.run import run_safely  # heavy imports (torch, lightning) only once composed

        return run_safely(cfg)


CLUSTER_EXTRA = {  # an override that needs the cluster extra -> the module it needs
    "hydra/launcher=slurm": "hydra_plugins.hydra_submitit_launcher",
    "hydra/launcher=local": "hydra_plugins.hydra_submitit_launcher",
    "hparams_search=": "optuna",
}


def missing_extra(argv: list[str]) -> str | None:
    """The one-line error for an override whose package is not installed, else None."""
    for arg in argv:
        for prefix, module in CLUSTER_EXTRA.items():
            if arg.startswith(prefix):
                try:
                    found = importlib.util.find_spec(module) is not None
                except ModuleNotFoundError:
                    found = False
                if not found:
                    name = module.split(".")[-1]
                    return f"{arg} needs the cluster extra ({name} is not installed): pip install '.[cluster]'"
    return None


def main() -> None:
    try:  # resume=<run folder>: the overrides that run was started with, in its own folder
        sys.argv[1:] = resume_overrides(sys.argv[1:])
        sys.argv[1:] = eval_overrides(sys.argv[1:])  # eval=<run folder>: its config and best checkpoint, a new folder
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if message := missing_extra(sys.argv[1:]):
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    run_job()


if __name__ == "__main__":
    main()
