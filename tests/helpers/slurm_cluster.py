"""The SLURM test cluster (scripts/slurm_cluster.sh) as the tests marked `slurm` use it."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout
SCRIPT = ROOT / "scripts" / "slurm_cluster.sh"
STATE = Path(os.environ.get("EXPERIMENTS_SLURM_STATE", "/var/tmp/experiments-slurm"))
SLURM_CONF = STATE / "etc" / "slurm.conf"


def why_no_cluster() -> str | None:
    if platform.system() != "Linux":
        return f"a SLURM test cluster needs Linux (this is {platform.system()})"
    if os.geteuid() != 0:
        return "a SLURM test cluster needs root (scripts/slurm_cluster.sh starts daemons and may apt-get install)"
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "SLURM is not installed and there is no apt-get to install it"
    return None


def slurm(*args: str) -> str:
    env = {**os.environ, "SLURM_CONF": str(SLURM_CONF)}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=60, check=True).stdout


def sacct(job: str, *, all_attempts: bool = False) -> list[dict[str, str]]:
    """One row per job (array task) of `job`, every attempt with `all_attempts` (sacct -D), once
    every job has ended (a job hands its result back, then ends: the command may return first)."""
    deadline = time.time() + 120
    while True:
        out = slurm("sacct", "-n", "-X", "-P", *(["-D"] if all_attempts else []), "-j", job,
                    "-o", "JobID,State,ExitCode,Start,End,DerivedExitCode")  # fmt: skip
        keys = ("id", "state", "exit", "start", "end", "derived")
        rows = [dict(zip(keys, line.split("|"), strict=True)) for line in out.splitlines() if line.strip()]
        if time.time() > deadline or not any(r["state"] in ("PENDING", "RUNNING", "COMPLETING") for r in rows):
            return rows
        time.sleep(2)
