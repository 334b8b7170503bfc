"""Every way a run ends, through the real CLI: a sweep with failing jobs, a kill, a resume, a
terminal a person reads."""

from __future__ import annotations

import csv
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli import cli_command, cli_env, run_cli
from wandb_reader import read_run

VAE_SMOKE = ("task=vae", "debug=smoke", "data.synthetic_size=200")


HELPERS = str(Path(__file__).parents[1] / "helpers")  # signals.Crash, signals.SendSignal for the CLI runs


def helpers_env(tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path, PYTHONPATH=HELPERS + os.pathsep + os.environ.get("PYTHONPATH", ""))


@pytest.mark.slow  # a CLI sweep / a terminal run (20-30 s): in .ci/run's slow line
def test_a_sweep_runs_every_job_and_lists_the_failures(tmp_path):
    """Four jobs: one good, one that crashes while fitting (at step 1), two with a config error.
    Every job runs, the summary lists all four, the sweep exits 1 naming the failures."""
    crash = ("+callbacks.crash._target_=signals.Crash", "+callbacks.crash.at_step=100000,1")
    sweep = ("-m", *VAE_SMOKE, "logger=wandb", "model.latent_dim=2,0", *crash)
    proc = run_cli(tmp_path, *sweep, env=helpers_env(tmp_path))
    assert proc.returncode == 1, proc.stderr[-3000:]
    (sweep,) = tmp_path.glob("logs/vae/multiruns/*")
    assert "error: 3 of 4 jobs failed" in proc.stderr
    rows = {r["job"]: r for r in csv.DictReader((sweep / "summary.csv").open())}
    assert rows["0"]["status"] == "ok" and (sweep / "0" / "metrics.json").is_file()
    assert rows["1"]["status"] == "failed: RuntimeError: crash at step 1"  # the crash
    for job in ("2", "3"):  # model.latent_dim=0: one line naming the key
        assert rows[job]["status"].startswith("failed: model (models.VAEModule): model.latent_dim")
        assert (sweep / job / "FAILED").is_file() and not (sweep / job / "metrics.json").exists()
    md = (sweep / "summary.md").read_text()
    assert md.count("| failed: ") == 3 and "test/neg_elbo" in md
    (wandb_dir,) = (sweep / "0").glob("wandb/offline-run-*")
    logged = read_run(wandb_dir, records=True)
    assert logged["group"] == f"vae-{sweep.name}" and logged["config"]["model"]["latent_dim"] == 2
    assert logged["state"] == "finished" and logged["exit_code"] == 0
    (crashed,) = (sweep / "1").glob("wandb/offline-run-*")
    assert read_run(crashed)["exit_code"] == 1  # the dashboard shows the crashed job as failed


LONG_RUN = (  # a VAE that trains long enough (20 steps, ~2 s an epoch) to be stopped mid-fit
    "task=vae", "data.synthetic=true", "data.synthetic_size=800", "data.batch_size=32", "trainer.max_epochs=40",
    "trainer.log_every_n_steps=5", "callbacks.vae_figures.num_points=500",
)  # fmt: skip

NOISE = ("litlogger", "anonymous setting", "wandb online", "Total FLOPs: 0", "LeafSpec", "in eval mode at the start")


def start_and_stop(tmp_path: Path, sig: signal.Signals, *extra: str) -> tuple[int, Path, str]:
    """Start LONG_RUN in a pseudo-terminal (as a person runs it), send `sig` once the first epoch's
    last.ckpt exists, and return (exit status, run folder, what the terminal showed)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        cli_command(tmp_path, *LONG_RUN, *extra), cwd=tmp_path, env=cli_env(tmp_path),
        stdin=follower, stdout=follower, stderr=follower,
    )  # fmt: skip
    os.close(follower)
    chunks, sent, deadline = [], False, time.time() + 120
    while True:
        if not sent and list(tmp_path.glob("logs/vae/runs/*/checkpoints/last.ckpt")):
            time.sleep(0.5)  # into the second epoch
            proc.send_signal(sig)
            sent = True
        assert time.time() < deadline, b"".join(chunks).decode(errors="replace")[-3000:]
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the process closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    code = proc.wait(timeout=120)
    assert sent, "the run ended before it could be stopped"
    (run,) = tmp_path.glob("logs/vae/runs/*")
    return code, run, b"".join(chunks).decode(errors="replace").replace("\r", "")


def stopped_honestly(run: Path, code: int, text: str, sig: signal.Signals) -> str:
    """What every stopped run leaves: exit 128 + signal, FAILED's first line naming the signal and the
    resume command, a checkpoint and no metrics.json. Returns that first line."""
    assert code == 128 + sig, text[-3000:]
    failed = (run / "FAILED").read_text().splitlines()[0]
    # "in epoch 2, step 27", or "after epoch 2, step 40" where the signal landed in an epoch's last step or
    # validation (Lightning then stops at the epoch's end: CI saw it once when its cores were busy)
    assert re.match(rf"killed by {sig.name} (in|after) epoch \d+, step \d+; ", failed), failed
    assert f"resume with: python -m experiments resume={run}" in failed
    assert (run / "checkpoints" / "last.ckpt").is_file() and not (run / "metrics.json").exists()
    return failed


def train_steps(run: Path) -> list[int]:
    """The steps of the per-step training rows of csv/metrics.csv, in file order."""
    return [int(r["step"]) for r in csv.DictReader((run / "csv" / "metrics.csv").open()) if r.get("train/loss_step")]


@pytest.mark.slow  # a CLI sweep / a terminal run (20-30 s): in .ci/run's slow line
def test_sigterm_in_a_terminal_exits_143_with_a_checkpoint_and_no_line_twice(tmp_path):
    """A real process in a pseudo-terminal, a real signal from outside: the interpreter's exit
    status, FAILED, the checkpoint, and what a person reads: every line once, no noise, the last
    line the resume command (the W&B run's state and the resume itself: tests/e2e/test_resume.py,
    and the slow tests below through the CLI)."""
    code, run, text = start_and_stop(tmp_path, signal.SIGTERM, "logger=wandb")
    failed = stopped_honestly(run, code, text, signal.SIGTERM)
    lines = [line.strip() for line in text.splitlines() if any(c.isalpha() for c in line)]
    repeated = {line for line in lines if lines.count(line) > 1}
    assert not repeated, repeated
    assert not [n for n in NOISE if n in text]
    assert lines[-1] == failed


@pytest.mark.slow  # two full CLI runs; the same resume in-process: tests/e2e/test_resume.py
def test_sigterm_stops_with_a_checkpoint_and_resume_continues_in_place(tmp_path):
    code, run, text = start_and_stop(tmp_path, signal.SIGTERM, "logger=wandb")
    failed = stopped_honestly(run, code, text, signal.SIGTERM)
    import torch

    stopped_at = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]
    assert f"step {stopped_at};" in failed  # the checkpoint is the step the message names
    before = train_steps(run)
    assert before and max(before) <= stopped_at

    resumed = run_cli(tmp_path, f"resume={run}", "trainer.max_epochs=3")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert list(tmp_path.glob("logs/vae/runs/*")) == [run]  # the same folder, no new one
    assert (run / "metrics.json").is_file() and not (run / "FAILED").exists()
    result = json.loads((run / "metrics.json").read_text())
    assert result["epochs"] == 3 and result["global_step"] > stopped_at
    after = train_steps(run)
    assert after[: len(before)] == before  # the rows from before the kill are intact
    assert after == sorted(after) and len(after) == len(set(after))  # no gap back, no repeated step
    assert f"run folder: {run}" in resumed.stdout


@pytest.mark.slow  # two torchrun processes, twice (~30 s each): in .ci/run's slow line
@pytest.mark.parametrize("rank", [0, 1])
def test_a_signal_reaching_one_rank_between_collectives_stops_every_rank_at_one_step(tmp_path, rank):
    """SIGTERM on one rank of two, after the first epoch's validation (where a preempted two-node job
    hung in CI): both ranks stop after the same step, with its checkpoint, within seconds. Before,
    the signalled rank stopped at the end of its epoch and the other went on into the next; each
    waited in a collective the other never joined until the collective timeout, and FAILED said
    "lost another rank ... Timed out"."""
    import torch

    cmd = cli_command(
        tmp_path, "task=vae", "data.synthetic=true", "data.synthetic_size=400", "data.batch_size=16",
        "trainer.max_epochs=3", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
        "trainer.precision=32-true", "trainer.sync_batchnorm=false", "logger=csv",
        "trainer.strategy.timeout.seconds=120",  # a hang fails the test in minutes, not the default 30
        "+callbacks.signal_one_rank._target_=signals.SignalOneRank", f"+callbacks.signal_one_rank.rank={rank}",
    )  # fmt: skip
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run(
        [*torchrun, *cmd[1:]], cwd=tmp_path, env=helpers_env(tmp_path), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode != 0
    (run,) = tmp_path.glob("logs/vae/runs/*")
    first = (run / "FAILED").read_text().splitlines()[0]
    assert first.startswith("killed by SIGTERM in epoch 2, step "), proc.stderr[-3000:]
    stopped_at = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]
    assert f"step {stopped_at};" in first  # the checkpoint is the step FAILED names
    assert proc.stderr.count(first) == 2  # each rank says it stopped there: the same step on both


@pytest.mark.slow  # two full CLI runs; the same in-process: tests/e2e/test_resume.py
def test_sigint_exits_130_and_a_job_relaunched_into_its_folder_resumes_by_itself(tmp_path):
    code, run, text = start_and_stop(tmp_path, signal.SIGINT, "logger=csv")
    stopped_honestly(run, code, text, signal.SIGINT)
    # what a cluster requeue does: the same command into the same folder (hydra.run.dir), no resume=
    again = run_cli(tmp_path, *LONG_RUN, "logger=csv", f"hydra.run.dir={run}", "trainer.max_epochs=3")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming the run in" in again.stderr + again.stdout
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 3 and not (run / "FAILED").exists()


@pytest.mark.slow  # a CLI sweep killed in its first job: .ci/run runs it (-m slow ... test_lifecycle.py)
def test_a_killed_sweep_lists_the_jobs_it_never_started(tmp_path):
    """SIGTERM in the first of three jobs: the sweep stops (exit 143) and its summary still has a row
    for every job: the killed one with its resume command, the two it never reached."""
    kill = ("+callbacks.kill._target_=signals.SendSignal", "+callbacks.kill.at_step=2", "+callbacks.kill.signum=15")
    proc = run_cli(tmp_path, "-m", *VAE_SMOKE, "logger=csv", "model.latent_dim=2,3,4", *kill, env=helpers_env(tmp_path))
    assert proc.returncode == 143, proc.stderr[-3000:]
    (sweep,) = tmp_path.glob("logs/vae/multiruns/*")
    rows = {r["job"]: r for r in csv.DictReader((sweep / "summary.csv").open())}
    # step 2 is epoch 1's last training step; Lightning stops at the first batch of its validation
    assert rows["0"]["status"].startswith("failed: killed by SIGTERM in epoch 1, step 2; resume with:")
    assert rows["1"]["status"] == rows["2"]["status"] == "not started"
    assert "model.latent_dim=3" in rows["1"]["overrides"] and "model.latent_dim=4" in rows["2"]["overrides"]


def test_resume_refuses_to_change_the_model_and_needs_a_run_folder(tmp_path):
    proc = run_cli(tmp_path, f"resume={tmp_path}")
    assert proc.returncode == 2 and "not a run folder" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "run" / ".hydra").mkdir(parents=True)
    (tmp_path / "run" / ".hydra" / "overrides.yaml").write_text("- task=vae\n")
    proc = run_cli(tmp_path, f"resume={tmp_path / 'run'}", "model.latent_dim=8")
    assert proc.returncode == 2 and "model.latent_dim=8 would change the model or data" in proc.stderr


def test_help_starts_with_the_tasks_and_five_commands(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "experiments", "--help"],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0
    head = proc.stdout.split("== Configuration groups ==")[0]
    for task in ("vae", "resnet", "vit", "clip"):
        assert f"\n  {task} " in head
    assert head.count("python -m experiments ") >= 6 and "resume=" in head
    (data,) = [line for line in proc.stdout.splitlines() if line.startswith("data: ")]
    assert data == "data: cifar10, fashion_mnist, folder, images, shards, stl10"  # the shared keys' file is no data set
