"""The SLURM test cluster (scripts/slurm_cluster.sh) as the tests marked `slurm` use it."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cli import cli_command

ROOT = Path(__file__).resolve().parents[2]  # the checkout
SCRIPT = ROOT / "scripts" / "slurm_cluster.sh"
STATE = Path(os.environ.get("EXPERIMENTS_SLURM_STATE", "/var/tmp/experiments-slurm"))
SLURM_CONF = STATE / "etc" / "slurm.conf"
WAIT_S = 1500  # no case may take longer than this, queueing included (about 10 min on 2 idle cores)


def why_no_cluster() -> str | None:
    if platform.system() != "Linux":
        return f"a SLURM test cluster needs Linux (this is {platform.system()})"
    if os.geteuid() != 0:
        return "a SLURM test cluster needs root (scripts/slurm_cluster.sh starts daemons and may apt-get install)"
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "SLURM is not installed and there is no apt-get to install it"
    return None


def slurm(*args: str) -> str:
    env = {**os.environ, "SLURM_CONF": str(SLURM_CONF)}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=60, check=True).stdout


def sacct(job: str, *, all_attempts: bool = False) -> list[dict[str, str]]:
    """One row per job (array task) of `job`, every attempt with `all_attempts` (sacct -D), once
    every job has ended (a job hands its result back, then ends: the command may return first)."""
    deadline = time.time() + 120
    while True:
        out = slurm("sacct", "-n", "-X", "-P", *(["-D"] if all_attempts else []), "-j", job,
                    "-o", "JobID,State,ExitCode,Start,End,DerivedExitCode")  # fmt: skip
        keys = ("id", "state", "exit", "start", "end", "derived")
        rows = [dict(zip(keys, line.split("|"), strict=True)) for line in out.splitlines() if line.strip()]
        if time.time() > deadline or not any(r["state"] in ("PENDING", "RUNNING", "COMPLETING") for r in rows):
            return rows
        time.sleep(2)


def job_record(job: str) -> dict[str, str]:
    """slurmctld's own record of `job` (`scontrol show job -o`): JobState, Restarts, ... as they are
    now. sacct reads slurmdbd, which lags: right after `scontrol requeue` of an ended job it can
    still show the ended attempt (found by CI: a wait on sacct returned before the requeue ran)."""
    line = slurm("scontrol", "show", "job", "-o", job).splitlines()[0]
    return dict(kv.split("=", 1) for kv in line.split() if "=" in kv)


# the states a job ends in (not SIGNALING, STAGE_OUT, SUSPENDED, ... on the way)
ENDED = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
}


def requeue_and_wait(job: str, timeout_s: float = 900) -> dict[str, str]:
    """`scontrol requeue` of the ended `job` (what a user or a cluster's policy does), then wait until
    slurmctld has started it again and that attempt has ended; its record then."""
    restarts = int(job_record(job)["Restarts"])
    slurm("scontrol", "requeue", job)
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        record = job_record(job)
        if int(record["Restarts"]) > restarts and record["JobState"] in ENDED:
            return record
        time.sleep(3)
    raise TimeoutError(f"job {job} requeued but not ended within {timeout_s:.0f} s: {job_record(job)}")


@dataclass
class Case:
    """One `python -m experiments -m hydra/launcher=slurm ...` running in the background."""

    name: str
    tmp: Path
    overrides: tuple[str, ...]
    proc: subprocess.Popen | None = None
    started: float = 0.0
    rc: int | None = None
    stdout: str = ""
    stderr: str = ""
    wall_s: float = 0.0
    events: dict = field(default_factory=dict)  # what a helper thread did, e.g. {"signalled": job}

    def start(self, env: dict) -> Case:
        self.tmp.mkdir(parents=True, exist_ok=True)
        cmd = cli_command(self.tmp, "-m", "hydra/launcher=slurm", "hydra.launcher.pending_report_s=10", *self.overrides)
        self.out, self.err = open(self.tmp / "stdout.txt", "w"), open(self.tmp / "stderr.txt", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, cwd=self.tmp, env=env, stdout=self.out, stderr=self.err, text=True)
        self.started = time.time()
        return self

    def wait(self, wait_s: float = WAIT_S) -> Case:
        """The launching command's end, within `wait_s` of its start. A case that runs out of time
        fails with what its processes were doing (`hang_report`); its jobs are cancelled and its
        command killed first, so that they do not hold the cluster for the next case."""
        if self.rc is None:
            try:
                self.rc = self.proc.wait(timeout=max(1, wait_s - (time.time() - self.started)))
            except subprocess.TimeoutExpired:
                report = self.hang_report()
                self.cancel()
                pytest.fail(f"{self.name}: the command did not end within {wait_s:.0f} s\n{report}", pytrace=False)
            self.wall_s = time.time() - self.started
            self.out.close(), self.err.close()
            self.stdout = (self.tmp / "stdout.txt").read_text()
            self.stderr = (self.tmp / "stderr.txt").read_text()
            print(f"{self.name}: exit {self.rc} after {self.wall_s:.0f} s")
        return self

    @property
    def sweep(self) -> Path:
        (sweep,) = self.tmp.glob("logs/*/multiruns/*")
        return sweep

    @property
    def array_job(self) -> str:
        """The SLURM job id of the sweep: submitit's folders are `<array>_<task>` (one job: `<job>`)."""
        ids = {p.name.split("_")[0] for p in (self.sweep / ".submitit").iterdir() if p.is_dir()}
        assert len(ids) == 1, ids
        return ids.pop()

    def slurm_id(self, n: int = 0) -> str:
        """Job n's SLURM id (`<array>_<n>`, or the job's own id in a sweep of one)."""
        names = {p.name for p in (self.sweep / ".submitit").iterdir() if p.is_dir()}
        return f"{self.array_job}_{n}" if f"{self.array_job}_{n}" in names else self.array_job

    def job(self, n: int = 0) -> Path:
        return self.sweep / str(n)

    def job_ids(self) -> list[str]:
        """The SLURM ids of this case's jobs so far (submitit's folders: `<job>` or `<array>_<task>`)."""
        return sorted({p.name for p in self.tmp.glob("logs/*/multiruns/*/.submitit/*") if p.is_dir()})

    def cancel(self) -> None:
        """Cancel this case's jobs and kill its launching command."""
        for job in {j.split("_")[0] for j in self.job_ids()}:
            subprocess.run(["scancel", job], env={**os.environ, "SLURM_CONF": str(SLURM_CONF)}, timeout=60)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=60)

    def hang_report(self) -> str:
        """For a case that did not end: its jobs as slurmctld holds them, the launching command's
        output, the jobs' logs (`evidence`), and every process of its jobs with its Python stack."""
        parts = [f"--- the launching command's stdout:\n{(self.tmp / 'stdout.txt').read_text()[-3000:]}"]
        parts.append(f"--- its stderr:\n{(self.tmp / 'stderr.txt').read_text()[-3000:]}")
        for job in self.job_ids():
            try:
                parts.append(f"--- scontrol show job {job}: {job_record(job)}")
            except (subprocess.SubprocessError, IndexError) as e:
                parts.append(f"--- scontrol show job {job}: {e}")
        # the stacks before the logs: `evidence` reads sacct, which waits up to 2 minutes for running jobs
        parts.append(python_stacks([job.split("_")[0] for job in self.job_ids()], self.proc.pid))
        try:
            parts.append(self.evidence())
        except Exception as e:  # noqa: BLE001 - the report goes on without it
            parts.append(f"--- evidence: {type(e).__name__}: {e}")
        return "\n".join(parts)

    def evidence(self, n: int = 0, chars: int = 4000) -> str:
        """What job n left, for a failure message: its FAILED/REQUEUED notes, every attempt's
        state, and the tails of its logs and of submitit's stdout/stderr of each task."""
        job = self.job(n)
        files = [job / "FAILED", job / "REQUEUED", *sorted(job.glob("*.log"))]
        files += sorted((self.sweep / ".submitit").glob("*/*_log.*"))
        parts = [f"attempts: {sacct(self.array_job, all_attempts=True)}"]
        parts += [f"--- {f}:\n{f.read_text(errors='replace')[-chars:]}" for f in files if f.is_file()]
        return "\n".join(parts)


def interrupt_when_training(case: Case, command: list[str] | Callable[[str], object]) -> None:
    """Once job 0 has finished its first epoch (its last.ckpt is written; two epochs of training are
    left), run `command + [<its SLURM job id>]` (or call `command(<job id>)`) once. Not on logged
    rows: the CSV is flushed at checkpoints and at the end of fit, so rows can appear only once
    training is over, and a signal after the run has finished requeues a finished job (found by CI:
    no REQUEUED, exit 0)."""
    deadline = time.time() + WAIT_S
    while time.time() < deadline and case.proc.poll() is None:
        if list(case.tmp.glob("logs/*/multiruns/*/0/checkpoints/last.ckpt")):
            job = case.slurm_id(0)
            command(job) if callable(command) else slurm(*command, job)
            case.events["signalled"] = (job, time.time())
            return
        time.sleep(0.5)


def processes() -> Iterator[tuple[int, dict[str, str], str]]:
    """(pid, environment, command line) of every process this user may read, in pid order; one that
    ends meanwhile is skipped. Both test nodes are this machine: a job's tasks are found here."""
    for environ in sorted(Path("/proc").glob("[0-9]*/environ"), key=lambda p: int(p.parent.name)):
        try:
            cmdline = (environ.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            raw = environ.read_bytes().decode(errors="replace")
        except OSError:
            continue  # ended meanwhile, or not ours to read
        yield int(environ.parent.name), dict(kv.split("=", 1) for kv in raw.split("\0") if "=" in kv), cmdline


def task_pids(job: str, rank: int) -> list[int]:
    """The processes of task `rank` (SLURM_PROCID) of job `job`'s running step: the run itself and
    its data-loader workers, found by their environment."""
    return [
        pid
        for pid, env, cmdline in processes()
        if "submitit.core._submit" in cmdline
        and env.get("SLURM_JOB_ID") == job
        and env.get("SLURM_PROCID") == str(rank)
    ]


def python_stacks(jobs: list[str], launcher: int | None = None) -> str:
    """Every process of SLURM jobs `jobs` (by SLURM_JOB_ID or SLURM_ARRAY_JOB_ID in its environment)
    and the launching command: its state, what it waits in, and its Python threads' stacks (py-spy,
    where installed: the test extra has it)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    lines = []
    for pid, env, cmdline in processes():
        if pid != launcher and not {env.get("SLURM_JOB_ID"), env.get("SLURM_ARRAY_JOB_ID")} & set(jobs):
            continue
        try:
            status = dict(ln.split(":", 1) for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in ln)
            wchan = Path(f"/proc/{pid}/wchan").read_text()
        except OSError:
            continue
        rank = env.get("SLURM_PROCID", "-")
        lines.append(f"--- pid {pid} (ppid {status['PPid'].strip()}, rank {rank}, {status['State'].strip()}, "
                     f"waits in {wchan or '-'}): {cmdline[:300]}")  # fmt: skip
        if "python" in cmdline and os.path.exists(spy):
            try:
                dump = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30)
                lines.append((dump.stdout + dump.stderr).strip()[-4000:])
            except subprocess.SubprocessError as e:
                lines.append(f"py-spy: {e}")
    return "\n".join(lines) if lines else "--- no process of the jobs is left"
