"""The figure review every test's figures go through (helpers/figure_review.py, run from conftest.py)
finds what a reviewer would send back, and passes the framework's own figures."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from figure_review import figure_problems

from analysis import figures


def test_the_review_finds_unlabelled_axes_fractional_epochs_bare_heat_maps_and_covering_legends():
    fig, (a, b) = plt.subplots(1, 2)
    a.plot([1, 1.5, 2], [0.1, 0.5, 0.9], label="val")
    a.set_xlabel("epoch")
    a.legend(loc="center")  # right over the middle point
    b.imshow(np.random.default_rng(0).random((4, 4)), cmap="viridis")
    problems = "\n".join(figure_problems(fig))
    assert "no title" in problems
    assert "the y axis has ticks but no label" in problems and "the x axis has ticks but no label" in problems
    assert "fractional epoch ticks" in problems and "a heat map without a colour scale" in problems
    assert "the legend covers 1 data points" in problems
    plt.close(fig)


def test_the_framework_figures_pass_the_review():
    rng = np.random.default_rng(0)
    made = [
        figures.curves({"loss": {"train": [3.0, 2.0, 1.5], "val": [3.2, 2.5, 2.0]}}, title="t", ylabels="nats"),
        figures.confusion_figure(rng.integers(0, 9, (3, 3)), ["a", "b", "c"], title="t"),
        figures.overlay_grid(rng.random((2, 3, 8, 8)), {"rollout": rng.random((2, 2, 2))}, ["x", "y"], title="t"),
        figures.matrix_figure(
            rng.random((2, 3)), ["l1", "l2"], ["h1", "h2", "h3"], "t", colorbar="nats", xlabel="head", ylabel="layer"
        ),  # fmt: skip
        figures.image_grid(rng.random((4, 1, 5, 5)), 2, "t", [-1.0, 1.0], [1.0, -1.0], ("z1", "z2")),
    ]
    for fig in made:
        assert figure_problems(fig) == []
        plt.close(fig)
