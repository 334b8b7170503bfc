"""`python -m experiments eval=<run folder>`: evaluate a finished run again.

The run's own overrides (its `.hydra/overrides.yaml`) compose the same config; its best checkpoint
(the one its `metrics.json` names, else `checkpoints/best.ckpt`, else `last.ckpt`) is loaded with
`train=false`; the test pass and every analysis of the task run on it; the results go to a new
folder that names its source, `<log_dir>/<task>/evals/<run>_<date>_<time>_<random>/`, and the
run folder itself is left as it is. Its metrics.json says which run and checkpoint it evaluated.
Settings that do not change the model or the data may be added (e.g. `logger=csv`,
`callbacks.depth_features.projection=pca`); those that do are refused, as for `resume=`.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from experiments.lifecycle import hydra_quote, settings_beside
from experiments.run_folder import override_root

DROPPED = ("resume", "eval", "hydra", "train", "test", "ckpt_path", "test_ckpt")  # what an evaluation sets itself


def source_checkpoint(folder: Path, record: dict) -> Path | None:
    """The checkpoint a run's own test pass used (its best, as its metrics.json `record` names it), or None
    for a run that trained nothing."""
    best = record.get("best_checkpoint")
    if best and (folder / best).is_file():
        return folder / best
    for name in ("best.ckpt", "last.ckpt"):
        if (folder / "checkpoints" / name).is_file():
            return folder / "checkpoints" / name
    return None


def eval_name(folder: Path) -> str:
    """`<run>` for a single run's folder, `<sweep>-<job>` for a sweep's job: what the eval folder is named after."""
    return folder.name if folder.parent.name == "runs" else f"{folder.parent.name}-{folder.name}"


def eval_overrides(argv: list[str]) -> list[str]:
    """The command line of `eval=<run folder> [overrides]`, rewritten to what Hydra composes; any other
    command line is returned as it is. Raises ValueError naming the problem (one line)."""
    at = [i for i, a in enumerate(argv) if a.startswith("eval=")]
    if not at:
        return argv
    folder = Path(argv[at[-1]].split("=", 1)[1]).expanduser().resolve()
    saved = folder / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        raise ValueError(f"eval={folder}: not a run folder (it has no .hydra/overrides.yaml)")
    if not (folder / "metrics.json").is_file():
        raise ValueError(f"eval={folder}: the run has not finished (no metrics.json); resume={folder} continues it")
    rest = [a for i, a in enumerate(argv) if i not in at]
    if any(a in ("-m", "--multirun") for a in rest):
        raise ValueError("eval= evaluates one run: drop -m")
    if any(a.startswith("resume=") for a in rest):
        raise ValueError("eval= and resume= together: eval= evaluates a finished run, resume= continues one")
    flags, new = settings_beside(
        rest, "eval", folder,
        "evaluate it as it was (or start a new run: train=false ckpt_path=<checkpoint> with your settings)",
    )  # fmt: skip
    old = [o for o in (yaml.safe_load(saved.read_text()) or []) if override_root(o) not in DROPPED]
    try:
        record = json.loads((folder / "metrics.json").read_text())
        metric = record.get("optimized_metric")  # the run's own headline
    except (ValueError, AttributeError) as e:
        raise ValueError(f"eval={folder}: its metrics.json cannot be read ({e})") from e
    ckpt = source_checkpoint(folder, record)
    chosen = any(override_root(a) == "optimized_metric" for a in new)  # the user's own choice wins
    target = f"${{paths.log_dir}}/${{task_name}}/evals/{eval_name(folder)}_${{run_id:}}"
    return [
        *flags,
        *old,
        *new,
        "train=false",
        "test=true",
        *([f"ckpt_path={hydra_quote(ckpt)}"] if ckpt else []),
        *([f"optimized_metric={hydra_quote(metric)}"] if isinstance(metric, str) and metric and not chosen else []),
        f"eval={hydra_quote(folder)}",
        f"hydra.run.dir={target}",
    ]


def evaluated(cfg) -> dict:
    """What metrics.json of an evaluation records about its source: {} for any other run."""
    if not cfg.get("eval"):
        return {}
    return {"evaluated": {"run": str(cfg.eval), "checkpoint": cfg.get("ckpt_path")}}


def comparison_line(cfg, value: float | None) -> list[str]:
    """The line that puts an evaluation's metric beside the one its source run measured."""
    if not cfg.get("eval"):
        return []
    source = Path(cfg.eval) / "metrics.json"
    try:
        measured = json.loads(source.read_text()).get("metrics", {}).get(cfg.optimized_metric)
    except (OSError, ValueError):
        measured = None
    then = f"{measured:.6g}" if isinstance(measured, (int, float)) else "not recorded"
    now = f"{value:.6g}" if isinstance(value, (int, float)) else "none"
    return [f"evaluated {cfg.eval}: {cfg.optimized_metric} = {now} (the run measured {then})"]
