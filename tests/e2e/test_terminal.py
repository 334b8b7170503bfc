"""A terminal that tells the truth: a resnet smoke run is never silent for long (slow: it asserts a
wall-clock gap, on a machine whose load decides it; run with -m slow)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from cli import offline

SCRIPT = Path(__file__).parents[2] / "scripts" / "terminal_gaps.py"


def _longest_silence(tmp_path, monkeypatch, argv: list[str]) -> dict:
    spec = importlib.util.spec_from_file_location("terminal_gaps", SCRIPT)
    gaps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gaps)
    monkeypatch.chdir(tmp_path)
    import os

    return gaps.gaps(argv, env=dict(os.environ, **offline(tmp_path / "wandb")))


@pytest.mark.slow
def test_a_resnet_smoke_run_is_never_silent_for_15_s(tmp_path, monkeypatch):
    # ResNet-18 at 32 px, every analysis as debug=smoke runs it (the lesion sweep's 200 test passes of the
    # default ResNet-152 take tens of minutes on a CPU: its lines come, see the test below)
    argv = [
        "task=resnet",
        "debug=smoke",
        "model.arch=resnet18",
        "model.weights=null",
        "data.image_size=32",
        "logger=csv",
    ]
    result = _longest_silence(tmp_path, monkeypatch, argv)
    assert result["returncode"] == 0, result
    assert result["longest_gap_s"] <= 15, result


@pytest.mark.slow
def test_the_default_resnet_152_at_224_px_is_never_silent_for_15_s(tmp_path, monkeypatch):
    """The task's default architecture and image size, random weights: each backbone batch takes seconds on
    idle CPU cores and tens of seconds on busy ones, so this holds by the heartbeat as much as by the work's
    own lines. Batches of 8 and no lesion sweep keep it near a minute on two idle cores."""
    argv = [
        "task=resnet",
        "debug=smoke",
        "model.weights=null",
        "data.batch_size=8",
        "data.eval_batch_size=8",
        "~callbacks.lesion_sweep",
        "logger=csv",
    ]
    result = _longest_silence(tmp_path, monkeypatch, argv)
    assert result["returncode"] == 0, result
    assert result["longest_gap_s"] <= 15, result


def test_the_test_pass_line_ends_before_the_analyses_and_the_results_table(tmp_path, capfd, monkeypatch):
    """Lightning closes its Testing bar in on_test_end, after every analysis's on_test_epoch_end work:
    its last redraw then came after analysis output and counted it as test time. Ours ends with the
    test pass, once, and the results table follows it."""
    from inprocess import run_experiment

    from analysis.vae_callbacks import VAEFigures

    analyse = VAEFigures.on_test_epoch_end

    def saying(self, trainer, pl_module):  # an analysis that prints as it starts, as the resnet and CLIP ones do
        print("analysis: starting", flush=True)
        analyse(self, trainer, pl_module)

    monkeypatch.setattr(VAEFigures, "on_test_epoch_end", saying)
    code, _ = run_experiment(
        tmp_path, "task=vae", "debug=smoke", "data.synthetic_size=64", "logger=csv", "trainer.enable_progress_bar=true"
    )
    assert code == 0
    out = capfd.readouterr().out
    bar, analysis, table = (
        out.rfind("Testing DataLoader 0: 100%"),
        out.find("analysis: starting"),
        out.find("Test metric"),
    )
    assert 0 <= bar < analysis < table, out[-3000:]
    assert out[bar:analysis].count("\n") == 1, out[bar:analysis]  # the finished bar's line, once
