"""LightningModule for fine-tuning a torchvision ResNet, with residual-block ablation."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from . import resnet as R
from .finetuning import BackboneFeatures, build_optimizer, check_mode, freeze, trainable
from .frozen import FrozenStayInEval
from .inference import bf16_on_gpu

log = logging.getLogger(__name__)

FINETUNE_MODES = ("head", "last_stage", "full", "scratch")


class ResNetClassifier(FrozenStayInEval, pl.LightningModule):
    """A torchvision ResNet with a new `num_classes` head.

    finetune: `head` (only fc trains), `last_stage` (layer4 + fc), `full` (everything), `scratch`
    (random init, everything), None (nothing trains: a run that only tests). Frozen parts keep
    their BatchNorm statistics frozen too unless
    `freeze_bn=False` (the seed notebook let them drift in train mode).

    ablate_blocks / ablate_mode / ablate_when: see models.resnet; `train` ablates before
    fine-tuning, `test` trains intact and ablates for the test pass only.

    cache_features: with finetune=head and frozen BN the backbone is a fixed function, so its
    features are computed once per split (unaugmented) and the head trains on them.
    """

    def __init__(
        self,
        *,
        arch: str,
        weights: str | None,
        checkpoint: str | None,
        num_classes: int = 10,
        finetune: str | None = "head",
        freeze_bn: bool,
        ablate_blocks: Sequence[int] = (),
        ablate_mode: str = "drop",
        ablate_when: str = "train",
        cache_features: bool,
        channels_last: bool | None,
        optimizer: Callable | None,
    ):
        super().__init__()
        check_mode(finetune, FINETUNE_MODES)
        if ablate_when not in ("train", "test"):
            raise ValueError(f"ablate.when must be 'train' or 'test', got {ablate_when!r}")
        if ablate_mode not in R.ABLATION_MODES:
            raise ValueError(f"ablate.mode must be one of {', '.join(R.ABLATION_MODES)}, got {ablate_mode!r}")
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"the head needs a labelled data set of at least 2 classes, got {num_classes!r} classes")
        if not isinstance(ablate_blocks, (list, tuple)):
            raise ValueError(
                f"ablate.blocks must be a list of block indices, e.g. ablate.blocks=[3,7], got {ablate_blocks!r}"
            )
        self.save_hyperparameters(ignore=["optimizer"])
        if finetune == "scratch" or checkpoint:
            weights = None  # scratch: random init; a checkpoint replaces whatever torchvision would load
        self.net = R.build_resnet(arch, weights)
        self.net.fc = self._load_checkpoint_and_head(checkpoint, num_classes)
        self.blocks = R.validate_blocks(list(ablate_blocks), len(R.residual_blocks(self.net)), arch)
        self.ablated_modules: list[str] = []
        if self.blocks and ablate_when == "train":
            self.ablated_modules = R.ablate(self.net, self.blocks, ablate_mode)
            log.info("ablated (%s, while training): %s", ablate_mode, ", ".join(self.ablated_modules))
        self._freeze(finetune)
        self.optimizer_factory = optimizer
        self.caching = cache_features and finetune == "head" and freeze_bn

        def metric():
            return MulticlassAccuracy(num_classes, average="micro")

        self.train_acc, self.val_acc, self.test_acc = metric(), metric(), metric()
        self.train()  # puts the frozen BatchNorms in eval mode from the start

    # -- construction -------------------------------------------------------------------------
    def _load_checkpoint_and_head(self, checkpoint: str | None, num_classes: int) -> nn.Module:
        head = nn.Linear(self.net.fc.in_features, num_classes)
        if not checkpoint:
            return head
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"model.checkpoint={checkpoint} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001  (pickle, zip or tensor errors: all mean "not a checkpoint")
            raise ValueError(
                f"model.checkpoint={checkpoint} is not a PyTorch state dict or Lightning checkpoint "
                f"({type(e).__name__}); give a file written by torch.save or one of our .ckpt files"
            ) from None
        if not isinstance(state, dict):
            raise ValueError(f"model.checkpoint={checkpoint} holds a {type(state).__name__}, not a state dict")
        if "state_dict" in state:  # one of our Lightning checkpoints
            state = {k.removeprefix("net."): v for k, v in state["state_dict"].items() if k.startswith("net.")}
        if state.get("fc.weight") is not None and state["fc.weight"].shape[0] == num_classes:
            self.net.fc = head  # a checkpoint with our head: load it whole
        self.net.load_state_dict(state)
        return self.net.fc if self.net.fc is head else head

    def _freeze(self, finetune: str | None) -> None:
        """None: nothing trains (a run that only tests); full and scratch: everything."""
        trainable = {"head": ("fc",), "last_stage": ("layer4", "fc"), None: ()}.get(finetune)
        freeze(
            self.net, [m for name, m in self.net.named_children() if trainable is not None and name not in trainable]
        )
        self.frozen_modules = (  # frozen BatchNorms keep their running statistics
            [
                m
                for m in self.net.modules()
                if isinstance(m, nn.BatchNorm2d) and not any(p.requires_grad for p in m.parameters())
            ]
            if self.hparams["freeze_bn"]
            else []
        )

    # -- forward ------------------------------------------------------------------------------
    def _channels_last(self) -> bool:
        cl = self.hparams["channels_last"]
        return self.device.type == "cuda" if cl is None else bool(cl)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self._channels_last() else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of images, or of backbone features computed before (the head-only path: chosen by
        the input's type, finetuning.BackboneFeatures, not by its shape)."""
        if isinstance(x, BackboneFeatures):
            return self.forward_head(x)
        return self.net(self._layout(x))  # torchvision's forward: forward_head(forward_features(x))

    def forward_features(self, x: torch.Tensor) -> BackboneFeatures:
        """The backbone: images -> (B, D) pooled layer4 features, the head's input."""
        return BackboneFeatures.of(R.backbone_features(self.net, self._layout(x)))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.net.fc(features.as_subclass(torch.Tensor))

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> BackboneFeatures:
        """Backbone features (the head's input), in bf16 autocast on a GPU (contracts.FeatureHead)."""
        with bf16_on_gpu(self.device):
            return BackboneFeatures.of(self.forward_features(x).float())

    # -- what the analyses use ------------------------------------------------------------------
    @torch.no_grad()
    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for model-ready images, bf16 on a GPU (contracts.Classifier)."""
        with bf16_on_gpu(self.device):
            return self(x).float()

    def projection_blocks(self) -> list[int]:
        """Global indices of the blocks whose shortcut is a projection (1x1 conv + BN)."""
        return R.projection_blocks(self.net)

    def residual_block_names(self) -> list[str]:
        return [name for name, _ in R.residual_blocks(self.net)]

    def ablated(self, blocks: Sequence[int], mode: str = "drop"):
        """Context manager: these blocks ablated (besides any train-time ablation), then restored."""
        return R.ablated(self.net, blocks, mode)

    @torch.no_grad()
    def stage_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with bf16_on_gpu(self.device):
            return {k: v.float() for k, v in R.stage_features(self.net, self._layout(x)).items()}

    def on_fit_start(self):
        if self._channels_last():
            self.net.to(memory_format=torch.channels_last)

    def caches_features(self) -> bool:
        """Head only with frozen BatchNorm: the backbone is a fixed function, so it may run once per
        split and the head train on its features (experiments.feature_cache.FeatureCache)."""
        return self.caching

    def run_info(self) -> dict:
        """What the run should record (contracts.ReportsRunInfo): the modules an ablation replaced."""
        return {
            "ablated_modules": self.ablated_modules,
            "ablate_when": self.hparams["ablate_when"],
            "projection_blocks": self.projection_blocks(),
        }

    # -- steps --------------------------------------------------------------------------------
    def _step(self, batch, stage: str, acc):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits.float(), y)
        acc(logits, y)
        self.log(
            f"{stage}/loss",
            loss,
            on_step=stage == "train",
            on_epoch=True,
            batch_size=len(y),
            prog_bar=stage == "train",
            sync_dist=stage != "train",
        )
        self.log(f"{stage}/acc", acc, on_step=False, on_epoch=True, prog_bar=stage != "train")
        return {"loss": loss, "preds": logits.argmax(1).detach()}

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train", self.train_acc)

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "val", self.val_acc)

    def test_step(self, batch, batch_idx):
        return self._step(batch, "test", self.test_acc)

    def on_test_epoch_start(self):
        if self.blocks and self.hparams["ablate_when"] == "test":
            self._test_ablation = R.ablated(self.net, self.blocks, self.hparams["ablate_mode"])
            self.ablated_modules = self._test_ablation.__enter__()
            log.info(
                "ablated (%s, for the test pass): %s", self.hparams["ablate_mode"], ", ".join(self.ablated_modules)
            )

    def on_test_epoch_end(self):
        if getattr(self, "_test_ablation", None) is not None:
            self._test_ablation.__exit__(None, None, None)  # analyses after the test see the trained net
            self._test_ablation = None

    def configure_optimizers(self):
        return build_optimizer(self.optimizer_factory, trainable(self))
