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
        # the two longest (~20 s and ~10 s): slow, and run by the slow gpu_check dry run below too
        pytest.param("resnet_train", ["resnet_train_full", "resnet_train_head"], marks=pytest.mark.slow),
        ("vae_train", ["vae_train"]),
        ("clip_embedding", ["clip_embedding"]),
        pytest.param("vit_analyses", ["vit_analyses"], marks=pytest.mark.slow),
        ("clip_train", ["clip_train"]),
    ],
)
def test_each_benchmark_reports_framework_seed_bound_and_their_ratios(tmp_path, monkeypatch, name, outputs):
    run_benchmark(name, tmp_path / f"{name}.json", monkeypatch)
    for out in outputs:
        check_report(json.loads((tmp_path / f"{out}.json").read_text()), ALL)


def test_the_summary_table_has_a_row_per_benchmark_with_its_ratios(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from summarise import table

    lines = table([REPORT]).splitlines()
    row = (
        "| x (images/s) | cpu | 950 img/s (949..951) | 100 img/s (99..101) | 1,000 img/s (999..1,001) | 9.50x | 0.950 |"
    )
    assert lines[2] == row
    extra = {**REPORT, "contenders": {**REPORT["contenders"], "framework_cpu_decode": REPORT["contenders"]["seed"]}}
    extra["ratios"] = {**REPORT["ratios"], "framework_cpu_decode/bound": 0.1}
    rows = table([extra]).splitlines()[2:]
    assert (
        len(rows) == 2 and rows[1].startswith("| x (images/s) [framework_cpu_decode] |") and rows[1].endswith("0.100 |")
    )


FAKE_PYTHON = """#!/usr/bin/env bash
# stands in for python: benchmarks write a canned report to --out; anything else runs the real one
case "$1" in
  benchmarks/*.py)
    [ "$1" = benchmarks/summarise.py ] && exec "$REAL_PYTHON" "$@"
    while [ $# -gt 0 ]; do [ "$1" = --out ] && out=$2; shift; done
    echo "$REPORT" > "$out"; echo "fake on cpu"; echo "  framework 1 img/s" ;;
  *) exec "$REAL_PYTHON" "$@" ;;
esac
"""


def gpu_check(out: Path, python: str, benchmarks: str, *args: str):
    import subprocess

    env = {**os.environ, "PYTHON": python, "BENCHMARKS": benchmarks, "REAL_PYTHON": sys.executable}
    env["REPORT"] = json.dumps(REPORT)
    return subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_check.sh"), str(out), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_gpu_check_names_only_benchmarks_that_exist_and_passes_its_arguments_on(tmp_path):
    """The script's own logic in a second, with a stand-in python (each benchmark runs for real above)."""
    script = (BENCHMARKS / "gpu_check.sh").read_text()
    names = script.split("${BENCHMARKS:-", 1)[1].split("}", 1)[0].split()
    assert names == [
        "vit_train",
        "resnet_train",
        "vae_train",
        "clip_embedding",
        "vit_analyses",
        "clip_train",
        "data_path",
        "resnet_folder",
    ]
    assert all((BENCHMARKS / f"{n}.py").is_file() for n in names)
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    done = gpu_check(tmp_path / "out", str(fake), "vae_train clip_embedding", "--tiny")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "== vae_train:" in done.stdout and "== clip_embedding:" in done.stdout
    table = (tmp_path / "out" / "summary.md").read_text().splitlines()
    assert len(table) == 4 and json.loads((tmp_path / "out" / "summary.json").read_text())[0] == REPORT
    broken = tmp_path / "broken"
    broken.write_text(
        '#!/usr/bin/env bash\ncase "$1" in benchmarks/vae*) exit 3 ;; *) exec "$REAL_PYTHON" "$@" ;; esac\n'
    )
    broken.chmod(0o755)
    done = gpu_check(tmp_path / "out2", str(broken), "vae_train")
    assert done.returncode == 1 and "vae_train FAILED" in done.stdout  # a failed benchmark fails the check


def test_gpu_check_uses_the_project_environment_and_says_when_a_benchmark_timed_out(tmp_path):
    """With no PYTHON, the project's .venv (python3 on the PATH may lack torch); a benchmark past
    LIMIT_S is reported as timed out, not as a failure after N seconds."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    venv = BENCHMARKS.parent / ".venv" / "bin" / "python"
    done = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_check.sh"), str(tmp_path / "out")],
        env={**env, "BENCHMARKS": "vae_train", "LIMIT_S": "1"}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    expected = ".venv/bin/python" if venv.is_file() else "python3"
    assert done.stdout.startswith(f"gpu_check: {expected}, each benchmark at most 1 s (LIMIT_S)")
    assert done.returncode == 1 and "== vae_train FAILED: timed out after 1 s" in done.stdout, done.stdout


REPORT = {
    "benchmark": "x (images/s)",
    "unit": "img/s",
    "device": "cpu",
    "contenders": {
        k: {"per_s": v, "min": v - 1, "max": v + 1, "windows": 3}
        for k, v in {"framework": 950.0, "seed": 100.0, "bound": 1000.0}.items()
    },
    "ratios": {"framework/seed": 9.5, "framework/bound": 0.95},
}


@pytest.mark.slow
def test_gpu_check_runs_every_benchmark_and_writes_one_table(tmp_path):
    """The whole prepared script, dry (--tiny on the CPU), every benchmark in its own process, as a
    user runs it: about 100 s on 2 cores."""
    out = tmp_path / "out"
    done = gpu_check(
        out,
        sys.executable,
        "vit_train resnet_train vae_train clip_embedding vit_analyses clip_train",
        "--tiny",
        "--device",
        "cpu",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary) == 7 and all(set(r["ratios"]) == {"framework/seed", "framework/bound"} for r in summary)
    table = (out / "summary.md").read_text().splitlines()
    assert len(table) == 9 and all("x |" in row for row in table[2:])


@pytest.mark.slow  # a framework run from JPEGs with a decoding worker, and the bound (~30 s on a busy 2-core machine)
def test_resnet_folder_reports_training_from_jpegs_against_the_bound(tmp_path, monkeypatch):
    run_benchmark("resnet_folder", tmp_path / "resnet_folder.json", monkeypatch)
    result = json.loads((tmp_path / "resnet_folder.json").read_text())
    check_report(result, {"framework", "bound"})  # no GPU: no framework_cpu_decode row
    assert result["settings"]["arch"] == "resnet18" and result["settings"]["workers"] == 1


@pytest.mark.slow  # five pipelines, each starting its worker processes (~1-3 min on 2 cores)
def test_data_path_reports_each_pipeline_against_the_plain_loader_and_summarises(tmp_path, monkeypatch):
    run_benchmark("data_path", tmp_path / "data_path.json", monkeypatch)
    result = json.loads((tmp_path / "data_path.json").read_text())
    assert set(result["contenders"]) == {"plain", "folder", "shards", "litdata", "webdataset"}  # no GPU: no gpu_decode
    base = result["contenders"]["plain"]["per_s"]
    for name, r in result["contenders"].items():
        assert r["windows"] == 2 and 0 < r["min"] <= r["per_s"] <= r["max"]
        if name != "plain":
            assert result["ratios"][f"{name}/plain"] == pytest.approx(r["per_s"] / base)
    from summarise import table

    rows = [line for line in table([result]).splitlines() if line.startswith("| data_path")]
    assert len(rows) == 5 and rows[0].endswith("| 1.00x |")
