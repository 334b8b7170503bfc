"""How a run ends, and how it goes on.

A run ends in one of three ways, each leaving its folder honest:

- success: metrics.json, exit 0 (a FAILED left by an earlier attempt is removed);
- a mistake in the config or the data: one line, FAILED, exit 2;
- a kill (SIGTERM from a scheduler, Ctrl-C): while fitting, the step in progress finishes, a
  checkpoint of it is written (checkpoints/last.ckpt), FAILED names the epoch, the step and the
  command that resumes it, and the process exits 128 + the signal (143, 130). A second signal
  stops at once.

A run folder is the unit of resume: `python -m experiments resume=<folder>` recomposes the run
from the overrides it was started with (saved by Hydra in .hydra/overrides.yaml), runs it in
that folder, continues fitting from checkpoints/last.ckpt, logs into the same W&B run and
appends to csv/metrics.csv. A job relaunched into a folder that holds last.ckpt (a cluster
requeue) resumes by itself.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

import yaml

from experiments.run_folder import IDENTITY_OVERRIDES, note_refusal, override_root
from private_api import request_graceful_stop, take_back_sigterm

log = logging.getLogger(__name__)


class Killed(BaseException):
    """A signal ended the run. A BaseException, so that no `except Exception` on the way swallows it."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"killed by {signal.Signals(signum).name}")


@dataclass(frozen=True)
class JobFailed:
    """What a sweep's job returns when its run failed and the sweep goes on: the exit code its
    process ends with where a launcher runs it as a job of its own (experiments_launcher)."""

    exit_code: int


def exit_code(signum: int) -> int:
    return 128 + int(signum)


@dataclass
class RunEnding:
    """How one run is ending. `run_safely` makes one per run and hands it to what changes it: the
    fit and the test pass say where a signal lands (`stage`), the signal handlers close over it
    (`install_signal_handlers`), and one of the ways a run ends (`succeeded`, `refused`, `mistake`,
    `killed`, `crashed`) records its exit code, which closes the W&B run and, in a sweep, ends the
    job's process (`JobFailed`)."""

    signum: int | None = None  # the first signal received
    trainer: Any = None  # the trainer while it fits or tests
    fitting: bool = False
    testing: bool = False  # in the test pass (training, if any, has ended)
    final_lines: list[str] = field(default_factory=list)  # what a successful run prints last
    exit_code: int = 0  # how the run ended
    requeue: Any = None  # submitit's handler of its requeue signal (USR2), called once the step in progress ended
    requeued: bool = False  # SLURM continues this run in a new attempt: later signals may not cut the close short
    closing: bool = False  # a lost rank is being recorded: srun's SIGTERM to the step may not cut FAILED short
    stop_wanted: bool = False  # a signal asked a fit of several ranks to stop: stop_together stops them at one step
    not_requeued: str = ""  # why submitit did not requeue (e.g. timed out too many times)
    requeue_exit: int | None = None  # the exit code submitit's requeue asks for (its local executor's), if any

    # -- signals ----------------------------------------------------------------------------------

    def install_signal_handlers(self) -> dict:
        """SIGTERM and SIGINT end the run through `on_signal` (main thread only, as Python requires);
        in a submitit job its requeue signal (USR2) too: the step ends first, then submitit's own
        handler requeues the job (`requeue_note`). Returns the handlers they replace, for
        `restore_signal_handlers` once the run is over."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        # Lightning's SIGTERM/USR1 handlers log at INFO inside the handler: not at this level
        logging.getLogger("lightning.pytorch.trainer.connectors.signal_connector").setLevel(logging.WARNING)
        signals = [signal.SIGTERM, signal.SIGINT]
        previous = {}
        if os.environ.get("SUBMITIT_EXECUTOR") and callable(signal.getsignal(signal.SIGUSR2)):
            self.requeue = signal.getsignal(signal.SIGUSR2)
            signals.append(signal.SIGUSR2)
            previous[signal.SIGCONT] = signal.signal(signal.SIGCONT, signal.SIG_DFL)  # submitit's logs in the handler
        return previous | {sig: signal.signal(sig, self.on_signal) for sig in signals}

    def restore_signal_handlers(self, previous: dict) -> None:
        if self.requeued:  # this attempt is over: SLURM's SIGTERM/SIGCONT that end it find `on_signal`, silent
            previous = {}
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        self.trainer = None

    def on_signal(self, signum, frame) -> None:
        # No logging in here: a handler that logs while the interrupted code is inside a log call
        # breaks the stream ("--- Logging error --- RuntimeError: reentrant call"). Flags and a raw write.
        if self.requeued or self.closing:
            return  # SLURM requeued this job, or the run is recording how it ended: the close goes on
        first = self.signum is None
        self.signum = self.signum or signum
        if first and self.fitting and self.trainer is not None:
            if self.trainer.world_size > 1:
                # Lightning reads its stop flag at several points of a step and of validation: set here,
                # where the signal lands, one rank can stop at a point the others pass, and wait in a
                # collective they never join. stop_together sets it on every rank at the same step.
                self.stop_wanted = True
            else:
                # Lightning's own flag: the current step ends, the checkpoint callbacks' on_exception
                # writes last.ckpt, and fit raises SIGTERMException (what it does for SIGTERM by itself).
                request_graceful_stop(self.trainer)
            name = signal.Signals(signum).name
            os.write(2, f"{name} received: stopping after this step (send it again to stop at once)\n".encode())
            return
        raise Killed(signum)

    @contextmanager
    def stage(self, name: Literal["fit", "test"], trainer) -> Iterator[None]:
        """While fitting, a signal stops the run after the step in progress; a kill in the test pass
        is named as such in FAILED (so `testing` stays set when the test pass is cut short)."""
        self.trainer, self.fitting, self.testing = trainer, name == "fit", name == "test"
        try:
            yield
        finally:
            self.fitting = False
        self.testing = False
        if self.stop_wanted:  # the signal came after the last step every rank shared: the run stops here
            raise Killed(self.signum or signal.SIGTERM)

    # -- what FAILED and REQUEUED say -------------------------------------------------------------

    def requeue_note(self, out: Path, signum: int, trainer) -> str | None:
        """If SLURM continues this run in a new attempt, the line that says so (also appended to
        REQUEUED in the run folder, which the sweep summary counts); else None (the run has stopped).

        USR2 in a submitit job: submitit's handler checkpoints the job and requeues it (rank 0; the
        other ranks end with it), unless the job has timed out `max_num_timeout` times. SIGTERM: SLURM
        itself requeued the job (`scontrol requeue`, preemption)."""
        how = None
        if signum == signal.SIGUSR2 and self.requeue is not None:
            # SLURM ends the attempt (SIGTERM) as soon as `scontrol requeue` has requeued it, which can be
            # before that command has returned here: from now on `on_signal` lets the close go on
            self.requeued = True
            try:
                self.requeue(signum, None)  # submitit: pickle the job, `scontrol requeue`, then SystemExit
            except SystemExit as e:  # its local executor requeues on the exit code it gives: keep that one
                self.requeue_exit = e.code if isinstance(e.code, int) and e.code > 0 else None
            except Exception as e:  # noqa: BLE001 - submitit's UncompletedJobError: not requeued
                self.requeued = False
                self.not_requeued = str(e).strip().rstrip(".")
                return None
            how = "requeued by submitit (preempted or at its time limit)"
        elif signum == signal.SIGTERM and slurm_requeued():
            how = "requeued by SLURM"
        if how is None:
            return None
        self.requeued = True
        where = f" {training_position(trainer)}" if trainer is not None else ""
        saved = resume_checkpoint(out)
        then = "the next attempt continues from checkpoints/last.ckpt" if saved else "the next attempt starts it again"
        note = f"{signal.Signals(signum).name}{where}: {how}; {then} in this folder and W&B run"
        job = os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID", "?")
        if (trainer.global_rank if trainer is not None else int(os.environ.get("SLURM_PROCID", "0"))) != 0:
            return note  # one line per requeue: rank 0's
        try:
            with open(out / "REQUEUED", "a") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} job {job}: {note}\n")
        except OSError:
            pass
        return note

    def failure_note(self, out: Path, signum: int | None, trainer) -> str:
        """The first line of FAILED for a killed run: what stopped it, where, and how to go on."""
        name = signal.Signals(signum).name if signum else "a signal"
        if self.not_requeued:
            name += f" ({self.not_requeued})"
        where = f" {run_position(trainer, self.testing)}" if trainer is not None else ""
        saved = resume_checkpoint(out)
        how = f"resume with: {resume_command(out)}" if saved else "no checkpoint was written yet; start it again"
        return f"killed by {name}{where}; {how}"

    # -- the ways a run ends (experiments.run.run_safely calls one of them) -------------------------
    # Each sets `exit_code`: the W&B run is closed with it, and a sweep's job ends its process with it
    # (experiments_launcher, through JobFailed). In a sweep a failed job returns (the sweep goes on;
    # its summary and exit code say the job failed); a single run exits.

    def succeeded(self) -> None:
        """metrics.json is written: the last lines a user sees, after the W&B run is closed."""
        for line in self.final_lines:
            print(line, flush=True)

    def refused(self, out: Path, e: Exception, rank0: bool) -> None:
        """The folder holds another run: nothing in it was changed. Exit 2."""
        self.exit_code = 2
        stderr(f"error: {e}")
        if not in_multirun():
            sys.exit(2)
        if rank0:
            note_refusal(out, str(e))  # beside the job's folder: the sweep summary counts it failed

    def mistake(self, out: Path, e: Exception, mark: bool) -> None:
        """A mistake in the config or the data: one line, FAILED (when `mark`), exit 2."""
        self.exit_code = 2
        if mark:
            mark_failed(out, e, f"error: {e}")
        stderr(f"error: {e}")
        if not in_multirun():
            sys.exit(2)

    def killed(self, out: Path, e: BaseException, rank0: bool) -> NoReturn:
        """A signal: requeued by the scheduler (REQUEUED, not FAILED), or stopped (FAILED naming the
        resume command). Exit 128 + the signal (or the code submitit's requeue asks for)."""
        signum = self.signum or getattr(e, "signum", None) or signal.SIGTERM
        code = self.exit_code = exit_code(signum)
        if (requeued := self.requeue_note(out, signum, self.trainer)) is not None:
            log.warning(requeued)  # not FAILED: the scheduler runs it again, into this folder
            sys.exit(signal_exit_code(self.requeue_exit or code, rank0))
        note = self.failure_note(out, signum, self.trainer)
        if rank0:
            mark_failed(out, e, note)
        stderr(note)
        if in_multirun():
            from experiments.sweep import write_summary

            write_summary(out.parent)  # a killed sweep still leaves its table
        sys.exit(signal_exit_code(code, rank0))

    def crashed(self, out: Path, e: Exception, rank0: bool) -> bool:
        """A bug, or another rank of the run lost (lost_rank_note says how to go on): FAILED with the
        traceback, exit 1. True when the sweep goes on; False: re-raise it."""
        self.exit_code = 1
        lost = lost_rank(e)
        self.closing = lost is not None
        first = lost_rank_note(out, lost, self.trainer, self.testing) if lost else f"{type(e).__name__}: {e}"
        if lost:
            log.error(first)  # in the rank's log too: FAILED goes once a requeue has continued the run
        if rank0:
            mark_failed(out, e, first)
        if not in_multirun():
            return False
        log.exception("job failed; the sweep goes on (see %s)", out / "FAILED")
        return True


def stop_together(ending: RunEnding):
    """A callback: a stop that reached some ranks only, or at different points (a signal srun or a
    node delivered late, or that landed between two collectives), stops every rank after the same
    training step or validation batch. A signal only wants the stop (`RunEnding.stop_wanted`); here,
    where every rank is, one boolean all-reduce decides it and Lightning's stop flag is set on all
    of them at once. Without it, a rank that stops writes its checkpoint while the others wait in
    their next collective: a hang until the collective timeout (seen on the two-node test cluster).
    Lightning's own SIGTERM handler, which sets its flag where the signal lands, is taken out
    (`take_back_sigterm`) while the trainer runs: the run's handler has SIGTERM."""
    from lightning.pytorch.callbacks import Callback

    class StopTogether(Callback):
        def on_sanity_check_start(self, trainer, *args) -> None:
            take_back_sigterm(trainer)  # the trainer installed its handlers just before

        def on_train_start(self, trainer, *args) -> None:
            take_back_sigterm(trainer)

        def on_test_start(self, trainer, *args) -> None:
            take_back_sigterm(trainer)

        def on_train_batch_end(self, trainer, *args) -> None:
            self.decide(trainer)

        def on_validation_batch_end(self, trainer, *args) -> None:
            if not trainer.sanity_checking:  # a stop in validation: at the same batch on every rank
                self.decide(trainer)

        @staticmethod
        def decide(trainer) -> None:
            if trainer.world_size < 2:  # the same on every rank: each rank joins every all-reduce
                return
            if trainer.strategy.reduce_boolean_decision(ending.stop_wanted, all=False):
                request_graceful_stop(trainer)

    return StopTogether()


def resume_checkpoint(out: Path) -> Path | None:
    """The checkpoint a relaunched run continues from: its last.ckpt (written at every epoch's end
    and when the run was stopped), if any."""
    last = out / "checkpoints" / "last.ckpt"
    return last if last.is_file() else None


def resume_command(out: Path) -> str:
    return f"python -m experiments resume={shlex.quote(str(out))}"


def resume_overrides(argv: list[str]) -> list[str]:
    """The command line of `resume=<run folder> [overrides]`, rewritten to what Hydra composes: the
    overrides that run was started with, the new ones (only keys that do not change the model or
    the data, e.g. trainer.max_epochs), and the folder as hydra.run.dir. Any other command line is
    returned as it is. Raises ValueError naming the problem."""
    at = [i for i, a in enumerate(argv) if a.startswith("resume=")]
    if not at:
        return argv
    folder = Path(argv[at[-1]].split("=", 1)[1]).expanduser().resolve()
    saved = folder / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        raise ValueError(f"resume={folder}: not a run folder (it has no .hydra/overrides.yaml)")
    rest = [a for i, a in enumerate(argv) if i not in at]
    if any(a in ("-m", "--multirun") for a in rest):
        raise ValueError("resume= continues one run: drop -m (a sweep's jobs are resumed one folder at a time)")
    flags, new = settings_beside(
        rest, "resume", folder, "only settings such as trainer.max_epochs may change (start a new run instead)"
    )
    old = [o for o in (yaml.safe_load(saved.read_text()) or []) if not o.startswith(("resume=", "hydra."))]
    return [*flags, *old, *new, f"hydra.run.dir={hydra_quote(folder)}", f"resume={hydra_quote(folder)}"]


def settings_beside(rest: list[str], key: str, folder: Path, instead: str) -> tuple[list[str], list[str]]:
    """(flags, overrides) given beside `<key>=<folder>` (resume=, eval=): only settings that keep the
    run's model and data; one that would change them raises ValueError naming it and what to do instead."""
    flags = [a for a in rest if a.startswith("-")]
    new = [a for a in rest if not a.startswith("-")]
    for override in new:
        if override_root(override) in IDENTITY_OVERRIDES:
            raise ValueError(f"{key}: {override} would change the model or data of the run in {folder}; {instead}")
    return flags, new


def hydra_quote(path: Path | str) -> str:
    """A path (or any string) as a quoted value of Hydra's override grammar: spaces, non-ASCII letters, '=' safe."""
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"


def slurm_requeued() -> bool:
    """Whether SLURM has requeued this job while it runs (`scontrol requeue`, preemption with
    requeue): its restart count went up after this attempt started. A time limit or `scancel`
    does not do that."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job or shutil.which("scontrol") is None:
        return False
    try:
        out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, timeout=20).stdout
    except (subprocess.SubprocessError, OSError):
        return False
    restarts = re.search(r"Restarts=(\d+)", out)
    return restarts is not None and int(restarts.group(1)) > int(os.environ.get("SLURM_RESTART_COUNT") or 0)


def signal_exit_code(code: int, rank0: bool) -> int:
    """The exit code of a run a signal ended. A rank other than 0 of a SLURM step exits 0: the
    signal reached every rank, rank 0 reports the ending, and srun's --kill-on-bad-exit (the SLURM
    launcher's `srun_args`) would otherwise stop rank 0 before it has recorded it."""
    if not rank0 and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return 0
    return code


PAIR_CLOSED = "Application timeout caused pair closure"  # gloo, to every use of a pair after a timeout on it
PEER_LOST = ("gloo/transport", "Connection closed by peer", PAIR_CLOSED, "ProcessGroupNCCL", "NCCL error")


def lost_rank(e: BaseException) -> str | None:
    """If `e`, or an exception it was raised while handling, is a collective that failed because
    another rank of this run is gone or hung (its process killed, its node lost, or no answer within
    `trainer.strategy.timeout`), what gloo/NCCL said, in one line; else None. The chain matters: the
    checkpoint Lightning writes on the way out can fail too and be what reaches the run loop."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        return None
    seen: set[int] = set()
    said = None  # the first failure of the chain: later ones (the exit checkpoint's) follow from it
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = str(e)
        if isinstance(e, dist.DistError) or any(k in text for k in PEER_LOST):
            first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(e).__name__)
            said = re.sub(r"^\[[^\]]*\]\s*", "", first).split(". ")[0]  # without the source file's path
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    if said is not None and PAIR_CLOSED in said:  # on its own it does not say that a rank hung, nor the key
        said += ": a collective got no answer within trainer.strategy.timeout"
    return said


def training_position(trainer) -> str:
    """Where training was, with epochs counted from 1 as the progress bar counts them (`Epoch 2/3`):
    `in epoch 2, step 7` while an epoch runs (its validation included), `after epoch 1, step 2`
    between epochs. Lightning's `current_epoch` counts from 0 and moves on when an epoch ends."""
    progress = getattr(getattr(getattr(trainer, "fit_loop", None), "epoch_progress", None), "current", None)
    step = trainer.global_step
    if progress is None:  # not a Lightning trainer (a test's stand-in): its current_epoch only
        return f"in epoch {trainer.current_epoch + 1}, step {step}"
    if progress.started > progress.completed:
        return f"in epoch {progress.started}, step {step}"
    return f"after epoch {progress.completed}, step {step}"


def run_position(trainer, testing: bool) -> str:
    """Where the run was: in the test pass (training, if any, had ended: not "in epoch N") or where
    in training (training_position)."""
    return f"in the test pass (after step {trainer.global_step})" if testing else training_position(trainer)


def lost_rank_note(out: Path, reason: str, trainer, testing: bool = False) -> str:
    """The first line of FAILED when another rank of a multi-process run was lost: what happened,
    where, and how to go on (a SLURM job: requeue it, its allocation starts every rank again)."""
    where = f" {run_position(trainer, testing)}" if trainer is not None else ""
    world = f" of {trainer.world_size}" if trainer is not None else ""
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    if job and os.environ.get("SLURM_ARRAY_TASK_ID"):
        job = f"{job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    saved = resume_checkpoint(out)
    if saved is None:
        how = "no checkpoint was written yet; start it again"
    elif job:
        how = f"continue from checkpoints/last.ckpt with: scontrol requeue {job}"
    else:
        how = f"continue from checkpoints/last.ckpt by launching all ranks again with: {resume_command(out)}"
    return f"lost another rank{world} of this run{where} ({reason}); {how}"


def stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def mark_failed(out: Path, e: BaseException, first_line: str) -> None:
    """A failed run never looks like a success: FAILED holds the reason (its first line, then the
    traceback). A metrics.json of an earlier attempt that finished stays (FAILED says so): the
    failure handler never deletes the evidence of a success."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        earlier = (
            "\nmetrics.json beside this file is from an earlier attempt of this run, which finished\n"
            if (out / "metrics.json").is_file()
            else ""
        )
        (out / "FAILED").write_text(f"{first_line}\n{earlier}\n{''.join(traceback.format_exception(e))}")
    except OSError:
        pass
