"""A fifth task is a recipe: one task file (and its model), nothing else in the framework changes.

The README's "Adding a task" lists what a task needs; this test follows it with a throwaway task
kept outside conf/ (found through hydra.searchpath), runs it, and checks it left its evidence.
"""

import json
import textwrap


def test_a_new_task_needs_only_its_own_files(tmp_path, run_experiment):
    conf = tmp_path / "extra_conf"
    (conf / "task").mkdir(parents=True)
    (conf / "task" / "toy.yaml").write_text(
        textwrap.dedent(
            """\
            # @package _global_
            defaults:
              - /data: fashion_mnist
            task_name: toy
            monitor: val/acc
            monitor_mode: max
            optimized_metric: test/acc
            model:
              _target_: toy_task.LinearClassifier
              in_features: 784
              lr: 0.1           # (num_classes: the data's, handed over by the run)
            callbacks:
              classification_report:
                _target_: analysis.common_callbacks.ClassificationReport
            """
        )
    )
    code, run = run_experiment(f"hydra.searchpath=[file://{conf}]", "task=toy", "debug=smoke", "logger=csv")
    assert code == 0
    result = json.loads((run / "metrics.json").read_text())
    assert result["task"] == "toy" and 0 <= result["metrics"]["test/acc"] <= 1
    assert "test/acc_T-shirt_top" in result["metrics"]  # the classification report ran on the data set's classes
    assert (run / "figures" / "test_confusion_matrix.png").is_file() and (run / "checkpoints" / "best.ckpt").is_file()
