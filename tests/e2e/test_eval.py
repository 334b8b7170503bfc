"""`python -m experiments eval=<run folder>` (experiments/evaluate.py): a finished run evaluated again
from its own config and best checkpoint, into a new folder that names it, reproducing its metric."""

from __future__ import annotations

import json
import shlex

import pytest

from experiments.evaluate import eval_overrides

TINY = (  # 2 epochs of 4 steps: seconds
    "task=vae", "data.synthetic=true", "data.synthetic_size=160", "data.batch_size=32", "trainer.max_epochs=2",
    "callbacks.vae_figures.num_points=64", "logger=csv",
)  # fmt: skip


def files(folder):
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.name != ".lock"}


def test_eval_of_a_run_folder_reproduces_its_metric_in_a_folder_that_names_it(tmp_path, run_experiment, capsys):
    code, run = run_experiment(*TINY)
    assert code == 0
    measured = json.loads((run / "metrics.json").read_text())
    before = files(run)
    capsys.readouterr()

    code, again = run_experiment(*eval_overrides([f"eval={run}"]))
    assert code == 0
    assert again.parent == tmp_path / "logs" / "vae" / "evals" and again.name.startswith(run.name + "_")
    result = json.loads((again / "metrics.json").read_text())
    metric = measured["optimized_metric"]
    assert result["metrics"][metric] == pytest.approx(measured["metrics"][metric], rel=1e-6)
    assert result["evaluated"] == {"run": str(run), "checkpoint": str(run / measured["best_checkpoint"])}
    assert result["global_step"] == 0 and not (again / "checkpoints").exists()  # nothing trained
    tested = {p.name for p in (again / "figures").iterdir()}  # the same analyses, less the training curves
    assert tested and tested == {p.name for p in (run / "figures").iterdir()} - {"curves_loss.png"}
    assert files(run) == before  # the evaluated run is left as it was
    out = capsys.readouterr().out
    assert f"evaluated {run}: {metric} = " in out and "(the run measured " in out


def test_eval_refuses_what_would_not_evaluate_that_run(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ValueError, match="not a run folder"):
        eval_overrides([f"eval={run}"])
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- task=vae\n- model.latent_dim=4\n- train=true\n")
    with pytest.raises(ValueError, match="has not finished"):
        eval_overrides([f"eval={run}"])
    (run / "metrics.json").write_text("{}")
    with pytest.raises(ValueError, match="model.latent_dim=8 would change the model or data"):
        eval_overrides([f"eval={run}", "model.latent_dim=8"])
    with pytest.raises(ValueError, match="drop -m"):
        eval_overrides(["-m", f"eval={run}"])
    argv = eval_overrides([f"eval={run}", "logger=csv"])  # no checkpoint: the model as the config builds it
    assert argv[:4] == ["task=vae", "model.latent_dim=4", "logger=csv", "train=false"]
    assert not any(a.startswith("ckpt_path=") for a in argv) and shlex.join(argv).count("train=") == 1


def test_a_checkpoint_is_not_evaluated_on_a_data_set_of_other_classes(tmp_path, run_experiment, capsys):
    """A head of the same size would load and score CIFAR-10's labels as FashionMNIST's: the checkpoint
    keeps the class names it was trained on, and train=false ckpt_path= on other classes is one line."""
    import torch
    from smoke import RESNET_SMOKE

    code, run = run_experiment(*RESNET_SMOKE, "logger=csv")  # synthetic CIFAR-10
    assert code == 0
    best = run / json.loads((run / "metrics.json").read_text())["best_checkpoint"]
    saved = torch.load(best, map_location="cpu", weights_only=False)["data_classes"]
    assert saved[:2] == ["airplane", "automobile"] and len(saved) == 10
    capsys.readouterr()

    code, other = run_experiment(
        *RESNET_SMOKE, "logger=csv", "data=fashion_mnist", "data.synthetic=true", "train=false", f"ckpt_path={best}"
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and (other / "FAILED").is_file()
    assert f"ckpt_path={best} was trained on other classes (airplane, automobile" in err, err[-2000:]
    assert "(T-shirt/top, Trouser" in err and not (other / "metrics.json").exists()

    code, same = run_experiment(*RESNET_SMOKE, "logger=csv", "train=false", f"ckpt_path={best}")  # its own data
    assert code == 0 and (same / "metrics.json").is_file()


def test_an_evaluated_checkpoint_is_recorded_as_it_was_trained(tmp_path, run_experiment):
    """train=false ckpt_path= builds the model as its checkpoint was trained (finetune=full here), whatever
    the task's default (head): config.yaml, the config the loggers keep, says the same, not `finetune: head`."""
    import yaml
    from smoke import RESNET_SMOKE

    code, run = run_experiment(*RESNET_SMOKE, "logger=csv", "finetune=full")
    assert code == 0
    best = run / json.loads((run / "metrics.json").read_text())["best_checkpoint"]
    code, evaluated = run_experiment(*RESNET_SMOKE, "logger=csv", "train=false", f"ckpt_path={best}")
    assert code == 0
    assert yaml.safe_load((evaluated / "config.yaml").read_text())["finetune"] == "full"
    assert yaml.safe_load((evaluated / ".hydra" / "config.yaml").read_text())["finetune"] == "full"
    hparams = yaml.safe_load((evaluated / "csv" / "hparams.yaml").read_text())
    assert hparams["finetune"] == "full" and hparams["train"] is False  # what W&B and TensorBoard get too
