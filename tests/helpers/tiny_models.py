"""Tiny random-weight models saved the way real ones are, for loading through the real code path."""

import torch

TINY = dict(
    image_size=32,
    patch_size=8,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    num_labels=10,
)
MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]


def save_tiny_vit(folder, processor: bool = True, **overrides):
    """A tiny random ViTForImageClassification (+ its image processor) written by save_pretrained."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(**{**TINY, **overrides}))
    model.save_pretrained(folder)
    if processor:
        side = overrides.get("image_size", TINY["image_size"])
        ViTImageProcessor(size={"height": side, "width": side}, image_mean=MEAN, image_std=STD).save_pretrained(folder)
    return model


TINY_CLIP_SCRATCH = {  # model.scratch keys of a CLIP that builds in a blink and trains in seconds
    "embed_dim": 16,
    "image_size": 28,
    "patch_size": 7,
    "vision_width": 32,
    "vision_layers": 1,
    "vision_head_width": 16,
    "text_width": 32,
    "text_heads": 2,
    "text_layers": 1,
    "context_length": 16,
}
