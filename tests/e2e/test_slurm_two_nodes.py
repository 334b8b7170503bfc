"""Multi-node DDP through a real two-node SLURM cluster on this one machine (marked `slurm`).

scripts/slurm_cluster.sh with EXPERIMENTS_SLURM_NODES=2 runs two slurmd, <host>-n1 and <host>-n2,
each with half the machine's cores; the test runs a 2-node x 1-task DDP job through
`hydra/launcher=slurm` and puts the cluster back as it found it (one node, or stopped).

    .venv/bin/python -m pytest -m slurm -n 0 tests/e2e/test_slurm_two_nodes.py     # as root
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from cli import cli_command, cli_env
from slurm_cluster import (
    SCRIPT,
    SLURM_CONF,
    Case,
    interrupt_when_training,
    requeue_and_wait,
    sacct,
    task_pids,
    why_no_cluster,
)

pytestmark = pytest.mark.slurm


def cluster_script(action: str, nodes: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "EXPERIMENTS_SLURM_NODES": str(nodes)}
    return subprocess.run(["bash", str(SCRIPT), action], capture_output=True, text=True, timeout=900, env=env)


@pytest.fixture(scope="module")
def two_nodes():
    reason = why_no_cluster()
    if reason:
        pytest.skip(reason)
    was_up = cluster_script("status", 1).returncode == 0
    t0 = time.time()
    proc = cluster_script("start", 2)
    if proc.returncode != 0:
        pytest.fail(f"scripts/slurm_cluster.sh start (2 nodes) failed: {proc.stdout[-1500:]}{proc.stderr[-1500:]}")
    print(f"two nodes up in {time.time() - t0:.1f} s: {proc.stdout.strip()}")
    yield
    if was_up:
        cluster_script("start", 1)  # as it was
    else:
        cluster_script("stop", 2)


TWO_NODES = (  # one task on each node, gloo on the CPU
    "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.num_nodes=2",
    "trainer.precision=32-true", "trainer.sync_batchnorm=false",
)  # fmt: skip
TRAINS = (  # long enough (3 epochs, a few hundred steps) to be interrupted after its first epoch
    "task=vae", "data.synthetic=true", "data.synthetic_size=1000", "data.batch_size=16", "trainer.max_epochs=3",
    "hydra.launcher.partition=debug", *TWO_NODES,
)  # fmt: skip


def env_for(tmp_path) -> dict:
    return cli_env(tmp_path, SLURM_CONF=str(SLURM_CONF))


def rank_logs(job) -> dict[str, str]:
    return {p.name: p.read_text() for p in job.glob("run*.log")}


def rank_values(logs: dict[str, str], key: str = "test/neg_elbo") -> list[str]:
    values = [re.search(rf"rank {r}: {key} = (\S+)", logs[n]) for r, n in enumerate(sorted(logs))]
    assert all(values), logs
    return [v.group(1) for v in values]


def test_a_two_node_ddp_job_shares_one_folder_and_agrees_on_the_metric(two_nodes, tmp_path):
    env = env_for(tmp_path)
    cmd = cli_command(
        tmp_path, "-m", "hydra/launcher=slurm", "hydra.launcher.partition=debug", "task=vae", "debug=smoke", *TWO_NODES
    )
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    print(f"2-node DDP: exit {proc.returncode} after {time.time() - t0:.0f} s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 node(s) x 1 task(s), 1 CPU(s) per task" in proc.stdout
    (sweep,) = tmp_path.glob("logs/vae/multiruns/*")
    job = sweep / "0"
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")) == ["0"]
    logs = rank_logs(job)
    assert set(logs) == {"run.log", "run_rank1.log"}
    values = rank_values(logs)
    assert values[0] == values[1], values
    assert json.loads((job / "metrics.json").read_text())["status"] == "ok"  # rank 0's
    assert "W&B mode" in logs["run.log"] and "W&B" not in logs["run_rank1.log"]
    (job_id,) = {p.name.split("_")[0] for p in (sweep / ".submitit").iterdir() if p.is_dir()}
    (row,) = sacct(job_id)
    assert row["state"] == "COMPLETED", row
    nodes = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-j", row["id"], "-o", "NodeList"],
        capture_output=True, text=True, env={**os.environ, "SLURM_CONF": str(SLURM_CONF)},
    ).stdout.strip()  # fmt: skip
    assert nodes.endswith("-n[1-2]"), nodes  # both nodes ran it


# A case runs alone on the cluster: 2-4 minutes on 2 idle cores, up to 6 in CI. One that has not
# ended by then hangs: it fails with its processes' stacks, and its job is cancelled.
CASE_S = 900


def run_interrupted(tmp_path, name: str, action, *overrides: str) -> Case:
    """A 3-epoch 2-node job through `hydra/launcher=slurm`, `action` done to it after its first epoch."""
    case = Case(name, tmp_path / name, TRAINS + overrides).start(env_for(tmp_path / name))
    threading.Thread(target=interrupt_when_training, args=(case, action), daemon=True).start()
    return case.wait(CASE_S)


@pytest.mark.parametrize(
    ("command", "how", "code"),
    [
        (["scancel", "--signal=USR2"], "requeued by submitit", 128 + 12),  # submitit's preemption signal
        (["scontrol", "requeue"], "requeued by SLURM", 128 + 15),  # SLURM's own: SIGTERM to every task
    ],
    ids=["usr2", "scontrol-requeue"],
)
def test_a_two_node_job_preempted_resumes_on_both_nodes_in_its_folder_and_wandb_run(
    two_nodes, tmp_path, command, how, code
):
    """Preempted after its first epoch, where the signal can land on each rank at a different point
    (CI once saw this job hang until the collective timeout): both ranks stop at one step, the job
    is requeued, and its next attempt goes on from the checkpoint on both nodes."""
    from wandb_reader import read_run

    case = run_interrupted(tmp_path, "preempted", command)
    assert case.rc == 0, f"{case.stderr[-3000:]}\n{case.evidence()}"
    assert "signalled" in case.events, "the job was never seen training"
    job = case.job(0)
    result = json.loads((job / "metrics.json").read_text())
    assert result["status"] == "ok" and result["epochs"] == 3
    (note,) = (job / "REQUEUED").read_text().splitlines()  # rank 0's line, once
    assert how in note and "continues from checkpoints/last.ckpt" in note, note
    logs = rank_logs(job)
    assert set(logs) == {"run.log", "run_rank1.log"}
    for log in logs.values():  # both ranks' second attempt went on from the checkpoint
        assert "resuming the run in" in log, log[-2000:]
    values = rank_values(logs)
    assert values[0] == values[1], values
    attempts = [r["state"] for r in sacct(case.array_job, all_attempts=True)]
    assert attempts == ["REQUEUED", "COMPLETED"], attempts
    run_id = (job / "wandb_run_id").read_text().strip()
    runs = sorted(job.glob("wandb/offline-run-*"))  # rank 0 alone, one W&B run across the attempts
    assert len(runs) >= 2 and all(r.name.endswith(run_id) for r in runs), runs
    codes = [read_run(r)["exit_code"] for r in runs]
    assert code in codes[:-1] and codes[-1] == 0, codes


def kill_rank(sig: int, rank: int = 1):
    def action(job: str) -> None:
        pids = task_pids(job, rank)
        assert pids, f"no process of rank {rank} of job {job}"
        for pid in pids:
            os.kill(pid, sig)

    return action


@pytest.mark.parametrize(
    ("sig", "timeout_s", "why"),
    [
        (signal.SIGKILL, 1800, ("by peer", "Broken pipe")),  # a read of the closed socket; a write to it
        # the collective that timed out says so; one after it on the closed pair (CI saw this) says the pair closed
        (signal.SIGSTOP, 45, ("Timed out waiting 45000ms", "Application timeout caused pair closure")),
    ],
    ids=["a-task-killed", "a-task-frozen"],
)
def test_a_two_node_job_losing_a_task_ends_with_its_checkpoint_and_a_requeue_continues_it(
    two_nodes, tmp_path, sig, timeout_s, why
):
    """Rank 1's process killed (a node lost) or frozen (a node hung) after the first epoch: rank 0's
    collective fails at once or after `trainer.strategy.timeout`, it records why and how to go on,
    srun's --kill-on-bad-exit ends the frozen task, the job fails; a requeue continues the run."""
    case = run_interrupted(
        tmp_path, "lost", kill_rank(sig), "logger=csv", f"trainer.strategy.timeout.seconds={timeout_s}"
    )
    ended_after_s = case.wall_s - (case.events["signalled"][1] - case.started)
    print(f"ended {ended_after_s:.0f} s after the signal")
    assert case.rc == 1, case.stderr[-3000:]
    job = case.job(0)
    first = (job / "FAILED").read_text().splitlines()[0]
    print(first)
    assert first.startswith("lost another rank of 2 of this run in epoch "), f"{first}\n{case.evidence()}"
    assert any(w in first for w in why) and first.endswith(
        f"continue from checkpoints/last.ckpt with: scontrol requeue {case.array_job}"
    ), f"{first}\n{case.evidence()}"
    assert f"error: 1 of 1 jobs failed: {job / 'FAILED'}" in case.stderr
    # the frozen task did not hold the job: it ended within the timeout and a minute of closing
    assert ended_after_s < timeout_s + 120 if sig == signal.SIGSTOP else True, ended_after_s
    assert [r["state"] for r in sacct(case.array_job)] == ["FAILED"]
    assert (job / "checkpoints" / "last.ckpt").is_file()  # the first epoch's, intact

    record = requeue_and_wait(case.slurm_id(0))
    assert record["JobState"] == "COMPLETED" and (job / "metrics.json").is_file(), f"{record}\n{case.evidence()}"
    result = json.loads((job / "metrics.json").read_text())
    assert result["status"] == "ok" and result["epochs"] == 3
    assert not (job / "FAILED").exists()
    logs = rank_logs(job)
    assert all("resuming the run in" in log for log in logs.values()), logs
    assert [r["state"] for r in sacct(case.array_job, all_attempts=True)][-1] == "COMPLETED"


def test_torchrun_across_two_nodes_in_an_allocation_shares_one_folder_and_agrees_on_the_metric(two_nodes, tmp_path):
    overrides = " ".join(cli_command(tmp_path, "task=vae", "debug=smoke", "logger=csv", *TWO_NODES)[3:])
    script = tmp_path / "torchrun.sbatch"
    script.write_text(
        "#!/bin/bash\n"
        'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)\n'
        f"srun {sys.executable} -m torch.distributed.run --nnodes=2 --nproc_per_node=1 --rdzv_backend=c10d "
        f"--rdzv_endpoint=$head:29517 --rdzv_id=$SLURM_JOB_ID -m experiments {overrides}\n"
    )
    proc = subprocess.run(
        ["sbatch", "--wait", "-N", "2", "--ntasks-per-node=1", "-c", "1", "--mem=4G", "-p", "debug",
         "-o", str(tmp_path / "slurm-%j.out"), str(script)],
        cwd=tmp_path, env=env_for(tmp_path), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    out = "".join(p.read_text() for p in tmp_path.glob("slurm-*.out"))
    print(out[-5000:])
    assert proc.returncode == 0, proc.stderr[-3000:] + out[-3000:]
    (run,) = tmp_path.glob("logs/vae/runs/*")  # one folder for both ranks
    logs = rank_logs(run)
    assert set(logs) == {"run.log", "run_rank1.log"}, sorted(logs)
    values = rank_values(logs)
    assert values[0] == values[1], values
    assert json.loads((run / "metrics.json").read_text())["status"] == "ok"
