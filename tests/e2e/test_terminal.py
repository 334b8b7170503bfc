"""A terminal that tells the truth: a resnet smoke run is never silent for long (slow: it asserts a
wall-clock gap, on a machine whose load decides it; run with -m slow)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from cli import offline

SCRIPT = Path(__file__).parents[2] / "scripts" / "terminal_gaps.py"


@pytest.mark.slow
def test_a_resnet_smoke_run_is_never_silent_for_15_s(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("terminal_gaps", SCRIPT)
    gaps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gaps)
    monkeypatch.chdir(tmp_path)
    import os

    env = dict(os.environ, **offline(tmp_path / "wandb"))
    # ResNet-18 at 32 px: the default ResNet-152 at 224 px takes many minutes on a CPU (each line still comes)
    argv = [
        "task=resnet",
        "debug=smoke",
        "model.arch=resnet18",
        "model.weights=null",
        "data.image_size=32",
        "logger=csv",
    ]
    result = gaps.gaps(argv, env=env)
    assert result["returncode"] == 0, result
    assert result["longest_gap_s"] <= 15, result
