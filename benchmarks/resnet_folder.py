"""ResNet training from a folder of JPEGs (data=folder) against the compute-only bound, steady state
(benchmarks/harness.py): the issue's goal is >= 0.9 x the bound on one H200 for ResNet-152 at 224 px.

    .venv/bin/python benchmarks/resnet_folder.py            # CPU: resnet18 at 64 px, batch 32, 1 decoding worker
    python benchmarks/resnet_folder.py --arch resnet152 --image-size 224 --batch-size 256 --workers 8  # a GPU

The JPEGs are made here (data_path.make_jpegs: smooth random images, --side x 3/4 --side px, quality
90, 10 classes), enough for every timed step in one epoch, in a temporary folder.
Contenders (training images/s):
- framework: `python -m experiments task=resnet data=folder data.root=<JPEGs> finetune=full ...`
  (random weights): each JPEG read, decoded, random-resized-cropped and flipped by data=folder, in
  --workers processes on a CPU; on a GPU with data.gpu_decode=true (the workers read, nvJPEG decodes
  each batch on the GPU); bf16-mixed and channels_last on a GPU, as the framework's defaults
- framework_cpu_decode (on a GPU only): the same run with data.gpu_decode=false (decoded in the workers)
- bound: the same model, batch, precision and memory layout on one batch already on the device
  (resnet_train.training_bound): compute only; timed before and after the framework, its rate the
  median over the windows of both (on a shared machine the load moves between contenders)
Ratios: framework / bound (and framework_cpu_decode / bound).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import torch
from data_path import make_jpegs
from harness import accelerator, arguments, rate, report, time_framework
from resnet_train import training_bound


def main() -> None:
    gpu = torch.cuda.is_available()
    p = arguments(
        __doc__.splitlines()[0], batch_size=256 if gpu else 32, warmup=5 if gpu else 2, steps=10 if gpu else 5
    )
    p.add_argument("--arch", default="resnet152" if gpu else "resnet18")
    p.add_argument("--image-size", type=int, default=224 if gpu else 64, help="the crop the model trains on")
    p.add_argument("--workers", type=int, default=8 if gpu else 1, help="data.num_workers: reading/decoding processes")
    p.add_argument("--side", type=int, default=500, help="the JPEGs' width (height: 3/4 of it), as ImageNet's 500x375")
    args = p.parse_args()
    if args.tiny:
        args.arch, args.image_size, args.batch_size, args.side = "resnet18", 32, 8, 96
        args.warmup, args.steps, args.repeats = 1, 2, 2
    device = torch.device(args.device)
    total = args.warmup + args.steps * args.repeats
    settings = {"arch": args.arch, "image_size": args.image_size, "batch_size": args.batch_size}
    settings.update({"workers": args.workers, "cores": len(os.sched_getaffinity(0)), "side": args.side})
    settings.update({"warmup_steps": args.warmup, "steps_per_window": args.steps, "windows": args.repeats})
    contenders = {}
    bound = training_bound(args, device)  # before and after the framework: a shared machine's load moves
    with tempfile.TemporaryDirectory(prefix="resnet_folder_") as tmp:
        root = Path(tmp) / "jpegs"
        start = time.perf_counter()
        make_jpegs(root, total * args.batch_size + args.batch_size, args.side)
        settings["made_s"] = round(time.perf_counter() - start, 1)
        run = (
            "task=resnet", f"model.arch={args.arch}", "model.weights=null", "finetune=full", "data=folder",
            f"data.root={root}", f"data.image_size={args.image_size}", f"data.batch_size={args.batch_size}",
            f"data.num_workers={args.workers}", "data.drop_last=true", f"trainer.max_steps={total}",
            "trainer.max_epochs=1", "trainer.limit_val_batches=0", accelerator(device), "test=false",
        )  # fmt: skip
        decodes = {"framework": device.type == "cuda"} | (
            {"framework_cpu_decode": False} if device.type == "cuda" else {}
        )
        for name, gpu_decode in decodes.items():
            windows = time_framework(args, Path(tmp) / name, *run, f"data.gpu_decode={str(gpu_decode).lower()}")
            contenders[name] = rate(windows, args.steps * args.batch_size)
    bound += training_bound(args, device)
    contenders["bound"] = rate(bound, args.steps * args.batch_size)  # the windows of both
    result = report(
        "resnet training from JPEGs (data=folder) vs compute only (training images/s)",
        "img/s", contenders, settings, args.out, device,
    )  # fmt: skip
    if "framework_cpu_decode" in contenders:
        ratio = contenders["framework_cpu_decode"]["per_s"] / contenders["bound"]["per_s"]
        result["ratios"]["framework_cpu_decode/bound"] = ratio
        print(f"  {'framework_cpu_decode/bound':18s} {ratio:6.3f}")
        if args.out is not None:
            args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
