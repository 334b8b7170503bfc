"""A kill and a resume in this process: a callback sends the signal at a known step, so what the
checkpoint, FAILED, the CSV and the W&B run hold can be checked step by step (the real CLI, a real
process killed from outside: tests/e2e/test_lifecycle.py)."""

from __future__ import annotations

import csv
import json
import signal
from pathlib import Path

import pytest
import torch
from wandb_reader import read_run

from experiments.lifecycle import resume_overrides

RUN = (  # 4 epochs of 5 steps; the signal arrives at step 7, inside the second epoch
    "task=vae", "data.synthetic=true", "data.synthetic_size=200", "data.batch_size=32", "trainer.max_epochs=4",
    "trainer.log_every_n_steps=1", "callbacks.vae_figures.num_points=64",
)  # fmt: skip


def killer(signum: int) -> tuple[str, ...]:
    return (
        "+callbacks.kill._target_=signals.SendSignal",
        "+callbacks.kill.at_step=7",
        f"+callbacks.kill.signum={int(signum)}",
    )


def train_steps(run: Path) -> list[int]:
    return [int(r["step"]) for r in csv.DictReader((run / "csv" / "metrics.csv").open()) if r.get("train/loss_step")]


@pytest.mark.parametrize(
    "sig,code,how",
    [(signal.SIGTERM, 143, "resume"), (signal.SIGINT, 130, "relaunch")],  # relaunch: what a cluster requeue does
)
def test_a_killed_run_stops_at_the_step_and_resumes_in_place(tmp_path, run_experiment, capsys, sig, code, how):
    logger = "logger=wandb" if how == "resume" else "logger=csv"  # W&B's side once is enough
    exit_code, run = run_experiment(*RUN, *killer(sig), logger)
    assert exit_code == code
    failed = (run / "FAILED").read_text().splitlines()[0]
    assert failed == f"killed by {sig.name} in epoch 2, step 7; resume with: python -m experiments resume={run}"
    assert failed in capsys.readouterr().err
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 7 and not (run / "metrics.json").exists()  # the step it stopped after
    before = train_steps(run)
    assert before == list(range(7))
    if how == "resume":
        (first,) = run.glob("wandb/offline-run-*")
        killed = read_run(first)
        assert killed["state"] == "failed" and killed["exit_code"] == code

    if how == "resume":  # python -m experiments resume=<run> trainer.max_epochs=5
        overrides = resume_overrides([f"resume={run}", "trainer.max_epochs=5"])
        assert overrides[-2:] == [f"hydra.run.dir='{run}'", f"resume='{run}'"]  # quoted: any path
    else:  # the same command again, into the same folder: it finds last.ckpt and goes on
        overrides = [*RUN, *killer(sig), logger, "trainer.max_epochs=5", f"hydra.run.dir={run}"]
    exit_code, again = run_experiment(*overrides)
    assert exit_code == 0 and again == run
    result = json.loads((run / "metrics.json").read_text())
    assert result["epochs"] == 5 and result["global_step"] == 25 and not (run / "FAILED").exists()
    after = train_steps(run)
    assert after[:7] == before and after == sorted(set(after))  # rows kept, no step twice
    assert after[-1] == 24  # and the curve goes on to the end (a restarted epoch may skip a few steps' rows)
    if how == "resume":
        runs = [read_run(d) for d in sorted(run.glob("wandb/offline-run-*"))]
        assert {r["run_id"] for r in runs} == {killed["run_id"]} and runs[-1]["exit_code"] == 0  # one W&B run


def test_last_ckpt_is_the_last_epoch_whatever_the_monitored_metric_did(tmp_path, run_experiment):
    """The KL weight grows while it is annealed: monitored with mode=min the best epoch is the
    first, yet last.ckpt must hold the last (Lightning 2.6's save_last alone lags)."""
    code, run = run_experiment(
        *RUN, "logger=csv", "monitor=train/kl_weight", "monitor_mode=min", "model.kl_anneal_epochs=10"
    )
    assert code == 0
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    best = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (3, 20) and best["global_step"] == 5
