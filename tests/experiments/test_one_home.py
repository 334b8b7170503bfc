"""Every value has one home (DESIGN.md, "Where values live").

The rule: a key in conf/ with its comment is the value's home, and the constructor of a part that
conf/ builds (a model, a data module, a callback) takes no Python default for it, as
lightning-hydra-template's modules: a test or a notebook that builds a part by hand takes its keys
from the YAML (tests/helpers/configured.py). So a Python default can never drift from its YAML (as
the clip callbacks' `gap_lambdas` once did: (0.0 ... 1.0) in Python, [-0.5 ... 1.0] in
task/clip.yaml): these tests fail when a constructor states a default for a key its YAML sets, or
when a knob has a second name.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

import experiments

CONF = Path(experiments.config_dir())
OURS = ("models.", "datamodules.", "analysis.", "experiments.")
# run-wide values a part may take as its own default and still override on its own (`callbacks.x.seed=3`)
RUN_WIDE = ("seed", "monitor", "monitor_mode", "task_name", "tags", "paths.")


def _raw(path: Path) -> DictConfig:
    return OmegaConf.load(path)


def _data_node(path: Path) -> DictConfig:
    """A data set's own file, without the shared in-memory keys it extends (those are checked as
    data_in_memory.yaml, against InMemoryDataModule)."""
    node = _raw(path)
    node.pop("defaults", None)
    return node


def configured_parts() -> list[tuple[str, DictConfig]]:
    """(where, node) for every node in conf/ that builds one of our classes, with the values its file gives."""
    parts = [(f"model/{p.name}", _raw(p)) for p in sorted((CONF / "model").glob("*.yaml"))]
    parts += [(f"data/{p.name}", _data_node(p)) for p in sorted((CONF / "data").glob("*.yaml"))]
    shared = OmegaConf.merge({"_target_": "datamodules.base.InMemoryDataModule"}, _raw(CONF / "data_in_memory.yaml"))
    parts.append(("data_in_memory.yaml", shared))
    presets = [*sorted((CONF / "task").glob("*.yaml")), *sorted((CONF / "experiment").glob("*.yaml"))]
    for path in [CONF / "callbacks" / "default.yaml", *presets]:
        node = _raw(path)
        callbacks = (node.get("callbacks") or {}) if path.parent.name != "callbacks" else node
        parts += [(f"{path.parent.name}/{path.name}: callbacks.{k}", v) for k, v in callbacks.items() if v]
    # a preset's callback node that only changes a task's callback has no _target_ of its own: not a part
    return [(w, n) for w, n in parts if isinstance(n, DictConfig) and str(n.get("_target_", "")).startswith(OURS)]


def _python_defaults(target: str, where: str) -> dict:
    """The defaults our own constructors state, along the class's bases (a subclass that passes
    **kwargs on keeps its base's); a library's defaults (Lightning's ModelCheckpoint) are its own."""
    defaults: dict = {}
    classes = get_class(target).__mro__
    for cls in classes:
        if "__init__" not in vars(cls) or not cls.__module__.startswith(OURS):
            continue
        for name, p in inspect.signature(cls.__init__).parameters.items():
            if p.default is not inspect.Parameter.empty:
                defaults.setdefault(name, p.default)
    return defaults


PARTS = configured_parts()


@pytest.mark.parametrize("where,node", PARTS, ids=[w for w, _ in PARTS])
def test_a_configured_argument_has_no_python_default(where, node):
    """The YAML is the one home of a part's settings: its constructor states none of them again."""
    defaults = _python_defaults(node._target_, where)
    twice = [f"{k}={defaults[k]!r}" for k in node if not k.startswith("_") and k in defaults]
    assert not twice, f"{node._target_} has Python defaults for keys {where} sets: {', '.join(twice)}"


def test_the_check_catches_a_drift(monkeypatch):
    """The gap_lambdas drift, put back (a Python default beside task/clip.yaml's): the check reports it."""
    from analysis.clip_callbacks import ClipAnalyses

    node = next(n for w, n in PARTS if w.endswith("callbacks.clip_analyses"))
    signature = inspect.signature(ClipAnalyses.__init__)
    params = [p.replace(default=(0.0, 1.0)) if p.name == "gap_lambdas" else p for p in signature.parameters.values()]

    def init(self, *args, **kwargs): ...

    init.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    monkeypatch.setattr(ClipAnalyses, "__init__", init)
    with pytest.raises(AssertionError, match=r"gap_lambdas=\(0.0, 1.0\)"):
        test_a_configured_argument_has_no_python_default("task/clip.yaml", node)


def _pure_references(node, path: str = ""):
    """(key, the key it only repeats) for every value that is exactly `${other.key}`."""
    raw = OmegaConf.to_container(node, resolve=False) if isinstance(node, DictConfig) else node
    for key, value in raw.items():
        here = f"{path}{key}"
        if isinstance(value, dict):
            yield from _pure_references(value, here + ".")
        elif isinstance(value, str) and value.startswith("${") and value.endswith("}") and value.count("${") == 1:
            inner = value[2:-1]
            if ":" not in inner:  # a resolver (${when:...}) computes a value; a bare reference renames one
                yield here, inner


@pytest.mark.parametrize("task", sorted(p.stem for p in (CONF / "task").glob("*.yaml")))
def test_no_knob_has_two_names(compose_cfg, task):
    """No key of the composed config only repeats another (as model.ablate_blocks repeated
    ablate.blocks): a knob is set, shown in W&B and named in errors under one name. Parts may take
    a run-wide value (the seed, the monitored metric, the paths) as their default."""
    cfg = compose_cfg(f"task={task}")
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    aliases = [f"{key} = ${{{target}}}" for key, target in _pure_references(cfg) if not target.startswith(RUN_WIDE)]
    assert not aliases, f"keys that are second names of another: {aliases}"


@pytest.mark.parametrize("task", sorted(p.stem for p in (CONF / "task").glob("*.yaml")))
def test_the_model_node_holds_no_key_of_the_run(compose_cfg, task):
    """finetune, ablate and compile are the run's keys, the class count the data's: not the model's too."""
    cfg = compose_cfg(f"task={task}")
    assert not {"finetune", "ablate_blocks", "ablate_mode", "ablate_when", "compile", "num_classes"} & set(cfg.model)


def test_the_wandb_config_of_a_resnet_run_holds_each_knob_once(compose_cfg):
    from experiments.loggers import log_config

    class Recorder:
        def log_hyperparams(self, params):
            self.params = params

    recorder = Recorder()
    cfg = compose_cfg("task=resnet", "ablate.blocks=[3,7]", "finetune=last_stage", "paths.output_dir=/tmp/x")
    log_config([recorder], OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]))  # as a run gets it

    def leaves(d, path=""):
        for k, v in d.items():
            yield from leaves(v, f"{path}{k}.") if isinstance(v, dict) else [(f"{path}{k}", v)]

    flat = dict(leaves(recorder.params))
    named = {k: v for k, v in flat.items() if k.rsplit(".", 1)[-1] in ("finetune", "compile", "num_classes")}
    named |= {k: v for k, v in flat.items() if "ablate" in k}
    assert named == {
        "finetune": "last_stage",
        "compile": False,
        "ablate.blocks": [3, 7],
        "ablate.mode": "drop",
        "ablate.when": "train",
    }
