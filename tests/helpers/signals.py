"""Callbacks that end a run on purpose: a signal at a training step or in the test pass (a kill,
in-process), or an exception (a crash)."""

import os
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class SendSignal(Callback):
    """`once`: a file; the signal is sent only while it does not exist (it is created then), so a
    requeued or resumed attempt of the same run trains on undisturbed."""

    def __init__(self, at_step: int, signum: int, once: str | None = None, in_test: bool = False):
        self.at_step, self.signum, self.once, self.in_test = at_step, signum, once, in_test

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if self.in_test:  # in the test pass, after training ended
            self._send()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.at_step and not self.in_test:
            self._send()

    def _send(self):
        if self.once:
            if Path(self.once).exists():
                return
            Path(self.once).touch()
        os.kill(os.getpid(), self.signum)


class Crash(Callback):
    """Raises at a given training step: a run that crashes while fitting."""

    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.at_step:
            raise RuntimeError(f"crash at step {trainer.global_step}")


class SignalOneRank(Callback):
    """One rank of a run of several sends itself `signum` at the end of the first epoch's validation
    (its checkpoints written, the next collectives not begun): a scheduler's signal that lands on one
    rank at a point the other ranks have already passed, or reaches them later."""

    def __init__(self, rank: int, signum: int = 15):
        self.rank, self.signum, self.sent = rank, signum, False

    def on_validation_end(self, trainer, pl_module):
        if self.sent or trainer.sanity_checking or trainer.global_rank != self.rank or trainer.current_epoch != 0:
            return
        self.sent = True
        os.kill(os.getpid(), self.signum)  # its handler runs before this rank's next line
