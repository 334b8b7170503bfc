"""The one run loop every task shares: build, fit if the task trains, test, write the evidence.

    run_safely(cfg) -> run(cfg, ending) -> RunRecord (metrics.json; a sweeper reads its value)

`run_safely` ends every run honestly (experiments/lifecycle.py): a mistake in the config or the
data is one line on stderr, FAILED in the run folder and exit 2; a kill leaves a checkpoint, a
FAILED naming the resume command and exit 128 + signal; no metrics.json is ever written for a
failed run; the W&B run is always closed with the run's exit code, so each job of a sweep gets
its own and a failed run shows as failed. How this run is ending is one `lifecycle.RunEnding`,
made by `run_safely` and handed to the stages that change it (no module-level state).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from analysis.contracts import (
    AdaptsToData,
    ChecksSetup,
    EndsRunEarly,
    HearsRecord,
    ReportsRunInfo,
    missing_capabilities,
)
from datamodules.folder import check_gpu_decode
from experiments import checkpoints, heartbeat, lifecycle
from experiments.evaluate import comparison_line, evaluated
from experiments.loggers import (
    RUN_ID_FILE,
    RunHistory,
    build_loggers,
    finish_wandb,
    finite_number,
    global_rank,
    history_state,
    log_config,
    log_final_metrics,
    truncate_csv,
)
from experiments.progress import final_lines
from experiments.record import RunRecord, Status
from experiments.run_folder import FolderTaken, RunFolder
from experiments.search import search_callbacks

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
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(cause))
        if isinstance(cause, TypeError) and unknown:  # a key this class does not take (a preset's, another data set's)
            name = unknown.group(1)
            raise ConfigError(
                f"{key}.{name} is not a key of {conf._target_}: remove it (a preset such as debug=smoke sets "
                f"data.synthetic, which only the built-in data sets take: use debug=limit with data=folder)"
                if (key, name) == ("data", "synthetic")
                else f"{key}.{name} is not a key of {conf._target_}: remove it or check its spelling"
            ) from e
        raise ConfigError(f"{key} ({conf._target_}): {cause}") from e


def settle_finetune(cfg: DictConfig) -> None:
    """Without training, `finetune` becomes what the model is built as: the one the `ckpt_path` checkpoint
    was trained with (a ViT or CLIP built from `model.scratch` or given a new head is evaluated in that
    shape), or null (look only) without one. Done before anything is recorded, so that config.yaml, the
    W&B and TensorBoard config and the model say the same (they used to say the task's `finetune: head`
    of a scratch model evaluated as scratch)."""
    if cfg.get("train", True) or "finetune" not in cfg:
        return
    ckpt = cfg.get("ckpt_path")
    trained = checkpoints.trained_as(Path(ckpt)) if ckpt else None  # None: no checkpoint, or verify() will say why
    if trained is not None:
        log.info("the model is built as its checkpoint was trained: finetune=%s (ckpt_path=%s)", trained, ckpt)
    cfg.finetune = trained


def model_arguments(cfg: DictConfig, datamodule) -> dict[str, Any]:
    """What a model gets from the run rather than from its own `model.*` keys, so that each has one
    name: the task's words on the command line (`finetune=`, which settle_finetune has set to what the
    model is built as when the run does not train; `ablate.blocks`, `ablate.mode`, `ablate.when`) and the
    class count, which the data says. Only the arguments the model's constructor takes."""
    offered = {
        "finetune": cfg.get("finetune"),
        "ablate_blocks": OmegaConf.select(cfg, "ablate.blocks"),
        "ablate_mode": OmegaConf.select(cfg, "ablate.mode"),
        "ablate_when": OmegaConf.select(cfg, "ablate.when"),
        "num_classes": getattr(datamodule, "num_classes", None),
    }
    try:
        accepted = inspect.signature(get_class(cfg.model._target_)).parameters
    except Exception:  # noqa: BLE001 - an unknown target: build() names it
        return {}
    return {k: v for k, v in offered.items() if k in accepted and (v is not None or k == "finetune")}


def build_model(cfg: DictConfig, datamodule):
    """The model from `model.*` and `model_arguments`; `compile=true` (the run loop's key) compiles its
    forward in place with torch.compile, so the module keeps its type and its contracts."""
    model = build(cfg.model, "model", **model_arguments(cfg, datamodule))
    if cfg.get("compile"):
        model.compile()  # nn.Module.compile: forward compiled on the first call (minutes for a big model)
        log.info("compile=true: the forward pass is compiled on its first call")
    return model


def collect_metrics(trainer) -> dict[str, float]:
    return {k: v for k, v in ((k, finite_number(v)) for k, v in trainer.callback_metrics.items()) if v is not None}


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


def check_inputs(cfg: DictConfig) -> None:
    """The top-level keys checked before anything is built, each mistake one line naming its key."""
    _check_trainer(cfg)
    seed = cfg.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    test_ckpt = cfg.get("test_ckpt")
    if test_ckpt not in ("best", "last", None):
        raise ConfigError(f"test_ckpt must be best, last or null, got {test_ckpt!r}")
    optimizer = cfg.model.get("optimizer") if "model" in cfg and cfg.model is not None else None
    if isinstance(optimizer, DictConfig) and "lr" in optimizer:
        lr = optimizer.lr
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise ConfigError(f"model.optimizer.lr must be a positive number, got {lr!r}")
    ckpt = cfg.get("ckpt_path")
    if ckpt and not Path(ckpt).is_file():
        raise ConfigError(f"ckpt_path={ckpt} does not exist (to continue a run in its folder: resume=<run folder>)")


@dataclass
class Parts:
    """What a run is built from: the data (already read), the model, and the callbacks."""

    datamodule: Any
    model: Any
    callbacks: list  # the task's, then RunHistory, then any a search adds (experiments/search.py)
    history: RunHistory


def build_parts(cfg: DictConfig, ending: lifecycle.RunEnding) -> Parts:
    """Data (read now: a missing file fails in seconds), model, callbacks (with one that stops every
    rank at the same step when a signal asks the run to stop), and the contracts between them
    checked before anything trains."""
    what = [(c or {}).get("_target_") for c in (cfg.get("data"), cfg.get("model"))]
    log.info("reading the data (%s) and building the model (%s)", *what)
    datamodule = build(cfg.get("data"), "data")
    try:
        datamodule.prepare_data()
        datamodule.setup()
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as e:
        raise ConfigError(str(e)) from e
    model = build_model(cfg, datamodule)
    named = {
        name: build(c, f"callbacks.{name}") for name, c in (cfg.get("callbacks") or {}).items() if c and "_target_" in c
    }
    history = RunHistory()
    # the task's, the run's own, then a search's (pruning)
    callbacks = [*named.values(), history, lifecycle.stop_together(ending), *search_callbacks(cfg)]
    problems = [p for name, cb in named.items() for p in missing_capabilities(name, cb, model, datamodule)]
    if problems:  # a callback this model or data cannot serve: say so now, not after training
        raise ConfigError(problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    try:  # setup, in this order: the model checks its settings against the data, takes what it needs
        # from the data (its head for the data's classes), then the callbacks check theirs against both
        if isinstance(model, ChecksSetup):
            model.check_setup(model=model, datamodule=datamodule)
        if isinstance(model, AdaptsToData):
            model.adapt_to_data(datamodule)
        for callback in callbacks:
            if isinstance(callback, ChecksSetup):
                callback.check_setup(model=model, datamodule=datamodule)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    return Parts(datamodule, model, callbacks, history)


def starting_checkpoint(cfg: DictConfig, out: Path, model, classes=()) -> tuple[str | None, dict]:
    """(checkpoint to start from, its RunHistory state): `ckpt_path` when given (checked whole and
    of this model), else the run folder's own newest intact checkpoint when the run goes on."""
    explicit = cfg.get("ckpt_path")
    try:
        if explicit:
            ckpt = checkpoints.verify(Path(explicit))
            checkpoints.check_fits(Path(explicit), ckpt, model, "ckpt_path")
            if not cfg.train:  # evaluated on this data: its classes must be the ones it learned
                checkpoints.check_classes(Path(explicit), ckpt, classes, "ckpt_path")
            return str(explicit), {}
        if not cfg.train:
            return None, {}
        path, note, ckpt = checkpoints.resume_point(out)
    except checkpoints.CheckpointError as e:
        message = str(e)
        if explicit and message.startswith(f"{explicit} "):  # verify() names the file: say which key gave it
            message = f"ckpt_path={explicit}:{message[len(str(explicit)) :]}"
        raise ConfigError(message) from e
    if note:
        log.warning(note)
    if path is None:
        return None, {}
    log.info("resuming the run in %s from %s", out, path.relative_to(out))
    return str(path), history_state(ckpt)


def forward_history(out: Path, start_from: str | None, history: dict) -> None:
    """History that only goes forward (rank 0): a resumed run's CSV loses the rows logged at or after
    its checkpoint's step (that attempt's weights were lost); a run that starts again with no
    checkpoint to continue from drops all the earlier attempt's rows and gets a new W&B run."""
    if global_rank() != 0:
        return
    step = history.get("step") if start_from else 0
    if step is None:  # a checkpoint from before RunHistory, or ckpt_path= from elsewhere: nothing to cut
        return
    if dropped := truncate_csv(out / "csv" / "metrics.csv", step):
        log.info("csv/metrics.csv: %d rows of an attempt lost after step %d were dropped", dropped, step)
    if not start_from and (out / RUN_ID_FILE).is_file():
        (out / RUN_ID_FILE).unlink()  # its steps would start again at 0 in the same W&B run
        log.info("no checkpoint to continue from: the run starts again, in a new W&B run")


def build_trainer(cfg: DictConfig, parts: Parts):
    """The loggers and the trainer (checkpoints written atomically)."""
    try:
        loggers = build_loggers(cfg)
    except (InstantiationException, ValueError) as e:
        raise ConfigError(f"logger: {_root_cause(e)}") from e
    callbacks = parts.callbacks
    if not loggers:  # Lightning refuses a LearningRateMonitor without a logger (logger=none)
        from lightning.pytorch.callbacks import LearningRateMonitor

        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    if not cfg.trainer.get("enable_progress_bar", True):  # nor a progress bar when it is switched off
        from lightning.pytorch.callbacks import ProgressBar

        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    trainer = build(
        cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False, plugins=[checkpoints.AtomicCheckpointIO()]
    )
    log_config(loggers, cfg)
    try:  # the trainer's device, before fit: a GPU host running trainer=cpu still gets one line
        check_gpu_decode(getattr(parts.datamodule, "gpu_decode", False), trainer.strategy.root_device)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    return trainer, loggers


def test_checkpoint(cfg: DictConfig, trainer, start_from: str | None) -> str | None:
    """The weights the test pass uses: after fitting, `test_ckpt` (best | last | null: in memory);
    without fitting, the checkpoint given as `ckpt_path` (or the model as built)."""
    if not cfg.train:
        return start_from
    ckpt = cfg.get("test_ckpt")
    callback = getattr(trainer, "checkpoint_callback", None)
    if callback is None:
        return None  # no checkpoints written (callbacks=none, fast_dev_run): test what is in memory
    if ckpt == "best" and not callback.best_model_path:
        return None
    return ckpt


def run(cfg: DictConfig, ending: lifecycle.RunEnding) -> RunRecord:
    """Build the parts, fit if the task trains, test, record: each stage is one function below.
    `ending` hears where a signal would land (fit, test) and the lines a successful run ends with."""
    start = time.time()
    out = prepare(cfg)
    heartbeat.phase("reading the data and building the model")
    parts = build_parts(cfg, ending)
    start_from = starting_point(cfg, out, parts)
    trainer, loggers = build_trainer(cfg, parts)
    metrics: dict[str, float] = fit(trainer, parts, start_from, ending) if cfg.train else {}
    stopped = any(isinstance(c, EndsRunEarly) and c.stopped_early() for c in parts.callbacks)  # a pruned trial
    if cfg.test and not stopped:
        metrics |= test(trainer, parts, test_checkpoint(cfg, trainer, start_from), ending)
    log_final_metrics(loggers, cfg, metrics)  # TensorBoard's HParams tab: what differs and the final numbers
    record = make_record(cfg, out, trainer, parts.model, metrics, "pruned" if stopped else "ok", time.time() - start)
    if record.model_info:
        for lg in loggers:
            lg.log_hyperparams({"model_info": record.model_info})
    if trainer.world_size > 1:  # each rank says what it holds: the reduced metrics agree
        log.info("rank %d: %s = %s", trainer.global_rank, cfg.optimized_metric, record.value)
    if trainer.is_global_zero:  # under DDP every rank runs this function; one writes
        ending.final_lines = keep(record, out, parts.callbacks, cfg)
    return record


def prepare(cfg: DictConfig) -> Path:
    """The run folder, the seed, a quiet terminal."""
    import lightning.pytorch as pl

    quiet_third_party_noise()
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    return out


def starting_point(cfg: DictConfig, out: Path, parts: Parts) -> str | None:
    """The checkpoint fitting starts from (None: from the model as built); the run folder's history
    is cut to it, so that it only goes forward."""
    start_from, history = starting_checkpoint(cfg, out, parts.model, getattr(parts.datamodule, "classes", ()))
    if cfg.train:
        forward_history(out, start_from, history)
    return start_from


def fit(trainer, parts: Parts, start_from: str | None, ending: lifecycle.RunEnding) -> dict[str, float]:
    """Train; the metrics the fit ended with (those of the checkpoint when a resume had no epoch left)."""
    heartbeat.phase("fitting")
    with ending.stage("fit", trainer):  # a signal now stops after the step in progress
        trainer.fit(parts.model, datamodule=parts.datamodule, ckpt_path=start_from)
    return {**parts.history.restored, **collect_metrics(trainer)}


def test(trainer, parts: Parts, weights: str | None, ending: lifecycle.RunEnding) -> dict[str, float]:
    """The test pass (and the analyses that run in it) on `weights`; the metrics it logged."""
    heartbeat.phase("testing and analysing")
    with ending.stage("test", trainer):  # a kill now is named "in the test pass"
        trainer.test(parts.model, datamodule=parts.datamodule, ckpt_path=weights)
    return collect_metrics(trainer)


def make_record(cfg: DictConfig, out: Path, trainer, model, metrics: dict, status: Status, wall: float) -> RunRecord:
    best = getattr(getattr(trainer, "checkpoint_callback", None), "best_model_path", None)
    return RunRecord(
        task=cfg.task_name,
        status=status,
        metrics=metrics,
        optimized_metric=cfg.optimized_metric,
        best_checkpoint=os.path.relpath(best, out) if best else None,  # relative: the folder may move
        epochs=trainer.current_epoch,
        global_step=trainer.global_step,
        wall_time_s=round(wall, 2),
        tags=list(cfg.tags),
        model_info=(model.run_info() or None) if isinstance(model, ReportsRunInfo) else None,
        evaluated=evaluated(cfg).get("evaluated"),  # eval=<run folder>: the run and checkpoint evaluated
    )


def keep(record: RunRecord, out: Path, callbacks: list, cfg: DictConfig) -> list[str]:
    """Rank 0: metrics.json, the callbacks that wait for it told; returns the last lines a user sees."""
    record.write(out)
    (out / "FAILED").unlink(missing_ok=True)  # an earlier attempt of this run failed; this one did not
    for c in callbacks:
        if isinstance(c, HearsRecord):
            c.record_written(record)  # e.g. the Optuna trial's study hears how it ended
    # printed once the W&B run is closed: the metric, where the evidence is, the dashboards' commands
    return [*final_lines(cfg, out, record.value), *comparison_line(cfg, record.value)]


def run_safely(cfg: DictConfig) -> RunRecord | lifecycle.JobFailed:
    """run(cfg), ending in one of three honest ways (experiments/lifecycle.py: each way is one
    method of the run's `RunEnding`), in a folder that holds this run alone (experiments/run_folder.py).
    In a sweep a failed job is recorded and the sweep goes on to the next (the summary lists it): it
    returns JobFailed with the run's exit code."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    out = Path(cfg.paths.output_dir)
    folder = RunFolder(out)
    rank0 = global_rank() == 0  # other ranks share the folder rank 0 claims, and only read it
    ending = lifecycle.RunEnding()
    previous_handlers = ending.install_signal_handlers()
    state, recorded = None, False
    try:
        settle_finetune(cfg)  # before the folder's identity is compared and the config recorded
        if rank0:
            folder.lock()
        state = folder.check(cfg, resuming=bool(cfg.get("resume")), in_sweep=lifecycle.in_multirun())
        if state == "finished":
            print(f"job already finished in {out}: kept as it is", flush=True)
            return RunRecord.read(out)
        check_inputs(cfg)  # before the record: a bad setting is not saved into the run's overrides
        if rank0:
            folder.write_record(cfg)
            recorded = True
        with heartbeat.Heartbeat() if rank0 else contextlib.nullcontext():  # never 10 s without a line
            record = run(cfg, ending)
    except FolderTaken as e:
        ending.refused(out, e, rank0)
        return lifecycle.JobFailed(ending.exit_code)
    except ConfigError as e:  # a continued run whose new settings were refused stays unchanged
        ending.mistake(out, e, mark=rank0 and (recorded or state == "new"))
        return lifecycle.JobFailed(ending.exit_code)
    except (SIGTERMException, lifecycle.Killed, KeyboardInterrupt) as e:
        ending.killed(out, e, rank0)
    except Exception as e:
        if not ending.crashed(out, e, rank0):
            raise
        return lifecycle.JobFailed(ending.exit_code)
    finally:
        folder.release()
        finish_wandb(exit_code=ending.exit_code)
        ending.restore_signal_handlers(previous_handlers)
    ending.succeeded()
    return record


def quiet_third_party_noise() -> None:
    """Every log line once, and nothing a user cannot act on (see README, 'A terminal you can read')."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):  # Hydra's root handlers print them once
        logging.getLogger(name).handlers.clear()
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    # Lightning's HINT to prepend `srun` on any machine with srun on the PATH, once per Trainer (twice a run, and
    # "once" did not hold across Lightning's two trainers' set-ups): SLURM runs go through hydra/launcher=slurm
    warnings.filterwarnings("ignore", message=r".*The `srun` command is available on your system but is not used.*")
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")  # a resumed run's
    warnings.filterwarnings("ignore", message=r".*configured with multiple `ModelCheckpoint`.*")  # best is the first
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")  # frozen BN


class _DropNoise(logging.Filter):
    NOISE = ("litlogger", "Total FLOPs", "was raised with message")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(n in message for n in self.NOISE)
