"""The configs travel with a built (non-editable) package: `python -m experiments` works from it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from cli import cli_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # builds and unpacks the wheel (~20 s); the editable install is what the tests use
def test_wheel_carries_the_config_tree_and_runs_from_anywhere(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n.split("experiments/conf/", 1)[1] for n in names if n.startswith("experiments/conf/")}
    in_repo = {str(p.relative_to(ROOT / "conf")) for p in (ROOT / "conf").rglob("*.yaml")}
    assert shipped == in_repo

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = cli_env(tmp_path, PYTHONPATH=str(site))  # the wheel's packages shadow the checkout's
    probe = subprocess.run(
        [sys.executable, "-c", "import experiments; print(experiments.config_dir())"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == str(site / "experiments" / "conf")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments",
            "task=vae",
            "debug=fast_dev_run",
            "data.synthetic=true",
            "logger=none",
            f"paths.log_dir={tmp_path / 'logs'}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list(tmp_path.glob("logs/vae/runs/*/metrics.json"))) == 1
