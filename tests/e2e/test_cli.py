"""`python -m experiments` end to end, in a subprocess, as a user runs it."""

from __future__ import annotations

import sys

import pytest
from cli import cli_command, cli_env, run_cli
from smoke import RESNET_SMOKE
from wandb_reader import read_run

SMOKE = ("task=vae", "debug=smoke", "data.synthetic_size=200", "logger=wandb")


@pytest.mark.slow  # a regression guard for same-second launches; experiments.run_id is unit-tested
def test_runs_started_together_get_their_own_folders(tmp_path):
    import subprocess
    import sys

    from cli import cli_env

    cmd = [
        sys.executable,
        "-m",
        "experiments",
        f"paths.log_dir={tmp_path / 'logs'}",
        "task=vae",
        "debug=fast_dev_run",
        "data.synthetic=true",
        "logger=none",
    ]
    procs = [
        subprocess.Popen(cmd, cwd=tmp_path, env=cli_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:]
    runs = list(tmp_path.glob("logs/vae/runs/*"))
    assert len(runs) == 2 and all((r / "metrics.json").is_file() for r in runs)


BAD = {  # through the real CLI: Hydra's own errors and ours, exit codes included (the rest: test_tasks.py)
    "unknown task": (["task=segmentation"], "task"),
    "unknown key": (["model.latent_dimension=4"], "latent_dimension"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_fails_fast_with_one_clear_line(tmp_path, case):
    overrides, must_name = BAD[case]
    proc = run_cli(tmp_path, *overrides, "logger=none")
    assert proc.returncode != 0
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("metrics.json"))  # nothing ran
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and must_name in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("logs/**/metrics.json"))  # nothing that looks like a success
    for run in tmp_path.glob("logs/*/runs/*"):
        assert (run / "FAILED").is_file()


@pytest.mark.slow  # the same sweep machinery as the vae multirun, with the resnet task
def test_resnet_multirun_over_ablations_shares_a_wandb_group(tmp_path):
    proc = run_cli(
        tmp_path, "-m", *RESNET_SMOKE, "ablate.blocks=[],[3]", "callbacks.lesion_sweep.k_values=[0,1]", "logger=wandb"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = tmp_path.glob("logs/resnet/multiruns/*")
    runs = [read_run(next((sweep / j).glob("wandb/offline-run-*")), records=True) for j in ("0", "1")]
    assert {r["group"] for r in runs} == {f"resnet-{sweep.name}"}
    assert {r["config"]["logger"]["wandb"]["group"] for r in runs} == {f"resnet-{sweep.name}"}  # in the config too
    assert [r["name"] for r in runs] == ["resnet ablate.blocks=[]", "resnet ablate.blocks=[3]"]  # what differs
    assert "| job | status |" in proc.stdout  # the sweep ends with its table and one command to upload it
    assert proc.stdout.count("wandb sync") == 1 and f"wandb sync {sweep}/*/wandb/offline-run-*" in proc.stdout
    assert [r["config"]["ablate"]["blocks"] for r in runs] == [[], [3]]
    summary = (sweep / "summary.md").read_text()
    assert "ablate.blocks=[]" in summary and "ablate.blocks=[3]" in summary and "test/acc" in summary


DDP_SMOKE = (
    "task=vae",
    "debug=smoke",
    "trainer=ddp",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "trainer.precision=32-true",
    "trainer.sync_batchnorm=false",
    "logger=csv",
)


@pytest.mark.slow  # two torchrun processes (~30 s): in .ci/run's slow line
def test_torchrun_ranks_agree_on_one_run_folder_and_keep_their_logs(tmp_path):
    """torchrun starts each rank itself (no parent of ours): they agree on the folder through the
    elastic agent's store before Hydra writes anything; rank 0 writes metrics.json."""
    import subprocess

    cmd = cli_command(tmp_path, *DDP_SMOKE)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run(
        [*torchrun, *cmd[1:]], cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = tmp_path.glob("logs/vae/runs/*")  # one folder, not one per rank
    assert (run / "metrics.json").is_file() and (run / "run.log").is_file()
    assert "rank 1:" in (run / "run_rank1.log").read_text()  # the second rank's own log, kept
    values = [
        line.rsplit("=", 1)[1].strip()
        for f in ("run.log", "run_rank1.log")
        for line in (run / f).read_text().splitlines()
        if ": test/neg_elbo = " in line
    ]
    assert len(values) == 2 and values[0] == values[1]  # both ranks hold the metric reduced over ranks


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_writes_one_run_folder(tmp_path):
    """Hydra + DDP: the second rank (a re-launched process) writes into the first one's folder."""
    proc = run_cli(tmp_path, *DDP_SMOKE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = tmp_path.glob("logs/vae/runs/*")
    assert (run / "run_rank1.log").is_file() and (run / "metrics.json").is_file()
    values = [
        line.rsplit("=", 1)[1].split(";")[0].strip()
        for line in proc.stderr.splitlines() + proc.stdout.splitlines()
        if " rank " in line and ": test/neg_elbo = " in line
    ]
    assert len(values) == 2 and values[0] == values[1]  # both ranks report the metric reduced over ranks
