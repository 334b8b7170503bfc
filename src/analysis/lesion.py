"""Which residual blocks a lesion study drops."""

from __future__ import annotations

import numpy as np


def random_block_subsets(n_blocks: int, k: int, trials: int, seed: int = 0) -> list[list[int]]:
    """`trials` seeded random sets of k distinct block indices out of n_blocks (sorted)."""
    if not 0 <= k <= n_blocks:
        raise ValueError(f"k must lie in 0..{n_blocks}, got {k}")
    rng = np.random.default_rng(seed + 1000 * k)
    return [sorted(rng.choice(n_blocks, size=k, replace=False).tolist()) for _ in range(trials)]
