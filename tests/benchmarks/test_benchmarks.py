"""Every benchmark's --tiny dry run: it runs its contenders and reports rates and ratios (not how
fast: speed is measured by the scripts themselves, on a quiet machine, never by a timed test)."""

from __future__ import annotations

import json
import os
import runpy
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def run_benchmark(name: str, out: Path, monkeypatch, *args: str) -> None:
    """benchmarks/<name>.py --tiny --out OUT in this process (Lightning is imported once per worker)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setattr(sys, "argv", [name, "--tiny", "--device", "cpu", "--out", str(out), *args])
    runpy.run_path(str(BENCHMARKS / f"{name}.py"), run_name="__main__")


def check_report(result: dict, contenders: set[str]) -> None:
    assert set(result["contenders"]) == contenders
    for r in result["contenders"].values():
        assert r["windows"] >= 2 and 0 < r["min"] <= r["per_s"] <= r["max"]
    fw = result["contenders"]["framework"]["per_s"]
    for other in contenders - {"framework"}:
        assert result["ratios"][f"framework/{other}"] == pytest.approx(fw / result["contenders"][other]["per_s"])
    assert result["device"].startswith("cpu") and result["settings"]


ALL = {"framework", "seed", "bound"}


@pytest.mark.parametrize(
    "name, outputs",
    [
        ("vit_train", ["vit_train"]),
        ("resnet_train", ["resnet_train_full", "resnet_train_head"]),
        ("vae_train", ["vae_train"]),
        ("clip_embedding", ["clip_embedding"]),
        ("vit_analyses", ["vit_analyses"]),
    ],
)
def test_each_benchmark_reports_framework_seed_bound_and_their_ratios(tmp_path, monkeypatch, name, outputs):
    run_benchmark(name, tmp_path / f"{name}.json", monkeypatch)
    for out in outputs:
        check_report(json.loads((tmp_path / f"{out}.json").read_text()), ALL)


def test_the_summary_table_has_a_row_per_benchmark_with_its_ratios(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from summarise import table

    report = {
        "benchmark": "x (images/s)",
        "unit": "img/s",
        "device": "cpu",
        "contenders": {
            k: {"per_s": v, "min": v - 1, "max": v + 1, "windows": 3}
            for k, v in {"framework": 950.0, "seed": 100.0, "bound": 1000.0}.items()
        },
        "ratios": {"framework/seed": 9.5, "framework/bound": 0.95},
    }
    lines = table([report]).splitlines()
    row = (
        "| x (images/s) | cpu | 950 img/s (949..951) | 100 img/s (99..101) | 1,000 img/s (999..1,001) | 9.50x | 0.950 |"
    )
    assert lines[2] == row


def test_gpu_check_runs_every_benchmark_and_writes_one_table(tmp_path):
    """The prepared script, dry (--tiny on the CPU) and with one benchmark (each is tested above in
    this process; a subprocess per benchmark costs its imports): the JSON, summary.json, summary.md."""
    import subprocess

    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "BENCHMARKS": "clip_embedding"}  # the fastest
    done = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_check.sh"), str(out), "--tiny", "--device", "cpu"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [r["benchmark"] for r in summary] == ["clip test-set embedding (images/s)"]
    assert summary[0]["settings"]["model"] == "tiny-clip-bench"
    assert set(summary[0]["ratios"]) == {"framework/seed", "framework/bound"}
    table = (out / "summary.md").read_text().splitlines()
    assert len(table) == 3 and table[2].startswith("| clip test-set embedding") and "x |" in table[2]
    assert "== clip_embedding:" in done.stdout
    assert (out / "device.txt").read_text().count("torch") == 1
