import socket

import pytest
import yaml

from experiments import loggers
from experiments.sweep import write_summary


@pytest.fixture
def no_login(monkeypatch, tmp_path):
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # an empty ~/.netrc


def test_offline_without_login(no_login):
    assert loggers.wandb_mode(None) == "offline"


def test_wandb_mode_env_and_config_win(no_login, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert loggers.wandb_mode(None) == "disabled"
    assert loggers.wandb_mode(True) == "offline"
    assert loggers.wandb_mode(False) == "online"


def test_logged_in_but_unreachable_goes_offline_quickly(no_login, monkeypatch):
    # a key is set, but the W&B host is a closed local port: offline, not a 100 s hang
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    assert loggers.wandb_mode(None) == "offline"


def test_logged_in_and_reachable_goes_online(no_login, monkeypatch, tmp_path):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        host = f"http://127.0.0.1:{server.getsockname()[1]}"
        (tmp_path / ".netrc").write_text(f"machine 127.0.0.1\n  login user\n  password {'k' * 40}\n")
        (tmp_path / ".netrc").chmod(0o600)
        monkeypatch.setenv("WANDB_BASE_URL", host)
        assert loggers.wandb_logged_in()
        assert loggers.wandb_mode(None) == "online"


def record(metrics, wall_time_s=1.0, optimized_metric="test/x"):
    """A finished job's metrics.json, through its schema (experiments.record.RunRecord)."""
    from experiments.record import RunRecord

    return RunRecord(
        task="vae", status="ok", metrics=metrics, optimized_metric=optimized_metric, best_checkpoint=None,
        epochs=1, global_step=10, wall_time_s=wall_time_s,
    )  # fmt: skip


def make_job(sweep, num, overrides, metrics=None, failed=None):
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if metrics is not None:
        record(metrics, wall_time_s=1.5, optimized_metric="test/neg_elbo").write(job)
    if failed:
        (job / "FAILED").write_text(failed + "\ntraceback...")


def test_sweep_summary_lists_every_job(tmp_path):
    make_job(tmp_path, 0, ["model.latent_dim=2"], {"test/neg_elbo": 30.5, "val/kl": 4.0})
    make_job(tmp_path, 1, ["model.latent_dim=8"], {"test/neg_elbo": 25.25, "val/kl": 9.0})
    make_job(tmp_path, 2, ["model.latent_dim=0"], failed="ConfigError: model.latent_dim must be a positive integer")
    make_job(tmp_path, 10, ["model.latent_dim=16"], {"test/neg_elbo": 20.0})
    rows = write_summary(tmp_path)
    assert [r["job"] for r in rows] == ["0", "1", "2", "10"]
    csv_text = (tmp_path / "summary.csv").read_text().splitlines()
    assert csv_text[0].split(",")[:4] == ["job", "status", "overrides", "wall_time_s"]
    assert "model.latent_dim=8" in csv_text[2] and "25.25" in csv_text[2]
    md = (tmp_path / "summary.md").read_text()
    assert "test/neg_elbo" in md and "val/kl" not in md
    assert "failed: ConfigError: model.latent_dim" in md


def test_sweep_summary_shows_the_objective_even_when_it_is_not_a_test_metric(tmp_path):
    for i, fill in enumerate(["zero", "mean"]):
        job = tmp_path / str(i)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"callbacks.patch_masking.fill={fill}"]))
        metrics = {"masking/random/agreement_auc": 0.5 + i / 10, "rollout/entropy": 4.0}
        record(metrics, wall_time_s=1.0, optimized_metric="masking/random/agreement_auc").write(job)
    write_summary(tmp_path)
    md = (tmp_path / "summary.md").read_text()
    assert md.splitlines()[0] == "| job | status | overrides | wall_time_s | masking/random/agreement_auc |"
    assert md.splitlines()[3] == "| 1 | ok | callbacks.patch_masking.fill=mean | 1 | 0.6 |"  # job 1 and its objective


def test_sweep_summary_names_jobs_refused_before_their_record_and_those_never_started(tmp_path):
    """A job whose setting is refused before it writes its record (trainer.max_epochs=-5) has only
    FAILED: its overrides come from what the sweep planned (sweep.yaml), and the jobs a kill kept
    from starting are listed too."""
    from experiments.sweep import collect_jobs

    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({"jobs": [["a=1"], ["a=2"], ["a=3"]]}))
    (tmp_path / "0" / ".hydra").mkdir(parents=True)
    (tmp_path / "0" / ".hydra" / "overrides.yaml").write_text("- a=1\n")
    record({"test/x": 1.0}).write(tmp_path / "0")
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "FAILED").write_text("error: trainer.max_epochs must be a positive integer\n")
    rows = [(r["job"], r["overrides"], r["status"]) for r in collect_jobs(tmp_path)]
    assert rows == [
        ("0", "a=1", "ok"),
        ("1", "a=2", "failed: trainer.max_epochs must be a positive integer"),
        ("2", "a=3", "not started"),
    ]


def test_tables_reach_each_logger_at_the_trainers_step():
    """A run resumed with no epoch left analyses before it logs anything else: a table logged at the
    logger's own last step (0 in that process) would land below the W&B run's step, and W&B drops it."""
    from types import SimpleNamespace

    from analysis.evidence import log_table

    calls = []

    class Charting:
        def log_chart(self, *args, step=None):
            calls.append(("chart", step))

    class Tabling:
        def log_table(self, key, columns, data, step=None):
            calls.append(("table", step))

    import tempfile

    with tempfile.TemporaryDirectory() as root:
        trainer = SimpleNamespace(default_root_dir=root, is_global_zero=True, global_step=1290)
        trainer.loggers = [Charting(), Tabling()]
        log_table(trainer, "lesion/single_block", ["block", "acc"], [[0, 0.5]], chart=("block", "acc", "t"))
    assert calls == [("chart", 1290), ("table", 1290)]
