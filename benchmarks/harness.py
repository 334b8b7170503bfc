"""What every benchmark here shares: steady-state timing, the framework run through its own config
tree, and one report (a table on stdout, the same numbers as JSON).

Steady state: `warmup` steps run untimed (kernel selection, allocator, caches), then `repeats`
windows of `steps` steps are timed each; a rate is the median over the windows, the spread their
min and max. Every contender of a benchmark gets the same synthetic data, model and batch.

Contenders, as the issues name them:
- framework: `python -m experiments ...` as a user runs it (Hydra config, Lightning, our callbacks)
- seed: the plain loop the seed notebooks wrote (or a plain PyTorch loop where no seed exists)
- bound: the same model and batch on tensors already on the device, no framework, no data
  pipeline: compute only, what no pipeline can beat
and the ratios framework / seed and framework / bound.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT / "src"))


def arguments(description: str, **defaults) -> argparse.ArgumentParser:
    """The options every benchmark takes (`defaults` override the numbers per benchmark)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--tiny", action="store_true", help="seconds-long sizes (the test suite's dry run)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=defaults.get("batch_size", 128))
    p.add_argument("--warmup", type=int, default=defaults.get("warmup", 5), help="untimed steps first")
    p.add_argument("--steps", type=int, default=defaults.get("steps", 20), help="steps per timed window")
    p.add_argument("--repeats", type=int, default=defaults.get("repeats", 3), help="timed windows")
    p.add_argument("--out", type=Path, default=None, help="also write the report as JSON here")
    return p


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed_windows(step: Callable[[], object], warmup: int, steps: int, repeats: int, device) -> list[float]:
    """Seconds per window of `steps` calls of `step`, after `warmup` untimed calls."""
    for _ in range(warmup):
        step()
    sync(device)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def rate(seconds: list[float], items_per_window: int) -> dict:
    """Items/s: the median over the windows, and the spread (slowest, fastest)."""
    rates = sorted(items_per_window / s for s in seconds)
    return {"per_s": statistics.median(rates), "min": rates[0], "max": rates[-1], "windows": len(rates)}


def device_name(device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def report(title: str, unit: str, contenders: dict[str, dict], settings: dict, out: Path | None, device) -> dict:
    """Print the table and write the JSON: each contender's rate, and framework / seed and
    framework / bound where those contenders are present."""
    ratios = {}
    fw = contenders.get("framework")
    for other in ("seed", "bound"):
        if fw and other in contenders:
            ratios[f"framework/{other}"] = fw["per_s"] / contenders[other]["per_s"]
    result = {
        "benchmark": title,
        "unit": unit,
        "device": device_name(device),
        "torch": torch.__version__,
        "settings": settings,
        "contenders": contenders,
        "ratios": ratios,
    }
    print(f"{title} on {result['device']}, torch {torch.__version__}")
    print("  " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    for name, r in contenders.items():
        print(f"  {name:10s} {r['per_s']:12.1f} {unit}  (windows: {r['min']:.1f} .. {r['max']:.1f}, n={r['windows']})")
    for name, value in ratios.items():
        print(f"  {name:18s} {value:6.3f}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    return result


def compose(*overrides: str):
    """The config a user's `python -m experiments <overrides>` composes (no Hydra run folder)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import experiments

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=experiments.config_dir(), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


def run_framework(output_dir: Path, *overrides: str) -> list[float]:
    """Train through the framework's own run loop (experiments.run.run) with a StepTimer added:
    seconds per timed window, as `timed_windows` measures the other contenders."""
    from experiments.run import run

    marks = output_dir / "step_marks.json"
    cfg = compose(
        *overrides,
        f"paths.output_dir={output_dir}",
        "+callbacks.step_timer._target_=harness.StepTimer",
        f"+callbacks.step_timer.path={marks}",
    )
    run(cfg)
    return json.loads(marks.read_text())


try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # the plain contenders do not need Lightning
    Callback = object


class StepTimer(Callback):
    """Marks the time (device synchronised) after the warm-up steps and after each timed window of
    training steps; writes the windows' seconds to `path` when training ends."""

    def __init__(self, path: str, warmup: int, steps: int, repeats: int):
        self.path, self.warmup, self.steps, self.repeats = Path(path), warmup, steps, repeats
        self.marks: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        done = trainer.global_step  # optimizer steps taken
        if done >= self.warmup and (done - self.warmup) % self.steps == 0 and len(self.marks) <= self.repeats:
            sync(pl_module.device)
            self.marks.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module):
        windows = [b - a for a, b in zip(self.marks, self.marks[1:], strict=False)]
        if len(windows) < self.repeats:
            raise RuntimeError(f"only {len(windows)} of {self.repeats} timed windows ran: raise trainer.max_steps")
        self.path.write_text(json.dumps(windows[: self.repeats]))
