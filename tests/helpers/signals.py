"""A callback that sends this process a signal at a given training step: a kill, in-process."""

import os
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class SendSignal(Callback):
    """`once`: a file; the signal is sent only while it does not exist (it is created then), so a
    requeued or resumed attempt of the same run trains on undisturbed."""

    def __init__(self, at_step: int, signum: int, once: str | None = None):
        self.at_step, self.signum, self.once = at_step, signum, once

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.at_step:
            if self.once:
                if Path(self.once).exists():
                    return
                Path(self.once).touch()
            os.kill(os.getpid(), self.signum)
