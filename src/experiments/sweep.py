"""After a multirun: one table of every job's overrides, status and final metrics."""

from __future__ import annotations

import csv
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from experiments.record import FILE as RECORD_FILE
from experiments.record import RunRecord
from experiments.run_folder import REFUSED, sweep_record

log = logging.getLogger(__name__)


def collect_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job folder (sorted by job number): overrides, status and metrics."""
    rows = []
    planned = sweep_record(sweep_dir).get("jobs", [])
    # a job's folder: its record, or only FAILED (a setting refused before the record was written)
    job_dirs = {p.parent.parent for p in sweep_dir.glob("*/.hydra/overrides.yaml")}
    job_dirs |= {p.parent for p in sweep_dir.glob("*/FAILED")}
    for job_dir in sorted(
        job_dirs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name)
    ):
        row: dict[str, Any] = {"job": job_dir.name, "overrides": " ".join(job_overrides(job_dir, planned))}
        requeued = job_dir / "REQUEUED"  # one line per attempt a scheduler requeued (experiments.lifecycle)
        if requeued.is_file():
            row["requeues"] = len(requeued.read_text().splitlines())
        metrics_file = job_dir / RECORD_FILE
        if metrics_file.is_file():
            record = RunRecord.read(job_dir)
            row["status"] = record.status
            row["wall_time_s"] = record.wall_time_s
            row.update(record.metrics)
            row["_optimized"] = record.optimized_metric
        refused, failed = sweep_dir / REFUSED / job_dir.name, job_dir / "FAILED"
        if refused.is_file() or failed.is_file():  # refused its folder (what is in it is another run's),
            # or the latest attempt failed (a metrics.json beside it is older)
            reason = refused.read_text().strip() if refused.is_file() else failed.read_text().splitlines()[0]
            status = ("refused: " if refused.is_file() else "failed: ") + reason.removeprefix("error: ")
            row = {k: row[k] for k in ("job", "overrides", "requeues") if k in row} | {"status": status}
        elif not metrics_file.is_file():
            row["status"] = "requeued" if requeued.is_file() else "incomplete"  # requeued: its next attempt runs
        rows.append(row)
    started = {r["job"] for r in rows}
    for number, overrides in enumerate(planned):  # a killed sweep: the jobs it never reached
        if str(number) not in started:
            rows.append({"job": str(number), "overrides": " ".join(overrides), "status": "not started"})
    return rows


def job_overrides(job_dir: Path, planned: list[list[str]]) -> list[str]:
    """A job's overrides: its record, else (refused before it was written) what the sweep planned."""
    saved = job_dir / ".hydra" / "overrides.yaml"
    if saved.is_file():
        return yaml.safe_load(saved.read_text()) or []
    number = int(job_dir.name) if job_dir.name.isdigit() else -1
    return planned[number] if 0 <= number < len(planned) else []


def write_summary(sweep_dir: Path) -> list[dict[str, Any]]:
    """summary.csv (all metrics) and summary.md (test metrics and the optimized metric) in the sweep folder."""
    rows = collect_jobs(sweep_dir)
    if not rows:
        return rows
    fixed = ["job", "status", *(["requeues"] if any("requeues" in r for r in rows) else []), "overrides", "wall_time_s"]
    optimized = {r.pop("_optimized") for r in rows if r.get("_optimized")}
    metric_cols = sorted({k for r in rows for k in r} - set(fixed))
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fixed + metric_cols)
        writer.writeheader()
        writer.writerows(rows)
    shown = fixed + [c for c in metric_cols if c.startswith("test/") or c in optimized]  # the sweep's objective too
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for r in rows:
        cells = [_fmt(r.get(c)) for c in shown]
        lines.append("| " + " | ".join(cells) + " |")
    search = sweep_dir / "search.md"  # an Optuna search's best parameters and trial states, first
    head = search.read_text() + "\n## Jobs\n\n" if search.is_file() else ""
    (sweep_dir / "summary.md").write_text(head + "\n".join(lines) + "\n")
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|")


class SweepSummary(Callback):
    """Hydra callback: writes the summary when a multirun ends (any launcher)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = write_summary(sweep_dir)
        if not rows:
            return
        print((sweep_dir / "summary.md").read_text().rstrip())  # the table itself, then where it is
        print(f"sweep summary of {len(rows)} jobs: {sweep_dir / 'summary.md'}")
        if list(sweep_dir.glob("*/wandb/offline-run-*")):  # one command uploads every job's W&B run
            print(f"W&B runs (offline): wandb sync {shlex.quote(str(sweep_dir))}/*/wandb/offline-run-*")
        failed = [r for r in rows if r["status"] not in ("ok", "pruned")]  # a pruned trial ended as asked
        if failed:  # every job ran; the sweep as a whole did not succeed
            where = ", ".join(str(sweep_dir / r["job"] / "FAILED") for r in failed)
            print(f"error: {len(failed)} of {len(rows)} jobs failed: {where}", file=sys.stderr, flush=True)
            sys.exit(1)
