"""Reads an offline W&B run back through wandb's own inspection command (tests only).

`wandb leet inspect --summary --json RUN_DIR` prints the run's state and exit code, its config and
its latest metrics; `wandb leet inspect --json RUN_DIR` prints every record (the run record holds
the group and job type). Both are wandb's supported way to look into an offline run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

WANDB = str(Path(sys.executable).with_name("wandb"))


def _inspect(path: Path, *flags: str) -> str:
    proc = subprocess.run([WANDB, "leet", "inspect", *flags, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def read_run(path: str | Path, records: bool = False) -> dict:
    """{state, exit_code, run_id, config, summary} of an offline run (its folder or .wandb file);
    with `records`, also its group and job type from the run record."""
    path = Path(path)
    summary = json.loads(_inspect(path, "--summary", "--json"))
    if not records:
        return summary
    lines = [json.loads(line) for line in _inspect(path, "--json").splitlines() if line.strip()]
    run = next(r["run"] for r in lines if r["type"] == "run")
    return {**summary, "group": run.get("run_group"), "job_type": run.get("job_type")}


def read_history(path: str | Path) -> list[dict]:
    """Every history row of an offline run, in the order logged (each with its `_step`)."""
    lines = [json.loads(line) for line in _inspect(Path(path), "--json").splitlines() if line.strip()]
    return [r["history"]["item"] for r in lines if r["type"] == "history"]
