"""Each task's model and data serve every callback of that task, checked on the classes its config
names (nothing is built, no weights loaded): a task whose parts lack a capability fails here, not in
the run's first seconds. The run loop checks the same protocols on the built parts
(analysis.contracts.missing_capabilities)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import get_class

import experiments
from analysis.contracts import missing_members

CONF = Path(experiments.config_dir())
TASKS = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))
PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def _check(cfg) -> list[str]:
    model, data = get_class(cfg.model._target_), get_class(cfg.data._target_)
    problems = []
    for name, conf in (cfg.get("callbacks") or {}).items():
        if not conf or "_target_" not in conf:
            continue
        callback = get_class(conf._target_)
        for side, cls, needs in (("model", model, "module_needs"), ("data", data, "data_needs")):
            for protocol in getattr(callback, needs, ()):
                if missing := missing_members(protocol, cls):
                    problems.append(
                        f"callbacks.{name} needs a {side} that is {protocol.__name__}: {cls.__name__} lacks {missing}"
                    )
    return problems


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("train", ["false", "true"])
def test_every_callback_of_a_task_is_served_by_its_model_and_data(compose_cfg, task, train):
    assert not _check(compose_cfg(f"task={task}", f"train={train}"))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_too(compose_cfg, preset):
    assert not _check(compose_cfg(f"experiment={preset}"))


def test_the_check_reads_the_classes():
    """A callback that needs residual blocks, on the VAE: named as missing, from the class alone."""
    from analysis.contracts import ResidualBlocks
    from models import VAEModule

    assert "residual_block_names" in missing_members(ResidualBlocks, VAEModule)
