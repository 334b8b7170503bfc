"""open_clip models for zero-shot evaluation: loading (offline-aware) and embedding."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

from .hub import hub_offline
from .inference import bf16_on_gpu

log = logging.getLogger(__name__)


def load_clip(name: str, pretrained: str | None, model_config: str | None = None):
    """(model, tokenizer) from open_clip. `pretrained`: an open_clip tag ('openai', 'laion2b_...'),
    a local checkpoint file, or None for random weights. `model_config`: a JSON model config to
    register first (its file name, without .json, is then a valid `name`)."""
    import open_clip

    if model_config:
        if not Path(model_config).is_file():
            raise FileNotFoundError(f"model.model_config={model_config} does not exist")
        open_clip.add_model_config(model_config)
    if name not in open_clip.list_models():
        raise ValueError(
            f"model.name={name!r} is not an open_clip model (see open_clip.list_models(), or set model.model_config)"
        )
    is_file = pretrained is not None and Path(pretrained).is_file()
    if pretrained and not is_file:
        tags = open_clip.list_pretrained_tags_by_model(name)
        if pretrained not in tags:
            raise ValueError(
                f"model.pretrained={pretrained!r}: not a file and not a tag of {name} ({', '.join(tags) or 'none'})"
            )
        hub_offline()  # without a network: fail at once unless cached, not after ~46 s of retries
    try:
        model = open_clip.create_model(name, pretrained=pretrained)
    except Exception as e:  # noqa: BLE001
        raise RuntimeError(
            f"could not load open_clip {name} with pretrained={pretrained} "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200]}). "
            f"Offline: set model.pretrained=PATH to a local checkpoint, or model.pretrained=null for random weights"
        ) from e
    return model.eval(), open_clip.get_tokenizer(name)


class ClipZeroShot(pl.LightningModule):
    """Embeds images with an open_clip model during `trainer.test`, and class prompts on request.

    After the test pass `test_embeddings()` holds the test split's (normalised image embeddings,
    labels) as numpy arrays: computed once per run and shared by every analysis
    (contracts.ImageTextEmbedder).
    """

    def __init__(self, name: str = "ViT-B-32", pretrained: str | None = "openai", model_config: str | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.model, self.tokenizer = load_clip(name, pretrained, model_config)
        for p in self.model.parameters():
            p.requires_grad = False
        self._test_embeddings: tuple[np.ndarray, np.ndarray] | None = None  # set by the test pass
        self._test: list[tuple[torch.Tensor, torch.Tensor]] = []

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return size[0] if isinstance(size, (tuple, list)) else int(size)

    @torch.no_grad()
    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        with bf16_on_gpu(self.device):
            return torch.nn.functional.normalize(self.model.encode_image(x).float(), dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised text embeddings (len(texts), D)."""
        out = []
        for i in range(0, len(texts), 256):
            tokens = self.tokenizer(list(texts[i : i + 256])).to(self.device)
            with bf16_on_gpu(self.device):
                out.append(torch.nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1).cpu())
        return torch.cat(out).numpy()

    def test_embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """(normalised image embeddings, labels) of the test split, gathered by the test pass."""
        if self._test_embeddings is None:
            raise RuntimeError("no test embeddings: run trainer.test first")
        return self._test_embeddings

    def on_test_epoch_start(self):
        self._test = []

    def test_step(self, batch, batch_idx):
        x, y = batch
        z = self.encode_images(x)
        self._test.append((z, y))  # kept on the device: a copy to the host per batch would wait for each
        return {"embeddings": z}

    def on_test_epoch_end(self):
        z, y = (torch.cat(t).cpu() for t in zip(*self._test, strict=False))
        self._test, self._test_embeddings = [], (z.numpy(), y.numpy())

    def configure_optimizers(self):
        return None
