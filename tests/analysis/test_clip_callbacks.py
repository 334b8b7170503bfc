"""ClipAnalyses on stub embeddings: which split the Procrustes map is fitted on, and its labels."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from configured import configured

from analysis.clip import normalize

NAMES = [f"class{i}" for i in range(4)]


class StubClip:
    """Image embeddings near their class prompt plus a per-split offset (a modality gap)."""

    def __init__(self):
        rng = np.random.default_rng(0)
        self.text = {c: rng.normal(size=16) for c in NAMES}
        self.calls = []
        self.test = self.split(rng, 200)
        self._train = self.split(rng, 300)
        self.device = "cpu"

    def split(self, rng, n):
        labels = np.arange(n) % 4
        protos = np.stack([self.text[NAMES[c]] for c in labels])
        return normalize(protos + 3.0 + rng.normal(scale=1.5, size=(n, 16))), labels

    def encode_texts(self, texts):
        return normalize(np.stack([self.text[t.split()[-1].rstrip(".")] for t in texts]))

    def test_embeddings(self):
        return self.test

    def encode_images(self, index):  # the stub's "images" are indices into its train embeddings
        return torch.from_numpy(self._train[0][index.numpy()])


class StubData:
    classes = NAMES

    def __init__(self, module):
        self.module = module

    def has_split(self, name):
        return name == "train"

    def eval_batches(self, name, device, max_images=None):
        self.module.calls.append(name)
        labels = torch.from_numpy(self.module._train[1])
        for i in range(0, len(labels), 128):  # batches, as a data module gives them
            yield torch.arange(i, min(i + 128, len(labels))), labels[i : i + 128]


def run(tmp_path, fit_split):
    metrics = {}
    module = StubClip()
    trainer = SimpleNamespace(
        default_root_dir=str(tmp_path),
        is_global_zero=True,
        loggers=[],
        global_step=0,
        callback_metrics=metrics,
        datamodule=StubData(module),
    )
    cb = configured(
        "task=clip",
        "callbacks.clip_analyses",
        templates={"plain": ["{}"], "photo": ["a photo of a {}."]},
        train_templates=None,
        pair_template="photo",
        gap_lambdas=[0.0, 1.0],
        procrustes_fit_split=fit_split,
        tsne_pairs=40,
        projections=["pca"],
    )
    cb.on_test_end(trainer, module)
    return {k: float(v) for k, v in metrics.items()}, module.calls


def test_procrustes_is_fitted_on_the_train_split(tmp_path):
    m, calls = run(tmp_path, "train")
    assert calls == ["train"]  # the train split is embedded once, for the fit and the probe
    assert not any("FITTED_ON_TEST" in k for k in m)
    assert m["gap/norm"] > 0.5 and m["procrustes/uncentred/gap_after"] < m["gap/norm"]
    for key in ("zeroshot/plain/top1", "zeroshot/photo/top5", "linear_probe/test_acc", "procrustes/centred/mcnemar_p"):
        assert key in m
    assert (tmp_path / "tables" / "zeroshot_by_template_set.csv").read_text().count("\n") == 3


def test_the_leaky_test_fit_is_labelled_and_never_worse_on_test(tmp_path):
    train_fit, _ = run(tmp_path / "a", "train")
    test_fit, _ = run(tmp_path / "b", "test")
    assert "procrustes_FITTED_ON_TEST/uncentred/pair_cosine_after" in test_fit
    assert not any(k.startswith("procrustes/") for k in test_fit)
    # the map fitted on the test pairs maximises exactly the test pair cosine
    assert (
        test_fit["procrustes_FITTED_ON_TEST/uncentred/pair_cosine_after"]
        >= train_fit["procrustes/uncentred/pair_cosine_after"] - 1e-9
    )


def test_unknown_pair_template_names_the_key():
    with pytest.raises(ValueError, match="pair_template"):
        configured("task=clip", "callbacks.clip_analyses", templates={"plain": ["{}"]}, pair_template="photo")
