"""A rank of a multi-process run lost: what real gloo says when a peer dies or hangs, read by
experiments.lifecycle.lost_rank, and the FAILED line that says how to go on."""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import time
from types import SimpleNamespace

import pytest

from experiments import lifecycle


def _rank(rank: int, port: int, peer: str, results) -> None:
    import datetime

    import torch
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=3)
    )
    dist.all_reduce(torch.ones(1))  # both ranks up
    if rank == 1:
        if peer.startswith("dies"):
            os._exit(9)  # a killed process: its sockets close
        time.sleep(30)  # a frozen one: no answer
        os._exit(0)
    try:
        # what CI saw: the collective that timed out was not the one whose error was raised
        if peer == "hangs, and a later collective is what fails":
            try:
                dist.all_reduce(torch.ones(1))
            except Exception:  # noqa: BLE001, S110 - gloo closes the pair; the next collective says so
                pass
        try:
            dist.all_reduce(torch.ones(1))
        except Exception:
            if peer == "dies, then the exit checkpoint fails":  # what CI saw: torch.save's error reached the loop
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1682240 vs 1682132")  # noqa: B904 - implicit chaining, as torch.save raised it
            raise
        results.put(("no error", None))
    except Exception as e:  # noqa: BLE001 - what gloo raises is what the test reads
        results.put((type(e).__name__, lifecycle.lost_rank(e)))


@pytest.mark.parametrize(
    ("peer", "said"),
    [
        ("dies", "by peer"),
        ("hangs", "Timed out waiting 3000ms"),
        ("dies, then the exit checkpoint fails", "by peer"),
        (
            "hangs, and a later collective is what fails",
            "Application timeout caused pair closure: a collective got no answer within trainer.strategy.timeout",
        ),
    ],
)
def test_a_collective_that_lost_its_peer_is_named_in_one_line(peer, said):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(r, port, peer, results)) for r in (0, 1)]
    for p in procs:
        p.start()
    try:
        kind, line = results.get(timeout=120)
    finally:
        for p in procs:
            p.kill()
            p.join()
    assert kind != "no error"
    assert line is not None and said in line, line
    assert "\n" not in line and not line.startswith("["), line  # one line, without gloo's source path


def test_an_error_outside_a_process_group_is_not_a_lost_rank():
    assert lifecycle.lost_rank(RuntimeError("Connection closed by peer")) is None  # no process group here
    assert lifecycle.lost_rank(ValueError("bad")) is None


TRAINER = SimpleNamespace(current_epoch=1, global_step=126, world_size=2)


def test_the_failed_line_says_where_and_how_to_go_on(tmp_path, monkeypatch):
    for var in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(var, raising=False)
    assert lifecycle.lost_rank_note(tmp_path, "x", TRAINER).endswith("no checkpoint was written yet; start it again")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    line = lifecycle.lost_rank_note(tmp_path, "Connection closed by peer", TRAINER)
    assert line.startswith("lost another rank of 2 of this run in epoch 2, step 126 (Connection closed by peer); ")
    assert line.endswith(f"launching all ranks again with: python -m experiments resume={tmp_path}")
    in_test = lifecycle.lost_rank_note(tmp_path, "Connection closed by peer", TRAINER, testing=True)
    assert in_test.startswith("lost another rank of 2 of this run in the test pass (after step 126) (Connection")
    monkeypatch.setenv("SLURM_JOB_ID", "75")
    assert lifecycle.lost_rank_note(tmp_path, "x", TRAINER).endswith("with: scontrol requeue 75")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "70")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert lifecycle.lost_rank_note(tmp_path, "x", TRAINER).endswith("with: scontrol requeue 70_3")


def test_only_rank_zero_of_a_slurm_step_carries_a_signal_exit_code(monkeypatch):
    monkeypatch.setenv("SLURM_NTASKS", "2")
    assert lifecycle.signal_exit_code(140, rank0=True) == 140
    assert lifecycle.signal_exit_code(140, rank0=False) == 0  # srun --kill-on-bad-exit would stop rank 0
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert lifecycle.signal_exit_code(143, rank0=False) == 143
