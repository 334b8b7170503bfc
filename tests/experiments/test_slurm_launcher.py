"""The SLURM launcher's request, fitted to the run and checked against what the cluster has
(hydra_plugins/experiments_launcher/launchers.py), without a cluster: sinfo's view is given."""

from __future__ import annotations

import pytest

from hydra_plugins.experiments_launcher.launchers import Node, _gpus, _minutes, fit_to_run, unmet_request

EXTRA = {"cpus_per_gpu_task": 4, "mem_gb_per_task": 8, "pending_report_s": 60}
CPU_NODE = Node("debug", "n1", cpus=2, mem_mb=21000, gpus=0, time_limit_min=None, default=True)
GPU_NODES = [Node("gpu", f"g{i}", cpus=64, mem_mb=512_000, gpus=4, time_limit_min=2880, default=False) for i in (1, 2)]


def params(**kw) -> dict:
    base = {"nodes": 1, "tasks_per_node": 1, "gpus_per_node": None, "cpus_per_task": None, "mem_gb": None}
    return {**base, "timeout_min": 240, "partition": None, **kw}


def trainer(accelerator="auto", devices=1) -> dict:
    return {"accelerator": accelerator, "devices": devices}


def test_sinfo_formats():
    assert [_gpus(g) for g in ("(null)", "gpu:4", "gpu:a100:4(S:0-1)", "gpu:a100:2,gpu:v100:2")] == [0, 4, 4, 4]
    assert [_minutes(t) for t in ("infinite", "30", "1:00:00", "2-00:00:00", "10:30")] == [None, 30, 60, 2880, 10.5]


@pytest.mark.parametrize(
    ("accelerator", "partition", "gpus", "cpus"),
    [
        ("auto", "debug", None, 1),  # the default trainer on a CPU-only partition: no GPU asked, one core
        ("auto", "gpu", 2, 4),  # ... on a GPU partition: one GPU per device, the per-GPU-task cores
        ("cpu", "gpu", None, 1),  # trainer=cpu asks no GPU anywhere
        ("gpu", "debug", 2, 4),  # trainer=gpu asks its GPUs (and the check below says no node has them)
    ],
)
def test_gpus_follow_the_accelerator_and_cpus_the_per_task_figure(accelerator, partition, gpus, cpus):
    fitted = fit_to_run(params(partition=partition, tasks_per_node=2), EXTRA, trainer(accelerator, 2),
                        [CPU_NODE, *GPU_NODES])  # fmt: skip
    assert (fitted["gpus_per_node"], fitted["cpus_per_task"], fitted["mem_gb"]) == (gpus, cpus, 16)


def test_what_a_user_sets_is_kept():
    fitted = fit_to_run(params(gpus_per_node=1, cpus_per_task=3, mem_gb=5), EXTRA, trainer("cpu"), [CPU_NODE])
    assert (fitted["gpus_per_node"], fitted["cpus_per_task"], fitted["mem_gb"]) == (1, 3, 5)


def test_without_sinfo_auto_asks_a_gpu_per_device_as_before():
    assert fit_to_run(params(), EXTRA, trainer("auto", 1), None)["gpus_per_node"] == 1


@pytest.mark.parametrize(
    ("request_", "trainer_", "names"),
    [
        (params(partition="debug", cpus_per_task=8, mem_gb=8), trainer("cpu"), "lower hydra.launcher.cpus_per_task"),
        (params(partition="debug", cpus_per_task=1, mem_gb=64), trainer("cpu"), "lower hydra.launcher.mem_gb"),
        (params(partition="debug", gpus_per_node=1, cpus_per_task=1, mem_gb=1), trainer("gpu"), "set trainer.devices"),
        (params(partition="gpu", cpus_per_task=4, mem_gb=8, gpus_per_node=4, nodes=3), trainer("gpu", 4),
         "lower trainer.num_nodes"),
        (params(partition="gpu", cpus_per_task=4, mem_gb=8, timeout_min=4000), trainer(),
         "lower hydra.launcher.timeout_min"),
        (params(partition="nowhere", cpus_per_task=1, mem_gb=1), trainer(),
         "hydra.launcher.partition=nowhere: no such"),
    ],
)  # fmt: skip
def test_a_request_no_node_meets_names_the_key_to_change(request_, trainer_, names):
    line = unmet_request(request_, [CPU_NODE, *GPU_NODES], request_["partition"], trainer_)
    assert line is not None and names in line and "\n" not in line, line


def test_a_request_that_fits_passes():
    nodes = [CPU_NODE, *GPU_NODES]
    assert unmet_request(params(cpus_per_task=1, mem_gb=8), nodes, None, trainer()) is None  # the default partition
    gpu = params(partition="gpu", cpus_per_task=4, mem_gb=32, gpus_per_node=4, tasks_per_node=4, nodes=2)
    assert unmet_request(gpu, nodes, "gpu", trainer("gpu", 4)) is None
