"""SLURM ends a requeued attempt with SIGTERM as soon as `scontrol requeue` has requeued it, which
can be before submitit's requeue call has returned (found by CI: the SIGTERM raised inside
`scontrol requeue`'s wait, so REQUEUED was never written). The requeue must survive that signal."""

from __future__ import annotations

import os
import signal

from experiments import lifecycle


def test_a_sigterm_during_submitits_requeue_does_not_cut_it_short(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)

    def submitit_requeue(signum, frame):  # what submitit's handler does, with SLURM's SIGTERM inside it
        os.kill(os.getpid(), signal.SIGTERM)  # delivered to the handler before this returns
        raise SystemExit(-1)

    previous = lifecycle.install_signal_handlers()
    try:
        lifecycle.STATE.signum = signal.SIGUSR2  # the preemption signal that stopped the run
        lifecycle.STATE.requeue = submitit_requeue
        note = lifecycle.requeue_note(tmp_path, signal.SIGUSR2, None)
    finally:
        lifecycle.restore_signal_handlers(previous)
        lifecycle.STATE.requeued = False
    assert note is not None and "requeued by submitit" in note
    (line,) = (tmp_path / "REQUEUED").read_text().splitlines()
    assert "SIGUSR2: requeued by submitit" in line


def test_a_requeue_submitit_refuses_leaves_later_signals_to_stop_the_run(tmp_path):
    def refused(signum, frame):
        raise RuntimeError("Job not requeued because: timed-out too many times.")

    previous = lifecycle.install_signal_handlers()
    try:
        lifecycle.STATE.requeue = refused
        assert lifecycle.requeue_note(tmp_path, signal.SIGUSR2, None) is None
        assert not lifecycle.STATE.requeued  # a second signal still stops the run at once
        assert lifecycle.STATE.not_requeued == "Job not requeued because: timed-out too many times"
    finally:
        lifecycle.restore_signal_handlers(previous)
    assert not (tmp_path / "REQUEUED").exists()
