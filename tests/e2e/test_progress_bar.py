"""The training progress line says what picks the checkpoint: each epoch's finished line shows the
monitored metric and the best value so far, this epoch's included."""

from __future__ import annotations

import math
import re

import pytest
import torch
from inprocess import run_experiment
from lightning.pytorch.callbacks import ModelCheckpoint

from experiments.progress import _best


def test_each_epochs_line_shows_the_best_monitor_value_so_far_this_epoch_included(tmp_path, capfd):
    code, _ = run_experiment(
        tmp_path,
        "task=vae",
        "debug=smoke",
        "data.synthetic_size=256",
        "trainer.limit_train_batches=4",
        "trainer.max_epochs=4",
        "logger=csv",
        "trainer.enable_progress_bar=true",
    )
    assert code == 0
    out = capfd.readouterr().out
    last: dict[int, str] = {}  # each epoch's last redraw: its finished line
    for segment in re.split(r"[\r\n]", out):
        if m := re.match(r"Epoch (\d+)/4: 100%", segment.strip()):
            last[int(m.group(1))] = segment
    assert sorted(last) == [1, 2, 3, 4], out[-3000:]
    # each training step is drawn once (Lightning drew the count, then the values: every step twice in a log)
    first_step = [s for s in re.split(r"[\r\n]", out) if re.match(r"Epoch 1/4:.*\| 1/\d+ ", s.strip())]
    assert len(first_step) == 1, first_step
    values, bests = [], []
    for epoch in sorted(last):
        m = re.search(r"val/neg_elbo=([-\d.e+]+), best=([-\d.e+]+)", last[epoch])
        assert m, last[epoch]
        values.append(float(m.group(1)))
        bests.append(float(m.group(2)))
    assert bests == [min(values[: i + 1]) for i in range(len(values))], (values, bests)
    # the case that tells a stale best from a right one: an epoch that improved on every epoch before it
    assert any(values[i] < min(values[:i]) for i in range(1, len(values))), values


@pytest.mark.parametrize("mode", ["min", "max"])
def test_the_best_is_not_shown_as_infinite_after_nan_validations(tmp_path, mode):
    """Lightning's ModelCheckpoint keeps a NaN validation as the worst value there is (inf or -inf): the bar
    shows no best until a real value comes, then that value (it showed best=inf, then the real one)."""
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="val/loss", mode=mode, save_top_k=1)
    nan, value = torch.tensor(float("nan")), torch.tensor(0.5)
    assert _best(checkpoint, "val/loss", nan) is None  # no validation taken in yet
    checkpoint.best_model_score = torch.tensor(math.inf if mode == "min" else -math.inf)  # what a NaN left
    assert _best(checkpoint, "val/loss", nan) is None
    assert _best(checkpoint, "val/loss", value) == 0.5
    checkpoint.best_model_score = torch.tensor(0.25)
    assert _best(checkpoint, "val/loss", nan) == 0.25
    assert _best(checkpoint, "val/loss", value) == (0.25 if mode == "min" else 0.5)
    assert _best(checkpoint, "val/other", value) is None  # another metric picks the checkpoint
