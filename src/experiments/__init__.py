"""The application: the Hydra entry point and the one run loop every task shares.

Importing this package registers the OmegaConf resolvers the config tree uses.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from omegaconf import OmegaConf

RUN_ID_ENV = "EXPERIMENTS_RUN_ID"


def run_id() -> str:
    """`YYYY-MM-DD_HH-MM-SS_xxxxxx`, fixed for this launch and inherited by the processes it starts.

    Hydra re-resolves `hydra.sweep.dir` for every job (and in every joblib/DDP worker), so a fresh
    random value per call would scatter one sweep; an environment variable set once keeps it whole,
    while the random suffix keeps two launches in the same second apart.
    """
    if RUN_ID_ENV not in os.environ:
        os.environ[RUN_ID_ENV] = time.strftime("%Y-%m-%d_%H-%M-%S") + "_" + secrets.token_hex(3)
    return os.environ[RUN_ID_ENV]


def auto_precision() -> str:
    """bf16 mixed precision on a GPU that has it, full precision elsewhere."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def when(condition, value, otherwise=None):
    """`${when:${train},${finetune}}`: value where the condition holds, otherwise null (or `otherwise`)."""
    return value if condition else otherwise


def config_dir() -> str:
    """The Hydra config tree: inside an installed package, or conf/ at the root of a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parents[1] / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"no Hydra config tree (config.yaml) next to {here}: reinstall the package")


for _name, _fn in (("run_id", run_id), ("auto_precision", auto_precision), ("when", when)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)
