"""A trial's side of the Optuna search (the sweeper: hydra_plugins/experiments_search/optuna_sweeper.py):
report the monitored validation metric every epoch, stop when the pruner says so."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, cast

from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.experiments_search.optuna_sweeper import _optuna, journal_storage

log = logging.getLogger(__name__)


class OptunaPruning(Callback):
    """In a trial's job: reports the monitored validation metric to the study every epoch and
    stops training when the pruner says the trial is unpromising; the run then skips its test pass
    (`stopped_early`) and, once its record is written, the study hears how the trial ended."""

    def __init__(self, journal: str, study: str, trial: int, monitor: str, pruner=None):
        if not monitor:
            raise ValueError("hparams_search prunes on the task's `monitor`, which this task does not set")
        self.journal, self.study_name, self.number, self.monitor = journal, study, int(trial), monitor
        self.pruner = pruner  # the sweep's pruner (a study loaded from storage would get Optuna's default)
        self.pruned: int | None = None  # the epoch it was pruned at
        self._storage: Any = None  # the study's storage, opened once, on the first report
        self._trial_id = -1
        self._study_and_trial = None

    def _trial(self):
        if self._study_and_trial is None:  # through the storage's public API (Optuna's BaseStorage)
            optuna = _optuna()
            self._storage = journal_storage(Path(self.journal))
            study = optuna.load_study(study_name=self.study_name, storage=self._storage, pruner=self.pruner)
            study_id = self._storage.get_study_id_from_name(self.study_name)
            trial_id = self._storage.get_trial_id_from_study_id_trial_number(study_id, self.number)
            self._trial_id, self._study_and_trial = trial_id, (study, optuna.trial.Trial(study, trial_id))
        return self._study_and_trial

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        prune = False
        if trainer.is_global_zero:
            _, trial = self._trial()
            trial.report(float(trainer.callback_metrics[self.monitor]), step=trainer.current_epoch)
            prune = trial.should_prune()
        if trainer.strategy.broadcast(prune):  # every rank stops together
            self.pruned = trainer.current_epoch
            trainer.should_stop = True
            log.info("trial %d pruned after epoch %d (%s)", self.number, trainer.current_epoch, self.monitor)

    def stopped_early(self) -> bool:  # contracts.EndsRunEarly: a pruned trial skips its test pass
        return self.pruned is not None

    def record_written(self, record) -> None:  # contracts.HearsRecord: the study hears how the trial ended
        if record.status == "pruned":
            self.tell_pruned()
        else:
            self.tell_finished(record.value)  # resume=<trial folder>: counted too

    def tell_pruned(self) -> None:
        optuna = _optuna()
        study, _ = self._trial()
        study.tell(self.number, state=optuna.trial.TrialState.PRUNED)

    def tell_finished(self, value: float | None) -> None:
        """The trial's value, told by the job itself, so that a trial finished by `resume=<trial
        folder>` (after its search was killed) counts in the study; a trial the study already
        closed stays as it was (Optuna does not change a finished trial)."""
        optuna = _optuna()
        study, _ = self._trial()
        state = self._storage.get_trial(self._trial_id).state
        if state.is_finished():
            if state.name != "COMPLETE":  # e.g. a crashed trial finished later with resume=<trial folder>
                log.warning(
                    "trial %d is closed as %s in the study: its new value is not counted", self.number, state.name
                )
            return
        ok = value is not None and math.isfinite(value)
        study.tell(self.number, value if ok else None, state=optuna.trial.TrialState.COMPLETE if ok else None)
        if not ok:
            log.warning("trial %d ended without a finite %s: told the study it failed", self.number, self.monitor)


def search_callbacks(cfg: DictConfig) -> list[OptunaPruning]:
    """What a search adds to its trial's job (`+search.*` set by the sweeper): the pruning callback."""
    search = cfg.get("search")
    if not search:
        return []
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    pruner = None
    if HydraConfig.initialized() and HydraConfig.get().sweeper.get("pruner"):
        pruner = instantiate(HydraConfig.get().sweeper.pruner)  # the same pruner the sweeper's study has
    return [OptunaPruning(**cast(dict, OmegaConf.to_container(search)), monitor=cfg.get("monitor"), pruner=pruner)]
