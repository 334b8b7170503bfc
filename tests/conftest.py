"""Shared fixtures: the real config tree composed with Hydra. Helpers live in tests/helpers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import experiments
from experiments import resolvers

resolvers.register()  # what the entry point (experiments.__main__) does

sys.path.insert(0, str(Path(__file__).parent / "helpers"))  # formats.py, wandb_reader.py, inprocess.py

if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest-xdist runs a worker per core: one thread each, or
    os.environ["OMP_NUM_THREADS"] = "1"  # their thread pools (and those of the CLIs they start) fight
    torch.set_num_threads(1)  # over the same cores and every test runs several times slower


@pytest.fixture(scope="session", autouse=True)
def offline_environment(tmp_path_factory):
    """Every test runs away from any network or account: W&B offline (its caches in a temp dir),
    the Hugging Face hub offline. Subprocesses get the same from tests/helpers/cli.py."""
    from cli import offline

    saved = dict(os.environ)
    os.environ.update(offline(tmp_path_factory.mktemp("wandb")))
    os.environ.pop("WANDB_API_KEY", None)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(autouse=True)
def reviewed_figures(monkeypatch):
    """Every figure a test saves is reviewed as it is saved (helpers/figure_review.py): axis labels,
    titles, colour scales, integer epochs, legends off the data. A figure that fails fails the test
    that made it, naming the file; the list of what was reviewed is this fixture's value."""
    from figure_review import figure_problems
    from matplotlib.figure import Figure

    seen: list[str] = []
    problems: list[str] = []
    savefig = Figure.savefig

    def reviewed(fig, fname, *args, **kwargs):
        seen.append(str(fname))
        problems.extend(f"{Path(str(fname)).name}: {p}" for p in figure_problems(fig))
        return savefig(fig, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", reviewed)
    yield seen
    if problems:
        pytest.fail("figures a reviewer would send back:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture
def run_experiment(tmp_path):
    """run_experiment(*overrides) -> (exit code, run folder): one job in this process (helpers/inprocess.py)."""
    from inprocess import run_experiment as run

    return lambda *overrides: run(tmp_path, *overrides)


@pytest.fixture
def compose_cfg():
    """compose_cfg(*overrides) -> the composed DictConfig (Hydra's own keys included)."""

    def _compose(*overrides: str):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=experiments.config_dir(), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture
def no_waiting(monkeypatch):
    """What "fails fast" means, without a clock: no network connection is opened and nothing
    sleeps (a retry loop waits between attempts). Yields the list of attempts; a test asserts it is
    empty after the call that must fail at once. (Speed itself is measured in benchmarks/.)"""
    import socket
    import time

    attempts: list[str] = []

    def connect(sock, address, *args, **kwargs):
        attempts.append(f"connect {address}")
        raise OSError("no network in this test")

    def sleep(seconds):
        attempts.append(f"sleep {seconds}")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(time, "sleep", sleep)
    yield attempts
