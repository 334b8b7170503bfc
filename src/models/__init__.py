"""Models: plain nn.Modules and the LightningModules that train them. No data module imports."""

from .clip_module import ClipModule, ClipZeroShot
from .resnet_module import ResNetClassifier
from .vae import ConvVAE, kl_divergence, reconstruction_loss
from .vae_module import VAEModule, kl_weight
from .vit import ViT
from .vit_module import ViTClassifier

__all__ = [
    "ClipModule",
    "ClipZeroShot",
    "ResNetClassifier",
    "ConvVAE",
    "VAEModule",
    "ViT",
    "ViTClassifier",
    "kl_divergence",
    "kl_weight",
    "reconstruction_loss",
]
