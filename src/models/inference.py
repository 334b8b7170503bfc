"""What every model's no-grad embedding path shares."""

from __future__ import annotations

import torch


def bf16_on_gpu(device: torch.device) -> torch.autocast:
    """bf16 autocast on a GPU, full precision elsewhere (features, embeddings, analyses)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
