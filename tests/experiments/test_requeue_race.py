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

    ending = lifecycle.RunEnding()
    previous = ending.install_signal_handlers()
    try:
        ending.signum = signal.SIGUSR2  # the preemption signal that stopped the run
        ending.requeue = submitit_requeue
        note = ending.requeue_note(tmp_path, signal.SIGUSR2, None)
        assert ending.requeued  # later signals (SLURM's SIGTERM that ends the attempt) leave the close alone
    finally:
        ending.restore_signal_handlers(previous)  # a requeued attempt keeps its silent handlers ...
        for sig, handler in previous.items():  # ... which this test process gives back
            signal.signal(sig, handler)
    assert note is not None and "requeued by submitit" in note
    (line,) = (tmp_path / "REQUEUED").read_text().splitlines()
    assert "SIGUSR2: requeued by submitit" in line


def test_a_requeue_submitit_refuses_leaves_later_signals_to_stop_the_run(tmp_path):
    def refused(signum, frame):
        raise RuntimeError("Job not requeued because: timed-out too many times.")

    ending = lifecycle.RunEnding()
    previous = ending.install_signal_handlers()
    try:
        ending.requeue = refused
        assert ending.requeue_note(tmp_path, signal.SIGUSR2, None) is None
        assert not ending.requeued  # a second signal still stops the run at once
        assert ending.not_requeued == "Job not requeued because: timed-out too many times"
    finally:
        ending.restore_signal_handlers(previous)
    assert not (tmp_path / "REQUEUED").exists()


def test_each_run_has_its_own_ending_and_a_launcher_reads_a_failed_jobs_code_from_its_result():
    """No module-level state: two endings do not share a signal or an exit code, and what a sweep's
    failed job returns carries its code to the launcher that ends the job's process with it."""
    from hydra.core.utils import JobReturn, JobStatus

    from hydra_plugins.experiments_launcher.launchers import failed_exit_code

    first, second = lifecycle.RunEnding(), lifecycle.RunEnding()
    first.signum, first.exit_code, first.final_lines = signal.SIGTERM, 143, ["done"]
    assert (second.signum, second.exit_code, second.final_lines) == (None, 0, [])
    failed = JobReturn(overrides=[], status=JobStatus.COMPLETED)
    failed.return_value = lifecycle.JobFailed(exit_code=2)
    assert failed_exit_code(failed) == 2
    ok = JobReturn(overrides=[], status=JobStatus.COMPLETED)
    ok.return_value = None
    assert failed_exit_code(ok) == 0
    assert not [name for name, value in vars(lifecycle).items() if isinstance(value, lifecycle.RunEnding)]
