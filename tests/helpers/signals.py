"""A callback that sends this process a signal at a given training step: a kill, in-process."""

import os

from lightning.pytorch.callbacks import Callback


class SendSignal(Callback):
    def __init__(self, at_step: int, signum: int):
        self.at_step, self.signum = at_step, signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.at_step:
            os.kill(os.getpid(), self.signum)
