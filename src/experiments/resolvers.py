"""The OmegaConf resolvers the config tree uses (`${run_id:}`, `${auto_precision:}`, `${when:...}`,
`${rank_suffix:}`). Registered by `register()`, which the entry points call (experiments.__main__,
the tests' conftest, benchmarks/harness.py): importing a module registers nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import OmegaConf

from experiments.run_ids import rank_suffix, run_id


def auto_precision() -> str:
    """bf16 mixed precision on a GPU that has it, full precision elsewhere."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def when(condition, value, otherwise=None):
    """`${when:${train},${finetune}}`: value where the condition holds, otherwise null (or `otherwise`)."""
    return value if condition else otherwise


RESOLVERS: dict[str, Callable[..., Any]] = {
    "run_id": run_id,
    "auto_precision": auto_precision,
    "when": when,
    "rank_suffix": rank_suffix,
}


def register() -> None:
    """Register every resolver of the config tree (again: a no-op)."""
    for name, fn in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
