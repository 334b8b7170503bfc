"""What a finished run leaves as `metrics.json`: this dataclass is that file's schema.

The run loop writes it (experiments/run.py), the sweep summary (experiments/sweep.py) and the Optuna
sweeper read it back through this type, never by string keys of their own.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

FILE = "metrics.json"

Status = Literal["ok", "pruned"]  # pruned: an Optuna trial its search stopped early (no test pass)


@dataclass(frozen=True)
class RunRecord:
    task: str  # task_name
    status: Status
    metrics: dict[str, float]  # every final metric: the fit's last train/val values, then the test pass's
    optimized_metric: str  # the key of `metrics` a sweeper optimises
    best_checkpoint: str | None  # relative to the run folder (a moved folder stays whole); None: none written
    epochs: int  # the trainer's epoch when the run ended
    global_step: int
    wall_time_s: float
    tags: list[str] = field(default_factory=list)
    model_info: dict[str, Any] | None = None  # facts a model reports (contracts.ReportsRunInfo), if any
    evaluated: dict[str, Any] | None = None  # eval=<run folder>: {run, checkpoint} evaluated (experiments.evaluate)

    @property
    def value(self) -> float | None:
        """The value of `optimized_metric` (None when the run did not produce it, e.g. pruned)."""
        return self.metrics.get(self.optimized_metric)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for optional in ("model_info", "evaluated"):
            if data[optional] is None:
                del data[optional]
        return data

    def write(self, folder: Path) -> None:
        """metrics.json in `folder`, atomically (a reader never sees half a file)."""
        tmp = folder / (FILE + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True))
        os.replace(tmp, folder / FILE)

    @classmethod
    def read(cls, folder: Path) -> RunRecord:
        """The record of the run in `folder` (FileNotFoundError when it has none)."""
        data = json.loads((folder / FILE).read_text())
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
