"""The evidence of docs/clip_fashion_mnist/, from run folders of the clip task (README, "The CLIP
task trains too"): the preset's metrics and figures, the fixed-temperature sweep beside what Liang
et al. 2022 report, and the same-modality control.

    python scripts/clip_gap_report.py --preset RUN --sweep SWEEP_FOLDER --control RUN \
        [--out docs/clip_fashion_mnist] [--machine "..."]

RUN: a run folder of `experiment=clip_scratch_fashion_mnist` (and of
`experiment=clip_same_modality_fashion_mnist` for --control); SWEEP_FOLDER: the multirun folder(s) of
`-m experiment=clip_scratch_fashion_mnist model.learn_temperature=false model.temperature=...`
(every job with a metrics.json counts).
Every number it writes is read from those runs' metrics.json, config.yaml and csv/metrics.csv.

    python scripts/clip_gap_report.py --redraw docs/clip_fashion_mnist/metrics.json [--out DIR (default: its folder)]

draws the report's own figures (temperature_sweep, same_modality_control, gap_by_epoch) again from a
report it wrote, without the run folders: the same numbers, drawn by this version of the script.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402

from analysis.evidence import figure_dpi  # noqa: E402

# What Liang et al. 2022 ("Mind the Gap", NeurIPS) report in their text (numbers quoted, not measured here)
LIANG_2022 = {
    "pretrained_clip_gap": 0.82,  # OpenAI CLIP on 5,000 MSCOCO validation pairs
    "scratch_tau_0.01": {"gap_init": 1.1891, "gap_after": 1.2991},  # CLIP from scratch on MSCOCO, batch 64, tau 1/100
    "amended_init_tau_0.01": {"gap_init": 0.0388, "gap_after": 0.7457},  # the gap closed at init by an orthogonal map
    "finetune_temperatures": [0.01, 0.02, 1 / 30, 0.05, 0.1, 1.0],  # fine-tuning CLIP on MSCOCO, batch 64
    "finetune_finding": "the gap decreases monotonically with increasing temperature; tau in {1/10, 1} "
    "significantly reduces or closes it, a low temperature does not (their Supp. Figure 8; values not in the text)",
}

PRESET_KEYS = (
    "init/zeroshot/train_templates/top1",
    "init/zeroshot/heldout/top1",
    "init/zeroshot/heldout_bare/top1",
    "init/gap/norm",
    "init/gap/pair_cosine",
    "init/gap/modality_separability",
    "zeroshot/train_templates/top1",
    "zeroshot/heldout/top1",
    "zeroshot/heldout/top5",
    "zeroshot/heldout_bare/top1",
    "gap/norm",
    "gap/pair_cosine",
    "gap/modality_separability",
    "procrustes/uncentred/top1_before",
    "procrustes/uncentred/top1_after",
    "procrustes/uncentred/gap_after",
    "procrustes/uncentred/pair_cosine_after",
    "procrustes/uncentred/mcnemar_p",
    "procrustes/centred/top1_after",
    "procrustes/centred/gap_after",
    "procrustes/centred/mcnemar_p",
    "linear_probe/test_acc",
    "val/zeroshot_top1",
)


def read_run(folder: Path) -> dict:
    result = json.loads((folder / "metrics.json").read_text())
    config = yaml.safe_load((folder / "config.yaml").read_text())
    epochs: dict[int, dict] = {}
    with open(folder / "csv" / "metrics.csv") as f:
        for row in csv.DictReader(f):
            if row.get("val/gap_norm"):
                epochs[int(row["epoch"])] = {k: float(v) for k, v in row.items() if v and k.startswith("val/")}
    return {"result": result, "config": config, "val_by_epoch": [epochs[e] for e in sorted(epochs)]}


def read_table(folder: Path, name: str) -> list[dict]:
    with open(folder / "tables" / f"{name}.csv") as f:
        return list(csv.DictReader(f))


def _legend_below(ax, ncol: int = 2) -> None:
    """A legend under the panel, where it covers no point of it."""
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol, frameon=False)


def trained_on(report: dict) -> str:
    """What the report's runs trained on, from the report: `FashionMNIST (55,000 train, ...), 3 epochs a run`."""
    data = report["data"]
    name = data.split(",")[0] + (f" {data[data.rfind('(') :]}" if "(" in data else "")
    runs = report["temperature_sweep"]["runs"]
    epochs = sorted({report["preset"]["epochs"], *(len(r["gap_by_epoch"]) for r in runs)})
    each = f"{epochs[0]} epochs a run" if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]} epochs"
    return f"{name}, {each}"


def sweep_figure(report: dict) -> plt.Figure:
    """Gap, zero-shot accuracy and separability against the fixed temperature, the preset (temperature
    learned from 0.07) beside them, and what Liang et al. 2022 report."""
    rows, preset = report["temperature_sweep"]["runs"], report["preset"]
    model, lm = preset["model_info"]["model"], preset["metrics"]
    final = preset["model_info"]["final_temperature"]
    t = [r["temperature"] for r in rows]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 5.2))
    ax.plot(t, [r["gap_after"] for r in rows], "o-", label="after training (this sweep)")
    ax.plot([final], [lm["gap/norm"]], "D", color="green", label=f"learned temperature (preset, ends at {final:.3f})")
    ax.plot(t, [r["gap_init"] for r in rows], "s--", color="grey", label="at initialisation (this sweep)")
    ref = LIANG_2022["scratch_tau_0.01"]
    ax.plot([0.01], [ref["gap_after"]], "r*", ms=12, label="Liang et al.: from scratch, MSCOCO, after")
    ax.plot([0.01], [ref["gap_init"]], "rx", ms=9, label="Liang et al.: from scratch, MSCOCO, init")
    ax.axhline(LIANG_2022["pretrained_clip_gap"], color="r", lw=0.8, ls=":", label="Liang et al.: OpenAI CLIP (0.82)")
    ax.set_xscale("log")
    ax.set_xlabel("fixed loss temperature (log scale)")
    ax.set_ylabel("gap norm ||mean image - mean prompt|| (test split)")
    ax.set_ylim(0, 2)
    _legend_below(ax)
    lo, hi = min(rows, key=lambda r: r["temperature"]), max(rows, key=lambda r: r["temperature"])
    ax.set_title(
        f"modality gap vs temperature: {lo['gap_after']:.3f} at {lo['temperature']:g}, "
        f"{hi['gap_after']:.3f} at {hi['temperature']:g}",
        fontsize=10,
    )
    ax2.plot(t, [r["zeroshot_heldout_top1"] for r in rows], "o-", label="zero-shot top-1, held-out templates")
    ax2.plot(t, [r["modality_separability"] for r in rows], "s-", label="modality separability (linear, 5-fold)")
    ax2.plot([final], [lm["zeroshot/heldout/top1"]], "D", color="green", label="learned temperature (preset)")
    ax2.axhline(0.1, color="grey", lw=0.8, ls=":", label="chance (10 classes)")
    ax2.set_xscale("log")
    ax2.set_xlabel("fixed loss temperature (log scale)")
    ax2.set_ylabel("fraction (test split)")
    ax2.set_ylim(0, 1.02)
    _legend_below(ax2)
    ax2.set_title("zero-shot top-1 and modality separability after training", fontsize=10)
    fig.suptitle(f"{model}, trained here from scratch on {trained_on(report)}", fontsize=9)
    fig.tight_layout()
    return fig


def control_figure(report: dict) -> plt.Figure:
    """The preset (image-caption) against the same-modality control (two image towers), before and after."""
    clip, control = report["preset"]["metrics"], report["same_modality_control"]["metrics"]
    panels = [
        ("norm", "gap norm ||mean a - mean b||"),
        ("pair_cosine", "mean cosine of a pair"),
        ("modality_separability", "fraction (linear, 5-fold)"),
    ]
    titles = {"norm": "gap norm", "pair_cosine": "pair cosine", "modality_separability": "separability of the towers"}
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.4))
    for ax, (key, ylabel) in zip(axes, panels, strict=True):
        values = [clip[f"init/gap/{key}"], clip[f"gap/{key}"], control[f"init/gap/{key}"], control[f"gap/{key}"]]
        bars = ax.bar(range(4), values, color=["#bbb", "#1f77b4", "#ddd", "#ff7f0e"])
        ax.set_xticks(
            range(4), ["image-text\ninit", "image-text\ntrained", "image-image\ninit", "image-image\ntrained"]
        )
        ax.tick_params(axis="x", labelsize=8)
        ax.set_xlabel("model (the two embeddings compared)")
        ax.set_ylabel(ylabel)
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
        ax.margins(y=0.12)
        ax.set_title(
            f"{titles[key]}\ntrained: image-text {clip[f'gap/{key}']:.3f}, image-image {control[f'gap/{key}']:.3f}",
            fontsize=9,
        )
    fig.suptitle(
        f"CLIP (image-caption) vs the same-modality control (two image towers, two augmentations), "
        f"{report['preset']['model_info']['model']}, FashionMNIST test split",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def gap_by_epoch_figure(report: dict) -> plt.Figure:
    """The gap at initialisation (test split) and after each epoch (validation split), every run."""
    preset, control = report["preset"], report["same_modality_control"]
    curves = {"image-text, learned temperature (preset)": (preset["metrics"]["init/gap/norm"], preset["val_by_epoch"])}
    for r in report["temperature_sweep"]["runs"]:
        curves[f"image-text, fixed temperature {r['temperature']:g}"] = (
            r["gap_init"],
            [{"val/gap_norm": g} for g in r["gap_by_epoch"]],
        )
    curves["image-image (same-modality control)"] = (control["metrics"]["init/gap/norm"], control["val_by_epoch"])
    fig, ax = plt.subplots(figsize=(9, 5.2))
    for label, (init, epochs) in curves.items():
        gaps = [e["val/gap_norm"] for e in epochs]
        ax.plot(range(len(gaps) + 1), [init, *gaps], "o-", label=f"{label}: {gaps[-1]:.3f}" if gaps else label)
        ax.set_xticks(range(len(gaps) + 1))
    ax.set_xlabel("epoch (0: initialisation, test split; then validation split)")
    ax.set_ylabel("gap norm ||mean image - mean caption|| (control: tower a - tower b)")
    ax.set_ylim(0, 2)
    ax.legend(
        fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), title="run: gap after the last epoch", title_fontsize=7
    )
    ax.set_title(f"the gap during training: {preset['model_info']['model']}, FashionMNIST", fontsize=10)
    fig.tight_layout()
    return fig


def draw(report: dict, out: Path) -> list[Path]:
    """The report's own figures, drawn from the report alone (so a report can be redrawn without its runs)."""
    paths = []
    for name, make in (
        ("temperature_sweep", sweep_figure),
        ("same_modality_control", control_figure),
        ("gap_by_epoch", gap_by_epoch_figure),
    ):
        fig = make(report)
        paths.append(out / f"{name}.png")
        fig.savefig(paths[-1], dpi=figure_dpi(fig), bbox_inches="tight")
        plt.close(fig)
    return paths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", type=Path)
    p.add_argument("--sweep", type=Path, nargs="+", help="multirun folder(s) of the sweep")
    p.add_argument("--sweep-command", default=None, help="the command(s) that made the sweep, as recorded")
    p.add_argument("--control", type=Path)
    p.add_argument("--redraw", type=Path, help="a metrics.json this script wrote: draw its figures again")
    p.add_argument("--out", type=Path, help="default: docs/clip_fashion_mnist; with --redraw, the report's folder")
    p.add_argument("--machine", default="this project's CPU machine (2 cores, 24 GiB, no GPU), shared with other work")
    args = p.parse_args()
    args.out = args.out or (args.redraw.parent if args.redraw else Path("docs/clip_fashion_mnist"))
    args.out.mkdir(parents=True, exist_ok=True)
    if args.redraw:
        for path in draw(json.loads(args.redraw.read_text()), args.out):
            print(path)
        return
    if not (args.preset and args.sweep and args.control):
        p.error("give --preset, --sweep and --control (run folders), or --redraw <metrics.json>")
    report = build_report(args)
    (args.out / "metrics.json").write_text(json.dumps(report, indent=2))
    for name in ("gap_shift.png", "zeroshot_confusion_matrix.png", "gap_pairs_tsne.png"):
        if (args.preset / "figures" / name).is_file():
            shutil.copy(args.preset / "figures" / name, args.out / name)
    draw(report, args.out)
    print(json.dumps({k: v for k, v in report.items() if k != "liang_2022_reported"}, indent=1)[:4000])


def build_report(args: argparse.Namespace) -> dict:
    preset = read_run(args.preset)
    m = preset["result"]["metrics"]
    report = {
        "machine": args.machine,
        "data": "FashionMNIST, /usr/share/datasets/fashion-mnist (55,000 train, 5,000 val, 10,000 test)",
        "preset": {
            "command": "python -m experiments experiment=clip_scratch_fashion_mnist logger=csv",
            "model_info": preset["result"]["model_info"],
            "wall_time_s": preset["result"]["wall_time_s"],
            "epochs": preset["result"]["epochs"],
            "metrics": {k: m[k] for k in PRESET_KEYS if k in m},
            "val_by_epoch": preset["val_by_epoch"],
            "zeroshot_by_template_set": read_table(args.preset, "zeroshot_by_template_set"),
            "gap_shift": read_table(args.preset, "gap_shift"),
        },
    }
    rows = []
    jobs = [d for folder in args.sweep for d in folder.iterdir() if (d / "metrics.json").is_file()]
    for job in jobs:
        run = read_run(job)
        jm = run["result"]["metrics"]
        rows.append(
            {
                "temperature": float(run["config"]["model"]["temperature"]),
                "learned": bool(run["config"]["model"]["learn_temperature"]),
                "gap_init": jm["init/gap/norm"],
                "gap_after": jm["gap/norm"],
                "pair_cosine": jm["gap/pair_cosine"],
                "modality_separability": jm["gap/modality_separability"],
                "zeroshot_heldout_top1": jm["zeroshot/heldout/top1"],
                "zeroshot_train_templates_top1": jm["zeroshot/train_templates/top1"],
                "gap_by_epoch": [e["val/gap_norm"] for e in run["val_by_epoch"]],
                "wall_time_s": run["result"]["wall_time_s"],
            }
        )
    rows.sort(key=lambda r: r["temperature"])
    report["temperature_sweep"] = {
        "command": args.sweep_command
        or "python -m experiments -m experiment=clip_scratch_fashion_mnist model.learn_temperature=false "
        "model.temperature=0.01,0.03,0.1,0.3,1.0 logger=csv callbacks.clip_analyses.projections=[pca]",
        "runs": rows,
    }
    control = read_run(args.control)
    cm = control["result"]["metrics"]
    report["same_modality_control"] = {
        "command": "python -m experiments experiment=clip_same_modality_fashion_mnist logger=csv",
        "model_info": control["result"]["model_info"],
        "wall_time_s": control["result"]["wall_time_s"],
        "metrics": {k: v for k, v in cm.items() if k.startswith(("init/gap", "gap/", "val/"))},
        "val_by_epoch": control["val_by_epoch"],
    }
    report["liang_2022_reported"] = LIANG_2022
    return report


if __name__ == "__main__":
    main()
