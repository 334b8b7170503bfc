"""The id of a launch, which names its run folder (or sweep folder): one per launch, shared by every
process and rank of it, however they were started."""

from __future__ import annotations

import os
import secrets
import time

RUN_ID_ENV = "EXPERIMENTS_RUN_ID"


def run_id() -> str:
    """`YYYY-MM-DD_HH-MM-SS_xxxxxx`, fixed for this launch and inherited by the processes it starts.

    Hydra re-resolves `hydra.sweep.dir` for every job (and in every joblib/DDP worker), so a fresh
    random value per call would scatter one sweep; an environment variable set once keeps it whole,
    while the random suffix keeps two launches in the same second apart. Ranks that are started
    apart rather than by this process (torchrun, srun) agree on one id before anything is written
    (`shared_run_id`), so a multi-process run has one folder.
    """
    if RUN_ID_ENV not in os.environ:
        os.environ[RUN_ID_ENV] = shared_run_id() or new_run_id()
    return os.environ[RUN_ID_ENV]


def new_run_id() -> str:
    return time.strftime("%Y-%m-%d_%H-%M-%S") + "_" + secrets.token_hex(3)


def shared_run_id(timeout_s: float = 300.0) -> str | None:
    """The id every rank of this multi-process launch agrees on, or None for a single process.

    torchrun: the first rank to ask stores its id in the elastic agent's store (the one torchrun
    hands its workers, TORCHELASTIC_USE_AGENT_STORE), every other rank reads it; a restarted
    worker reads the same id, so it continues in the same folder. srun with several tasks (also a
    multi-node SLURM step): the job, array task and step ids, the same on every task and again
    after a requeue. Set EXPERIMENTS_RUN_ID to choose the id yourself (it wins over both).
    """
    env = os.environ
    if env.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and "MASTER_ADDR" in env and "MASTER_PORT" in env:
        from datetime import timedelta

        from torch.distributed import TCPStore

        store = TCPStore(
            env["MASTER_ADDR"], int(env["MASTER_PORT"]), is_master=False, timeout=timedelta(seconds=timeout_s)
        )
        key = "experiments/run_id/" + env.get("TORCHELASTIC_RUN_ID", "")
        return store.compare_set(key, "", new_run_id()).decode()  # the first rank's id, for every rank
    if srun_tasks() and "SLURM_JOB_ID" in env:
        parts = [env["SLURM_JOB_ID"], env.get("SLURM_ARRAY_TASK_ID"), env.get("SLURM_STEP_ID")]
        return "slurm_" + "_".join(p for p in parts if p)
    return None


def srun_tasks() -> bool:
    """Whether this process is one of several tasks of a SLURM step (srun), each with its rank."""
    return int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ


def rank_suffix() -> str:
    """`_rank<N>` for the log file (run_rank<N>.log) of a rank other than 0 of a torchrun/srun launch or
    of Lightning's own DDP launch (its processes, started with LOCAL_RANK and NODE_RANK, not RANK), else ''."""
    rank = os.environ.get("RANK") or (os.environ.get("SLURM_PROCID") if srun_tasks() else None)
    if rank is None and os.environ.get("LOCAL_RANK"):
        node = os.environ.get("NODE_RANK", "0")
        rank = os.environ["LOCAL_RANK"] if node == "0" else f"{node}.{os.environ['LOCAL_RANK']}"
    return f"_rank{rank}" if rank and rank != "0" else ""
