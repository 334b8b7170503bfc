"""The SLURM path through a real one-node SLURM cluster (scripts/slurm_cluster.sh; marked `slurm`).

Every case goes through real `sbatch` with `hydra/launcher=slurm` and only the partition named.
The cluster has 2 CPUs, so the cases are launched together when the module starts (SLURM queues
their jobs; the ones that preempt or requeue a job do so from a thread once it trains) and each
test waits for its own and checks what it left: sacct states, folders, exit codes, W&B run ids.

    .venv/bin/python -m pytest -m slurm -n 0 tests/e2e/test_slurm.py     # as root; 10-16 min here

Skipped, with the reason, where the cluster cannot be started (not Linux, not root, no apt-get
to install SLURM).
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from datetime import datetime

import pytest
from cli import cli_command, cli_env
from slurm_cluster import SCRIPT, SLURM_CONF, Case, interrupt_when_training, sacct, why_no_cluster

pytestmark = pytest.mark.slurm

SMOKE = ("task=vae", "debug=smoke", "hydra.launcher.partition=debug")  # only the partition named
TRAINS = (  # long enough (a few hundred steps) to be preempted while it trains
    "task=vae", "data.synthetic=true", "data.synthetic_size=1000", "data.batch_size=16", "trainer.max_epochs=3",
    "hydra.launcher.partition=debug",
)  # fmt: skip


CASES = {
    # with only the partition named: the default trainer, W&B (offline) on
    "sweep": SMOKE + ("model.latent_dim=2,4",),
    # job 1 is a config mistake (exit 2): FAILED in sacct, job 0 finishes, the command says which failed
    "failing": SMOKE + ("logger=csv", "trainer.max_epochs=1,-5"),
    # preemption, submitit's way (USR2 to the job's step) and SLURM's own (scontrol requeue: SIGTERM)
    "usr2": TRAINS,
    "requeue": TRAINS,
    # a 3-minute limit, USR2 60 s before it (SLURM may send it up to a minute earlier still, but
    # not before the run is up), one requeue allowed: the second time the job fails
    "time_limit": TRAINS[:-2]
    + (
        "trainer.max_epochs=1000",
        "logger=csv",
        "hydra.launcher.partition=debug",
        "hydra.launcher.timeout_min=3",
        "hydra.launcher.signal_delay_s=60",
        "hydra.launcher.max_num_timeout=1",
    ),  # fmt: skip
    # 2 tasks on the node under DDP (gloo on the CPU): one run folder
    "ddp": SMOKE
    + (
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.precision=32-true",
        "trainer.sync_batchnorm=false",
    ),  # fmt: skip
    # an Optuna search, 3 trials at once
    "optuna": (
        "hparams_search=vae_optuna",
        "debug=smoke",
        "logger=csv",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.n_jobs=3",
        "hydra.launcher.partition=debug",
    ),  # fmt: skip
    # an array of 6 small jobs, 2 at a time
    "array": SMOKE + ("logger=csv", "model.latent_dim=2,3,4,5,6,7", "hydra.launcher.array_parallelism=2"),
}
INTERRUPTS = {"usr2": ["scancel", "--signal=USR2"], "requeue": ["scontrol", "requeue"]}
# first in the queue: the job that needs the whole node, then the longest (attempts, requeue waits)
FIRST = ("ddp", "time_limit", "usr2", "requeue")


@pytest.fixture(scope="module")
def cluster():
    """The test cluster, started (and stopped afterwards) unless it was already up."""
    reason = why_no_cluster()
    if reason:
        pytest.skip(reason)
    was_up = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True).returncode == 0
    t0 = time.time()
    proc = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"scripts/slurm_cluster.sh start failed: {proc.stdout[-1500:]}{proc.stderr[-1500:]}")
    print(f"cluster up in {time.time() - t0:.1f} s: {proc.stdout.strip()}")
    yield
    if not was_up:
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def cases(cluster, tmp_path_factory, request):
    """Every case the selected tests need (`@pytest.mark.case(name)`), launched at once; each test
    waits for its own (`-k usr2` runs one case alone)."""
    wanted = {m.args[0] for item in request.session.items for m in item.iter_markers("case")}
    launched = {}
    for name in [n for n in [*FIRST, *(n for n in CASES if n not in FIRST)] if n in wanted]:
        tmp = tmp_path_factory.mktemp(name)
        env = cli_env(tmp, SLURM_CONF=str(SLURM_CONF))
        case = launched[name] = Case(name, tmp, CASES[name]).start(env)
        if name in INTERRUPTS:
            threading.Thread(target=interrupt_when_training, args=(case, INTERRUPTS[name]), daemon=True).start()
        while name in FIRST and not list(tmp.glob("logs/*/multiruns/*/.submitit/*")) and case.proc.poll() is None:
            time.sleep(0.5)  # in the queue before the next is launched
    yield launched
    for case in launched.values():
        if case.proc.poll() is None:  # a case no test waited for: its command and its jobs go
            case.cancel()


def no_logging_errors(case: Case) -> None:
    logs = [*case.sweep.glob("*/*.log"), *case.sweep.glob(".submitit/*/*")]
    text = "".join(p.read_text(errors="replace") for p in logs if p.is_file() and p.suffix in (".log", ".out", ".err"))
    assert "--- Logging error ---" not in text and "reentrant call" not in text


@pytest.mark.case("sweep")
def test_a_sweep_with_only_the_partition_named_runs_on_the_cluster(cases):
    case = cases["sweep"].wait()
    assert case.rc == 0, case.stderr[-3000:]
    assert "1 node(s) x 1 task(s), 1 CPU(s) per task, 0 GPU(s) and 8 GB per node" in case.stdout
    rows = sacct(case.array_job)
    assert sorted(r["state"] for r in rows) == ["COMPLETED", "COMPLETED"], rows
    for n in (0, 1):
        assert json.loads((case.job(n) / "metrics.json").read_text())["status"] == "ok"
        assert list(case.job(n).glob("wandb/offline-run-*")), "the default logger: W&B, offline"
    assert (case.sweep / "summary.md").read_text().count("| ok |") == 2


@pytest.mark.case("failing")
def test_a_failed_job_is_failed_in_sacct_the_other_finishes_and_the_command_names_it(cases):
    case = cases["failing"].wait()
    assert case.rc == 1, case.stderr[-3000:]
    assert f"error: 1 of 2 jobs failed: {case.job(1) / 'FAILED'}" in case.stderr
    states = {r["id"]: (r["state"], r["exit"]) for r in sacct(case.array_job)}
    assert states == {case.slurm_id(0): ("COMPLETED", "0:0"), case.slurm_id(1): ("FAILED", "2:0")}, states
    assert (case.job(0) / "metrics.json").is_file() and not (case.job(1) / "metrics.json").exists()
    assert (case.job(1) / "FAILED").read_text().startswith("error: trainer.max_epochs must be a positive integer")
    summary = (case.sweep / "summary.md").read_text()
    assert "| 0 | ok |" in summary and "| 1 | failed: trainer.max_epochs" in summary


def check_requeued_and_finished(case: Case, how: str, first_exit_code: int) -> None:
    assert case.rc == 0, case.stderr[-3000:]
    assert "signalled" in case.events, "the job was never seen training"
    job = case.job(0)
    assert (case.sweep / "summary.md").is_file()
    result = json.loads((job / "metrics.json").read_text())
    assert result["status"] == "ok" and result["epochs"] == 3
    assert not (job / "FAILED").exists()  # requeued is not failed
    (note,) = (job / "REQUEUED").read_text().splitlines()
    assert how in note and "continues from checkpoints/last.ckpt" in note
    log = (job / "run.log").read_text()
    assert how in log and "resuming the run in" in log
    assert "| ok | 1 |" in (case.sweep / "summary.md").read_text()  # status, requeues
    attempts = [r["state"] for r in sacct(case.array_job, all_attempts=True)]
    assert attempts == ["REQUEUED", "COMPLETED"], attempts
    # every attempt logged into one W&B run; the interrupted one closed with its exit code
    from wandb_reader import read_run

    run_id = (job / "wandb_run_id").read_text().strip()
    runs = sorted(job.glob("wandb/offline-run-*"))
    assert len(runs) >= 2 and all(r.name.endswith(run_id) for r in runs), runs
    codes = [read_run(r)["exit_code"] for r in runs]
    assert first_exit_code in codes[:-1] and codes[-1] == 0, codes  # the interrupted attempt, then the last
    no_logging_errors(case)


@pytest.mark.case("usr2")
def test_a_job_preempted_with_usr2_is_requeued_and_finishes_in_its_folder_and_wandb_run(cases):
    case = cases["usr2"].wait()
    check_requeued_and_finished(case, "requeued by submitit", 128 + 12)


@pytest.mark.case("requeue")
def test_a_job_requeued_by_slurm_finishes_in_its_folder_and_wandb_run(cases):
    case = cases["requeue"].wait()
    check_requeued_and_finished(case, "requeued by SLURM", 128 + 15)
    assert "exit code 143 recorded by a new service" in (case.job(0) / "run.log").read_text()


@pytest.mark.case("time_limit")
def test_a_time_limit_requeues_until_max_num_timeout_then_the_job_fails_with_its_checkpoint(cases):
    case = cases["time_limit"].wait()
    assert case.rc == 1, case.stderr[-3000:]
    job = case.job(0)
    assert f"error: 1 of 1 jobs failed: {job / 'FAILED'}" in case.stderr
    failed = (job / "FAILED").read_text().splitlines()[0]
    assert failed.startswith("killed by SIGUSR2 (Job not requeued because: timed-out too many times)"), failed
    assert f"resume with: python -m experiments resume={job}" in failed
    assert (job / "checkpoints" / "last.ckpt").is_file()
    assert len((job / "REQUEUED").read_text().splitlines()) == 1  # max_num_timeout=1: one requeue, then no more
    assert "resuming the run in" in (job / "run.log").read_text()  # the second attempt went on from the first
    attempts = [(r["state"], r["derived"]) for r in sacct(case.array_job, all_attempts=True)]
    # the run's exit is 140 (128 + USR2): sacct's DerivedExitCode says so (its ExitCode reads 12:0)
    assert attempts == [("REQUEUED", "0:0"), ("FAILED", "140:0")], attempts
    assert "ended" in case.stdout + case.stderr  # the launching command saw the job end without a result
    no_logging_errors(case)


@pytest.mark.case("ddp")
def test_two_tasks_on_a_node_under_ddp_share_one_folder_and_agree_on_the_metric(cases):
    case = cases["ddp"].wait()
    assert case.rc == 0, case.stderr[-3000:]
    assert "1 node(s) x 2 task(s), 1 CPU(s) per task" in case.stdout
    assert sorted(p.name for p in case.sweep.iterdir() if not p.name.startswith(".") and p.is_dir()) == ["0"]
    logs = {p.name: p.read_text() for p in case.job(0).glob("run*.log")}
    assert set(logs) == {"run.log", "run_rank1.log"}
    values = [re.search(rf"rank {r}: test/neg_elbo = (\S+)", logs[name]) for r, name in enumerate(sorted(logs))]
    assert all(values) and values[0].group(1) == values[1].group(1), values
    assert "W&B mode" in logs["run.log"] and "W&B" not in logs["run_rank1.log"]  # rank 0 alone logs to W&B
    assert [r["state"] for r in sacct(case.array_job)] == ["COMPLETED"]


@pytest.mark.case("optuna")
def test_an_optuna_search_runs_its_trials_as_slurm_jobs(cases):
    case = cases["optuna"].wait()
    assert case.rc == 0, case.stderr[-3000:]
    import optuna

    from hydra_plugins.experiments_search.optuna_sweeper import journal_storage

    study = optuna.load_study(study_name="search", storage=journal_storage(case.sweep / "optuna.journal"))
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert (case.sweep / "summary.md").read_text().startswith("## Optuna search: 3 trials (3 complete)")
    assert sorted(r["state"] for r in sacct(case.array_job)) == ["COMPLETED"] * 3


@pytest.mark.case("array")
def test_an_array_of_many_small_jobs_runs_at_most_array_parallelism_at_once(cases):
    case = cases["array"].wait()
    assert case.rc == 0, case.stderr[-3000:]
    rows = sacct(case.array_job)
    assert len(rows) == 6 and {r["state"] for r in rows} == {"COMPLETED"}, rows
    spans = [(datetime.fromisoformat(r["start"]), datetime.fromisoformat(r["end"])) for r in rows]
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most <= 2, spans  # array_parallelism=2
    assert "waiting for SLURM:" in case.stdout  # the pending jobs' reason, while they waited
    assert (case.sweep / "summary.md").read_text().count("| ok |") == 6


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("hydra.launcher.cpus_per_task=64", "hydra.launcher.cpus_per_task"),
        ("hydra.launcher.mem_gb=4096", "hydra.launcher.mem_gb"),
        ("trainer=gpu", "trainer.devices"),
        ("hydra.launcher.partition=nowhere", "hydra.launcher.partition=nowhere"),
    ],
)
def test_a_request_no_node_can_meet_is_one_line_naming_the_key_and_nothing_is_submitted(
    cluster, tmp_path, override, key
):
    env = cli_env(tmp_path, SLURM_CONF=str(SLURM_CONF))
    cmd = cli_command(tmp_path, "-m", "hydra/launcher=slurm", *SMOKE, override)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and key in line, line
    assert not list(tmp_path.glob("logs/*/multiruns/*/.submitit/*"))  # nothing was submitted
