"""FLOPs in Lightning's model summary: it counts them on `example_input_array`, which a module
built from config does not have (the summary then says 'Total FLOPs: 0'). One training image
from the data module is that example."""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback

from analysis.contracts import EvaluationData


class ExampleInput(Callback):
    data_needs = (EvaluationData,)

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit" and pl_module.example_input_array is None:
            for x, _ in trainer.datamodule.eval_batches("train", pl_module.device, max_images=1):
                pl_module.example_input_array = x
                break


class ParameterCounts(Callback):
    """The model's parameter counts (total, trainable, frozen) in every logger's config: W&B's run
    config, TensorBoard's HParams, the CSV logger's hparams.yaml (lightning-hydra-template logs them too)."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        total = sum(p.numel() for p in pl_module.parameters())
        trainable = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        if trainer.is_global_zero:
            for lg in trainer.loggers:
                lg.log_hyperparams(
                    {"parameters": {"total": total, "trainable": trainable, "frozen": total - trainable}}
                )
