"""A throwaway fifth task for tests/experiments/test_new_task.py: a linear classifier, nothing else."""

import lightning.pytorch as pl
import torch
import torch.nn.functional as F


class LinearClassifier(pl.LightningModule):
    def __init__(self, in_features: int, num_classes: int, lr: float):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Linear(in_features, num_classes)

    def forward(self, x):
        return self.net(x.flatten(1))

    @torch.no_grad()
    def predict_logits(self, x):  # contracts.Classifier
        return self(x)

    def _step(self, batch, stage):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.log(f"{stage}/loss", loss, on_epoch=True, on_step=False)
        self.log(f"{stage}/acc", (logits.argmax(1) == y).float().mean(), on_epoch=True, on_step=False)
        return {"loss": loss, "preds": logits.argmax(1)}

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        return self._step(batch, "test")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
