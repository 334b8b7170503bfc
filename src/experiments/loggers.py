"""Building the experiment loggers, and deciding whether W&B runs online or offline."""

from __future__ import annotations

import csv
import logging
import math
import netrc
import os
import secrets
import signal
import string
from argparse import Namespace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger as _LightningTensorBoardLogger
from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from models.hub import reachable
from private_api import appending_csv_logger_class, drop_wandb_init_argument, logger_prefix

log = logging.getLogger(__name__)

WANDB_HOST = "https://api.wandb.ai"


def global_rank() -> int:
    """This process's rank in a multi-process run (0 alone), as Lightning knows it before the
    trainer exists (it sets `rank_zero_only.rank` from the launcher's environment)."""
    return rank_zero_only.rank  # type: ignore[attr-defined]  # an attribute Lightning sets on the function


def wandb_logged_in() -> bool:
    """A W&B API key is configured: WANDB_API_KEY, or `wandb login`'s entry in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", WANDB_HOST)).hostname
    try:
        return host is not None and netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
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


NOT_WHAT_DIFFERS = ("paths.", "hydra.", "logger", "trainer.enable_progress_bar", "resume=", "eval=", "ckpt_path=")


def job_overrides() -> list[str]:
    """This job's own overrides (a sweep job's: its values), as Hydra recorded them; [] outside Hydra."""
    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def run_name(cfg: DictConfig) -> str:
    """What a run is called on the dashboards: the task and what this run changes. In a sweep, only the
    overrides its jobs do not share (what differs between them); `eval=`: what it evaluates; a run with no
    overrides: its folder's name."""
    out = Path(cfg.paths.output_dir)
    if cfg.get("eval"):
        return f"{cfg.task_name} eval of {Path(str(cfg.eval)).name}"
    own = [o for o in job_overrides() if not o.lstrip("+~").startswith((*NOT_WHAT_DIFFERS, "task="))]
    if sweep_group(cfg.task_name):
        from experiments.run_folder import sweep_record

        jobs = sweep_record(out.parent).get("jobs") or []
        shared = set.intersection(*(set(j) for j in jobs)) if jobs else set()
        own = [o for o in own if o not in shared] or own
    from experiments.run_folder import IDENTITY_OVERRIDES, override_root

    own.sort(key=lambda o: override_root(o) not in IDENTITY_OVERRIDES)  # model and data first: names get cut
    return f"{cfg.task_name} " + (" ".join(own) if own else out.name)


RUN_ID_FILE = "wandb_run_id"  # in the run folder: the W&B run that every attempt of this run logs into


def wandb_run_id(out: Path) -> str:
    """The W&B run id of the run in `out`: made once and kept in the folder, so a resumed or
    requeued run continues the same W&B run. Only rank 0 makes one; other ranks log nothing."""
    path = out / RUN_ID_FILE
    if not path.is_file() and global_rank() == 0:
        alphabet = string.ascii_lowercase + string.digits  # what W&B's own run ids are made of
        out.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(secrets.choice(alphabet) for _ in range(8)) + "\n")
    return path.read_text().strip() if path.is_file() else ""


def build_loggers(cfg: DictConfig) -> list:
    """Instantiate every logger under `logger`, W&B with its mode, group and run id filled in."""
    loggers = []
    for _name, conf in (cfg.get("logger") or {}).items():
        if not isinstance(conf, DictConfig) or "_target_" not in conf:
            continue
        conf = conf.copy()
        if conf._target_.endswith("WandbLogger"):
            mode = wandb_mode(conf.get("offline"))
            if mode == "online" and not wandb_logged_in():
                raise ValueError(
                    "logger.wandb.offline=false (or WANDB_MODE=online) but there is no W&B login: run `wandb login` "
                    "or set WANDB_API_KEY, or leave logger.wandb.offline=null to log offline and `wandb sync` later"
                )
            with open_dict(conf):
                conf.offline = False  # Lightning's flag sets WANDB_MODE process-wide; pass `mode` instead
                conf.mode = mode
                conf.id = wandb_run_id(Path(cfg.paths.output_dir)) or None
                # silent: the run's own last lines say where it is and how to sync it; wrap_emu: the console
                # log keeps a progress bar's last state, not every redraw
                conf.settings = {"silent": True, "console": "wrap_emu"}
                if conf.get("group") is None:
                    conf.group = sweep_group(cfg.task_name)
                if conf.get("name") is None:
                    conf.name = run_name(cfg)[:128]
            with open_dict(cfg):  # the run's config on the dashboard says its group and name as used
                cfg.logger[_name].group, cfg.logger[_name].name = conf.group, conf.name
                Path(conf.save_dir).mkdir(parents=True, exist_ok=True)
            if global_rank() == 0:  # the other ranks of a multi-process run log nothing to W&B
                log.info("W&B mode: %s (run %s)", mode, conf.id)
                if mode != "disabled":
                    start_wandb_service()
        if conf._target_.endswith("TensorBoardLogger") and not conf.get("version"):
            with open_dict(conf):  # TensorBoard names a run by its folder: <run>/tensorboard/<task and overrides>
                conf.version = run_name(cfg).replace("/", "|")[:200]
        logger = instantiate(conf, _convert_="all")
        drop_wandb_init_argument(logger, "anonymous")  # Lightning passes anonymous=None; wandb 0.31 warns
        loggers.append(logger)
    return loggers


def log_config(loggers: list, cfg: DictConfig) -> None:
    """The resolved config, as a plain dict, to every logger (W&B run config, CSV hparams.yaml), with
    this job's own overrides; W&B's summary of the monitored metric is its best value, not its last."""
    plain: dict[str, Any] = {**OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)}  # type: ignore[dict-item]
    plain["overrides"] = job_overrides()
    for lg in loggers:
        lg.log_hyperparams(plain)
        if isinstance(lg, WandbLogger) and global_rank() == 0 and cfg.get("monitor"):
            summary = "max" if cfg.get("monitor_mode") == "max" else "min"
            lg.experiment.define_metric(cfg.monitor, summary=summary, step_metric="trainer/global_step")


def hparams_columns(cfg: DictConfig) -> dict:
    """TensorBoard's HParams columns: what tells runs apart (the task, the seed, each key this job's
    overrides set, with its resolved value) and the whole override line; not the hundreds of resolved
    keys (callback targets, paths), which the table would open on, alphabetically."""
    columns = {"task": cfg.task_name, "seed": cfg.get("seed")}
    for override in job_overrides():
        key, _, text = override.lstrip("+~").partition("=")
        if override.lstrip("+~").startswith((*NOT_WHAT_DIFFERS, "task=")):
            continue
        value = OmegaConf.select(cfg, key, default=None) if "/" not in key else None
        plain = OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value
        columns[key] = plain if isinstance(plain, (int, float, str, bool)) else text  # a group or a list: as typed
    columns["overrides"] = " ".join(job_overrides())
    return columns


def log_final_metrics(loggers: list, cfg: DictConfig, metrics: dict[str, float]) -> None:
    """TensorBoard: the config (with this job's overrides) and every final metric, test and analysis
    numbers included, as one HParams session, so runs compare side by side in its HParams tab and the
    analyses' single values stay out of the training curves (evidence.log_numbers sends them here)."""
    if global_rank() != 0:
        return
    for lg in loggers:
        if isinstance(lg, _LightningTensorBoardLogger) and metrics:
            lg.log_hyperparams(hparams_columns(cfg), metrics=dict(metrics))


# The signals a scheduler sends a job to end or requeue it. SLURM signals every process of a job
# step, W&B's service among them, whatever its process group.
SCHEDULER_SIGNALS = {signal.SIGUSR1, signal.SIGUSR2}


def start_wandb_service() -> None:
    """Start W&B's service process with the scheduler's requeue signals blocked (a blocked mask is
    inherited, and the service leaves these blocked), so that a preempted or timed-out job (USR2,
    submitit's signal) can still close its W&B run with its exit code. SIGTERM cannot be kept from
    it (the service stops on it): `finish_wandb` tolerates its loss."""
    import wandb

    if not hasattr(signal, "pthread_sigmask"):
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, SCHEDULER_SIGNALS)
    try:
        wandb.setup()  # starts the service once per process; a no-op after that
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def finish_wandb(exit_code: int = 0) -> None:
    """Close the W&B run of this job, if one is open, with the run's exit code (non-zero: the
    dashboard marks it failed), so the next job of a sweep gets its own. A service that is gone
    (a scheduler's SIGTERM reaches it too) costs one warning, never the exit in flight."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is None or wandb.run is None:
        return
    run = wandb.run
    same = {"id": run.id, "project": run.project, "group": run.group or None, "job_type": run.job_type or None}
    same |= {"dir": run.settings.root_dir, "mode": run.settings.mode}
    try:
        wandb.finish(exit_code=exit_code)
    except Exception as e:  # noqa: BLE001 - e.g. ConnectionResetError: the service was stopped
        try:
            wandb.teardown()
        except Exception:  # noqa: BLE001 - the same lost connection
            pass
        try:  # a fresh service records how this attempt ended, in the same W&B run (~0.5 s offline)
            start_wandb_service()
            wandb.init(resume="allow", settings=wandb.Settings(silent=True), **same).finish(exit_code=exit_code)
            recorded = f"its exit code {exit_code} recorded by a new service"
        except Exception:  # noqa: BLE001
            recorded = "its exit code not recorded"
        log.warning(
            "W&B: the run's service was gone at its close (%s: %s): %s; what it wrote before is kept, "
            "and the next attempt or resume= continues the same W&B run",
            type(e).__name__,
            e,
            recorded,
        )


# Lightning's CSVLogger, except that a resumed run appends to its csv/metrics.csv instead of deleting
# it (Lightning's writer removes an existing file), so the rows from before a kill stay.
CSVLogger: Any = appending_csv_logger_class()


class WandbLogger(_LightningWandbLogger):
    """Lightning's WandbLogger, except that W&B's own step is the trainer's: a resumed run's history
    goes on from its checkpoint's step instead of starting again at 0 (W&B drops a step lower than
    one it has), and a value logged without a step (a table) lands on the last step logged."""

    _last_step = 0
    ONE_VALUE = ("test/", "init/")  # measured once per run: the summary holds them, no one-point chart

    def _at(self, step: int | None) -> int:
        """The step a value is logged at: the trainer's, never below the last one logged (W&B drops a lower
        step); without one, the last step logged."""
        self._last_step = self._last_step if step is None else max(int(step), self._last_step)
        return self._last_step

    @rank_zero_only
    def log_metrics(self, metrics, step: int | None = None) -> None:
        step = self._at(step)
        if prefix := logger_prefix(self):  # logger.wandb.prefix, as Lightning's own logger applies it
            metrics = {f"{prefix}{self.LOGGER_JOIN_CHAR}{k}": v for k, v in metrics.items()}
        once = {k: v for k, v in metrics.items() if k.startswith(self.ONE_VALUE) and _is_number(v)}
        if once:
            self.log_summary(once)
        rest = {k: v for k, v in metrics.items() if k not in once}
        if rest:
            self.experiment.log(dict(rest, **{"trainer/global_step": step}), step=step)

    @rank_zero_only
    def log_summary(self, numbers: dict) -> None:
        """Numbers a run measures once (test metrics, analyses): into the run's summary, where the
        dashboard's runs table and run page show them, instead of a chart with one point."""
        self.experiment.summary.update({k: _plain(v) for k, v in numbers.items()})

    @rank_zero_only
    def log_chart(
        self, key: str, columns: list[str], rows: list[list], x: str, y: str, title: str, step: int | None = None
    ) -> None:
        """A table and a bar chart of one of its columns against another (e.g. accuracy per dropped block),
        the chart under `<key>_chart`."""
        import wandb

        table = wandb.Table(columns=list[str | int](columns), data=rows)
        chart = wandb.plot.bar(table, x, y, title=title)
        # with `step=`, as every other value here: without it W&B moves its own step one past the trainer's and
        # drops the figures and tables logged next at the trainer's step
        step = self._at(step)
        self.experiment.log({key: table, f"{key}_chart": chart, "trainer/global_step": step}, step=step)


class TensorBoardLogger(_LightningTensorBoardLogger):
    """Lightning's, with TensorBoard's Scalars and Time Series tabs opening on the training curves. They list
    tag groups (a tag's first path part) alphabetically: `epoch` (Lightning's step-to-epoch scalar) and
    `lr-Adam` came first, `test` (single points) before `train`, whose curves sat collapsed below. So, in
    TensorBoard only: train/ and val/ curves and the learning rate go under `curves/` (curves/train/loss_epoch,
    curves/lr-Adam), `epoch` is not a chart (the step axis is the curves' x); the final numbers of the HParams
    tab (test/, and the last train/ and val/ values) keep their names, in the groups after it."""

    _final = False

    def log_metrics(self, metrics, step=None) -> None:
        if not self._final:
            metrics = {_curve_tag(k): v for k, v in metrics.items() if k != "epoch"}
        super().log_metrics(metrics, step)

    def log_hyperparams(
        self, params: dict[str, Any] | Namespace, metrics: dict[str, Any] | None = None, step: int | None = None
    ) -> None:
        self._final = True  # the HParams session's metrics: scalars under their own names, which its columns read
        try:
            super().log_hyperparams(params, metrics, step)
        finally:
            self._final = False


def _curve_tag(key: str) -> str:
    return f"curves/{key}" if key.startswith(("train/", "val/", "lr-")) else key


class RunHistory(Callback):
    """What a checkpoint must remember of the run's history, so that a resumed run goes only
    forward: the step it was taken at (rows of csv/metrics.csv from that step on are dropped on
    resume: they belong to an attempt whose weights were lost; the CSV is flushed with every
    checkpoint) and the fit's last train/val metrics (metrics.json keeps them when a resume has no
    epoch left to fit)."""

    def __init__(self):
        self.trainer = None
        self.restored: dict[str, float] = {}  # the fit metrics of the checkpoint resumed from

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.trainer = trainer

    def state_dict(self) -> dict:
        state: dict = {"fit_metrics": {}, "step": None}
        if self.trainer is None:
            return state
        state["step"] = self.trainer.global_step  # the logging step of the next batch (one optimizer)
        for lg in self.trainer.loggers:
            if isinstance(lg, CSVLogger):
                lg.save()  # flush: the rows logged so far are on disk with this checkpoint
        metrics = self.trainer.callback_metrics
        fit = {k: finite_number(v) for k, v in metrics.items() if k.startswith(("train/", "val/"))}
        state["fit_metrics"] = {k: v for k, v in fit.items() if v is not None}
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        self.restored = dict(state_dict.get("fit_metrics") or {})


def _is_number(value) -> bool:
    return finite_number(value) is not None or (hasattr(value, "numel") and value.numel() == 1)


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def finite_number(value) -> float | None:
    try:
        x = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError):
        return None
    return x if math.isfinite(x) else None


def truncate_csv(path: Path, step: int) -> int:
    """Drop the rows of a metrics CSV logged at `step` or later (0: all of them); returns how many."""
    if not path.is_file():
        return 0
    with open(path, newline="") as f:
        table = list(csv.reader(f))
    if not table or "step" not in table[0]:
        return 0
    at = table[0].index("step")
    kept = [row for row in table[1:] if row[at] and float(row[at]) < step]
    dropped = len(table) - 1 - len(kept)
    if dropped:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows([table[0], *kept])
        os.replace(tmp, path)
    return dropped


def history_state(ckpt: dict) -> dict:
    """RunHistory's state in a loaded checkpoint ({} for a checkpoint from before it existed)."""
    for key, value in (ckpt.get("callbacks") or {}).items():
        if str(key).startswith("RunHistory"):
            return value
    return {}
