"""hydra-submitit-launcher's SLURM and local launchers, fitted to the run and honest both ways.

`hydra/launcher=slurm` (conf/hydra/launcher/slurm.yaml) and `hydra/launcher=local` use these
subclasses of hydra-submitit-launcher's launchers. What they add:

- The request fits the run (SLURM): nodes and tasks follow the trainer; GPUs follow the
  accelerator (`trainer.devices` on GPUs; none for a CPU run, nor for `trainer.accelerator=auto`
  on a partition without GPUs); CPUs and memory default to documented per-task figures.
- A request no node of the partition can meet stops before anything is submitted: one line
  naming the key to change, exit 2 (read from `sinfo`; skipped where sinfo is missing).
- While jobs pend, the launching command says why (SLURM's reason) every `pending_report_s`.
- Honest to the scheduler: a job whose run failed hands its result back to the launching command
  (so the sweep goes on and its summary lists the job) and then exits with the run's code, so
  that `sacct` says FAILED. A killed run exits 128 + signal (experiments.lifecycle).
- The launching command outlives every job: a job that ends without a result (cancelled, out
  of memory, timed out too many times) is one line and a FAILED in its folder, not a traceback
  that ends the sweep before its summary.

Lives under hydra_plugins because Hydra instantiates launchers only from there. (No `from __future__ import
annotations`: Hydra loads plugin modules outside sys.modules, where dataclasses cannot resolve them.)
"""

import logging
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore

from private_api import failed_job_exception

log = logging.getLogger(__name__)

try:  # the cluster extra; without it experiments.__main__ stops with one line naming it
    from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher as _LocalLauncher
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as _SlurmLauncher
except ImportError:  # pragma: no cover - exercised only without the extra
    _SlurmLauncher = None

# Reasons a pending job gives that no wait cures: the request must change.
NEVER_STARTS = ("PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "ReqNodeNotAvail", "InvalidAccount")


def failed_exit_code(ret: Any) -> int:
    """The exit code of the run this job process just ran, if it failed: a sweep's failed run returns
    normally, so that the launcher gets its result, with its code (experiments.lifecycle.JobFailed,
    returned by experiments.run.run_safely); 0 for any other result."""
    from experiments.lifecycle import JobFailed

    if ret.status.name != "COMPLETED":
        return 0
    value = ret.return_value
    return value.exit_code if isinstance(value, JobFailed) else 0


def hand_back(result: Any) -> None:
    """Write this job's result where submitit's launching side reads it, as a successful job would."""
    import submitit
    from submitit.core import utils

    paths = submitit.JobEnvironment().paths
    with utils.temporary_save_path(paths.result_pickle) as tmp:
        utils.cloudpickle_dump(("success", result), tmp)


# --- what the cluster offers (sinfo) -------------------------------------------------------------


@dataclass
class Node:
    partition: str
    name: str
    cpus: int
    mem_mb: int
    gpus: int
    time_limit_min: float | None  # the partition's (None: no limit)
    default: bool


def _gpus(gres: str) -> int:
    """`gpu:4`, `gpu:a100:4(S:0-1)`, `gpu:a100:2,gpu:v100:2` -> 4; `(null)` -> 0."""
    total = 0
    for part in gres.split(","):
        part = re.sub(r"\(.*?\)", "", part)
        if part.startswith("gpu"):
            last = part.split(":")[-1]
            total += int(last) if last.isdigit() else 1
    return total


def _minutes(limit: str) -> float | None:
    """SLURM's time format (`infinite`, `30`, `1:00:00`, `2-00:00:00`) in minutes."""
    if limit in ("infinite", "UNLIMITED", "n/a", ""):
        return None
    days, _, rest = limit.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if len(parts) == 1:  # minutes
        h, m, s = 0, parts[0], 0
    elif len(parts) == 2:  # minutes:seconds
        h, m, s = 0, parts[0], parts[1]
    else:
        h, m, s = parts[-3:]
    return (int(days) if days else 0) * 1440 + h * 60 + m + s / 60


def cluster_nodes() -> list[Node] | None:
    """Every node of every partition, as sinfo sees it; None where there is no sinfo or it fails."""
    if shutil.which("sinfo") is None:
        return None
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%P|%n|%c|%m|%G|%l"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    nodes = []
    for line in out.splitlines():
        p, n, c, m, g, lim = line.split("|")
        nodes.append(Node(p.rstrip("*"), n, int(c), int(m), _gpus(g), _minutes(lim), p.endswith("*")))
    return nodes


def partition_nodes(nodes: list[Node], partition: str | None) -> tuple[str, list[Node]]:
    if partition is None:
        default = [n for n in nodes if n.default]
        partition = default[0].partition if default else ""
    return partition, [n for n in nodes if n.partition == partition]


def unmet_request(params: dict, nodes: list[Node], partition: str | None, trainer: Any) -> str | None:
    """The one line saying which key to change when no node of the partition can run the job as asked."""
    partition, here = partition_nodes(nodes, partition)
    if not here:
        known = sorted({n.partition for n in nodes})
        return (
            f"hydra.launcher.partition={partition}: no such partition on this cluster (sinfo lists: {', '.join(known)})"
        )
    tasks, cpus = int(params["tasks_per_node"]), int(params.get("cpus_per_task") or 1)
    mem_gb, gpus, nnodes = params.get("mem_gb"), int(params.get("gpus_per_node") or 0), int(params["nodes"])
    if max(n.gpus for n in here) < gpus:
        return (
            f"{gpus} GPUs per node (trainer.devices={trainer.get('devices')}, trainer.accelerator="
            f"{trainer.get('accelerator')}), and the nodes of partition {partition} have at most "
            f"{max(n.gpus for n in here)}: set trainer.devices, or trainer=cpu to run on CPUs"
        )
    if max(n.cpus for n in here) < tasks * cpus:
        return (
            f"hydra.launcher.cpus_per_task={cpus} x {tasks} tasks per node asks {tasks * cpus} CPUs per node, and the "
            f"largest node of partition {partition} has {max(n.cpus for n in here)}: lower hydra.launcher.cpus_per_task"
            + (" (or trainer.devices)" if tasks > 1 else "")
        )
    if mem_gb and max(n.mem_mb for n in here) < mem_gb * 1024:
        return (
            f"hydra.launcher.mem_gb={mem_gb} asks {mem_gb} GB per node, and the largest node of partition {partition} "
            f"has {max(n.mem_mb for n in here) / 1024:.1f} GB: lower hydra.launcher.mem_gb (or mem_gb_per_task)"
        )
    limit = here[0].time_limit_min
    if limit is not None and params["timeout_min"] > limit:
        return (
            f"hydra.launcher.timeout_min={params['timeout_min']} is over partition {partition}'s time limit "
            f"({limit:g} min): lower hydra.launcher.timeout_min"
        )
    fit = [n for n in here if n.cpus >= tasks * cpus and n.gpus >= gpus and (not mem_gb or n.mem_mb >= mem_gb * 1024)]
    if len(fit) < nnodes:
        fitting = f"partition {partition} has {len(fit)} nodes that fit"
        return f"trainer.num_nodes={nnodes}, and {fitting}: lower trainer.num_nodes"
    return None


def _as_int(devices: Any) -> int:
    """trainer.devices as a count: 2 -> 2, [0, 1] -> 2, "auto"/-1 -> 1 (one task; Lightning decides)."""
    if isinstance(devices, (list, tuple)) or (hasattr(devices, "__len__") and not isinstance(devices, str)):
        return len(devices)
    try:
        return max(int(devices), 1)
    except (TypeError, ValueError):
        return 1


def fit_to_run(params: dict, extra: dict, trainer: Any, nodes: list[Node] | None) -> dict:
    """The launcher's params with the run's needs filled in where they are null (see slurm.yaml)."""
    params = dict(params)
    accelerator = str(trainer.get("accelerator", "auto"))
    devices = _as_int(trainer.get("devices", 1))
    if params.get("gpus_per_node") is None:
        if accelerator in ("gpu", "cuda"):
            gpus = devices
        elif accelerator == "auto" and nodes is not None:  # what the partition has decides
            _, here = partition_nodes(nodes, params.get("partition"))
            gpus = devices if any(n.gpus for n in here) else 0
        elif accelerator == "auto":  # no sinfo to ask: as before, one GPU per device
            gpus = devices
        else:
            gpus = 0
        params["gpus_per_node"] = gpus
    if params.get("cpus_per_task") is None:
        params["cpus_per_task"] = extra["cpus_per_gpu_task"] if params["gpus_per_node"] else 1
    if params.get("mem_gb") is None:
        params["mem_gb"] = extra["mem_gb_per_task"] * int(params["tasks_per_node"])
    if not params["gpus_per_node"]:
        params["gpus_per_node"] = None  # no --gpus-per-node at all: a CPU-only cluster may have no GPU gres
    return params


# --- the launchers --------------------------------------------------------------------------------

if _SlurmLauncher is not None:
    from hydra.core.utils import JobReturn, JobStatus

    class _Honest:
        """What both launchers share: a failed run fails its job; the launching side outlives every job."""

        EXTRA_KEYS: tuple[str, ...] = ()
        pending_report_s = 0
        params: dict[str, Any]  # the submitit launcher's, which this is mixed into
        _EXECUTOR: str

        def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:  # in the job
            ret = super().__call__(*args, **kwargs)  # type: ignore[misc]  # the submitit launcher's
            code = failed_exit_code(ret) or (1 if ret.status == JobStatus.FAILED else 0)
            if code:
                if ret.status == JobStatus.FAILED:  # an error outside the run loop: the launcher logs it
                    ret = JobReturn(overrides=ret.overrides, status=JobStatus.COMPLETED)
                hand_back(ret)  # the launching command gets this job's result, as from a successful job ...
                logging.shutdown()
                sys.stdout.flush()
                sys.exit(code)  # ... and the scheduler records the job failed, with the run's exit code
            return ret

        def launch(self, job_overrides, initial_job_idx):  # in the launching command
            import submitit

            params = self.fitted_params()
            init = {"folder": params.pop("submitit_folder")}
            if "max_num_timeout" in params:
                init[f"{self._EXECUTOR}_max_num_timeout"] = params.pop("max_num_timeout")
            executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
            from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
            from omegaconf import OmegaConf

            base = set(OmegaConf.structured(BaseQueueConf).keys())
            executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in params.items()})
            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            sweep_dir.mkdir(parents=True, exist_ok=True)
            log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
            from hydra.core.singleton import Singleton
            from hydra.core.utils import filter_overrides

            job_params = []
            for i, overrides in enumerate(job_overrides):
                idx = initial_job_idx + i
                log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
                job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
            jobs = executor.map_array(self, *zip(*job_params, strict=True))
            self.wait(jobs)
            return [
                self.result(job, overrides, sweep_dir, initial_job_idx + i)
                for i, (job, overrides) in enumerate(zip(jobs, job_overrides, strict=True))
            ]

        def fitted_params(self) -> dict:
            return {k: v for k, v in self.params.items() if k not in self.EXTRA_KEYS}

        STATE_CHECK_S = 15  # how often the jobs' states are read (submitit's SLURM watcher: every 10 minutes)

        def wait(self, jobs: list) -> None:
            """Until every job is done: a job with a result is seen at once; one that ended without
            (killed, timed out too many times) only by its state, read here every STATE_CHECK_S."""
            next_report = time.time() + min(10, self.pending_report_s or 10)
            next_check = time.time() + self.STATE_CHECK_S
            while not all(job.done() for job in jobs):
                time.sleep(1)
                if self._EXECUTOR == "slurm" and time.time() >= next_check:
                    jobs[0].watcher.update()  # one sacct call for all the jobs it watches
                    next_check = time.time() + self.STATE_CHECK_S
                if self.pending_report_s and time.time() >= next_report:
                    self.report_pending(jobs)
                    next_report = time.time() + self.pending_report_s

        def report_pending(self, jobs: list) -> None:
            pass

        def result(self, job, overrides, sweep_dir: Path, idx: int) -> JobReturn:
            """The job's JobReturn; for a job that ended without one, a completed JobReturn with no
            value (the sweep goes on; its summary lists the job as failed) and FAILED in its folder."""
            try:
                ret = job.results()[0]
                if ret.status == JobStatus.COMPLETED:
                    return ret
                error = failed_job_exception(ret)
                reason = f"{type(error).__name__}: {error}"
            except Exception as e:  # noqa: BLE001 - submitit's UncompletedJobError / FailedJobError
                lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
                state = getattr(job, "state", "UNKNOWN")
                reason = f"the job ({job.job_id}) ended {state} without a result" + (
                    f": {lines[-1].strip()}" if "FailedJobError" in type(e).__name__ and lines else ""
                )
            folder = sweep_dir / str(idx)
            if folder.is_dir() and not (folder / "FAILED").exists() and not (folder / "metrics.json").exists():
                (folder / "FAILED").write_text(f"{reason}\n\nsubmitit's log of the job: {job.paths.stderr}\n")
            log.error("job %d: %s (log: %s)", idx, reason, job.paths.stderr)
            return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)

    class SlurmLauncher(_Honest, _SlurmLauncher):
        EXTRA_KEYS = ("cpus_per_gpu_task", "mem_gb_per_task", "pending_report_s")

        def __init__(self, **params: Any) -> None:
            super().__init__(**params)
            self.pending_report_s = int(self.params.get("pending_report_s") or 0)

        def fitted_params(self) -> dict:
            trainer = self.config.get("trainer") or {}
            nodes = cluster_nodes()
            extra = {k: self.params[k] for k in self.EXTRA_KEYS}
            params = fit_to_run(super().fitted_params(), extra, trainer, nodes)
            if nodes is not None and (problem := unmet_request(params, nodes, params.get("partition"), trainer)):
                print(f"error: {problem}", file=sys.stderr, flush=True)
                sys.exit(2)
            log.info(
                "SLURM request per job: %s node(s) x %s task(s), %s CPU(s) per task, %s GPU(s) and %s GB per node",
                params["nodes"], params["tasks_per_node"], params["cpus_per_task"], params["gpus_per_node"] or 0,
                params["mem_gb"],
            )  # fmt: skip
            return params

        def report_pending(self, jobs: list) -> None:
            ids = sorted({job.job_id.split("_")[0] for job in jobs if not job.done()})
            if not ids or shutil.which("squeue") is None:
                return
            try:
                out = subprocess.run(
                    ["squeue", "-h", "-t", "PENDING", "-j", ",".join(ids), "-o", "%i|%r"],
                    capture_output=True, text=True, timeout=30,
                ).stdout  # fmt: skip
            except (subprocess.SubprocessError, OSError):
                return
            by_reason: dict[str, list[str]] = {}
            for line in out.splitlines():
                job_id, _, reason = line.partition("|")
                by_reason.setdefault(reason, []).append(job_id)
            for reason, pending in by_reason.items():
                hint = (
                    " - it cannot start as asked: see `scontrol show job " + pending[0] + "`"
                    if reason.startswith(NEVER_STARTS)
                    else ""
                )
                log.info("waiting for SLURM: %s pending (%s)%s", ", ".join(pending), reason, hint)

    class LocalLauncher(_Honest, _LocalLauncher):
        pass

    @dataclass
    class SlurmConf(SlurmQueueConf):
        _target_: str = "hydra_plugins.experiments_launcher.launchers.SlurmLauncher"
        cpus_per_gpu_task: int = 4
        mem_gb_per_task: int = 8
        pending_report_s: int = 60
        srun_args: list[str] = field(default_factory=lambda: ["--kill-on-bad-exit=1"])

    @dataclass
    class LocalConf(LocalQueueConf):
        _target_: str = "hydra_plugins.experiments_launcher.launchers.LocalLauncher"

    ConfigStore.instance().store(
        group="hydra/launcher", name="experiments_slurm", node=SlurmConf, provider="experiments"
    )
    ConfigStore.instance().store(
        group="hydra/launcher", name="experiments_local", node=LocalConf, provider="experiments"
    )
