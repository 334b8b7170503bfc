"""Each private API src/private_api.py uses, checked against the installed library: an upgrade that
moves or renames one fails here, naming it, instead of silently changing what a run does."""

from __future__ import annotations

import inspect

import pytest
import torch

import private_api


def test_lightning_graceful_stop_flag_is_the_one_its_sigterm_handler_sets():
    from lightning.pytorch import Trainer
    from lightning.pytorch.trainer.connectors.signal_connector import _SignalConnector

    assert "received_sigterm" in inspect.getsource(_SignalConnector), (
        "Lightning's _SignalConnector no longer has received_sigterm: private_api.request_graceful_stop must change"
    )
    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    assert trainer._signal_connector.received_sigterm is False
    private_api.request_graceful_stop(trainer)
    assert trainer._signal_connector.received_sigterm is True


def test_lightning_fit_loop_stops_on_that_flag():
    """The flag is read where a step ends: Lightning raises SIGTERMException there."""
    from lightning.pytorch.loops import fit_loop, training_epoch_loop

    sources = inspect.getsource(fit_loop) + inspect.getsource(training_epoch_loop)
    assert "received_sigterm" in sources and "SIGTERMException" in sources, (
        "Lightning's loops no longer stop on _signal_connector.received_sigterm: a kill would not checkpoint"
    )


def test_lightning_sigterm_handler_is_taken_back_to_the_one_it_replaced():
    """The trainer keeps the handlers it replaced (and restores them at teardown): SIGTERM goes back
    to the run's own, away from Lightning's, which broadcasts inside the handler."""
    import signal

    from lightning.pytorch import Trainer

    def ours(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, ours)
    try:
        trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
        trainer._signal_connector.register_signal_handlers()
        assert signal.getsignal(signal.SIGTERM) is not ours, "Lightning no longer installs its SIGTERM handler"
        private_api.take_back_sigterm(trainer)
        assert signal.getsignal(signal.SIGTERM) is ours
        trainer._signal_connector.teardown()
        assert signal.getsignal(signal.SIGTERM) is ours
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_wandb_logger_init_arguments_and_prefix(tmp_path):
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(save_dir=str(tmp_path), offline=True, prefix="p")
    assert isinstance(getattr(logger, "_wandb_init", None), dict), "WandbLogger._wandb_init is gone"
    assert "anonymous" in logger._wandb_init
    private_api.drop_wandb_init_argument(logger, "anonymous")
    assert "anonymous" not in logger._wandb_init
    assert private_api.logger_prefix(logger) == "p"


def test_csv_logger_appends_to_the_metrics_of_an_earlier_attempt(tmp_path):
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter

    assert hasattr(ExperimentWriter, "_check_log_dir_exists"), "ExperimentWriter._check_log_dir_exists is gone"
    cls = private_api.appending_csv_logger_class()
    first = cls(save_dir=str(tmp_path), name="csv", version="")
    first.log_metrics({"a": 1.0}, step=0)
    first.save()
    second = cls(save_dir=str(tmp_path), name="csv", version="")
    second.log_metrics({"a": 2.0}, step=1)
    second.save()
    rows = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",") == ["a", "step"] and len(rows) == 3  # the first attempt's row stays


def test_hydra_basic_sweeper_expansion():
    assert private_api.basic_sweeper_jobs(["a=1,2", "b=x"]) == [["a=1", "b=x"], ["a=2", "b=x"]]


def test_open_clip_vision_tower_builder():
    import open_clip

    cfg = open_clip.get_model_config("ViT-B-32")
    assert cfg is not None
    small = dict(cfg["vision_cfg"], width=64, layers=1, patch_size=16, image_size=32, head_width=32)
    tower = private_api.open_clip_vision_tower(cfg["embed_dim"], small)
    assert tower(torch.zeros(1, 3, 32, 32)).shape == (1, cfg["embed_dim"])


def test_hydra_job_return_keeps_the_failed_jobs_exception():
    from hydra.core.utils import JobReturn, JobStatus

    error = ValueError("boom")
    ret = JobReturn(overrides=[], status=JobStatus.FAILED)
    ret.return_value = error  # the public setter
    assert private_api.failed_job_exception(ret) is error
    assert private_api.failed_job_exception(JobReturn(status=JobStatus.COMPLETED)) is None


def test_nothing_else_in_src_touches_a_private_api():
    """The modules that used one now call private_api; a new use elsewhere should go there too."""
    import re
    from pathlib import Path

    src = Path(private_api.__file__).parent
    pattern = re.compile(
        r"\._signal_connector|\._wandb_init\b|_check_log_dir_exists|\b_build_vision_tower|hydra\._internal"
        r"|\._return_value|_return_value=|study\._storage|study\._study_id|trial\._trial_id|\._attn_implementation"
        r"|self\._prefix\b"
    )
    offenders = [
        f"{p.relative_to(src)}:{n}"
        for p in src.rglob("*.py")
        if p.name != "private_api.py"
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not offenders, f"private API used outside src/private_api.py: {offenders}"


@pytest.mark.parametrize("name", [n for n, f in vars(private_api).items() if inspect.isfunction(f)])
def test_every_function_here_is_tested(name):
    tested = inspect.getsource(inspect.getmodule(test_every_function_here_is_tested))
    assert f"private_api.{name}(" in tested, f"private_api.{name} has no test in this file"
