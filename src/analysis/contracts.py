"""What the parts of a run need from each other, declared in one place.

A callback names the capabilities it needs from the LightningModule (`module_needs`) and from the
data module (`data_needs`) as the protocols below. The run loop checks them with
`missing_capabilities` before anything trains, so a task that lacks one stops in seconds with one
line naming the callback, the protocol and the missing method, instead of an AttributeError after
an hour of training.

Models and data modules do not import this file at run time (a model's test_step names its TypedDict
for the type checker only): they satisfy the protocols by having the methods
(structural typing). Each protocol lists who provides it today.

What a module's `test_step` returns is part of the contract too: the TypedDicts below, which the
models return and the callbacks' `on_test_batch_end` read.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypedDict, runtime_checkable

import torch

# -- what test_step returns, per batch ----------------------------------------------------------


class ClassifierStep(TypedDict):
    """models.ResNetClassifier's test_step (contracts.Classifier)."""

    loss: torch.Tensor
    preds: torch.Tensor  # (B,) predicted classes


class LatentStep(TypedDict):
    """models.VAEModule's test_step (contracts.LatentGenerative)."""

    loss: torch.Tensor
    mu: torch.Tensor  # (B, latent_dim) posterior means
    x_hat: torch.Tensor  # (B, C, H, W) reconstructions in [0, 1]


class AttentionStep(TypedDict):
    """models.ViTClassifier's test_step (contracts.AttentionInspectable); every ViT analysis of the
    batch reads it, and `rollouts` is their one shared per-batch cache."""

    pixels: torch.Tensor  # (B, 3, S, S) the model's input, before its normalisation
    logits: torch.Tensor  # (B, model labels)
    attentions: torch.Tensor  # (layers, B, heads, T, T)
    cls: torch.Tensor  # (B, D) final CLS token
    patch_mean: torch.Tensor  # (B, D) mean of the final patch tokens
    labels: torch.Tensor  # (B,) data-set labels (negative: unlabelled)
    dataset_scores: torch.Tensor | None  # (B, data-set classes), when the model's labels map onto them
    rollouts: dict[tuple[str, float], torch.Tensor]  # (head fusion, discard ratio) -> (B, side, side) maps


# -- hooks the run loop calls --------------------------------------------------------------------


@runtime_checkable
class ChecksSetup(Protocol):
    """A model or callback that can only check its settings with model and data side by side
    (e.g. a class map against the data set's classes). Raises ValueError naming the key."""

    def check_setup(self, model: Any, datamodule: Any) -> None: ...


@runtime_checkable
class AdaptsToData(Protocol):
    """A model that takes something from the data once its checks have passed (the ViT's head for the
    data set's classes and its class map onto them, CLIP's training captions). The run loop calls it
    after the model's `check_setup` and before the callbacks' (experiments.run.build_parts)."""

    def adapt_to_data(self, datamodule: Any) -> None: ...


@runtime_checkable
class ReportsRunInfo(Protocol):
    """A model with facts about the run worth keeping (e.g. the modules an ablation replaced):
    written to metrics.json under `model_info` and to every logger's config."""

    def run_info(self) -> dict[str, Any]: ...


@runtime_checkable
class EndsRunEarly(Protocol):
    """A callback that may stop a run before its test pass (an Optuna trial its pruner stopped):
    the run then skips the test and records status `pruned`."""

    def stopped_early(self) -> bool: ...


@runtime_checkable
class HearsRecord(Protocol):
    """A callback told the run's record (experiments.record.RunRecord) once metrics.json is written
    (rank 0): e.g. the Optuna trial tells its study how it ended."""

    def record_written(self, record: Any) -> None: ...


# -- the data side -------------------------------------------------------------------------------


@runtime_checkable
class EvaluationData(Protocol):
    """Labelled (or unlabelled) splits that analyses can read again after the test pass.
    Provided by datamodules.InMemoryDataModule (every data set here)."""

    classes: Sequence[str]  # class names; empty for unlabelled images

    def has_split(self, name: str) -> bool: ...

    def eval_batches(
        self, name: str, device: torch.device, max_images: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(model-ready float images, int64 labels) on `device`, in order, unaugmented."""
        ...


@runtime_checkable
class CachesFeatures(Protocol):
    """Splits whose images can be replaced, for training, by features computed once.
    Provided by datamodules.InMemoryDataModule."""

    def cache_features(
        self, fn: Any, splits: Sequence[str], max_images: Mapping[str, int | None] | None = None
    ) -> Any: ...

    def clear_feature_cache(self) -> None: ...


@runtime_checkable
class ImageFiles(Protocol):
    """Images read from the user's files: their names, and the files that could not be read.
    Provided by datamodules.ImagesDataModule. Optional: analyses fall back to 'test #i'."""

    names: Sequence[str]
    skipped: Sequence[tuple[str, str]]


# -- the module side -----------------------------------------------------------------------------


@runtime_checkable
class Classifier(Protocol):
    """Class logits for model-ready images, no gradients, in the module's inference precision.
    `test_step` returns {"preds": (B,) predicted classes}. Provided by models.ResNetClassifier."""

    def predict_logits(self, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class ResidualBlocks(Classifier, Protocol):
    """Residual blocks that can be dropped without retraining (Veit et al. 2016).
    Provided by models.ResNetClassifier."""

    def residual_block_names(self) -> list[str]: ...

    def projection_blocks(self) -> list[int]: ...

    def ablated(self, blocks: Sequence[int], mode: str = "drop") -> AbstractContextManager: ...


@runtime_checkable
class StageFeatures(Protocol):
    """Pooled activations by depth, {stage name: (B, D)}, in forward order.
    Provided by models.ResNetClassifier."""

    def stage_features(self, x: torch.Tensor) -> Mapping[str, torch.Tensor]: ...


@runtime_checkable
class FeatureHead(Protocol):
    """A module whose trainable part reads fixed backbone features: `caches_features()` says
    whether it may train on features computed once, `features(x)` computes them and its forward
    accepts them in place of images. Provided by models.ResNetClassifier (finetune=head)."""

    def caches_features(self) -> bool: ...

    def features(self, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class LatentGenerative(Protocol):
    """A latent-variable model: `latent_dim` and `decode(z)` to images in [0, 1].
    `test_step` returns {"mu": (B, latent_dim), "x_hat": (B, C, H, W)}. Provided by models.VAEModule."""

    latent_dim: int

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class ImageTextEmbedder(Protocol):
    """Normalised image and text embeddings of a shared space, and the test split's image
    embeddings gathered during the test pass. Provided by models.ClipModule."""

    def encode_images(self, x: torch.Tensor) -> torch.Tensor: ...

    def encode_texts(self, texts: Sequence[str]) -> Any: ...

    def test_embeddings(self) -> tuple[Any, Any]: ...


@runtime_checkable
class TwoTowerEmbedder(Protocol):
    """Two image towers embedding the same images (the same-modality control), and both towers'
    embeddings of the test split gathered during the test pass. Provided by models.ClipModule
    with partner=image."""

    def encode_pair(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def test_pair_embeddings(self) -> tuple[Any, Any]: ...


@runtime_checkable
class ExportsOpenClip(Protocol):
    """An open_clip model that can be written as open_clip loads it: (model config, state dict),
    and `run_info()["model"]` its name. Provided by models.ClipModule."""

    def open_clip_export(self) -> tuple[dict, dict]: ...

    def run_info(self) -> dict[str, Any]: ...


@runtime_checkable
class AttentionInspectable(Protocol):
    """A ViT classifier that shows its attention. `test_step` returns {"pixels", "logits",
    "attentions" (layers, B, heads, T, T), "cls", "patch_mean", "labels", "dataset_scores"}.
    Provided by models.ViTClassifier."""

    patch_size: int

    @property
    def grid_side(self) -> int: ...

    def pixels(self, x: torch.Tensor) -> torch.Tensor: ...

    def logits(self, x: torch.Tensor) -> torch.Tensor: ...

    def infer(self, x: torch.Tensor) -> dict[str, torch.Tensor]: ...

    def attention_gradients(self, x: torch.Tensor, target: torch.Tensor | None = None) -> tuple: ...

    def dataset_scores(self, logits: torch.Tensor) -> torch.Tensor | None: ...

    def label_name(self, index: int) -> str: ...

    def label_index(self, label: str | int, key: str) -> int: ...


# -- the check the run loop makes ----------------------------------------------------------------


def _members(protocol: type) -> list[str]:
    names: list[str] = []
    for klass in reversed(protocol.__mro__):
        if klass is object or klass is Protocol or not getattr(klass, "_is_protocol", False):
            continue
        for name in (*vars(klass).get("__annotations__", {}), *vars(klass)):
            if not name.startswith("_") and name not in names:
                names.append(name)
    return names


def missing_members(protocol: type, obj: Any) -> list[str]:
    """The protocol's members that `obj` lacks. `obj` may be a class: an attribute its instances get
    in __init__ counts when the class declares it (an annotation in its body, as the protocol does)."""
    if isinstance(obj, type):
        declared = {n for klass in obj.__mro__ for n in vars(klass).get("__annotations__", {})}
        return [m for m in _members(protocol) if not hasattr(obj, m) and m not in declared]
    return [m for m in _members(protocol) if not hasattr(obj, m)]


def missing_capabilities(name: str, callback: Any, model: Any, datamodule: Any) -> list[str]:
    """One line per protocol that `callback` declares and the model or data module lacks."""
    problems = []
    for side, obj, needs in (
        ("model", model, getattr(type(callback), "module_needs", ())),
        ("data", datamodule, getattr(type(callback), "data_needs", ())),
    ):
        for protocol in needs:
            missing = missing_members(protocol, obj)
            if missing:
                problems.append(
                    f"callbacks.{name} ({type(callback).__name__}) needs a {side} that is {protocol.__name__}: "
                    f"{type(obj).__name__} has no {', '.join(missing)}"
                )
    return problems
