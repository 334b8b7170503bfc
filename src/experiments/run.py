"""The one run loop every task shares: build, fit if the task trains, test, write the evidence.

    run_safely(cfg) -> run(cfg) -> the value of `optimized_metric` (for a sweeper)

`run_safely` ends every run honestly (experiments/lifecycle.py): a mistake in the config or the
data is one line on stderr, FAILED in the run folder and exit 2; a kill leaves a checkpoint, a
FAILED naming the resume command and exit 128 + signal; no metrics.json is ever written for a
failed run; the W&B run is always closed with the run's exit code, so each job of a sweep gets
its own and a failed run shows as failed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import time
import traceback
import warnings
from pathlib import Path

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from analysis.contracts import ChecksSetup, ReportsRunInfo, missing_capabilities
from experiments import lifecycle
from experiments.loggers import build_loggers, finish_wandb, log_config
from experiments.search import pruning_callback

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


def build_model(conf: DictConfig):
    """The model from `model.*`; `model.compile=true` (the run loop's key, not the model's) compiles
    its forward in place with torch.compile, so the module keeps its type and its contracts."""
    conf = conf.copy()
    with open_dict(conf):
        compile_ = conf.pop("compile", False)
    model = build(conf, "model")
    if compile_:
        model.compile()  # nn.Module.compile: forward compiled on the first call (minutes for a big model)
        log.info("model.compile=true: the forward pass is compiled on its first call")
    return model


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


def _check_trainer(cfg: DictConfig) -> None:
    t = cfg.trainer
    epochs, steps = t.get("max_epochs"), t.get("max_steps", -1)
    if epochs is not None and (not isinstance(epochs, int) or epochs < -1):
        raise ConfigError(f"trainer.max_epochs must be a positive integer (or -1: no limit), got {epochs!r}")
    if epochs == -1 and (steps is None or steps == -1):
        log.warning(
            "trainer.max_epochs=-1 and no trainer.max_steps: training runs until it is stopped "
            "(Ctrl-C or kill saves a checkpoint; resume=<run folder> continues it)"
        )
    ckpt = cfg.get("ckpt_path")
    if ckpt and not Path(ckpt).is_file():
        raise ConfigError(f"ckpt_path={ckpt} does not exist (to continue a run in its folder: resume=<run folder>)")


def run(cfg: DictConfig) -> float | None:
    import lightning.pytorch as pl

    quiet_third_party_noise()
    start = time.time()
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    _check_trainer(cfg)

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build(cfg.get("data"), "data")
    try:  # read the data now: a missing file fails in seconds, before any logger or model is made
        datamodule.prepare_data()
        datamodule.setup()
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as e:
        raise ConfigError(str(e)) from e
    model = build_model(cfg.model)
    named = {
        name: build(c, f"callbacks.{name}") for name, c in (cfg.get("callbacks") or {}).items() if c and "_target_" in c
    }
    callbacks = list(named.values())
    pruning = pruning_callback(cfg)  # a trial of hparams_search: report each epoch, stop when pruned
    if pruning is not None:
        callbacks.append(pruning)
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
    except (InstantiationException, ValueError) as e:
        raise ConfigError(f"logger: {_root_cause(e)}") from e
    if not loggers:  # Lightning refuses a LearningRateMonitor without a logger (logger=none)
        from lightning.pytorch.callbacks import LearningRateMonitor

        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer = build(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False)
    log_config(loggers, cfg)

    metrics: dict[str, float] = {}
    if cfg.train:
        ckpt_path = cfg.get("ckpt_path")
        if not ckpt_path and (last := lifecycle.resume_checkpoint(out)) is not None:
            ckpt_path = str(last)  # this folder's run was stopped (or requeued): go on where it was
            log.info("resuming the run in %s from %s", out, last)
        lifecycle.STATE.trainer, lifecycle.STATE.fitting = trainer, True
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        finally:
            lifecycle.STATE.fitting = False
        metrics.update(collect_metrics(trainer))
    pruned = pruning is not None and pruning.pruned is not None
    if pruned and trainer.is_global_zero:
        pruning.tell_pruned()  # the study learns it here; the sweeper leaves this trial alone
    if cfg.test and not pruned:
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
        "status": "pruned" if pruned else "ok",
        "metrics": metrics,
        "optimized_metric": cfg.optimized_metric,
        "best_checkpoint": getattr(best, "best_model_path", None) or None,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "wall_time_s": round(time.time() - start, 2),
        "tags": list(cfg.tags),
        **({"model_info": run_info} if run_info else {}),
    }
    value = metrics.get(cfg.optimized_metric)
    if trainer.world_size > 1:  # each rank says what it holds: the reduced metrics agree
        log.info("rank %d: %s = %s", trainer.global_rank, cfg.optimized_metric, value)
    if trainer.is_global_zero:  # under DDP every rank runs this function; one writes
        write_json_atomic(out / "metrics.json", result)
        (out / "FAILED").unlink(missing_ok=True)  # an earlier attempt of this run failed; this one did not
        offline = sorted(out.glob("wandb/offline-run-*"))
        lifecycle.STATE.final_lines = [  # printed once the W&B run is closed: the last lines a user sees
            f"{cfg.optimized_metric} = {value}",
            f"run folder: {out}",
            *([f"W&B run (offline): wandb sync {out / 'wandb' / 'offline-run-*'}"] if offline else []),
        ]
    return value


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_safely(cfg: DictConfig) -> float | None:
    """run(cfg), ending in one of three honest ways (see experiments/lifecycle.py). In a sweep a
    failed job is recorded and the sweep goes on to the next (the summary lists it)."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    out = Path(cfg.paths.output_dir)
    previous_handlers = lifecycle.install_signal_handlers()
    code = 0
    try:
        value = run(cfg)
    except ConfigError as e:
        code = 2
        _mark_failed(out, e, f"error: {e}")
        lifecycle.stderr(f"error: {e}")
        if _in_multirun():
            return None  # the sweep's other jobs still run; the summary and the exit code say this one failed
        sys.exit(code)
    except (SIGTERMException, lifecycle.Killed, KeyboardInterrupt) as e:
        signum = lifecycle.received_signal() or getattr(e, "signum", None) or signal.SIGTERM
        code = lifecycle.exit_code(signum)
        if (requeued := lifecycle.requeue_note(out, signum, lifecycle.STATE.trainer)) is not None:
            log.warning(requeued)  # not FAILED: the scheduler runs it again, into this folder
            sys.exit(lifecycle.STATE.requeue_exit or code)
        note = lifecycle.failure_note(out, signum, lifecycle.STATE.trainer)
        _mark_failed(out, e, note)
        lifecycle.stderr(note)
        if _in_multirun():
            from experiments.sweep import write_summary

            write_summary(out.parent)  # a killed sweep still leaves its table
        sys.exit(code)
    except Exception as e:
        code = 1
        _mark_failed(out, e, f"{type(e).__name__}: {e}")
        if _in_multirun():
            log.exception("job failed; the sweep goes on (see %s)", out / "FAILED")
            return None
        raise
    finally:
        lifecycle.STATE.exit_code = code  # a sweep's job ends its process with it (experiments_launcher)
        finish_wandb(exit_code=code)
        lifecycle.restore_signal_handlers(previous_handlers)
    for line in lifecycle.STATE.final_lines:
        print(line, flush=True)
    return value


def _mark_failed(out: Path, e: BaseException, first_line: str) -> None:
    """A failed run never looks like a success: FAILED holds the reason (its first line, then the
    traceback), metrics.json is absent."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "FAILED").write_text(f"{first_line}\n\n{''.join(traceback.format_exception(e))}")
        (out / "metrics.json").unlink(missing_ok=True)
    except OSError:
        pass


def quiet_third_party_noise() -> None:
    """Every log line once, and nothing a user cannot act on (see README, 'A terminal you can read')."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):  # Hydra's root handlers print them once
        logging.getLogger(name).handlers.clear()
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")  # a resumed run's
    warnings.filterwarnings("ignore", message=r".*configured with multiple `ModelCheckpoint`.*")  # best is the first
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")  # frozen BN


class _DropNoise(logging.Filter):
    NOISE = ("litlogger", "Total FLOPs", "was raised with message")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(n in message for n in self.NOISE)
