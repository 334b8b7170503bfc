"""data=folder through the run loop: the resnet task fine-tunes, tests and runs every analysis with
the class names of the folders; and on the real FashionMNIST written out as a folder (slow), a
resnet18 reaches the in-memory path's accuracy on the same images, and the vit and clip tasks run."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny_models import TINY_CLIP_SCRATCH


def finished(code: int, run: Path) -> dict:
    assert code == 0, (run / "FAILED").read_text() if (run / "FAILED").exists() else code
    return json.loads((run / "metrics.json").read_text())


def colour_folder(root: Path, per_class: int = 6) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    colours = {"apple": (220, 30, 30), "leaf": (30, 200, 30), "sky": (30, 30, 230)}
    for split, n in (("train", per_class), ("val", 2), ("test", 3)):
        for name, colour in colours.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                noise = rng.integers(-20, 20, (20 + i, 24, 3))
                img = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / split / name / f"{i}.jpg")
    return root


@pytest.mark.slow  # ~25 s on a busy 2-core machine: a whole resnet run with its analyses
def test_resnet_on_a_folder_trains_tests_and_runs_every_analysis_with_its_class_names(tmp_path, run_experiment):
    root = colour_folder(tmp_path / "photos")
    code, run = run_experiment(
        "task=resnet", "data=folder", f"data.root={root}", "model.arch=resnet18", "model.weights=null",
        "data.image_size=16", "data.batch_size=6", "data.num_workers=0", "trainer.max_epochs=1", "logger=csv",
        "callbacks.depth_features.projection=pca", "callbacks.depth_features.knn_k=2",
        "callbacks.depth_features.knn_folds=2", "callbacks.lesion_sweep.random_trials=1",
    )  # fmt: skip
    result = finished(code, run)
    assert result["global_step"] == 3  # 18 training images in batches of 6
    rows = list(csv.DictReader((run / "tables" / "test_per_class_accuracy.csv").open()))
    assert [r["class"] for r in rows] == ["apple", "leaf", "sky"] and [r["images"] for r in rows] == ["3"] * 3
    assert {p.name for p in (run / "figures").glob("*.png")} >= {
        "test_confusion_matrix.png", "lesion_sweep.png", "depth_features.png"
    }  # fmt: skip
    assert math.isfinite(result["metrics"]["test/acc"])
    import torch

    state = torch.load(run / result["best_checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    assert [v.shape[0] for k, v in state.items() if k.endswith("fc.weight")] == [3]  # a head for the 3 folders


def test_a_folder_without_val_is_one_line_naming_data_root(tmp_path, run_experiment, capsys):
    (tmp_path / "photos" / "train" / "a").mkdir(parents=True)
    code, run = run_experiment("task=resnet", "data=folder", f"data.root={tmp_path / 'photos'}", "model.weights=null")
    assert code == 2
    message = f"error: data.root={tmp_path / 'photos'} must hold train/<class>/ and val/<class>/ folders"
    assert capsys.readouterr().err.strip().splitlines()[-1] == message


# -- the real FashionMNIST as a folder (slow) ------------------------------------------------------
LIMIT = 2000  # the first 2,000 images of each split (train, val, test), in memory and as PNG files
RESNET = (
    "task=resnet", "model.arch=resnet18", "model.weights=null", "finetune=scratch", "data.image_size=32",
    "data.batch_size=64", "data.eval_batch_size=500", "trainer.max_epochs=3", "logger=csv", "seed=0",
    "~callbacks.lesion_sweep", "~callbacks.depth_features",
)  # fmt: skip
SAME_TRANSFORM = (  # what the in-memory path does: the whole 28 px image resized to 32, no crop, no flip
    "data.crop_scale=[1,1]", "data.crop_ratio=[1,1]", "data.hflip=false", "data.resize_size=32",
)  # fmt: skip


@pytest.fixture(scope="module")
def fashion_folder(tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).parents[2] / "scripts"))
    from fashion_mnist_folder import write_folder

    out = tmp_path_factory.mktemp("fashion") / "folder"
    assert write_folder(out, limit=LIMIT) == {"train": LIMIT, "val": LIMIT, "test": LIMIT}
    return out


@pytest.mark.slow  # two resnet18 runs of 3 epochs on 2,000 images (~2-4 min on 2 cores)
def test_resnet18_from_the_folder_matches_the_in_memory_accuracy(fashion_folder, run_experiment):
    code, run = run_experiment(
        *RESNET, "data=fashion_mnist", "data._target_=fashion_subset.FashionMNISTFirst", f"+data.limit={LIMIT}"
    )
    memory = finished(code, run)["metrics"]["test/acc"]
    code, run = run_experiment(
        *RESNET, "data=folder", f"data.root={fashion_folder}", "data.num_workers=1", *SAME_TRANSFORM
    )
    folder = finished(code, run)["metrics"]["test/acc"]
    assert memory > 0.7 and folder > 0.7  # it learned (chance: 0.1)
    # 2,000 test images at ~0.8: each accuracy has a sampling standard error of ~0.009, their difference ~0.013;
    # 0.04 is three of those (training noise comes on top). Measured: 0.805 in memory, 0.7935 from the folder.
    assert abs(folder - memory) < 0.04, (folder, memory)


@pytest.mark.slow
def test_vit_and_clip_train_on_the_folder(fashion_folder, run_experiment):
    vit = {"image_size": 28, "patch_size": 7, "hidden_size": 16, "layers": 2, "heads": 2, "mlp_size": 32}
    code, run = run_experiment(
        "task=vit", "train=true", "finetune=scratch", "data=folder", f"data.root={fashion_folder}",
        "data.image_size=28", "data.batch_size=64", "data.eval_batch_size=250", "data.num_workers=1",
        "trainer.max_epochs=1", "trainer.limit_train_batches=10", "trainer.limit_test_batches=2",
        "callbacks.patch_masking.trials=1", "callbacks.linear_probe.train_images=256", "logger=csv",
        *(f"model.scratch.{k}={v}" for k, v in vit.items()),
    )  # fmt: skip
    result = finished(code, run)
    assert result["model_info"]["class_map"] == "identity" and math.isfinite(result["metrics"]["test/acc"])
    tables = "".join(p.read_text() for p in (run / "tables").glob("*.csv"))
    assert "Ankle boot" in tables  # the model's labels are the folders' class names
    code, run = run_experiment(
        "task=clip", "train=true", "data=folder", f"data.root={fashion_folder}", "data.image_size=28",
        "data.batch_size=64", "data.num_workers=1", "trainer.max_epochs=1", "trainer.limit_train_batches=10",
        "callbacks.clip_analyses.projections=[pca]", "callbacks.clip_analyses.tsne_pairs=8", "logger=csv",
        *(f"model.scratch.{k}={v}" for k, v in TINY_CLIP_SCRATCH.items()),
    )  # fmt: skip
    result = finished(code, run)
    table = (run / "tables" / "zeroshot_by_template_set.csv").read_text()
    assert "Ankle boot" in table.splitlines()[0]  # the prompts name the folders' classes
    assert math.isfinite(result["metrics"]["gap/norm"])
