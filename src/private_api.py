"""Every use of a library's private API, in one place.

Each function here reaches into something a library does not promise to keep (a name with a
leading underscore, a module under `_internal`). tests/test_private_api.py checks each one against
the installed library, so an upgrade that moves or renames it fails there, naming the function and
the library, instead of silently changing a run. Everything else in src/ uses public APIs only.

Imports are inside the functions: this module is imported by models, experiments and loggers alike,
and must not pull in a library the caller does not use.
"""

from __future__ import annotations

import csv
from typing import Any


def request_graceful_stop(trainer: Any) -> None:
    """Lightning: the flag its own SIGTERM handler sets. The step in progress ends, the checkpoint
    callbacks' on_exception write last.ckpt, and `fit` raises SIGTERMException. (Lightning has no
    public "stop after this step and checkpoint" request; `trainer.should_stop` only ends the epoch
    loop at its next check and writes no checkpoint on the way out.)"""
    trainer._signal_connector.received_sigterm = True


def take_back_sigterm(trainer: Any) -> None:
    """Lightning: SIGTERM handled by the handler that was there before the trainer replaced it with
    its own (restored by the trainer at teardown). Lightning's handler (`_sigterm_notifier_fn`) sets
    the stop flag at whatever point the signal lands and, with several ranks, runs a broadcast inside
    the handler: a rank the signal reaches between two of the others' collectives then waits in
    collectives the others never join (seen: the two ranks deadlocked until the collective timeout).
    Main thread only, as Python requires."""
    import signal
    import threading

    original = trainer._signal_connector._original_handlers.get(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread() and callable(original):
        signal.signal(signal.SIGTERM, original)


def drop_wandb_init_argument(logger: Any, key: str) -> None:
    """Lightning's WandbLogger: remove one argument it passes to `wandb.init` (it passes
    `anonymous=None`, which wandb 0.31 warns about on every run)."""
    init = getattr(logger, "_wandb_init", None)
    if init is not None:
        init.pop(key, None)


def logger_prefix(logger: Any) -> str:
    """Lightning's WandbLogger: the `prefix=` it was built with (kept only as `_prefix`)."""
    return logger._prefix


def appending_csv_logger_class():
    """Lightning's CSVLogger, except that a resumed run appends to its metrics.csv instead of
    deleting it (Lightning's ExperimentWriter removes an existing file in `_check_log_dir_exists`, and
    the logger builds its writer in the `experiment` property from its private `_fs`/`_experiment`)."""
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter

    class AppendingWriter(ExperimentWriter):
        def _check_log_dir_exists(self) -> None:
            if self._fs.isfile(self.metrics_file_path):  # an earlier attempt of this run: keep its rows and columns
                with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                    self.metrics_keys = sorted(next(csv.reader(f), []))

    class AppendingCSVLogger(CSVLogger):
        @property
        def experiment(self):
            if self._experiment is None:
                self._fs.makedirs(self.root_dir, exist_ok=True)
                self._experiment = AppendingWriter(log_dir=self.log_dir)
            return self._experiment

    return AppendingCSVLogger


def basic_sweeper_jobs(overrides: list[str]) -> list[list[str]]:
    """Hydra: the jobs its basic sweeper makes of a command line's overrides (`a=1,2 b=x,y`), each as
    its overrides, by the sweeper's own expansion (`hydra._internal`: Hydra has no public one)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def open_clip_vision_tower(embed_dim: int, vision_cfg: dict) -> Any:
    """open_clip: a fresh image tower of a model config (the builder its CLIP class uses; no public
    one builds a tower alone)."""
    from open_clip.model import _build_vision_tower

    return _build_vision_tower(embed_dim, vision_cfg)


def failed_job_exception(job_return: Any) -> BaseException | None:
    """Hydra: the exception a failed job ended with. The public `JobReturn.return_value` re-raises it
    and writes a line to stderr on the way; the launcher only wants to name it."""
    value = job_return._return_value
    return value if isinstance(value, BaseException) else None
