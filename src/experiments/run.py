"""The one run loop every task shares: build, fit if the task trains, test, write the evidence.

    run_safely(cfg) -> run(cfg) -> the value of `optimized_metric` (for a sweeper)

`run_safely` turns a mistake in the config or the data into one line on stderr and a non-zero
exit, marks the run folder FAILED (no metrics.json is ever written for a failed run), and always
closes the W&B run so that every job of a sweep gets its own.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
import traceback
from pathlib import Path

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from analysis.contracts import ChecksSetup, ReportsRunInfo, missing_capabilities
from experiments.loggers import build_loggers, finish_wandb, log_config

log = logging.getLogger(__name__)


class ConfigError(Exception):
    """A problem the user fixes in the config or the data, reported as one line."""


def _root_cause(e: BaseException) -> BaseException:
    while isinstance(e, InstantiationException) and e.__cause__ is not None:
        e = e.__cause__
    return e


def build(conf: DictConfig, key: str, **kwargs):
    """instantiate(conf); any failure while building is reported as the user's config problem."""
    if conf is None or "_target_" not in conf:
        raise ConfigError(f"`{key}` is not set: choose one on the command line, e.g. {key}=<name>")
    try:
        return instantiate(conf, _convert_="all", **kwargs)
    except Exception as e:  # noqa: BLE001
        cause = _root_cause(e)
        raise ConfigError(f"{key} ({conf._target_}): {cause}") from e


def _number(value) -> float | None:
    try:
        x = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError):
        return None
    return x if math.isfinite(x) else None


def collect_metrics(trainer) -> dict[str, float]:
    return {k: v for k, v in ((k, _number(v)) for k, v in trainer.callback_metrics.items()) if v is not None}


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def run(cfg: DictConfig) -> float | None:
    import lightning.pytorch as pl

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):  # Hydra's handlers already print them once
        logging.getLogger(name).handlers.clear()
    start = time.time()
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build(cfg.get("data"), "data")
    try:  # read the data now: a missing file fails in seconds, before any logger or model is made
        datamodule.prepare_data()
        datamodule.setup()
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as e:
        raise ConfigError(str(e)) from e
    model = build(cfg.model, "model")
    named = {
        name: build(c, f"callbacks.{name}") for name, c in (cfg.get("callbacks") or {}).items() if c and "_target_" in c
    }
    callbacks = list(named.values())
    problems = [p for name, cb in named.items() for p in missing_capabilities(name, cb, model, datamodule)]
    if problems:  # a callback this model or data cannot serve: say so now, not after training
        raise ConfigError(problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    for part in (model, *callbacks):  # what can only be checked with model and data side by side
        if isinstance(part, ChecksSetup):
            try:
                part.check_setup(model=model, datamodule=datamodule)
            except ValueError as e:
                raise ConfigError(str(e)) from e
    try:
        loggers = build_loggers(cfg)
    except InstantiationException as e:
        raise ConfigError(f"logger: {_root_cause(e)}") from e
    if not loggers:  # Lightning refuses a LearningRateMonitor without a logger (logger=none)
        from lightning.pytorch.callbacks import LearningRateMonitor

        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer = build(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False)
    log_config(loggers, cfg)

    metrics: dict[str, float] = {}
    if cfg.train:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        metrics.update(collect_metrics(trainer))
    if cfg.test:
        ckpt = cfg.get("test_ckpt") if cfg.train else None
        if ckpt is not None and getattr(trainer, "checkpoint_callback", None) is None:
            ckpt = None  # no checkpoints written (callbacks=none, fast_dev_run): test what is in memory
        if ckpt == "best" and not trainer.checkpoint_callback.best_model_path:
            ckpt = None
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt)
        metrics.update(collect_metrics(trainer))

    run_info = model.run_info() if isinstance(model, ReportsRunInfo) else None  # e.g. what an ablation replaced
    if run_info:
        for lg in loggers:
            lg.log_hyperparams({"model_info": run_info})
    best = getattr(trainer, "checkpoint_callback", None)
    result = {
        "task": cfg.task_name,
        "status": "ok",
        "metrics": metrics,
        "optimized_metric": cfg.optimized_metric,
        "best_checkpoint": getattr(best, "best_model_path", None) or None,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "wall_time_s": round(time.time() - start, 2),
        "tags": list(cfg.tags),
        **({"model_info": run_info} if run_info else {}),
    }
    if trainer.is_global_zero:  # under DDP every rank runs this function; one writes
        write_json_atomic(out / "metrics.json", result)
    value = metrics.get(cfg.optimized_metric)
    log.info("%s = %s; evidence in %s", cfg.optimized_metric, value, out)
    return value


def run_safely(cfg: DictConfig) -> float | None:
    out = Path(cfg.paths.output_dir)
    try:
        return run(cfg)
    except ConfigError as e:
        _mark_failed(out, e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except BaseException as e:
        _mark_failed(out, e)
        raise
    finally:
        finish_wandb()


def _mark_failed(out: Path, e: BaseException) -> None:
    """A failed run never looks like a success: FAILED holds the reason, metrics.json is absent."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "FAILED").write_text(f"{type(e).__name__}: {e}\n\n{traceback.format_exc()}")
        (out / "metrics.json").unlink(missing_ok=True)
    except OSError:
        pass
