"""Scaling out: the SLURM and local launcher presets, requeue after a timeout signal, the Optuna
search (torchrun's single run folder: test_cli.py). The launcher and search runs start several
processes each, so they are `slow` (run with -m slow); what composes is checked in seconds."""

from __future__ import annotations

import json
import os
import re
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from cli import cli_command, cli_env, run_cli

HELPERS = str(Path(__file__).resolve().parents[1] / "helpers")


def test_slurm_preset_takes_nodes_and_tasks_from_the_trainer(tmp_path):
    proc = run_cli(
        tmp_path, "hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2", "--cfg=all",
        "--resolve", "--package=hydra.launcher", timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    launcher = yaml.safe_load(proc.stdout)
    assert launcher["name"] == "vae"  # the SLURM job's name: the task
    assert launcher["_target_"] == "hydra_plugins.experiments_launcher.launchers.SlurmLauncher"
    assert (launcher["nodes"], launcher["tasks_per_node"]) == (2, 4)
    # GPUs, CPUs and memory are filled in at launch from the run and the cluster (fit_to_run)
    assert (launcher["gpus_per_node"], launcher["cpus_per_task"], launcher["mem_gb"]) == (None, None, None)
    for key in ("partition", "account", "timeout_min", "mem_gb", "setup", "additional_parameters", "max_num_timeout"):
        assert key in launcher, key


@pytest.mark.parametrize("trainer", ["default", "cpu", "gpu", "ddp"])
def test_slurm_preset_composes_with_every_trainer(compose_cfg, trainer):
    cfg = compose_cfg("hydra/launcher=slurm", f"trainer={trainer}", "trainer.num_nodes=1")
    launcher = cfg.hydra.launcher
    assert (launcher.nodes, launcher.tasks_per_node) == (1, 2 if trainer == "ddp" else 1)


def test_a_missing_cluster_extra_is_one_line_naming_it(monkeypatch):
    import importlib.util

    from experiments.__main__ import missing_extra

    assert missing_extra(["hydra/launcher=slurm", "hparams_search=vae_optuna"]) is None  # installed here
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    message = missing_extra(["task=vae", "hydra/launcher=slurm"])
    assert message == "hydra/launcher=slurm needs the cluster extra (hydra_submitit_launcher is not installed): " + (
        "pip install '.[cluster]'"
    )
    assert "optuna is not installed" in missing_extra(["hparams_search=vae_optuna"])
    assert missing_extra(["task=vae", "hydra/launcher=basic"]) is None


def log_span(log: Path) -> tuple[datetime, datetime]:
    stamps = re.findall(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]", log.read_text(), flags=re.M)
    times = [datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f") for s in stamps]
    return times[0], times[-1]


@pytest.mark.slow
def test_local_launcher_runs_a_sweeps_jobs_at_once_and_writes_the_summary(tmp_path):
    proc = run_cli(tmp_path, "-m", "hydra/launcher=local", "task=vae", "debug=smoke", "logger=csv",
                   "model.latent_dim=2,3")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = tmp_path.glob("logs/vae/multiruns/*")
    assert all((sweep / j / "metrics.json").is_file() for j in ("0", "1"))
    (a0, a1), (b0, b1) = log_span(sweep / "0" / "run.log"), log_span(sweep / "1" / "run.log")
    assert a0 < b1 and b0 < a1  # the two jobs' lifetimes overlap: they ran at the same time
    assert "model.latent_dim=3" in (sweep / "summary.md").read_text()


@pytest.mark.slow
def test_a_job_sent_its_timeout_signal_is_requeued_and_finishes_in_its_folder_and_wandb_run(tmp_path):
    """submitit's timeout/preemption signal (USR2) at step 3: last.ckpt, requeue, the new attempt
    continues from it in the same folder and the same W&B run."""
    env = cli_env(tmp_path, PYTHONPATH=HELPERS + os.pathsep + os.environ.get("PYTHONPATH", ""))
    once = tmp_path / "signal_sent"
    cmd = cli_command(
        tmp_path, "-m", "hydra/launcher=local", "task=vae", "data.synthetic=true", "trainer.max_epochs=2",
        "logger=wandb", "+callbacks.kill._target_=signals.SendSignal", "+callbacks.kill.at_step=3",
        "+callbacks.kill.signum=12", f"+callbacks.kill.once={once}",
    )  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert once.exists()  # the signal was sent
    (sweep,) = tmp_path.glob("logs/vae/multiruns/*")
    (job,) = [p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")]
    result = json.loads((job / "metrics.json").read_text())
    assert result["status"] == "ok" and result["epochs"] == 2
    log = (job / "run.log").read_text()
    assert "resuming the run in" in log and "last.ckpt" in log  # the requeued attempt went on from the kill
    runs = sorted(job.glob("wandb/offline-run-*"))
    run_id = (job / "wandb_run_id").read_text().strip()
    assert len(runs) == 2 and all(r.name.endswith(run_id) for r in runs)  # two attempts, one W&B run
    submitit_logs = "".join(p.read_text() for p in sweep.glob(".submitit/*/*.err"))
    assert "Requeued" in submitit_logs or "preempted" in submitit_logs or "timed-out" in submitit_logs


@pytest.mark.slow
def test_optuna_search_prunes_writes_its_study_and_a_second_launch_continues_it(tmp_path):
    search = (
        "-m",
        "hparams_search=vae_optuna",
        "debug=smoke",
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=2",
        "logger=csv",
        "hydra.sweeper.pruner._target_=optuna.pruners.PercentilePruner",
        "+hydra.sweeper.pruner.percentile=1.0",
        "hydra.sweeper.pruner.n_startup_trials=1",
        "hydra.sweeper.pruner.n_warmup_steps=0",
    )  # fmt: skip  (aggressive: a trial worse than the best so far at any epoch is pruned)
    proc = run_cli(tmp_path, *search, "hydra.sweeper.n_trials=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = tmp_path.glob("logs/vae/multiruns/*")
    import optuna

    from hydra_plugins.experiments_search.optuna_sweeper import journal_storage

    study = optuna.load_study(study_name="search", storage=journal_storage(sweep / "optuna.journal"))
    states = [t.state.name for t in study.trials]
    assert len(states) == 4 and "PRUNED" in states and states[0] == "COMPLETE", states
    summary = (sweep / "summary.md").read_text()
    assert summary.startswith("## Optuna search: 4 trials") and "| pruned |" in summary and "best: trial" in summary
    pruned = next(t.number for t in study.trials if t.state.name == "PRUNED")
    assert json.loads((sweep / str(pruned) / "metrics.json").read_text())["status"] == "pruned"

    proc = run_cli(tmp_path, *search, "hydra.sweeper.n_trials=6", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="search", storage=journal_storage(sweep / "optuna.journal"))
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4, 5]  # continued: 2 more, not 6 again
    assert states == [t.state.name for t in study.trials[:4]] and (sweep / "5" / ".hydra").is_dir()
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == 6  # the continued sampler asked new points (it used to repeat trials 0 and 1)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["relaunch", "resume"])
def test_a_trial_killed_mid_way_is_run_again_in_its_folder_and_counted_once(tmp_path, how):
    """SIGTERM in trial 0 stops the search (exit 143). Either the same command on the folder runs
    trial 0 again, continuing from its last.ckpt, then trial 1; or FAILED's advice, resume=<trial
    folder>, finishes trial 0 and tells the study, and the relaunched search only adds trial 1.
    Either way: two trials, both complete, none failed."""
    env = cli_env(tmp_path, PYTHONPATH=HELPERS + os.pathsep + os.environ.get("PYTHONPATH", ""))
    once = tmp_path / "signal_sent"
    search = (
        "-m", "hparams_search=vae_optuna", "debug=smoke", "trainer.max_epochs=3", "trainer.limit_train_batches=2",
        "logger=csv", "hydra.sweeper.n_trials=2", "+callbacks.kill._target_=signals.SendSignal",
        "+callbacks.kill.at_step=3", "+callbacks.kill.signum=15", f"+callbacks.kill.once={once}",
    )  # fmt: skip
    proc = run_cli(tmp_path, *search, env=env)
    assert proc.returncode == 143 and once.exists(), proc.stderr[-3000:]
    (sweep,) = tmp_path.glob("logs/vae/multiruns/*")
    import optuna

    from hydra_plugins.experiments_search.optuna_sweeper import journal_storage

    if how == "resume":
        proc = run_cli(tmp_path, f"resume={sweep / '0'}", env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        study = optuna.load_study(study_name="search", storage=journal_storage(sweep / "optuna.journal"))
        assert [t.state.name for t in study.trials] == ["COMPLETE"]  # the resumed trial told the study
    proc = run_cli(tmp_path, *search, f"hydra.sweep.dir={sweep}", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="search", storage=journal_storage(sweep / "optuna.journal"))
    assert [(t.number, t.state.name) for t in study.trials] == [(0, "COMPLETE"), (1, "COMPLETE")]
    assert "resuming the run in" in (sweep / "0" / "run.log").read_text()
    assert json.loads((sweep / "0" / "metrics.json").read_text())["global_step"] == 6
