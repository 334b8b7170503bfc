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
import warnings
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
    p.add_argument("--compile", action="store_true", help="the framework with compile=true (torch.compile)")
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
    settings = {**settings, "compile": FRAMEWORK["compile"]}
    if FRAMEWORK["warmup_s"] is not None:  # with compile=true: the compilation is in it
        settings["framework_warmup_s"] = round(FRAMEWORK["warmup_s"], 2)
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
    from experiments import resolvers

    resolvers.register()  # what the entry point (experiments.__main__) does
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=experiments.config_dir(), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


FRAMEWORK = {"compile": False, "warmup_s": None}  # what the last framework run used and took, for the report


def run_framework(
    output_dir: Path, *overrides: str, timer: str = "StepTimer", compile: bool = False, **timer_keys
) -> list[float]:
    """A run through the framework's own run loop (experiments.run.run) with a timer callback
    added (StepTimer: seconds per timed window, as `timed_windows` measures the other contenders;
    FitTimer: seconds of the whole fit). No logger, no progress bar, no model summary.
    compile: with compile=true (the warm-up then includes the compilation)."""
    from experiments.lifecycle import RunEnding
    from experiments.run import run

    FRAMEWORK.update(compile=compile, warmup_s=None)
    warnings.filterwarnings("ignore", message=r".*could not find the monitored key.*")  # no validation here
    marks = output_dir / "timer.json"
    cfg = compose(
        *overrides,
        f"paths.output_dir={output_dir}",
        "logger=none",
        "trainer.enable_progress_bar=false",
        "++trainer.enable_model_summary=false",
        "trainer.devices=1",
        f"compile={str(compile).lower()}",
        f"+callbacks.timer._target_=harness.{timer}",
        f"+callbacks.timer.path={marks}",
        *(f"+callbacks.timer.{k}={v}" for k, v in timer_keys.items()),
    )
    run(cfg, RunEnding())
    timed = json.loads(marks.read_text())
    FRAMEWORK["warmup_s"] = timed.get("warmup_s")
    return timed["windows"]


def time_framework(args, output_dir: Path, *overrides: str, stage: str = "train") -> list[float]:
    """run_framework with a StepTimer on `stage`, sized and compiled as the benchmark's arguments say."""
    return run_framework(
        output_dir,
        *overrides,
        compile=args.compile,
        stage=stage,
        warmup=args.warmup,
        steps=args.steps,
        repeats=args.repeats,
    )


def training_overrides(args, device) -> list[str]:
    """A framework run that trains warm-up + timed steps in one epoch of synthetic data, nothing else
    (no validation, no test pass): the keys every training benchmark sets."""
    total = args.warmup + args.steps * args.repeats
    return [
        "data.synthetic=true",
        f"data.synthetic_size={(total * args.batch_size * 5) // 4 + args.batch_size}",  # a fifth is held out for val
        f"data.batch_size={args.batch_size}",
        f"trainer.max_steps={total}",
        "trainer.max_epochs=1",
        "trainer.limit_val_batches=0",
        accelerator(device),
        "test=false",
    ]


def conclude(title: str, args, framework_windows: list[float], contenders: dict, items: int, settings: dict, device):
    """The report with the framework first: `items` per timed window for every contender."""
    contenders = {"framework": rate(framework_windows, items), **contenders}
    return report(title, "img/s", contenders, settings, args.out, device)


def accelerator(device) -> str:
    return "trainer.accelerator=" + ("gpu" if torch.device(device).type == "cuda" else "cpu")


def bf16(device) -> bool:
    """Whether the framework trains in bf16 autocast here (conf/trainer: auto_precision)."""
    device = torch.device(device)
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # the plain contenders do not need Lightning
    Callback = object


class StepTimer(Callback):
    """Marks the time (device synchronised) after the warm-up batches and after each timed window
    of `steps` batches of the training (`stage=train`) or test pass (`stage=test`); writes the
    windows' seconds to `path` when that pass ends. Batches are counted as the pass sees them."""

    def __init__(self, path: str, warmup: int, steps: int, repeats: int, stage: str = "train"):
        self.path, self.warmup, self.steps, self.repeats, self.stage = Path(path), warmup, steps, repeats, stage
        self.marks: list[float] = []
        self.done, self.start = 0, None

    def _start(self, pl_module, stage: str):
        if stage == self.stage:
            sync(pl_module.device)
            self.start = time.perf_counter()

    def on_train_start(self, trainer, pl_module):
        self._start(pl_module, "train")

    def on_test_start(self, trainer, pl_module):
        self._start(pl_module, "test")

    def _batch_end(self, pl_module):
        self.done += 1
        done = self.done
        if done >= self.warmup and (done - self.warmup) % self.steps == 0 and len(self.marks) <= self.repeats:
            sync(pl_module.device)
            self.marks.append(time.perf_counter())

    def _end(self):
        windows = [b - a for a, b in zip(self.marks, self.marks[1:], strict=False)]
        if len(windows) < self.repeats:
            raise RuntimeError(f"only {len(windows)} of {self.repeats} timed windows ran: give it more batches")
        warmup = self.marks[0] - self.start if self.start is not None else None  # compilation, allocator, caches
        self.path.write_text(json.dumps({"windows": windows[: self.repeats], "warmup_s": warmup}))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.stage == "train":
            self._batch_end(pl_module)

    def on_train_end(self, trainer, pl_module):
        if self.stage == "train":
            self._end()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if self.stage == "test":
            self._batch_end(pl_module)

    def on_test_end(self, trainer, pl_module):
        if self.stage == "test":
            self._end()


class FitTimer(Callback):
    """Seconds from the start of fitting (before any callback's on_fit_start, e.g. the feature
    cache) to its end, device synchronised, written to `path`."""

    def __init__(self, path: str):
        self.path = Path(path)

    def setup(self, trainer, pl_module, stage):
        if stage == "fit":
            sync(pl_module.device)
            self.start = time.perf_counter()

    def on_fit_end(self, trainer, pl_module):
        sync(pl_module.device)
        self.path.write_text(json.dumps({"windows": [time.perf_counter() - self.start]}))
