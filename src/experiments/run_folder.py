"""A run folder holds exactly one run.

The first launch into a folder claims it: it takes the folder's lock and writes the run's record
(config.yaml and .hydra/). Afterwards the folder is continued only by the same run:

- `resume=<folder>`, with the same model and data (the identity below), finished or not;
- a scheduler's requeue, or the same command relaunched into it (`hydra.run.dir`,
  `EXPERIMENTS_RUN_ID`): the same identity, and the run has not finished;
- in a sweep relaunched into its folder, a job whose run already finished is kept as it is.

Any other launch is refused before anything in the folder changes (`FolderTaken`: one line, exit
2). One process at a time holds a folder: an advisory lock on `<folder>/.lock` that the kernel
releases when the process ends, however it ends (SIGKILL included).
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys
from pathlib import Path
from typing import Any, cast

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from private_api import basic_sweeper_jobs

# What a run *is*: changing any of these makes another experiment (the keys `resume=` refuses too).
IDENTITY = ("task_name", "model", "data", "seed", "ablate", "finetune")
# The overrides that choose those (config groups and keys), for sweep folders.
IDENTITY_OVERRIDES = ("task", "experiment", "model", "data", "finetune", "ablate", "seed", "debug", "hparams_search")
LOCK = ".lock"
REFUSED = ".refused"  # beside a sweep's job folders: <job> holds why that job was refused
RECORD = "config.yaml"  # the resolved config: written when a run claims its folder
SWEEP_RECORD = "sweep.yaml"  # a sweep folder's overrides, written when the sweep claims it


log = logging.getLogger(__name__)


class FolderTaken(Exception):
    """A launch into a folder that holds another run (or a running one): refused, nothing changed."""


def identity(cfg: DictConfig | dict, out: Path) -> dict[str, Any]:
    """The resolved keys that make a run what it is, with the run folder's own path written as
    `<run>` (so a moved folder is the same run)."""
    plain = (
        cfg if isinstance(cfg, dict) else cast(dict, OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False))
    )
    text = yaml.safe_dump({k: plain.get(k) for k in IDENTITY}, sort_keys=True)
    return yaml.safe_load(text.replace(str(out), "<run>"))


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """`key: old -> new` for each leaf that differs (dotted keys). Keys that only one side has are not
    compared: a key the framework added (or dropped) since the run was recorded is not a change the
    user made, and comparing it would refuse every resume or requeue across an upgrade (found in
    review: `data.gpu_decode` made every `data=folder` run of the version before unresumable)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) & set(new)) for d in differences(old[k], new[k], f"{prefix}{k}.")]
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def finished(out: Path) -> bool:
    """The run in `out` ended well and no later attempt failed."""
    return (out / "metrics.json").is_file() and not (out / "FAILED").is_file()


class RunFolder:
    """The claim on one run folder, held for the whole run (see the module's docstring)."""

    def __init__(self, out: Path):
        self.out = out
        self._fd: int | None = None

    def lock(self) -> None:
        """Take the folder's lock, or FolderTaken if another process holds it."""
        self.out.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if not isinstance(e, BlockingIOError):  # a file system without locks (Lustre without flock, ...)
                log.warning("%s: no file locks on this file system (%s): the folder is not locked", self.out, e)
                self._fd = fd
                return
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FolderTaken(
                f"{self.out} is in use by a running process (pid {holder}): wait for it to end, "
                f"or start in a new folder"
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None

    def check(self, cfg: DictConfig, resuming: bool, in_sweep: bool) -> str:
        """'new' (an empty folder), 'continue' (the same run goes on) or 'finished' (a sweep's job
        that already ended well: keep it). FolderTaken for anything else."""
        record = self.out / RECORD
        if not record.is_file():
            return "new"
        old = yaml.safe_load(record.read_text()) or {}
        recorded_out = Path(str((old.get("paths") or {}).get("output_dir") or self.out))
        changed = differences(identity(old, recorded_out), identity(cfg, self.out))
        if changed:
            shown = "; ".join(changed[:3]) + (f" (and {len(changed) - 3} more)" if len(changed) > 3 else "")
            raise FolderTaken(
                f"{self.out} holds another run ({shown}): a run folder holds one run (resume= continues it with "
                f"the same model and data); start in a new folder"
            )
        if finished(self.out) and not resuming:
            if in_sweep:
                return "finished"
            raise FolderTaken(f"{self.out} holds a finished run: resume={self.out} continues it; or use a new folder")
        return "continue"

    def write_record(self, cfg: DictConfig) -> None:
        """config.yaml (resolved) and .hydra/{config,hydra,overrides}.yaml: Hydra's own record,
        written here (hydra.output_subdir is null) so that a refused launch cannot overwrite it."""
        from hydra.core.hydra_config import HydraConfig

        if self._fd is not None:  # who holds the folder, for the message another launch gets
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)
        (self.out.parent / REFUSED / self.out.name).unlink(missing_ok=True)  # a sweep job's earlier refusal
        (self.out / RECORD).write_text(OmegaConf.to_yaml(cfg, resolve=True))
        if not HydraConfig.initialized():
            return
        hc = HydraConfig.get()
        saved = self.out / ".hydra"
        saved.mkdir(exist_ok=True)
        OmegaConf.save(cfg, saved / "config.yaml")
        OmegaConf.save(OmegaConf.create({"hydra": hc}), saved / "hydra.yaml")
        OmegaConf.save(hc.overrides.task, saved / "overrides.yaml")


def note_refusal(out: Path, reason: str) -> None:
    """A sweep's job refused its folder: say so beside it (the folder itself stays as it was), so the
    summary reports the job as refused, not as the old run's result."""
    try:
        (out.parent / REFUSED).mkdir(exist_ok=True)
        (out.parent / REFUSED / out.name).write_text(reason + "\n")
    except OSError:
        pass


def identity_overrides(overrides: list[str]) -> list[str]:
    """The overrides of a sweep that choose what its runs are (not how they run)."""
    return sorted(o for o in overrides if override_root(o) in IDENTITY_OVERRIDES)


def override_root(override: str) -> str:
    """`+model.beta=4` -> `model`, `data@x=y` -> `data`: the group or top-level key an override sets."""
    return override.lstrip("+~").split("=", 1)[0].split(".")[0].split("@")[0]


def claim_sweep_folder(sweep_dir: Path, overrides: list[str], jobs: list[list[str]] | None = None) -> None:
    """A sweep folder holds one sweep: a launch into a folder of a sweep with other identity
    overrides is refused (FolderTaken) before any job runs; the same sweep continues there."""
    record = sweep_dir / SWEEP_RECORD
    mine = identity_overrides(overrides)
    if record.is_file():
        theirs = sweep_record(sweep_dir).get("identity", [])
        if theirs != mine:
            raise FolderTaken(
                f"{sweep_dir} holds another sweep ({' '.join(theirs) or 'no overrides'}; this one: "
                f"{' '.join(mine) or 'no overrides'}): a sweep folder holds one sweep; start in a new folder"
            )
        return
    if sweep_dir.is_dir() and any(sweep_dir.glob(f"*/{RECORD}")):  # a sweep from before this record existed
        raise FolderTaken(f"{sweep_dir} holds the jobs of an earlier sweep: start in a new folder")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    record.write_text(yaml.safe_dump({"overrides": list(overrides), "identity": mine, "jobs": jobs or []}))


def sweep_record(sweep_dir: Path) -> dict[str, Any]:
    """What sweep.yaml holds: the sweep's overrides, those that make its identity, its planned jobs."""
    record = sweep_dir / SWEEP_RECORD
    return (yaml.safe_load(record.read_text()) or {}) if record.is_file() else {}


def planned_jobs(config: DictConfig) -> list[list[str]]:
    """The jobs a basic sweep will launch, each as its overrides ([] for another sweeper, whose
    jobs are not known ahead, e.g. an Optuna search)."""
    if not str(OmegaConf.select(config, "hydra.sweeper._target_") or "").endswith("BasicSweeper"):
        return []
    return basic_sweeper_jobs(list(config.hydra.overrides.task))


class LaunchChecks(Callback):
    """Hydra callback: what is checked before Hydra writes anything for a launch. The run folder (or
    sweep folder) can be made and written; a search is launched as a sweep; a sweep folder holds one
    sweep (and records the jobs it will launch, so a killed sweep's summary lists those that never
    started). Each refusal is one line and exit 2."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        search = str(OmegaConf.select(config, "hydra.sweeper._target_") or "").endswith("OptunaSweeper")
        if search and not config.get("search"):  # (one trial of a search, resumed alone, has `search`)
            _refuse("hparams_search runs an Optuna search, which is a sweep: add -m (python -m experiments -m ...)")
        _writable(Path(str(OmegaConf.select(config, "hydra.run.dir"))))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        _writable(sweep_dir)
        try:
            claim_sweep_folder(sweep_dir, list(config.hydra.overrides.task), planned_jobs(config))
        except FolderTaken as e:
            _refuse(str(e))


def _writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        _refuse(f"paths.log_dir: cannot write the run folder {folder} ({e.strerror or e}): choose a writable folder")


def _refuse(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)
