"""A run folder holds one run (experiments/run_folder.py, experiments/checkpoints.py): no second
launch mixes into it, its checkpoints are whole and its own wherever it moves, its history only
goes forward. In-process through Hydra's compose API; the cases that need a real process (SIGKILL,
a second launch of a sweep, Hydra's own start-up) run the CLI."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli import cli_command, cli_env, run_cli
from configured import configured
from wandb_reader import read_history

from experiments.lifecycle import resume_overrides
from experiments.run_folder import RunFolder

FIT = (  # 3 epochs of 5 steps, every step logged
    "task=vae", "data.synthetic=true", "data.synthetic_size=200", "data.batch_size=32", "trainer.max_epochs=3",
    "trainer.log_every_n_steps=1", "callbacks.vae_figures.num_points=64", "logger=csv",
)  # fmt: skip


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` (but the lock) with its size and modification time."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def refused(capsys, code: int, *must_name: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert all(m in lines[0] for m in must_name), lines[0]
    return lines[0]


@pytest.mark.slow  # full runs and resumes: .ci/run runs them (-m slow tests/e2e/test_run_folder.py)
def test_a_second_launch_into_a_run_folder_is_refused_and_changes_nothing(tmp_path, run_experiment, capsys):
    """What EXPERIMENTS_RUN_ID=myexp or hydra.run.dir=<run> do: the same folder. Another model is
    refused (it used to train beta=4 on top of beta=1), so is the same command again into a finished
    run; a failed resume keeps the finished run's metrics.json (the failure handler used to delete it)."""
    code, run = run_experiment(*FIT, "trainer.max_epochs=1")
    assert code == 0
    before = snapshot(run)
    code, _ = run_experiment(*FIT, "model.beta=4", "trainer.max_epochs=2", f"hydra.run.dir={run}")
    refused(capsys, code, f"{run} holds another run (model.beta: 1.0 -> 4)", "start in a new folder")
    code, _ = run_experiment(*FIT, "model.latent_dim=8", f"hydra.run.dir={run}")
    refused(capsys, code, "model.latent_dim: 2 -> 8")
    code, _ = run_experiment(*FIT, "trainer.max_epochs=1", f"hydra.run.dir={run}")
    refused(capsys, code, f"{run} holds a finished run: resume={run} continues it")
    assert snapshot(run) == before  # config, overrides, metrics.json, checkpoints: untouched

    first = (run / "metrics.json").read_text()
    crash = ("+callbacks.crash._target_=signals.Crash", "+callbacks.crash.at_step=6")
    with pytest.raises(RuntimeError, match="crash at step 6"):  # the CLI: Hydra prints it, exit 1
        run_experiment(*resume_overrides([f"resume={run}", "trainer.max_epochs=2", *crash]))
    assert (run / "metrics.json").read_text() == first  # the evidence of the success stays
    text = (run / "FAILED").read_text()
    assert text.startswith("RuntimeError: crash at step 6") and "from an earlier attempt of this run" in text
    from experiments.sweep import collect_jobs

    (row,) = collect_jobs(run.parent)  # the folder as a sweep's job: failed, not ok
    assert row["status"] == "failed: RuntimeError: crash at step 6"
    # resume= continues it (same model and data) and may train longer
    code, again = run_experiment(*resume_overrides([f"resume={run}", "trainer.max_epochs=2", "~callbacks.crash"]))
    assert code == 0 and again == run and json.loads((run / "metrics.json").read_text())["epochs"] == 2
    assert not (run / "FAILED").exists()


def test_a_running_folder_is_locked_until_its_process_ends_however_it_ends(tmp_path, run_experiment, capsys):
    run = tmp_path / "logs" / "vae" / "runs" / "mine"
    holder = RunFolder(run)
    holder.lock()  # another process's run, still running
    try:
        code, _ = run_experiment(*FIT, f"hydra.run.dir={run}")
        refused(capsys, code, f"{run} is in use by a running process")
    finally:
        holder.release()
    assert [p.name for p in run.iterdir()] == [".lock"]
    # a process killed with SIGKILL (no handler runs) leaves no stale lock: the kernel drops it
    script = (
        "import time; from pathlib import Path; from experiments.run_folder import RunFolder; "
        f"RunFolder(Path({str(run)!r})).lock(); print('locked', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    taken = RunFolder(run)
    with pytest.raises(Exception, match="in use by a running process"):
        taken.lock()
    proc.kill()
    proc.wait()
    taken.lock()  # free again
    taken.release()


@pytest.mark.slow  # full runs and resumes: .ci/run runs them (-m slow tests/e2e/test_run_folder.py)
def test_a_moved_folder_with_a_damaged_last_ckpt_resumes_from_its_own_intact_checkpoint(
    tmp_path, run_experiment, caplog, capsys
):
    """The folder is copied to a path with spaces and a non-ASCII letter, the original's best.ckpt is
    spoiled (the copy must not read it) and the copy's last.ckpt is cut in half (a full disk, a kill
    mid-copy): the copy resumes from its own best.ckpt, says so in one warning, and tests its own."""
    code, run = run_experiment(*FIT, "trainer.max_epochs=2", "logger=wandb")
    assert code == 0 and json.loads((run / "metrics.json").read_text())["best_checkpoint"] == "checkpoints/best.ckpt"
    capsys.readouterr()
    copy = tmp_path / "elsewhere" / "copy of the run, é"
    shutil.copytree(run, copy)
    (run / "checkpoints" / "best.ckpt").write_bytes(b"not the weights")
    last = copy / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    code, again = run_experiment(*resume_overrides([f"resume={copy}", "trainer.max_epochs=3"]))
    assert code == 0 and again == copy
    warning = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "damaged" in r.getMessage()]
    assert len(warning) == 1 and "continuing from checkpoints/best.ckpt" in warning[0]
    result = json.loads((copy / "metrics.json").read_text())
    assert result["epochs"] == 3 and result["best_checkpoint"] == "checkpoints/best.ckpt"
    sync = capsys.readouterr().out.strip().splitlines()[-1]  # a command that works as printed, spaces and all
    assert sync == f"W&B run (offline): wandb sync '{copy}'/wandb/offline-run-*"
    assert len(list(copy.glob("wandb/offline-run-*"))) == 2
    torch.load(last, map_location="cpu", weights_only=False)  # and last.ckpt is whole again


def test_checkpoints_are_written_whole_or_not_at_all(tmp_path):
    from experiments.checkpoints import AtomicCheckpointIO, CheckpointError, verify

    path = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(100_000)}, "global_step": 7}, path)
    assert verify(path)["global_step"] == 7 and list(path.parent.iterdir()) == [path]  # no temp file left
    flipped = bytearray(path.read_bytes())
    flipped[len(flipped) // 2] ^= 0xFF  # one bit rotted inside a tensor
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="fails its checksum|cannot be loaded"):
        verify(path)


def test_ckpt_path_of_another_model_or_not_a_checkpoint_is_one_line(tmp_path, run_experiment, capsys):

    other = tmp_path / "latent8.ckpt"  # a VAE checkpoint of another latent size
    torch.save({"state_dict": configured("task=vae", "model", latent_dim=8).state_dict(), "global_step": 0}, other)
    code, run = run_experiment(*FIT, f"ckpt_path={other}")
    refused(capsys, code, f"ckpt_path={other} is a checkpoint of another model or task", "weights of another shape")
    assert (run / "FAILED").is_file()
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(os.urandom(4096))
    code, _ = run_experiment(*FIT, f"ckpt_path={junk}")
    refused(capsys, code, f"ckpt_path={junk}: is damaged or not a checkpoint")


@pytest.mark.slow  # full runs and resumes: .ci/run runs them (-m slow tests/e2e/test_run_folder.py)
def test_a_kill_in_the_test_pass_says_so_and_the_resume_keeps_the_fit_metrics(tmp_path, run_experiment):
    kill = ("+callbacks.kill._target_=signals.SendSignal", "+callbacks.kill.at_step=0", "+callbacks.kill.in_test=true")
    once = f"+callbacks.kill.once={tmp_path / 'sent'}"  # the resumed attempt is not killed again
    code, run = run_experiment(*FIT, *kill, once, f"+callbacks.kill.signum={int(signal.SIGTERM)}")
    assert code == 143
    failed = (run / "FAILED").read_text().splitlines()[0]
    assert failed.startswith("killed by SIGTERM in the test pass (after step 15); resume with: python -m experiments")
    code, _ = run_experiment(*resume_overrides([f"resume={run}"]))
    assert code == 0
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert {"val/neg_elbo", "train/loss", "test/neg_elbo"} <= set(metrics)


def train_rows(run: Path) -> list[tuple[int, str]]:
    rows = csv.DictReader((run / "csv" / "metrics.csv").open())
    return [(int(r["step"]), r["train/loss_step"]) for r in rows if r.get("train/loss_step")]


@pytest.mark.slow  # full runs and resumes: .ci/run runs them (-m slow tests/e2e/test_run_folder.py)
def test_after_a_sigkill_the_csv_and_wandb_histories_only_go_forward(tmp_path, run_experiment):
    """SIGKILL (no handler runs) well after an epoch's last.ckpt: the rows logged after that
    checkpoint belong to a lost attempt; the resumed CSV has every step once, and W&B's steps go on
    from the checkpoint's step instead of from 0."""
    run_args = (*FIT, "data.synthetic_size=640", "trainer.max_epochs=2", "logger=wandb",
                "logger.csv.flush_logs_every_n_steps=1")  # fmt: skip
    proc = subprocess.Popen(cli_command(tmp_path, *run_args), cwd=tmp_path, env=cli_env(tmp_path))
    deadline = time.time() + 240
    while not list(tmp_path.glob("logs/vae/runs/*/checkpoints/last.ckpt")):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.2)
    (run,) = tmp_path.glob("logs/vae/runs/*")
    ckpt_step = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]
    while proc.poll() is None and len(train_rows(run)) <= ckpt_step + 3 and time.time() < deadline:
        time.sleep(0.05)  # rows past the checkpoint reach the file
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]
    assert not (run / "metrics.json").exists() and [s for s, _ in train_rows(run) if s >= saved]  # rows to drop
    code, _ = run_experiment(*resume_overrides([f"resume={run}"]))  # (in this process: the kill was the real one)
    assert code == 0
    steps = [s for s, _ in train_rows(run)]
    assert steps == sorted(set(steps)) and steps[-1] == 2 * 16 - 1  # every step once, in order, to the end
    attempts = sorted(run.glob("wandb/offline-run-*"))
    assert len(attempts) == 2
    run_id = (run / "wandb_run_id").read_text().strip()
    assert all(a.name.endswith(run_id) for a in attempts)  # two attempts of one W&B run
    second = read_history(attempts[1])  # (the killed attempt's wandb-core died with it, mid-write)
    assert second and all(r["_step"] == r["trainer/global_step"] for r in second if "trainer/global_step" in r)
    steps = [r["_step"] for r in second]
    assert steps[0] == saved and steps == sorted(steps)  # it goes on from the checkpoint's step, not from 0


@pytest.mark.slow  # full runs and resumes: .ci/run runs them (-m slow tests/e2e/test_run_folder.py)
def test_a_sweep_folder_holds_one_sweep(tmp_path):
    """`-m model.latent_dim=2,4 hydra.sweep.dir=X` then `-m model.beta=2,3 hydra.sweep.dir=X`: the second
    is refused before any job runs (it used to report the old model re-tested as beta=2)."""
    sweep = tmp_path / "sweep"
    first = run_cli(tmp_path, "-m", "task=vae", "debug=smoke", "data.synthetic_size=100", "logger=csv",
                    "model.latent_dim=2", f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    before = snapshot(sweep)
    second = run_cli(tmp_path, "-m", "task=vae", "debug=smoke", "data.synthetic_size=100", "logger=csv",
                     "model.beta=2,3", f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert f"error: {sweep} holds another sweep" in second.stderr
    assert snapshot(sweep) == before


@pytest.mark.slow  # full runs and resumes: .ci/run runs them (-m slow tests/e2e/test_run_folder.py)
def test_train_false_with_ckpt_path_tests_that_checkpoint(tmp_path, run_experiment):
    """`train=false ckpt_path=<best.ckpt>` evaluates those weights (it used to test an untrained model)
    and reproduces the run's own test metric."""
    code, run = run_experiment(*FIT, "trainer.max_epochs=2")
    assert code == 0
    measured = json.loads((run / "metrics.json").read_text())["metrics"]["test/neg_elbo"]
    code, again = run_experiment(*FIT, "train=false", f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}")
    assert code == 0 and again != run
    assert json.loads((again / "metrics.json").read_text())["metrics"]["test/neg_elbo"] == pytest.approx(
        measured, rel=1e-6
    )


def test_launches_hydra_cannot_start_are_one_line(tmp_path):
    """An unwritable log folder and a search without -m: refused before Hydra writes anything."""
    for args, must in (
        (["paths.log_dir=/proc/experiments"], "paths.log_dir: cannot write the run folder /proc/experiments"),
        (["hparams_search=vae_optuna"], "hparams_search runs an Optuna search, which is a sweep: add -m"),
    ):
        proc = subprocess.run(
            [*cli_command(tmp_path, "debug=smoke"), *args], cwd=tmp_path, env=cli_env(tmp_path),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {must}"), proc.stderr[-2000:]
