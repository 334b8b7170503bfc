"""The terminal while a run trains: one progress line per epoch that says what picks the checkpoint.

Lightning's bar counts epochs from 0 (`Epoch 0`), shows the values logged with `prog_bar=True` (for
the VAE the KL-annealed `train/loss` and `val/recon`, not `val/neg_elbo`, the metric that picks
best.ckpt) and a `v_num`, and reuses one bar for every epoch, redrawing the last epoch's after
validation. This one: `Epoch 3/10`, the monitored metric and its best value so far, values at 4
significant digits, no `v_num`, and each epoch's bar left as one finished line.
"""

from __future__ import annotations

import math
import shlex
from pathlib import Path

from lightning.pytorch.callbacks import TQDMProgressBar

from experiments import heartbeat


class RunProgressBar(TQDMProgressBar):
    def __init__(self, *, monitor: str | None, refresh_rate: int, leave: bool = True):
        super().__init__(refresh_rate=refresh_rate, leave=leave)
        self.monitor = monitor

    def on_train_epoch_start(self, trainer, *args) -> None:
        unused = self._train_progress_bar
        if self._leave and unused is not None and unused.n == 0:  # the bar made at the start of fit: not a line
            unused.leave = False
            unused.close()
        super().on_train_epoch_start(trainer, *args)
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        self.train_progress_bar.set_description(
            f"Epoch {trainer.current_epoch + 1}" + (f"/{total}" if total else "")  # counted from 1, of N
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Lightning's redraws the bar twice a step (the new count, then the values): a log file or a SLURM
        # job's output got every step twice. The values are set without a redraw, then the count redraws once.
        bar, n = self.train_progress_bar, batch_idx + 1
        if bar is not None and not bar.disable and self._should_update(n, bar.total):
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.n = n
            bar.refresh()
        heartbeat.beat()  # a redraw is a line on the terminal: no "still ..." line while the bar moves

    def on_validation_batch_end(self, trainer, *args) -> None:
        super().on_validation_batch_end(trainer, *args)
        heartbeat.beat()

    def on_test_batch_end(self, trainer, *args) -> None:
        super().on_test_batch_end(trainer, *args)
        heartbeat.beat()

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        # the test pass is over: its line ends here, with its own time, before the analyses print their
        # progress and before Lightning's results table (Lightning closes it in on_test_end, after the
        # analyses' on_test_epoch_end work, and its last redraw then counted their time as the test's)
        if self._test_progress_bar is not None and not self._test_progress_bar.disable:
            self._test_progress_bar.close()

    def get_metrics(self, trainer, pl_module) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        shown = {k: v for k, v in items.items() if not k.startswith("val/")}  # validation: the monitor only
        for key in [k for k in shown if k.endswith("_step") and f"{k[:-5]}_epoch" in shown]:
            shown.pop(key)  # once the epoch's mean exists, not also the last step's value
        if self.monitor and self.monitor in trainer.callback_metrics:
            shown[self.monitor] = current = trainer.callback_metrics[self.monitor]
            best = _best(trainer.checkpoint_callback, self.monitor, current)
            if best is not None:
                shown["best"] = best
        return {k: _short(v) for k, v in shown.items()}


def _best(checkpoint, monitor: str, current):
    """The best value of the monitor so far, this validation's included: the bar's last redraw of an epoch
    comes before the checkpoint callback has taken that validation in (it showed the epoch before's best)."""
    if checkpoint is None or getattr(checkpoint, "monitor", None) != monitor:
        return None
    value = float(current)
    # no best yet; or only NaN validations so far, which Lightning's ModelCheckpoint keeps as the worst
    # value there is (inf when mode=min, -inf when max): not a best to show
    best = None if checkpoint.best_model_score is None else float(checkpoint.best_model_score)
    if best is None or math.isinf(best):
        return None if math.isnan(value) else value
    if math.isnan(value):
        return best
    return min(best, value) if checkpoint.mode == "min" else max(best, value)


def _short(value):
    try:
        return f"{float(value.item() if hasattr(value, 'item') else value):.4g}"
    except (TypeError, ValueError, RuntimeError):
        return value


def final_lines(cfg, out: Path, value) -> list[str]:
    """The last lines of a run that ended well: the metric a sweeper optimises, at a precision a
    reader takes in, and where every piece of its evidence is, each with the command that opens it."""
    shown = f"{value:.6g}" if isinstance(value, (int, float)) else str(value)
    figures = sorted((out / "figures").glob("*.png"))
    lines = [
        f"{cfg.optimized_metric} = {shown}",
        f"run folder: {out}",
        f"metrics: {out / 'metrics.json'}",
        *([f"figures: {out / 'figures'} ({len(figures)} PNG)"] if figures else []),
    ]
    if (out / "tensorboard").is_dir():  # logger=tensorboard | many: one logdir per task keeps the tasks apart
        task_logs = Path(cfg.paths.log_dir) / cfg.task_name  # every run and sweep of this task, no other task's
        lines.append(f"TensorBoard: tensorboard --logdir {shlex.quote(str(task_logs))}")
    from experiments.loggers import sweep_group

    if sorted(out.glob("wandb/offline-run-*")) and sweep_group(cfg.task_name) is None:  # a sweep: one at its end
        lines.append(f"W&B run (offline): wandb sync {shlex.quote(str(out))}/wandb/offline-run-*")
    return lines
