"""The real config tree, composed as the CLI composes it."""

import re
from pathlib import Path

import pytest
from hydra.utils import instantiate

import experiments


def test_configs_ship_inside_the_package_or_checkout():
    assert experiments.config_dir().endswith("conf")


TASKS = sorted(p.stem for p in Path(experiments.config_dir(), "task").glob("*.yaml"))


def test_the_four_tasks_are_there():
    assert {"vae", "resnet", "vit", "clip"} <= set(TASKS)


@pytest.mark.parametrize("task", TASKS)
def test_every_task_composes(compose_cfg, task):
    cfg = compose_cfg(f"task={task}")
    assert cfg.task_name == task and cfg.optimized_metric
    assert (cfg.monitor is not None) == bool(cfg.train)  # a training task picks its best epoch; others have none


@pytest.mark.parametrize("name", sorted(p.stem for p in Path(experiments.config_dir(), "model").glob("*.yaml")))
def test_every_model_config_composes_on_its_own(name):
    from omegaconf import OmegaConf

    conf = OmegaConf.load(Path(experiments.config_dir(), "model", f"{name}.yaml"))
    OmegaConf.to_container(conf, resolve=True)  # no key reaches outside the model's own file


def test_vae_task_builds_data_and_model_from_config(compose_cfg):
    from experiments.run import build_model

    cfg = compose_cfg("task=vae", "data.synthetic=true", "model.latent_dim=3")
    dm = instantiate(cfg.data, _convert_="all")
    model = build_model(cfg, dm)  # what the run loop does: compile is its key, not the model's
    assert dm.num_classes == 10 and model.vae.latent_dim == 3
    assert cfg.data.fallback_roots == ["/usr/share/datasets/fashion-mnist"]


def test_seed_vae_preset_has_the_seed_settings(compose_cfg):
    cfg = compose_cfg("experiment=seed_vae")
    assert (cfg.model.latent_dim, cfg.data.batch_size, cfg.trainer.max_epochs) == (2, 128, 30)
    assert (cfg.model.optimizer.lr, cfg.model.kl_anneal_epochs, cfg.model.reconstruction) == (1e-3, 10, "mse")
    assert (cfg.data.val_size, cfg.seed, cfg.data.split_seed) == (5000, 42, 42)


def test_every_knob_is_documented():
    """Each key that a config group defines carries a comment, on its line or the line above
    (presets in experiment/ and debug/, and tasks' top-level keys, set keys documented where
    they are defined)."""
    undocumented = []
    for path in Path(experiments.config_dir()).rglob("*.yaml"):
        if path.parent.name in ("experiment", "debug"):
            continue
        lines = path.read_text().splitlines()
        block = None  # the indentation of a `key: |` block's text, which holds no keys
        for i, line in enumerate(lines):
            stripped = line.strip()
            indent = len(line) - len(line.lstrip())
            if block is not None and (not stripped or indent >= block):
                continue
            block = None
            if re.search(r":\s*[|>][-+]?\s*(#.*)?$", stripped):
                block = indent + 1
            if not stripped or stripped.startswith(("#", "-")) or ":" not in stripped or stripped.startswith("_"):
                continue
            key, _, value = stripped.partition(":")
            if path.parent.name == "task" and not line.startswith(" "):
                continue  # a task sets top-level keys that config.yaml documents
            if value.strip() == "" or stripped.startswith("defaults"):
                continue  # a section header; its children are documented
            if "#" not in line and not (i and lines[i - 1].strip().startswith("#")):
                undocumented.append(f"{path.name}: {stripped}")
    assert not undocumented, undocumented


def test_run_id_is_fixed_per_launch(monkeypatch):
    monkeypatch.delenv(experiments.RUN_ID_ENV, raising=False)
    first = experiments.run_id()
    assert experiments.run_id() == first and len(first.split("_")[-1]) == 6
    monkeypatch.delenv(experiments.RUN_ID_ENV)
    assert experiments.run_id() != first  # another launch in the same second: another folder


def test_compile_compiles_the_forward_in_place_and_keeps_the_contracts(compose_cfg):

    from analysis.contracts import LatentGenerative
    from experiments.run import build_model

    cfg = compose_cfg("task=vae", "compile=true")
    model = build_model(cfg, None)
    assert isinstance(model, LatentGenerative) and model._compiled_call_impl is not None
    assert build_model(compose_cfg("task=vae"), None)._compiled_call_impl is None  # opt-in


def test_ranks_started_apart_agree_on_one_run_id(monkeypatch):
    """torchrun's workers: the first to ask stores its id in the agent's store, the others read it."""
    import threading
    from datetime import timedelta

    from torch.distributed import TCPStore

    master = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=30))
    env = {"TORCHELASTIC_USE_AGENT_STORE": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(master.port)}
    for k, v in {**env, "TORCHELASTIC_RUN_ID": "job-a"}.items():
        monkeypatch.setenv(k, v)
    ids = []
    ranks = [threading.Thread(target=lambda: ids.append(experiments.shared_run_id(timeout_s=30))) for _ in range(4)]
    for t in ranks:
        t.start()
    for t in ranks:
        t.join()
    assert len(ids) == 4 and len(set(ids)) == 1 and ids[0].count("_") == 2  # YYYY-MM-DD_HH-MM-SS_xxxxxx
    assert experiments.shared_run_id(timeout_s=30) == ids[0]  # a restarted worker: the same folder
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-b")
    assert experiments.shared_run_id(timeout_s=30) != ids[0]  # another launch: another folder


def test_srun_tasks_share_the_jobs_id_and_a_single_process_has_none(monkeypatch):
    for k in ("TORCHELASTIC_USE_AGENT_STORE", "RANK", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    assert experiments.shared_run_id() == "slurm_4242_0" and experiments.rank_suffix() == "_rank3"
    monkeypatch.setenv("SLURM_NTASKS", "1")  # one task (a plain sbatch job): nothing to agree on
    assert experiments.shared_run_id() is None and experiments.rank_suffix() == ""


def test_each_rank_logs_to_its_own_run_log(monkeypatch):
    """run.log for rank 0 or a single process; run_rank<N>.log for the others, however they were started
    (torchrun's RANK, srun's SLURM_PROCID, Lightning's own DDP children with LOCAL_RANK and NODE_RANK)."""
    for k in ("RANK", "SLURM_PROCID", "SLURM_NTASKS", "LOCAL_RANK", "NODE_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert experiments.rank_suffix() == ""
    monkeypatch.setenv("LOCAL_RANK", "1")  # Lightning's second process on the first node
    assert experiments.rank_suffix() == "_rank1"
    monkeypatch.setenv("NODE_RANK", "2")
    assert experiments.rank_suffix() == "_rank2.1"
    monkeypatch.setenv("RANK", "0")  # torchrun names the global rank: it wins
    assert experiments.rank_suffix() == ""
    logging = Path(experiments.config_dir(), "hydra", "default.yaml").read_text()
    assert "filename: ${hydra.runtime.output_dir}/run${rank_suffix:}.log" in logging


def test_debug_presets_and_early_stopping_compose_to_what_they_say(compose_cfg):
    """lightning-hydra-template's debug presets and an early-stopping callback on the task's monitor."""
    assert compose_cfg("debug=overfit").trainer.overfit_batches == 3
    limited = compose_cfg("debug=limit").trainer
    assert limited.limit_train_batches == 0.01 and limited.max_epochs == 3
    assert compose_cfg("debug=profiler").trainer.profiler == "simple"
    cfg = compose_cfg("task=resnet", "callbacks=early_stopping")
    stop = cfg.callbacks.early_stopping
    assert (stop.monitor, stop.mode, stop.patience) == ("val/acc", "max", 3)
    assert "model_checkpoint" in cfg.callbacks and "lesion_sweep" in cfg.callbacks  # the defaults and the task's


def test_importing_the_packages_registers_nothing():
    """No import side effect a test must undo: the resolvers come from the entry point's register()."""
    import subprocess
    import sys

    code = (
        "import experiments, experiments.run, models, datamodules, analysis\n"
        "from omegaconf import OmegaConf\n"
        "assert not any(OmegaConf.has_resolver(n) for n in ('run_id', 'when', 'auto_precision', 'rank_suffix'))\n"
        "from experiments import resolvers\n"
        "resolvers.register()\n"
        "assert all(OmegaConf.has_resolver(n) for n in resolvers.RESOLVERS)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
