"""scripts/clip_gap_report.py draws the README's CLIP report figures from the report it wrote
(docs/clip_fashion_mnist/metrics.json): every figure passes the reviewer's checks, is drawn at the size
the README shows, and plots the report's own numbers."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from figure_review import figure_problems
from PIL import Image

from analysis.evidence import FIGURE_PX

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "docs" / "clip_fashion_mnist" / "metrics.json"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("clip_gap_report", ROOT / "scripts" / "clip_gap_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report() -> dict:
    return json.loads(REPORT.read_text())


@pytest.mark.parametrize("name", ["sweep_figure", "control_figure", "gap_by_epoch_figure"])
def test_each_report_figure_passes_the_review(script, report, name):
    fig = getattr(script, name)(report)
    assert figure_problems(fig) == []
    plt.close(fig)


def test_the_sweep_figure_plots_the_reports_gaps_against_the_temperature(script, report):
    fig = script.sweep_figure(report)
    rows = report["temperature_sweep"]["runs"]
    after = fig.axes[0].lines[0]
    assert list(after.get_xdata()) == [r["temperature"] for r in rows]
    assert list(after.get_ydata()) == [r["gap_after"] for r in rows]
    assert f"{rows[0]['gap_after']:.3f} at {rows[0]['temperature']:g}" in fig.axes[0].get_title()
    plt.close(fig)
    # what the runs trained on and for how long, read from the report (it was fixed text)
    assert fig._suptitle.get_text().endswith("FashionMNIST (55,000 train, 5,000 val, 10,000 test), 3 epochs a run")
    longer = {**report, "preset": {**report["preset"], "epochs": 5}}
    fig = script.sweep_figure(longer)
    assert fig._suptitle.get_text().endswith("10,000 test), 3-5 epochs")
    plt.close(fig)


def test_the_control_figure_puts_the_trained_gaps_in_its_titles(script, report):
    fig = script.control_figure(report)
    clip, control = report["preset"]["metrics"], report["same_modality_control"]["metrics"]
    title = fig.axes[0].get_title()
    assert f"image-text {clip['gap/norm']:.3f}" in title and f"image-image {control['gap/norm']:.3f}" in title
    assert [p.get_height() for p in fig.axes[0].patches] == [
        clip["init/gap/norm"],
        clip["gap/norm"],
        control["init/gap/norm"],
        control["gap/norm"],
    ]
    plt.close(fig)


def test_redraw_writes_the_three_figures_at_the_size_the_readme_shows(script, report, tmp_path):
    paths = script.draw(report, tmp_path)
    assert sorted(p.name for p in paths) == ["gap_by_epoch.png", "same_modality_control.png", "temperature_sweep.png"]
    for path in paths:
        longest = max(Image.open(path).size)
        assert FIGURE_PX[0] * 0.85 <= longest <= FIGURE_PX[1], (path.name, longest)  # bbox_inches="tight" trims
