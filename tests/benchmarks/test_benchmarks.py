"""Every benchmark's --tiny dry run: it runs its contenders and reports rates and ratios (not how
fast: speed is measured by the scripts themselves, on a quiet machine, never by a timed test)."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def run_benchmark(name: str, out: Path, monkeypatch, *args: str) -> dict:
    """benchmarks/<name>.py --tiny --out OUT in this process (Lightning is imported once per worker)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setattr(sys, "argv", [name, "--tiny", "--device", "cpu", "--out", str(out), *args])
    runpy.run_path(str(BENCHMARKS / f"{name}.py"), run_name="__main__")
    return json.loads(out.read_text())


def check_report(result: dict, contenders: set[str]) -> None:
    assert set(result["contenders"]) == contenders
    for r in result["contenders"].values():
        assert r["windows"] >= 2 and 0 < r["min"] <= r["per_s"] <= r["max"]
    fw = result["contenders"]["framework"]["per_s"]
    for other in contenders - {"framework"}:
        assert result["ratios"][f"framework/{other}"] == pytest.approx(fw / result["contenders"][other]["per_s"])
    assert result["device"].startswith("cpu") and result["settings"]


def test_vit_training_benchmark_reports_framework_seed_and_bound(tmp_path, monkeypatch):
    result = run_benchmark("vit_train", tmp_path / "vit_train.json", monkeypatch)
    check_report(result, {"framework", "seed", "bound"})
    assert result["settings"]["model"] == "vit_scratch_fashion_mnist"
