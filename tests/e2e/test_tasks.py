"""Each task end to end, in this process through Hydra's compose API (tests/helpers/inprocess.py):
the config tree, the run loop, every figure, table, metric and the offline W&B run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from configured import configured
from formats import write_image_folder
from smoke import RESNET_SMOKE
from tiny_models import TINY_CLIP_SCRATCH, save_tiny_vit
from wandb_reader import read_history, read_run

SMOKE = ("task=vae", "debug=smoke", "data.synthetic_size=200", "logger=wandb")

FIGURES = {
    "curves_loss.png",
    "vae_reconstructions.png",
    "vae_samples.png",
    "vae_latent_space.png",
    "vae_latent_grid.png",
}


def finished(code: int, run: Path) -> dict:
    """A run that succeeded, alone in its task's runs/ folder: its metrics.json."""
    assert code == 0 and [p for p in run.parent.iterdir() if p.is_dir()] == [run]
    return json.loads((run / "metrics.json").read_text())


def test_vae_smoke_run_leaves_all_its_evidence(tmp_path, run_experiment, capsys):
    code, run = run_experiment(*SMOKE, "model.latent_dim=2")
    result = finished(code, run)
    last = capsys.readouterr().out.strip().splitlines()[-5:]  # what a person reads last: the metric, where, how to sync
    metric = result["metrics"]["test/neg_elbo"]
    assert last == [
        f"test/neg_elbo = {metric:.6g}",
        f"run folder: {run}",
        f"metrics: {run / 'metrics.json'}",
        f"figures: {run / 'figures'} (5 PNG)",
        f"W&B run (offline): wandb sync {run}/wandb/offline-run-*",
    ]

    m = result["metrics"]
    assert result["status"] == "ok" and not (run / "FAILED").exists()
    for key in (
        "train/recon",
        "train/kl",
        "train/loss",
        "train/neg_elbo",
        "val/recon",
        "val/kl",
        "val/neg_elbo",
        "test/recon",
        "test/kl",
        "test/neg_elbo",
        "test/latent_silhouette",
        "test/latent_knn_acc",
    ):
        assert key in m, key
    assert m["test/neg_elbo"] == pytest.approx(m["test/recon"] + m["test/kl"], rel=1e-5)
    assert -1 <= m["test/latent_silhouette"] <= 1 and 0 <= m["test/latent_knn_acc"] <= 1

    assert {p.name for p in (run / "figures").glob("*.png")} == FIGURES
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    resolved = (run / "config.yaml").read_text()
    assert "latent_dim: 2" in resolved and "${" not in resolved

    # the offline W&B run: its images as files, its metrics and config read back from the .wandb log
    (wandb_dir,) = run.glob("wandb/offline-run-*")
    media = {p.name.rsplit("_", 2)[0] for p in wandb_dir.glob("files/media/images/**/*.png")}
    assert {"loss", "reconstructions", "samples", "latent_space", "latent_grid"} <= media
    logged = read_run(wandb_dir)
    assert logged["config"]["model"]["latent_dim"] == 2
    history = logged["summary"]
    assert history["test/neg_elbo"] == pytest.approx(m["test/neg_elbo"], rel=1e-6)
    assert history["test/latent_knn_acc"] == pytest.approx(m["test/latent_knn_acc"], rel=1e-6)
    assert history["vae/latent_grid"]["_type"] == "images/separated"
    for key in ("vae/latent_grid", "vae/latent_space", "vae/reconstructions", "curves/loss"):  # a size W&B shows well
        assert 800 <= max(history[key]["width"], history[key]["height"]) <= 1700, (key, history[key])


def test_csv_and_no_logger(tmp_path, run_experiment):
    code, run = run_experiment("task=vae", "debug=smoke", "logger=csv", "model.latent_dim=4")
    finished(code, run)
    header = (run / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "val/neg_elbo" in header and not (run / "wandb").exists()
    assert (run / "figures" / "vae_latent_space.png").is_file()  # 4-D latents: projected
    assert not (run / "figures" / "vae_latent_grid.png").exists()  # only drawn for 2-D latents


def test_resnet_ablation_run_leaves_its_evidence(tmp_path, run_experiment):
    code, run = run_experiment(*RESNET_SMOKE, "ablate.blocks=[3,7]", "logger=wandb", "trainer.max_epochs=2")
    result = finished(code, run)
    assert result["model_info"]["ablated_modules"] == ["layer2.1", "layer4.1"]
    assert result["model_info"]["projection_blocks"] == [2, 4, 6]
    m = result["metrics"]
    for key in (
        "test/acc",
        "val/acc",
        "lesion/intact_acc",
        "lesion/mean_single_drop_acc",
        "depth/stem/silhouette",
        "depth/layer4/knn_acc",
        "test/acc_airplane",
    ):
        assert key in m, key
    assert {p.name for p in (run / "figures").glob("*.png")} == {
        "test_confusion_matrix.png",
        "lesion_sweep.png",
        "depth_features.png",
    }
    single = (run / "tables" / "lesion_single_block.csv").read_text().splitlines()
    assert len(single) == 1 + 8 and single[1].startswith("0,layer1.0,False")
    # blocks already ablated in training: dropping them again changes nothing
    rows = {int(r.split(",")[0]): float(r.split(",")[-1]) for r in single[1:]}
    assert rows[3] == rows[7] == pytest.approx(m["lesion/intact_acc"])
    random_k = (run / "tables" / "lesion_random_k.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in random_k[1:]] == list(range(9))
    (wandb_dir,) = run.glob("wandb/offline-run-*")
    logged = read_run(wandb_dir)
    assert logged["config"]["ablate"]["blocks"] == [3, 7]
    assert logged["config"]["model_info"]["ablated_modules"] == ["layer2.1", "layer4.1"]
    # the dashboard: the job's own overrides in its config, a name saying what this run changes
    assert {"ablate.blocks=[3,7]", "model.arch=resnet18", "trainer.max_epochs=2"} <= set(logged["config"]["overrides"])
    assert (
        logged["name"].startswith("resnet debug=smoke model.arch=resnet18") and "ablate.blocks=[3,7]" in logged["name"]
    )
    assert logged["config"]["logger"]["wandb"]["name"] == logged["name"]
    counts = logged["config"]["parameters"]  # resnet18 with a 10-class head, only the head trains (finetune=head)
    assert counts["total"] == counts["trainable"] + counts["frozen"] and counts["trainable"] == 512 * 10 + 10
    summary = logged["summary"]
    # the monitor's summary is its best epoch (define_metric), not its last
    val_acc = [r["val/acc"] for r in read_history(wandb_dir) if "val/acc" in r]
    assert len(val_acc) == 2 and summary["val/acc"] == {"max": pytest.approx(max(val_acc))}
    assert summary["lesion/intact_acc"] == pytest.approx(m["lesion/intact_acc"])
    assert summary["test/acc"] == pytest.approx(m["test/acc"])
    for table in ("lesion/single_block", "depth/by_depth", "test/per_class_accuracy"):  # tables, each with a chart
        assert summary[table]["_type"] == summary[f"{table}_chart_table"]["_type"] == "table-file", table
    assert summary["depth/by_depth"]["nrows"] == 6  # stem, layer1-4, logits: one chart across depths
    # every figure and table reaches the dashboard: none logged at a step W&B has passed (W&B drops those)
    for figure in ("test/confusion_matrix", "lesion/sweep", "depth/features"):
        assert summary[figure]["_type"] == "images/separated", figure
    assert summary["lesion/random_k"]["_type"] == "table-file" and summary["lesion/random_k"]["nrows"] == 9
    charted = {k for r in read_history(wandb_dir) for k in r}  # measured once: in the summary, not a 1-point chart
    assert not any(k.startswith(("test/acc", "lesion/intact", "depth/stem/")) for k in charted), charted


@pytest.mark.parametrize("blocks,message", [("[8]", "0..7"), ("[x]", "integers")])  # the rest: tests/models
def test_bad_ablation_fails_in_seconds_stating_the_range(tmp_path, blocks, message, run_experiment, capsys):
    code, run = run_experiment(*RESNET_SMOKE, f"ablate.blocks={blocks}", "logger=none")
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and (run / "FAILED").is_file()
    assert "ablate.blocks" in err and message in err, err[-2000:]
    assert not list(tmp_path.glob("logs/**/metrics.json"))


def test_clip_run_with_a_tiny_saved_model(tmp_path, run_experiment):
    import torch

    from models.clip import load_clip

    config = tmp_path / "tiny-clip-e2e.json"
    config.write_text(
        json.dumps(
            {
                "embed_dim": 32,
                "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
                "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2},
            }
        )
    )
    model, _ = load_clip("tiny-clip-e2e", None, str(config))
    torch.save(model.state_dict(), tmp_path / "tiny.pt")
    code, run = run_experiment(
        "task=clip",
        "debug=smoke",
        "model.name=tiny-clip-e2e",
        f"model.model_config={config}",
        f"model.pretrained={tmp_path / 'tiny.pt'}",
        "data.image_size=32",
        "callbacks.clip_analyses.tsne_pairs=60",
        "callbacks.clip_analyses.projections=[pca]",
        "logger=wandb",
    )
    m = finished(code, run)["metrics"]
    for key in (
        "zeroshot/seed_name/top1",
        "zeroshot/openai_stl10/balanced_acc",
        "zeroshot/seed_ensemble/top5",
        "gap/norm",
        "gap/pair_cosine",
        "gap/modality_separability",
        "procrustes/centred/top1_after",
        "procrustes/uncentred/mcnemar_p",
        "linear_probe/test_acc",
    ):
        assert key in m, key
    assert 0 <= m["gap/norm"] <= 2 and -1 <= m["gap/pair_cosine"] <= 1
    assert {p.name for p in (run / "figures").glob("*.png")} == {
        "zeroshot_confusion_matrix.png",
        "gap_shift.png",
        "gap_pairs_pca.png",
    }
    table = (run / "tables" / "zeroshot_by_template_set.csv").read_text().splitlines()
    assert table[0].startswith("templates,prompts,seen_in_training,top1,top5,balanced_acc,airplane") and len(table) == 6
    assert not (run / "open_clip").exists()  # a loaded model is not written again
    (wandb_dir,) = run.glob("wandb/offline-run-*")
    history = read_run(wandb_dir)["summary"]
    assert history["zeroshot/by_template_set"]["_type"] == "table-file"
    assert history["gap/norm"] == pytest.approx(m["gap/norm"])


def evaluates_back(run_experiment, run: Path, result: dict) -> None:
    """`eval=<run>` (its own config, its best checkpoint, train=false) measures the run's own metric again:
    a model trained here (built from model.scratch, or given a new head) is evaluated in that shape."""
    from experiments.evaluate import eval_overrides

    code, again = run_experiment(*eval_overrides([f"eval={run}"]))
    assert code == 0 and again.parent.name == "evals"
    evaluated = json.loads((again / "metrics.json").read_text())
    metric = result["optimized_metric"]
    assert evaluated["optimized_metric"] == metric  # the run's own headline (a trained ViT's: test/acc)
    assert evaluated["metrics"][metric] == pytest.approx(result["metrics"][metric], abs=1e-6), metric
    assert evaluated["model_info"]["finetune"] == result["model_info"]["finetune"]
    # the evaluation's recorded config says what the model was built as, not the task's default
    recorded = yaml.safe_load((again / "config.yaml").read_text())
    assert recorded["finetune"] == result["model_info"]["finetune"] and recorded["train"] is False


CLIP_TINY_TRAINING = (  # the preset, shrunk: 2 epochs of 4 steps on synthetic FashionMNIST, analyses on 64 test images
    "experiment=clip_scratch_fashion_mnist",
    "data.synthetic=true",
    "data.synthetic_size=320",
    "data.batch_size=32",
    "data.eval_batch_size=32",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=4",
    "trainer.limit_test_batches=2",
    "callbacks.clip_analyses.projections=[pca]",
    "callbacks.clip_analyses.tsne_pairs=40",
    "logger=csv",
    *(f"model.scratch.{k}={v}" for k, v in TINY_CLIP_SCRATCH.items()),
)


def test_clip_trains_and_the_saved_model_loads_back_with_the_same_zero_shot_accuracy(run_experiment):
    code, run = run_experiment(*CLIP_TINY_TRAINING, "logger=wandb")
    result = finished(code, run)
    m = result["metrics"]
    assert result["epochs"] == 2 and result["global_step"] == 8
    assert result["model_info"]["finetune"] == "scratch" and result["model_info"]["train_templates"] == 8
    for key in (
        "train/loss",
        "val/loss",
        "val/zeroshot_top1",
        "val/gap_norm",
        "init/gap/norm",
        "init/gap/modality_separability",
        "init/zeroshot/heldout/top1",
        "zeroshot/heldout/top1",
        "zeroshot/train_templates/top1",
        "gap/norm",
        "gap/modality_separability",
        "procrustes/uncentred/top1_after",
    ):
        assert math.isfinite(m[key]), key
    assert result["best_checkpoint"].endswith("best.ckpt")
    table = (run / "tables" / "zeroshot_by_template_set.csv").read_text().splitlines()
    assert [r.split(",")[:3] for r in table[1:]] == [
        ["train_templates", "8", "1.0"],
        ["heldout", "6", "0.0"],
        ["heldout_bare", "1", "0.0"],
    ]
    (wandb_dir,) = run.glob("wandb/offline-run-*")
    history = read_run(wandb_dir)["summary"]
    assert history["init/gap/norm"] == pytest.approx(m["init/gap/norm"]) and "val/gap_norm" in history

    # the best checkpoint, written as open_clip loads it, back through model.pretrained=<file>: the same numbers
    (config,) = (run / "open_clip").glob("*.json")
    code, again = run_experiment(
        *CLIP_TINY_TRAINING,
        "train=false",  # zero-shot only: the preset's data and templates, the saved model
        f"model.name={config.stem}",
        f"model.model_config={config}",
        f"model.pretrained={config.with_suffix('.pt')}",
        "callbacks.clip_analyses.train_templates=${model.train_templates}",
    )
    assert code == 0 and again != run
    loaded = json.loads((again / "metrics.json").read_text())["metrics"]
    for key in ("zeroshot/heldout/top1", "zeroshot/train_templates/top1", "gap/norm"):
        assert loaded[key] == pytest.approx(m[key], abs=1e-6), key
    evaluates_back(run_experiment, run, result)


def test_clip_fine_tunes_every_weight_of_a_saved_model(tmp_path, run_experiment):
    import torch

    from models.clip import load_clip, register_config, scratch_config

    name, config = register_config(scratch_config(**TINY_CLIP_SCRATCH), stem="tiny_clip_full")
    saved, _ = load_clip(name, None, config)
    torch.save(saved.state_dict(), tmp_path / "saved.pt")
    code, run = run_experiment(
        *CLIP_TINY_TRAINING,
        "finetune=full",
        f"model.name={name}",
        f"model.model_config={config}",
        f"model.pretrained={tmp_path / 'saved.pt'}",
    )
    result = finished(code, run)
    assert result["model_info"]["finetune"] == "full" and result["model_info"]["model"] == name
    state = torch_load(run / result["best_checkpoint"])["state_dict"]
    changed = [k for k, v in saved.state_dict().items() if not torch.equal(state[f"model.{k}"], v)]
    assert "visual.conv1.weight" in changed and "token_embedding.weight" in changed  # both towers trained


def test_same_modality_control_trains_two_image_towers_and_measures_their_gap(run_experiment):
    tiny = [o for o in CLIP_TINY_TRAINING[1:] if not o.startswith("callbacks.clip_analyses.")]  # no text analyses here
    code, run = run_experiment("experiment=clip_same_modality_fashion_mnist", *tiny)
    result = finished(code, run)
    m = result["metrics"]
    assert result["model_info"]["partner"] == "image" and result["optimized_metric"] == "gap/norm"
    for prefix in ("init/gap", "gap"):
        assert 0 <= m[f"{prefix}/norm"] <= 2 and 0 <= m[f"{prefix}/retrieval_top1"] <= 1
        assert 0 <= m[f"{prefix}/modality_separability"] <= 1
    assert "val/gap_norm" in m and not any(k.startswith("zeroshot/") for k in m)
    state = torch_load(run / result["best_checkpoint"])["state_dict"]
    assert any(k.startswith("partner_tower.") for k in state) and not any(
        k.startswith("model.transformer.") for k in state
    )


def test_clip_trains_on_a_users_class_folders(tmp_path, run_experiment):
    from PIL import Image

    for name, colour in {"apple": (220, 0, 0), "leaf": (0, 200, 0), "sky": (0, 0, 230)}.items():
        (tmp_path / "photos" / name).mkdir(parents=True)
        for i in range(12):
            Image.new("RGB", (30, 30 + i), colour).save(tmp_path / "photos" / name / f"{i}.png")
    code, run = run_experiment(
        "task=clip",
        "train=true",
        "data=images",
        f"data.root={tmp_path / 'photos'}",
        "data.class_folders=true",
        "data.image_size=28",
        "data.batch_size=8",
        "trainer.max_epochs=1",
        "callbacks.clip_analyses.projections=[pca]",
        "callbacks.clip_analyses.tsne_pairs=8",
        "logger=csv",
        *(f"model.scratch.{k}={v}" for k, v in TINY_CLIP_SCRATCH.items()),
    )
    result = finished(code, run)
    assert result["global_step"] == 4  # 36 images: 7 test, 4 val, 25 train in batches of 8
    table = (run / "tables" / "zeroshot_by_template_set.csv").read_text()
    assert "apple,leaf,sky" in table.splitlines()[0] and "train_templates,8,1.0" in table
    assert math.isfinite(result["metrics"]["gap/norm"]) and list((run / "open_clip").glob("*.pt"))


def torch_load(path):
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def test_clip_presets_compose_to_what_they_promise(compose_cfg):
    from models.clip import scratch_config

    cfg = compose_cfg("experiment=clip_scratch_fashion_mnist")
    assert (cfg.train, _finetune(cfg), cfg.monitor) == (True, "scratch", "val/zeroshot_top1")
    config = scratch_config(**cfg.model.scratch)
    assert (config["vision_cfg"]["image_size"], config["text_cfg"]["context_length"]) == (28, 16)
    heldout = set(cfg.callbacks.clip_analyses.templates.heldout)
    assert heldout and not heldout & set(cfg.model.train_templates)  # zero-shot with templates never trained on
    assert _finetune(compose_cfg("task=clip")) is None  # zero-shot unless train=true
    cfg = compose_cfg("experiment=clip_same_modality_fashion_mnist")
    assert (cfg.model.partner, cfg.callbacks.clip_analyses, cfg.monitor) == ("image", None, "val/loss")


VIT_FIGURES = {
    "predictions_batch_0.png",
    "attention_heads_0.png",
    "attention_heads_1.png",
    "attention_fused_0.png",
    "attention_fused_1.png",
    "attention_head_entropy.png",
    "attention_head_correlation.png",
    "rollout_maps.png",
    "masking_deletion_curves.png",
    "masking_examples.png",
}


def test_vit_run_on_a_folder_of_images_with_a_tiny_saved_model(tmp_path, run_experiment, caplog, monkeypatch):
    monkeypatch.chdir(tmp_path)  # data.root=photos is relative to where the user runs
    save_tiny_vit(tmp_path / "tiny-vit")
    write_image_folder(tmp_path / "photos")
    code, run = run_experiment(
        "task=vit",
        f"model.name={tmp_path / 'tiny-vit'}",
        "data.root=photos",
        "data.image_size=48",
        "logger=wandb",
        "callbacks.patch_masking.trials=2",
        "callbacks.patch_masking.fractions=[0,0.25,0.5,1]",
    )
    m = finished(code, run)["metrics"]
    for bad in ("fake.jpg", "notes.txt", "truncated.jpg"):
        assert bad in caplog.text  # warned by name
    assert m["predictions/images"] == 7 and m["data/skipped_files"] == 3 and m["masking/images"] == 7
    assert m["masking/random/agreement@0"] == 1.0  # nothing masked: the unmasked prediction itself
    curves = (run / "tables" / "masking_curves.csv").read_text().splitlines()
    assert len(curves) == 1 + 4 * 2 + 2 * 4 + 4  # random (4 fractions x 2 trials), most/least first, 4 structured masks
    for key in (
        "masking/random/agreement_auc",
        "masking/most_attended_first/agreement_auc",
        "masking/least_attended_first/agreement_auc",
        "masking/structured/centre/agreement",
    ):
        assert 0 <= m[key] <= 1, key
    for key in ("rollout/entropy", "attention/layer_2/entropy"):  # nats over the 4x4 grid of the 32 px model
        assert 0 < m[key] <= math.log(16) + 1e-6, key
    assert -1 <= m["attention/layer_1/head_correlation"] <= 1
    assert not any(k.startswith(("probe/", "test/acc")) or "accuracy" in k for k in m)  # no labels: agreement only
    assert {p.name for p in (run / "figures").glob("*.png")} == VIT_FIGURES
    table = (run / "tables" / "predictions_top_k.csv").read_text().splitlines()
    assert table[0] == "image,true_class,top1_label,top1_prob,top_k" and len(table) == 8
    assert "truncated.jpg" in (run / "tables" / "data_skipped_files.csv").read_text()
    (wandb_dir,) = run.glob("wandb/offline-run-*")
    history = read_run(wandb_dir)["summary"]
    assert history["masking/random/agreement_auc"] == pytest.approx(m["masking/random/agreement_auc"])
    assert history["masking/curves"]["_type"] == "table-file" and history["rollout/maps"]["_type"] == "images/separated"


def test_vit_run_on_labelled_synthetic_data_scores_against_labels(tmp_path, run_experiment):
    save_tiny_vit(tmp_path / "tiny-vit")
    code, run = run_experiment(
        "task=vit",
        "data=cifar10",
        "debug=smoke",
        f"model.name={tmp_path / 'tiny-vit'}",
        "model.class_map=identity",
        "data.eval_batch_size=16",
        "callbacks.patch_masking.trials=1",
        "callbacks.attention_rollout.target_class=3",
        "callbacks.linear_probe.train_images=100",
    )
    m = finished(code, run)["metrics"]
    assert m["masking/images"] == 32  # two test batches of 16 (debug=smoke)
    for key in (
        "test/acc",
        "test/top5_acc",
        "masking/random/accuracy_auc",
        "masking/most_attended_first/accuracy_auc",
        "masking/structured/border/accuracy",
        "probe/cls/test_acc",
        "probe/patch_mean/test_acc",
        "probe/cls/train_acc",
    ):
        assert 0 <= m[key] <= 1, key
    assert m["test/top5_acc"] >= m["test/acc"]
    probe = (run / "tables" / "probe_linear.csv").read_text().splitlines()
    assert probe[0] == "features,train_images,test_images,train_acc,test_acc" and probe[1].startswith("cls,100,32,")
    assert {p.name for p in (run / "figures").glob("*.png")} == VIT_FIGURES | {
        "predictions_batch_1.png"
    }  # a figure per batch
    (wandb_dir,) = run.glob("wandb/offline-run-*")
    logged = read_run(wandb_dir)
    history = logged["summary"]
    assert history["test/acc"] == pytest.approx(m["test/acc"]) and history["probe/linear"]["_type"] == "table-file"
    assert history["masking/random/accuracy_auc"] == pytest.approx(m["masking/random/accuracy_auc"])


def test_vit_class_map_must_cover_the_data_sets_classes(tmp_path, run_experiment, capsys):
    save_tiny_vit(tmp_path / "tiny-vit")
    code, run = run_experiment(
        "task=vit",
        "data=cifar10",
        "data.synthetic=true",
        f"model.name={tmp_path / 'tiny-vit'}",
        "+model.class_map.airplane=[0]",
        "logger=none",
    )
    err = capsys.readouterr().err
    assert code == 2 and not (run / "checkpoints").exists()  # stopped before any training
    assert "model.class_map must name each data-set class once" in err and "Traceback" not in err


VIT_TINY_TRAINING = (  # a ViT that trains in seconds: 2 epochs of 4 steps, analyses on 64 test images
    "task=vit",
    "train=true",
    "data.synthetic=true",
    "data.batch_size=16",
    "data.eval_batch_size=32",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=4",
    "trainer.limit_test_batches=2",
    "callbacks.patch_masking.trials=1",
    "callbacks.linear_probe.train_images=64",
    "logger=csv",
)
TINY_SCRATCH = {"image_size": 28, "patch_size": 7, "hidden_size": 16, "layers": 2, "heads": 2, "mlp_size": 32}


def test_vit_trains_from_scratch_and_its_best_checkpoint_is_what_the_analyses_see(run_experiment):
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    code, run = run_experiment(
        *VIT_TINY_TRAINING,
        "finetune=scratch",
        "data=fashion_mnist",
        "model.optimizer.lr=3e-3",
        *(f"model.scratch.{k}={v}" for k, v in TINY_SCRATCH.items()),
    )
    result = finished(code, run)
    m = result["metrics"]
    assert result["optimized_metric"] == "test/acc" and result["epochs"] == 2 and result["global_step"] == 8
    assert result["model_info"]["finetune"] == "scratch" and result["model_info"]["class_map"] == "identity"
    for key in ("train/loss", "val/acc", "test/acc", "masking/random/accuracy_auc", "probe/cls/test_acc"):
        assert math.isfinite(m[key]), key
    for key in ("masking/most_attended_first/accuracy_auc", "masking/least_attended_first/accuracy_auc"):
        assert 0 <= m[key] <= 1, key
    assert "T-shirt/top" in (run / "tables" / "predictions_top_k.csv").read_text()  # the data set's classes name labels
    best = run / result["best_checkpoint"]  # relative to the run folder
    assert best.name == "best.ckpt" and (run / "checkpoints" / "last.ckpt").is_file()

    # independently: the best checkpoint's weights, loaded into a fresh model, score the test split as reported
    cfg = OmegaConf.load(run / "config.yaml")
    data = instantiate(cfg.data, _convert_="all")
    data.setup()
    module = configured("task=vit", "model", finetune="scratch", scratch=TINY_SCRATCH)
    module.check_setup(model=module, datamodule=data)
    module.adapt_to_data(data)
    module.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
    module.eval()
    hits = total = 0
    for x, y in data.eval_batches("test", torch.device("cpu"), max_images=64):  # the two test batches
        hits, total = hits + int((module.logits(x).argmax(-1) == y).sum()), total + len(y)
    assert m["test/acc"] == pytest.approx(hits / total, abs=1e-6)
    evaluates_back(run_experiment, run, result)


def test_vit_finetune_preset_replaces_a_saved_models_head_and_keeps_its_frozen_body(tmp_path, run_experiment):
    import torch

    original = save_tiny_vit(tmp_path / "tiny-vit", num_labels=5)  # 5 labels; CIFAR-10 has 10
    code, run = run_experiment(
        "experiment=vit_finetune_cifar10", *VIT_TINY_TRAINING[1:], f"model.name={tmp_path / 'tiny-vit'}"
    )
    result = finished(code, run)
    assert result["model_info"]["finetune"] == "head" and result["model_info"]["num_labels"] == 10
    assert 0 <= result["metrics"]["test/acc"] <= 1 and "masking/random/accuracy_auc" in result["metrics"]
    state = torch.load(run / result["best_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    assert state["model.classifier.weight"].shape == (10, 32)
    for key, value in original.state_dict().items():
        if not key.startswith("classifier"):
            assert torch.equal(state[f"model.{key}"], value), key  # frozen: exactly the saved weights
    evaluates_back(run_experiment, run, result)


def test_vit_presets_compose_to_what_they_promise(compose_cfg):
    from models.vit import scratch_config

    cfg = compose_cfg("experiment=vit_scratch_fashion_mnist")
    assert (cfg.train, _finetune(cfg), cfg.data._target_) == (True, "scratch", "datamodules.FashionMNISTDataModule")
    config = scratch_config(**cfg.model.scratch)
    assert (config.image_size, config.patch_size, config.num_hidden_layers) == (28, 4, 4)
    cfg = compose_cfg("experiment=vit_finetune_cifar10")
    assert (cfg.train, _finetune(cfg), cfg.model.name) == (True, "head", "google/vit-base-patch16-224")
    assert _finetune(compose_cfg("task=vit")) is None  # look only unless train=true
    assert _finetune(compose_cfg("task=vit", "train=true", "finetune=full")) == "full"


@pytest.mark.slow
def test_vit_scratch_preset_learns_fashion_mnist_in_one_epoch(run_experiment):
    """The real data set (/usr/share/datasets/fashion-mnist): one epoch of the preset, about 2 minutes."""
    code, run = run_experiment(
        "experiment=vit_scratch_fashion_mnist",
        "trainer.max_epochs=1",
        "logger=csv",
        "callbacks.patch_masking.max_images=500",
        "callbacks.linear_probe.train_images=1000",
    )
    m = finished(code, run)["metrics"]
    assert m["test/acc"] > 0.7 and m["masking/most_attended_first/accuracy_auc"] < m["masking/random/accuracy_auc"]


@pytest.mark.slow
def test_clip_scratch_preset_learns_zero_shot_fashion_mnist_in_one_epoch(run_experiment):
    """The real data set (/usr/share/datasets/fashion-mnist): one epoch of the preset, a few minutes."""
    code, run = run_experiment(
        "experiment=clip_scratch_fashion_mnist",
        "trainer.max_epochs=1",
        "logger=csv",
        "callbacks.clip_analyses.projections=[pca]",
    )
    m = finished(code, run)["metrics"]
    assert m["zeroshot/heldout/top1"] > 0.5 and m["init/zeroshot/heldout/top1"] < 0.2  # chance: 0.1
    assert m["gap/norm"] < m["init/gap/norm"]


BAD = {  # in-process: (overrides, what the one line must name); the CLI's exit codes: test_cli.py
    "latent_dim 0": (["model.latent_dim=0"], "model.latent_dim"),
    "negative batch size": (["data.batch_size=-8"], "data.batch_size"),
    "missing data": (["data.root=/nonexistent", "data.fallback_roots=[]", "data.download=false"], "data.root"),
    "negative image size": (
        ["data.synthetic=true", "data.image_size=-1"],
        "data.image_size must be a positive integer",
    ),
    "ablate.blocks not a list": ([*RESNET_SMOKE, "ablate.blocks=3"], "ablate.blocks must be a list of block indices"),
    "checkpoint of random bytes": (
        [*RESNET_SMOKE, "model.checkpoint=RANDOM_BYTES"],
        "model.checkpoint=RANDOM_BYTES is not a PyTorch state dict or Lightning checkpoint",
    ),
    "ckpt_path missing": (
        ["data.synthetic=true", "ckpt_path=/nonexistent.ckpt"],
        "ckpt_path=/nonexistent.ckpt does not exist",
    ),
    "max_epochs below -1": (["data.synthetic=true", "trainer.max_epochs=-2"], "trainer.max_epochs must be"),
    "seed not a number": (["data.synthetic=true", "seed=abc"], "seed must be an integer, got 'abc'"),
    "negative learning rate": (["data.synthetic=true", "model.optimizer.lr=-1"], "model.optimizer.lr must be"),
    "learning rate not a number": (["data.synthetic=true", "model.optimizer.lr=abc"], "model.optimizer.lr must be"),
    "test_ckpt unknown": (["data.synthetic=true", "test_ckpt=foo"], "test_ckpt must be best, last or null, got 'foo'"),
    "val_size a fraction above 1": (["data.synthetic=true", "data.val_size=1.5"], "data.val_size=1.5: a fraction"),
    "pca_dims 0": ([*RESNET_SMOKE, "callbacks.depth_features.pca_dims=0"], "callbacks.depth_features.pca_dims must be"),
    "ckpt_path not a checkpoint": (
        ["data.synthetic=true", "ckpt_path=RANDOM_BYTES"],
        "ckpt_path=RANDOM_BYTES: is damaged or not a checkpoint",
    ),
    "W&B online without a login": (
        ["data.synthetic=true", "logger=wandb", "logger.wandb.offline=false"],
        "logger.wandb.offline=false (or WANDB_MODE=online) but there is no W&B login",
    ),
    "vae on cifar10": (
        ["task=vae", "data=cifar10", "data.synthetic=true"],
        "the VAE takes images of shape (1, 28, 28)",
    ),
    "vit hub model offline": (["task=vit", "data.synthetic=true"], "model.name=google/vit-base-patch16-224"),
    "vit no readable image": (["task=vit", "data.paths=[/nonexistent/heron.jpg]"], "no readable image in data.paths"),
    "vit no images given": (["task=vit"], "data.paths"),
    "vit patch does not divide the image": (
        ["task=vit", "train=true", "finetune=scratch", "data=fashion_mnist", "data.synthetic=true"]
        + ["model.scratch.image_size=28", "model.scratch.patch_size=5"],
        "model.scratch.patch_size=5 does not divide model.scratch.image_size=28",
    ),
    "vit heads do not divide the width": (
        ["task=vit", "train=true", "finetune=scratch", "data=fashion_mnist", "data.synthetic=true"]
        + ["model.scratch.hidden_size=30", "model.scratch.heads=4"],
        "model.scratch.heads=4 does not divide model.scratch.hidden_size=30",
    ),
    "vit head fine-tuning without weights": (
        ["task=vit", "train=true", "finetune=head", "model.name=null", "data=fashion_mnist", "data.synthetic=true"],
        "finetune=head starts from pretrained weights: set model.name=",
    ),
    "clip patch does not divide the image": (
        ["experiment=clip_scratch_fashion_mnist", "data.synthetic=true", "model.scratch.patch_size=5"],
        "model.scratch.patch_size=5 does not divide model.scratch.image_size=28",
    ),
    "clip temperature not positive": (
        ["experiment=clip_scratch_fashion_mnist", "data.synthetic=true", "model.temperature=0"],
        "model.temperature must be a positive number",
    ),
    "clip training on unlabelled images": (
        ["task=clip", "train=true", "data=images", "data.synthetic=true"]
        + [f"model.scratch.{k}={v}" for k, v in TINY_CLIP_SCRATCH.items()],
        "(finetune=scratch) trains and is tested on captions made from class names",
    ),
    "callback the model cannot serve": (
        ["task=vae", "data.synthetic=true", "+callbacks.lesion._target_=analysis.resnet_callbacks.LesionSweep"]
        + [
            f"+callbacks.lesion.{k}={v}"
            for k, v in dict(num_images=8, random_trials=1, k_values="null", seed=0).items()
        ],
        "callbacks.lesion (LesionSweep) needs a model that is ResidualBlocks: VAEModule has no",
    ),
}
BAD["debug=smoke on a folder of images"] = (
    ["task=resnet", "data=folder", "data.root=/nonexistent", "debug=smoke", "model.arch=resnet18"],
    "data.synthetic is not a key of datamodules.FolderDataModule: remove it (a preset such as debug=smoke",
)
if not torch.cuda.is_available():  # data.gpu_decode needs a CUDA device; with one, this run would go on
    BAD["gpu_decode without a GPU"] = (
        ["task=resnet", "data=folder", "data.root=/nonexistent", "data.gpu_decode=true", "model.arch=resnet18"],
        "data.gpu_decode=true decodes JPEGs on a CUDA GPU (nvJPEG) and this run's device is cpu",
    )


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_fails_fast_with_one_clear_line(tmp_path, run_experiment, capsys, monkeypatch, case):
    overrides, must_name = BAD[case]
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(bytes(range(256)) * 64)  # random bytes where a checkpoint should be
    overrides = [o.replace("RANDOM_BYTES", str(junk)) for o in overrides]
    must_name = must_name.replace("RANDOM_BYTES", str(junk))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no W&B login
    monkeypatch.delenv("WANDB_MODE", raising=False)
    code, run = run_experiment(
        *overrides, *([] if any(o.startswith("logger=") for o in overrides) else ["logger=none"])
    )
    err = capsys.readouterr().err
    assert code == 2 and not (run / "checkpoints").exists()  # stopped before any training
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and must_name in lines[0], err[-2000:]
    assert "Traceback" not in err
    assert (run / "FAILED").is_file() and not (run / "metrics.json").exists()  # nothing that looks like a success


def test_max_epochs_minus_one_trains_until_stopped_and_says_so(compose_cfg, caplog):
    from experiments.run import _check_trainer

    _check_trainer(compose_cfg("trainer.max_epochs=-1"))
    assert "trainer.max_epochs=-1 and no trainer.max_steps: training runs until it is stopped" in caplog.text
    caplog.clear()
    _check_trainer(compose_cfg("trainer.max_epochs=-1", "trainer.max_steps=100"))
    assert "runs until it is stopped" not in caplog.text


def test_a_data_set_read_from_a_fallback_folder_says_which(tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO)
    debian = "/usr/share/datasets/fashion-mnist"
    configured("data=fashion_mnist", "data", root=str(tmp_path), fallback_roots=[debian], download=False).setup()
    (said,) = [r for r in caplog.records if "read the idx files in" in r.getMessage()]
    assert said.levelname == "WARNING"  # on the terminal, not only in the log file
    expected = f"nothing under data.root={tmp_path}; read the idx files in {debian} (data.fallback_roots)"
    assert said.getMessage().endswith(expected)


def test_lightning_trainer_flags_need_no_plus(compose_cfg):
    cfg = compose_cfg(
        "trainer.max_steps=2", "trainer.accumulate_grad_batches=4", "trainer.val_check_interval=0.5",
        "trainer.benchmark=true", "trainer.profiler=simple",
    )  # fmt: skip
    from hydra.utils import instantiate

    trainer = instantiate(cfg.trainer, default_root_dir=None, logger=False, enable_checkpointing=False)
    assert (trainer.max_steps, trainer.accumulate_grad_batches, trainer.val_check_interval) == (2, 4, 0.5)


def test_tensorboard_and_many_loggers_get_scalars_and_figures(tmp_path, run_experiment):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    code, run = run_experiment("task=vae", "debug=smoke", "data.synthetic_size=100", "logger=many")
    finished(code, run)
    (named,) = (run / "tensorboard").iterdir()  # TensorBoard's run name: the task and what this run changes
    assert named.name == "vae debug=smoke data.synthetic_size=100"
    events = EventAccumulator(str(named), size_guidance={"images": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"val/neg_elbo", "test/neg_elbo", "test/latent_silhouette"} <= scalars  # the HParams tab's numbers
    # the Scalars tab opens on the training curves (its groups are alphabetical), not on epoch or lr-Adam
    assert {"curves/train/loss_epoch", "curves/val/neg_elbo", "curves/lr-Adam"} <= scalars and "epoch" not in scalars
    assert min(tag.split("/")[0] for tag in scalars) == "curves"
    assert {"vae/latent_space", "vae/samples", "curves/loss"} <= set(events.Tags()["images"])
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(events.PluginTagToContent("hparams"))
    assert (run / "csv" / "metrics.csv").is_file() and list(run.glob("wandb/offline-run-*"))  # and the other two


def _finetune(cfg):
    """The finetune mode the run hands the model (experiments.run.model_arguments, once settled)."""
    from experiments.run import model_arguments, settle_finetune

    settle_finetune(cfg)
    return model_arguments(cfg, None)["finetune"]


def test_gpu_decode_on_a_gpu_host_running_on_the_cpu_is_one_line_before_training(
    tmp_path, run_experiment, capsys, monkeypatch
):
    """A GPU machine (CUDA present) with trainer=cpu: the data module's own check passes (CUDA is
    there), the trainer's device is the CPU; one line naming data.gpu_decode, exit 2, before fit (it
    used to stop inside fit with a traceback, exit 1). CUDA's presence is faked: no GPU here."""
    from sample_ids import numbered_folder

    root = numbered_folder(tmp_path / "images", images=6, val=2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    code, run = run_experiment(
        "task=resnet", "data=folder", f"data.root={root}", "data.gpu_decode=true", "model.arch=resnet18",
        "model.weights=null", "trainer=cpu", "logger=none", "trainer.max_epochs=1",
    )  # fmt: skip
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(lines) == 1 and "data.gpu_decode=true" in lines[0], err[-2000:]
    assert "this run's device is cpu" in lines[0] and "Traceback" not in err
    assert not (run / "checkpoints").exists() and not (run / "metrics.json").exists()
