"""Building the experiment loggers, and deciding whether W&B runs online or offline."""

from __future__ import annotations

import logging
import netrc
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)

WANDB_HOST = "https://api.wandb.ai"


def wandb_logged_in() -> bool:
    """A W&B API key is configured: WANDB_API_KEY, or `wandb login`'s entry in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", WANDB_HOST)).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def reachable(url: str, timeout: float = 3.0) -> bool:
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def wandb_mode(offline: bool | None) -> str:
    """online | offline | disabled. `logger.wandb.offline` wins, then WANDB_MODE; otherwise online
    only when logged in and the W&B host answers within 3 s (wandb itself would wait ~100 s)."""
    if offline is not None:
        return "offline" if offline else "online"
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env in ("offline", "dryrun"):
        return "offline"
    if env in ("disabled", "online"):
        return env
    if not wandb_logged_in():
        return "offline"
    if not reachable(os.environ.get("WANDB_BASE_URL", WANDB_HOST)):
        log.warning("W&B login found but its host is unreachable: logging offline; upload later with `wandb sync`")
        return "offline"
    return "online"


def sweep_group(task_name: str) -> str | None:
    """In a multirun, the sweep's folder name (unique per launch) prefixed by the task."""
    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None
    return f"{task_name}-{Path(hc.sweep.dir).name}"


def build_loggers(cfg: DictConfig) -> list:
    """Instantiate every logger under `logger`, W&B with its mode and group filled in."""
    loggers = []
    for _name, conf in (cfg.get("logger") or {}).items():
        if not isinstance(conf, DictConfig) or "_target_" not in conf:
            continue
        conf = conf.copy()
        if conf._target_.endswith("WandbLogger"):
            mode = wandb_mode(conf.get("offline"))
            with open_dict(conf):
                conf.offline = False  # Lightning's flag sets WANDB_MODE process-wide; pass `mode` instead
                conf.mode = mode
                if conf.get("group") is None:
                    conf.group = sweep_group(cfg.task_name)
                Path(conf.save_dir).mkdir(parents=True, exist_ok=True)
            log.info(
                "W&B mode: %s%s",
                mode,
                " (upload later with `wandb sync <run dir>/wandb/offline-run-*`)" if mode == "offline" else "",
            )
        loggers.append(instantiate(conf, _convert_="all"))
    return loggers


def log_config(loggers: list, cfg: DictConfig) -> None:
    """The resolved config, as a plain dict, to every logger (W&B run config, CSV hparams.yaml)."""
    plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    for lg in loggers:
        lg.log_hyperparams(plain)


def finish_wandb() -> None:
    """Close the W&B run of this job, if one is open, so the next job of a sweep gets its own."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()
