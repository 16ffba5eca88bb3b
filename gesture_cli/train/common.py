"""Small pieces every trainer shares around `fit`: train / val / test splits with sample caps,
refusing to overwrite an unfinished run, and publishing the checkpoints next to the final artifacts."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gesture_cli.core.errors import ArtifactError, DataError, UsageError


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


def capped_indices(length: int, n: int | None, seed: int, *, stream: int = 7) -> np.ndarray | None:
    """Sorted indices of a seeded random subset of at most n of `length` samples; None when nothing is cut.

    `stream` separates the random choices of different callers that share a seed."""
    if n is None or length <= n:
        return None
    return np.sort(np.random.default_rng([seed % 2**32, stream]).permutation(length)[:n])


def cap_samples(ds, n: int | None, seed: int, *, stream: int = 7):
    """A dataset cut to `capped_indices` with `.subset` (None, or one that fits, passes through)."""
    idx = None if ds is None else capped_indices(len(ds), n, seed, stream=stream)
    return ds if idx is None else ds.subset(idx)


def random_holdout(seed: int, *, stream: int) -> Callable:
    """A `holdout` for `make_splits`: a seeded random share of the training samples (at least one, never all)."""

    def carve(train, fraction: float):
        if len(train) < 2:
            return None
        perm = np.random.default_rng([seed % 2**32, stream]).permutation(len(train))
        n_val = min(len(train) - 1, max(1, int(round(len(train) * fraction))))
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])

    return carve


@dataclass
class Splits:
    """What a trainer trains, validates and tests on; `names` says where each came from."""

    train: Any
    val: Any | None
    test: Any | None
    names: dict[str, Any] = field(default_factory=dict)  # role -> split name; val_from_train: True when val was carved out


def make_splits(spec: str, available: Sequence[str], make: Callable[[str], Any], *, val_fraction: float,
                holdout: Callable, max_samples: int | None, seed: int, cap_stream: int = 7) -> Splits:
    """Train / validation / test datasets of one dataset spec, the same way for every trainer.

    train: the `train` split (else the first one). val: the dataset's own `val` split when it has one,
    else `holdout(train, val_fraction)` -> (train indices, val indices) carved out of the training
    split (skipped when val_fraction is 0 or it returns None). test: the `test` split, when there is
    one. Each is then capped at `max_samples` (`cap_samples`). `make(split name)` builds one split.
    """
    if not available:
        raise DataError(f"dataset '{spec}' has no splits (no samples found)")
    train_name = "train" if "train" in available else available[0]
    names: dict[str, Any] = {"train": train_name}
    train = make(train_name)
    val = None
    if "val" in available and train_name != "val":
        val, names["val"] = make("val"), "val"
    elif val_fraction > 0:
        carved = holdout(train, val_fraction)
        if carved is not None and len(carved[0]) and len(carved[1]):
            train, val = train.subset(carved[0]), train.subset(carved[1], split=f"{train_name}[val]")
            names["val"], names["val_from_train"] = f"{val_fraction:g} of split {train_name}", True
    test = None
    if "test" in available and train_name != "test":
        test, names["test"] = make("test"), "test"
    train, val, test = (cap_samples(d, max_samples, seed, stream=cap_stream) for d in (train, val, test))
    if len(train) == 0:
        raise DataError(f"dataset '{spec}': the training split '{train_name}' is empty")
    return Splits(train=train, val=val, test=test, names=names)


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
