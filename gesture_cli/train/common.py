"""Small pieces every trainer shares around `fit`: checking the common options, the run-dir step,
refusing to overwrite an unfinished run, and publishing the checkpoints next to the final artifacts.

The train / val / test splits with sample caps live in data/splits.py, because evaluation rebuilds
the same splits and must not import training code; the trainers import them from here with the rest.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from gesture_cli.core.errors import ArtifactError, UsageError
from gesture_cli.data.splits import Splits, cap_samples, capped_indices, make_splits, random_holdout  # noqa: F401  (re-exported: the trainers' split helpers)


def loop_config(cfg, *, lr: float, monitor: str, monitor_mode: str = "max"):
    """The `fit` settings (TrainConfig) of a trainer config that carries the usual loop fields."""
    from gesture_cli.train.loop import TrainConfig

    return TrainConfig(
        epochs=cfg.epochs, max_steps=cfg.max_steps, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum, lr=lr,
        weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps, warmup_ratio=cfg.warmup_ratio, max_grad_norm=cfg.max_grad_norm,
        precision=cfg.precision, seed=cfg.seed, checkpoint_every=cfg.checkpoint_every, eval_every=cfg.eval_every,
        patience=cfg.patience, monitor=monitor, monitor_mode=monitor_mode,
    )


def check_data_fields(cfg) -> None:
    """--val-fraction, --max-samples and (where the config has one) --image-size."""
    if not 0 <= cfg.val_fraction < 1:
        raise UsageError(f"--val-fraction must lie in [0, 1); got {cfg.val_fraction}")
    if cfg.max_samples is not None and cfg.max_samples < 2:
        raise UsageError("--max-samples must be at least 2")
    if getattr(cfg, "image_size", None) is not None and cfg.image_size < 8:
        raise UsageError("--image-size must be at least 8 pixels")


def check_lora_fields(cfg) -> None:
    """--rank, --alpha, --dropout, and --target-modules only with --method lora."""
    if cfg.rank < 1:
        raise UsageError(f"--rank must be at least 1; got {cfg.rank}")
    if not cfg.alpha > 0:
        raise UsageError(f"--alpha must be positive; got {cfg.alpha}")
    if not 0 <= cfg.dropout < 1:
        raise UsageError(f"--dropout must lie in [0, 1); got {cfg.dropout}")
    if cfg.target_modules and cfg.method != "lora":
        raise UsageError(f"--target-modules applies to --method lora, not {cfg.method}")


def begin_training_step(run, command: str, cfg, splits: Splits, *, out_rel: str, device: str, argv, force: bool):
    """The run-dir step of a trainer: its config, the files and cache tokens of every split it reads, its output folder."""
    from gesture_cli.core.config import config_to_dict

    datasets = [d for d in (splits.train, splits.val, splits.test) if d is not None]
    sources = sorted({str(p) for d in datasets for p in d.source_files})
    tokens = {f"dataset:{d.split}": d.cache_token for d in datasets if d.cache_token}
    return run.begin(command, config={**config_to_dict(cfg), "device": device}, inputs=[Path(p) for p in sources], input_keys=tokens,
                     outputs=[out_rel], argv=argv, force=force)


def check_resume(last_dir: Path, resolved: dict, keys: Sequence[str], *, command: str | None = None,
                 backbone_hint: bool = False) -> None:
    """--resume: a checkpoint must exist in last_dir, and its saved config must agree with `resolved` on `keys`.

    The first differing key is named (and the others listed). backbone_hint: a different backbone gets
    its own message, pointing at --backbone."""
    from gesture_cli.train.checkpoint import find_checkpoint, read_checkpoint_state

    found = find_checkpoint(last_dir)
    if found is None:
        how = f"run `gx {command}` without --resume" if command else "run without --resume"
        raise ArtifactError(f"nothing to resume: no checkpoint at {last_dir}; {how} to start training")
    saved = read_checkpoint_state(found).get("meta", {}).get("config", {})
    diffs = [(k, saved.get(k), resolved[k]) for k in keys if k in saved and k in resolved and saved.get(k) != resolved[k]]
    if not diffs:
        return
    key, old, new = diffs[0]
    if backbone_hint and key == "backbone":
        raise UsageError(f"cannot resume: {found} was trained with backbone '{old}', not '{new}'; use --backbone {old} or another run dir")
    more = f" (and {', '.join(k for k, _, _ in diffs[1:])})" if len(diffs) > 1 else ""
    raise UsageError(f"cannot resume {found}: it was trained with {key}={old!r}, this run has {key}={new!r}{more}; "
                     "use the same settings or --force without --resume")


def refuse_unfinished(last_dir: Path, *, force: bool) -> None:
    from gesture_cli.train.checkpoint import find_checkpoint, read_checkpoint_state

    found = find_checkpoint(last_dir)
    if found is None or force:
        return
    state = read_checkpoint_state(found)
    if not state.get("trainer", {}).get("finished", False):
        step, total = state["trainer"]["step"], state["trainer"]["total_steps"]
        raise UsageError(
            f"{found} holds an unfinished run (step {step}/{total}); add --resume to continue it, or --force to start over"
        )


def set_aside_checkpoints(step, ckpt_dir: Path, *, resume: bool, is_main: bool) -> None:
    """A fresh run (no --resume) trains into an empty checkpoints/. The previous run's one is set aside by
    the step, not deleted, so a run that fails (a full disk, a bad batch) leaves the old results whole
    until the new ones are committed (Step.set_aside). Call inside `with step:`, before fit()."""
    if is_main and not resume:
        step.set_aside(Path(ckpt_dir).relative_to(step.run.root).as_posix())


def link_tree(src: Path, dst: Path) -> None:
    """Hard-link every file of src into dst (copy where links are impossible)."""
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if any(part.startswith(".") and (".tmp-" in part or ".old-" in part) for part in rel.parts):
            continue  # a checkpoint being written (never by now: training has finished)
        target = dst / rel
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
