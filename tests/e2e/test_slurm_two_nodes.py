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
import subprocess
import time

import pytest
from cli import cli_command, cli_env
from slurm_cluster import SCRIPT, SLURM_CONF, sacct, why_no_cluster

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


def test_a_two_node_ddp_job_shares_one_folder_and_agrees_on_the_metric(two_nodes, tmp_path):
    env = cli_env(tmp_path, SLURM_CONF=str(SLURM_CONF))
    cmd = cli_command(
        tmp_path, "-m", "hydra/launcher=slurm", "hydra.launcher.partition=debug", "task=vae", "debug=smoke",
        "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.num_nodes=2",
        "trainer.precision=32-true", "trainer.sync_batchnorm=false",
    )  # fmt: skip
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    print(f"2-node DDP: exit {proc.returncode} after {time.time() - t0:.0f} s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 node(s) x 1 task(s), 1 CPU(s) per task" in proc.stdout
    (sweep,) = tmp_path.glob("logs/vae/multiruns/*")
    job = sweep / "0"
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")) == ["0"]
    logs = {p.name: p.read_text() for p in job.glob("__main__*.log")}
    assert set(logs) == {"__main__.log", "__main___rank1.log"}
    values = [re.search(rf"rank {r}: test/neg_elbo = (\S+)", logs[n]) for r, n in enumerate(sorted(logs))]
    assert all(values) and values[0].group(1) == values[1].group(1), values
    assert json.loads((job / "metrics.json").read_text())["status"] == "ok"  # rank 0's
    assert "W&B mode" in logs["__main__.log"] and "W&B" not in logs["__main___rank1.log"]
    (job_id,) = {p.name.split("_")[0] for p in (sweep / ".submitit").iterdir() if p.is_dir()}
    (row,) = sacct(job_id)
    assert row["state"] == "COMPLETED", row
    nodes = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-j", row["id"], "-o", "NodeList"],
        capture_output=True, text=True, env={**os.environ, "SLURM_CONF": str(SLURM_CONF)},
    ).stdout.strip()  # fmt: skip
    assert nodes.endswith("-n[1-2]"), nodes  # both nodes ran it
