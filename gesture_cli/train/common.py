"""Small pieces the trainers share around `fit`: the fit() settings every config has (LoopSettings) and
their TrainConfig, checking the common data options, a dataset as fit()'s batches, picking step metrics,
and for the skeleton (train/skeleton.py): the --resume check, refusing to overwrite an unfinished run,
and publishing the checkpoints next to the final artifacts.

The train / val / test splits with sample caps live in data/splits.py, because evaluation rebuilds
the same splits and must not import training code.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gesture_cli.core.errors import ArtifactError, UsageError


@dataclass(frozen=True)
class LoopSettings:
    """The fit() settings every trainer config has with the same default; a trainer's config subclasses it and
    adds its own (epochs, batch_size, lr, patience, val_fraction and seed among them: their defaults differ)."""

    max_steps: int | None = None  # optimizer steps in all; overrides epochs
    grad_accum: int = 1  # micro-batches per optimizer step
    weight_decay: float = 0.01  # AdamW decoupled weight decay (not on biases / norms)
    warmup_steps: int | None = None  # linear warm-up in optimizer steps; None = warmup_ratio of all steps
    warmup_ratio: float = 0.05  # warm-up share of all optimizer steps when warmup_steps is None
    max_grad_norm: float = 1.0  # gradient clipping; 0 = off
    eval_every: int = 0  # optimizer steps between evaluations; 0 = every epoch
    checkpoint_every: int = 100  # optimizer steps between saves of checkpoints/last/
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (core.device.resolve_precision: bf16 where fast, fp16 on older GPUs)


def loop_config(cfg, *, lr: float, monitor: str, monitor_mode: str = "max"):
    """The `fit` settings (TrainConfig) of a trainer config: its LoopSettings and its own loop fields."""
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


def split_numbers(metrics: dict, **wanted: str) -> dict:
    """{name: one number of one split's scores}, each wanted as name="role.key" (e.g. test_pck="test.pck");
    None where that split was not scored."""
    out = {}
    for name, where in wanted.items():
        role, key = where.split(".", 1)
        out[name] = metrics.get(role, {}).get(key)
    return out


class SizedBatches:
    """A dataset as fit()'s BatchSource: batches of `dataset.batch(indices, size=size)`, made tensors by `get_batch`."""

    def __init__(self, dataset, *, size: int):
        self.dataset = dataset
        self.size = size  # the side in pixels every image is resized to

    def __len__(self) -> int:
        return len(self.dataset)


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
    from gesture_cli.data.registry import same_dataset, same_dataset_opts

    saved = read_checkpoint_state(found).get("meta", {}).get("config", {})
    # a dataset (or a path option of it) recorded relative before gx made such paths absolute is the same data
    # and options are compared as the values the source reads, in any order (same_dataset_opts)
    dataset = resolved.get("dataset", saved.get("dataset"))
    same = {"dataset": same_dataset, "dataset_opts": lambda old, new: same_dataset_opts(old, new, dataset=dataset)}

    def differs(key: str) -> bool:
        return not same[key](saved[key], resolved[key]) if key in same else saved.get(key) != resolved[key]

    diffs = [(k, saved.get(k), resolved[k]) for k in keys if k in saved and k in resolved and differs(k)]
    if not diffs:
        return
    # a setting that is itself a mapping (the pose encoder's config) is named first, by the fields that differ:
    # both whole mappings would bury the one that changed
    diffs.sort(key=lambda d: not _both_mappings(d[1], d[2]))
    key, old, new = diffs[0]
    if _both_mappings(old, new):
        names = [*new, *(k for k in old if k not in new)]  # the config's field order
        changes = ", ".join(f"{k} {_setting_text(old.get(k))} -> {_setting_text(new.get(k))}" for k in names if old.get(k) != new.get(k))
        others = [k for k, _, _ in diffs[1:]]
        also = f"; {', '.join(others)} differ{'s' if len(others) == 1 else ''} too" if others else ""
        raise UsageError(f"cannot resume {found}: it was trained with another {key} ({changes}){also}; "
                         "use the same settings or --force without --resume")
    if backbone_hint and key == "backbone":
        raise UsageError(f"cannot resume: {found} was trained with backbone '{old}', not '{new}'; use --backbone {old} or another run dir")
    more = f" (and {', '.join(k for k, _, _ in diffs[1:])})" if len(diffs) > 1 else ""
    raise UsageError(f"cannot resume {found}: it was trained with {key}={old!r}, this run has {key}={new!r}{more}; "
                     "use the same settings or --force without --resume")


def _both_mappings(old, new) -> bool:
    return isinstance(old, dict) and isinstance(new, dict)


def _setting_text(value) -> str:
    """A resume setting's value as a message shows it: unset, a,b,c for a list, 0.001 for a float."""
    if value is None:
        return "unset"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def check_resume_loop(last_dir: Path, loop_cfg, *, committed: Callable[[], bool]) -> None:
    """--resume, before any data is read: the checkpoint in last_dir (if any; its absence is check_resume's to say)
    must be an unfinished run, and `loop_cfg` (loop.TrainConfig) must keep the settings its saved optimizer, LR
    schedule and epoch order fix (loop.resume_conflicts), so that what run.json records is what trains.

    committed: whether the run's output step finished (a finished checkpoint without it, from a run killed while
    scoring or writing its artifacts, may still be resumed: it trains no more steps and writes them). Called only
    for a finished checkpoint: finding that step may hash the whole output folder, checkpoints included."""
    from dataclasses import asdict

    from gesture_cli.train.checkpoint import find_checkpoint, read_checkpoint_state
    from gesture_cli.train.loop import resume_conflicts

    found = find_checkpoint(last_dir)
    if found is None:
        return
    state = read_checkpoint_state(found)
    trainer = state.get("trainer", {})
    if trainer.get("finished") and committed():
        how = "stopped early" if trainer.get("stopped_early") else "finished"
        raise UsageError(f"cannot resume {found}: that run {how} at step {trainer.get('step')}/{trainer.get('total_steps')}, so there is "
                         "nothing to resume; to train longer, start a new run: --force without --resume (it replaces this one) or another -r")
    saved, given = state.get("config", {}), asdict(loop_cfg)
    changed = resume_conflicts(saved, given)
    if not changed:
        return
    key = changed[0]
    option = f"--{key.replace('_', '-')}"
    more = f" (and {', '.join('--' + k.replace('_', '-') for k in changed[1:])})" if len(changed) > 1 else ""

    def setting(value) -> str:
        return f"no {option}" if value is None else f"{option} {_setting_text(value)}"

    fix = f"without {option}" if saved[key] is None else f"with {setting(saved[key])}"
    raise UsageError(f"cannot resume {found}: it was trained with {setting(saved[key])}, this command has {setting(given[key])}{more}, "
                     f"which the saved training state fixes; resume {fix}, or start a new run: --force without --resume, "
                     "or another -r")


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
