"""Frozen parts stay frozen in function too: a LightningModule mixin that keeps `frozen_modules` in
eval mode (BatchNorm statistics, dropout) whatever mode the rest of the module is put in."""

from __future__ import annotations

from torch import nn


class FrozenStayInEval(nn.Module):
    """Mix in before pl.LightningModule (an nn.Module itself) and set `self.frozen_modules` (a list of nn.Modules)."""

    frozen_modules: list[nn.Module] = []

    def _frozen_to_eval(self) -> None:
        for module in self.frozen_modules:
            module.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self._frozen_to_eval()
        return self

    def on_train_epoch_start(self):
        # Lightning restores each module's mode around validation rather than calling train():
        # re-assert the frozen modules' eval mode every epoch.
        self._frozen_to_eval()
