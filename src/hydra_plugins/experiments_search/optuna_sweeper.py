"""Hyper-parameter search with Optuna, as a Hydra sweeper: `python -m experiments -m hparams_search=vae_optuna`.

Why not hydra-optuna-sweeper: it pins optuna<3, keeps the study in memory (its sqlite storage
fails with SQLAlchemy 2) and cannot prune. This sweeper uses Optuna 4/5 directly:

- the study lives on disk in the sweep folder (`optuna.journal`, Optuna's JournalFileBackend), so
  a killed search continues with the same command plus `hydra.sweep.dir=<that folder>`: finished
  trials count towards `n_trials`, trials a kill left running are marked failed;
- each trial is a job of the launcher (`n_jobs` trials asked and launched together, in parallel
  with `hydra/launcher=local` or `slurm`), composed with the trial's parameters as overrides and
  told where the study is (`+search.*`), so the job reports its monitored validation metric every
  epoch and stops itself when the pruner says so (OptunaPruning below: the job tells the study);
- the sweep's summary.md starts with the best trial's parameters and every trial's state.

Lives under hydra_plugins because Hydra instantiates sweepers only from there; the pruning
callback a trial's job adds is experiments.search.OptunaPruning.

The search space (`hydra.sweeper.params`): `key: {type: float|int|categorical, low, high, log, step,
choices}`, e.g. `model.optimizer.lr: {type: float, low: 1e-4, high: 1e-2, log: true}`.
"""

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig

log = logging.getLogger(__name__)

EXTRA = "pip install '.[cluster]'"
JOURNAL = "optuna.journal"
SUMMARY = "search.md"  # the search's part of summary.md (experiments.sweep puts it first)


def _optuna():
    try:
        import optuna
    except ImportError as e:
        raise ImportError(f"hparams_search needs Optuna, in the cluster extra: {EXTRA}") from e
    return optuna


def journal_storage(path: Path):
    _optuna()
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(path)))


def distribution(key: str, spec: dict):
    """An Optuna distribution from a documented search-space entry (ValueError naming the key)."""
    d = _optuna().distributions
    kind = spec.get("type")
    if kind == "float":
        return d.FloatDistribution(float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False)))
    if kind == "int":
        return d.IntDistribution(
            int(spec["low"]), int(spec["high"]), log=bool(spec.get("log", False)), step=int(spec.get("step", 1))
        )
    if kind == "categorical":
        return d.CategoricalDistribution(list(spec["choices"]))
    raise ValueError(f"hydra.sweeper.params.{key}.type must be float, int or categorical, got {kind!r}")


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.experiments_search.optuna_sweeper.OptunaSweeper"
    n_trials: int = 20  # trials in the study in all, those of earlier launches on this folder included
    n_jobs: int = 1  # trials asked and launched together (in parallel with hydra/launcher=local or slurm)
    direction: str = "minimize"  # minimize | maximize: of the task's optimized_metric
    study_name: str = "search"  # the study's name in the journal
    sampler: Any = None  # an Optuna sampler config (_target_: optuna.samplers.TPESampler, ...); null: TPE
    pruner: Any = None  # an Optuna pruner config (_target_: optuna.pruners.MedianPruner, ...); null: none
    params: dict = field(default_factory=dict)  # the search space: key -> {type, low, high, log, step, choices}


ConfigStore.instance().store(
    group="hydra/sweeper", name="optuna_journal", node=OptunaSweeperConf, provider="experiments"
)


class OptunaSweeper(Sweeper):
    def __init__(self, n_trials, n_jobs, direction, study_name, sampler, pruner, params):
        if n_trials < 1 or n_jobs < 1:
            raise ValueError("hydra.sweeper.n_trials and n_jobs must be positive")
        if direction not in ("minimize", "maximize"):
            raise ValueError(f"hydra.sweeper.direction must be minimize or maximize, got {direction!r}")
        self.n_trials, self.n_jobs, self.direction, self.study_name = n_trials, n_jobs, direction, study_name
        self.sampler, self.pruner = sampler, pruner  # built by Hydra from their _target_ (null: TPE, no pruning)
        self.space = {k: distribution(k, dict(v)) for k, v in (params or {}).items()}
        if not self.space:
            raise ValueError("hydra.sweeper.params is empty: give the search space (see conf/hparams_search/)")

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def _study(self, sweep_dir: Path):
        optuna = _optuna()
        return optuna.create_study(
            study_name=self.study_name,
            storage=journal_storage(sweep_dir / JOURNAL),
            direction=self.direction,
            sampler=self.sampler,
            pruner=self.pruner or optuna.pruners.NopPruner(),
            load_if_exists=True,
        )

    def sweep(self, arguments: list[str]) -> list:
        from experiments.record import RunRecord

        optuna = _optuna()
        State = optuna.trial.TrialState
        assert self.config is not None and self.launcher is not None, "setup() comes first"
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        study = self._study(sweep_dir)
        # Trials an earlier launch left running (it was killed): run again in their own folders, where
        # their jobs continue from last.ckpt; they were counted once already.
        unfinished = [[t] for t in study.get_trials(deepcopy=False, states=(State.RUNNING, State.WAITING))]
        done = len(study.trials)
        if done:
            study.sampler.reseed_rng()  # a sampler rebuilt with its seed would ask the first trials' parameters again
            log.info("continuing the study in %s: %d of %d trials done", sweep_dir / JOURNAL, done, self.n_trials)
        for (t,) in unfinished:
            log.warning("trial %d was left running by an earlier launch: running it again in its folder", t.number)
        returns = []
        while unfinished or done < self.n_trials:
            if unfinished:
                trials = unfinished.pop(0)
            else:
                trials = [study.ask(self.space) for _ in range(min(self.n_jobs, self.n_trials - done))]
                done += len(trials)
            batch = [
                [
                    *arguments,
                    *(f"{k}={v}" for k, v in t.params.items()),
                    f"+search.journal={sweep_dir / JOURNAL}",
                    f"+search.study={self.study_name}",
                    f"+search.trial={t.number}",
                ]
                for t in trials
            ]
            results = self.launcher.launch(batch, initial_job_idx=trials[0].number)
            told = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
            for t, r in zip(trials, results, strict=True):
                if t.number in told:
                    continue  # the job told the study itself (pruned)
                record = r.return_value if r.status.name == "COMPLETED" else None  # experiments.record.RunRecord
                value = record.value if isinstance(record, RunRecord) else None
                if value is not None and math.isfinite(value):
                    study.tell(t.number, float(value), state=State.COMPLETE)
                else:
                    study.tell(t.number, None, state=State.FAIL)
            returns.append(results)
        write_search_summary(study, sweep_dir, self.n_trials)
        return returns


def write_search_summary(study, sweep_dir: Path, n_trials: int) -> None:
    """search.md: the best trial's parameters and value, then every trial's state."""
    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    lines = [f"## Optuna search: {len(trials)} trials ({', '.join(f'{n} {s}' for s, n in states.items())})", ""]
    try:
        best = study.best_trial
        lines += [f"best: trial {best.number}, {study.direction.name.lower()} value {best.value:.6g}", ""]
        lines += ["| parameter | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in best.params.items()]
    except ValueError:
        lines.append("no trial completed")
    keys = sorted({k for t in trials for k in t.params})
    lines += ["", "| trial | state | value | last epoch reported | " + " | ".join(keys) + " |"]
    lines.append("|" + "---|" * (4 + len(keys)))
    for t in trials:
        value = "" if t.value is None else f"{t.value:.6g}"
        last = "" if not t.intermediate_values else str(max(t.intermediate_values))
        cells = [str(t.number), t.state.name.lower(), value, last, *(str(t.params.get(k, "")) for k in keys)]
        lines.append("| " + " | ".join(cells) + " |")
    (sweep_dir / SUMMARY).write_text("\n".join(lines) + "\n")
    print(f"optuna study: {len(trials)} of {n_trials} trials, {sweep_dir / JOURNAL}")
