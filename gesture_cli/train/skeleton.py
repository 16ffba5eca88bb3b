"""The one trainer skeleton: what every training command does around fit(), in one order.

A trainer (a `Trainer` subclass, one per command) holds only the steps that differ. The sequence has
two halves, so that the code that opens the run-dir step can sit above both (tasks/training.py):

    prepare(trainer, device=...)           validate, fail-fast checks, --resume checks (an unfinished run with
                                           the same settings; without --resume: refuse to overwrite one),
                                           splits -> Plan
    run.begin(...)                         the run-dir step: the Plan's config, inputs, input keys, output
    train_in_step(trainer, plan, step)     accelerator, precision, model, notices, data, fit, best weights,
                                           final scores, staged artifacts, step metrics -> the command's result

Checkpoints are written live to <out>/checkpoints/ while training runs (they must outlive a crash) and
hard-linked into the staged output folder on success, so a complete checkpoints/last/ exists at every
moment, in the old folder or the new one. Under several processes only the main one prints notices
and writes; the others return {"is_main": False}.
"""

from __future__ import annotations

import contextlib
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gesture_cli.train.common import check_resume, check_resume_loop, link_tree, refuse_unfinished, set_aside_checkpoints


@dataclass(frozen=True)
class Plan:
    """What a trainer prepared before its run-dir step opens: what the step records, and the data."""

    out_rel: str  # the step's output folder, relative to the run dir, e.g. "lora/tiny-dinov2"
    config: dict  # the settings the step records ("device" included); a change of them re-runs the step
    inputs: list[Path]  # files the step reads (their change re-runs it)
    input_keys: dict[str, str]  # cache tokens of inputs that are no files (synthetic datasets)
    splits: Any  # the trainer's train / val / test data (data.splits.Splits, data.pose.PoseSplits)
    context: Any = None  # what the trainer's checks found and its later steps need again (pose: the encoder settings)


@dataclass
class Built:
    """A trainer's model, built on the accelerator's device; trainers subclass it to keep their parts."""

    model: Any  # the whole model: fit() trains it, unless make_data gives another view of it
    resolved: dict  # the settings as resolved (defaults the model filled in); the checkpoints' meta "config"
    meta: dict  # fit()'s checkpoint meta
    notices: list[str]  # one-line notices after "precision: ...", main process only
    trainable: int = 0  # parameters fit() trains
    total: int = 0  # parameters in all


@dataclass
class FitData:
    """What fit() takes besides the model's settings."""

    model: Any  # what fit() trains and the best checkpoint is loaded into
    train_data: Any  # a loop.BatchSource
    loss_fn: Callable  # (model, batch) -> {"loss", ...}
    eval_fn: Callable | None  # model -> {"val_...": number}; None without validation data
    params: list | None = None  # what the optimizer updates; None = every parameter with requires_grad


@dataclass
class Outcome:
    """A trained model's scores and the numbers the run reports."""

    metrics: dict  # split role -> scores (metrics.json, with the summary)
    summary: dict  # how training went (steps, timings, best step, parameters, precision, ...)
    step_metrics: dict  # what the run-dir step records besides the precision
    extra: dict = field(default_factory=dict)  # more keys of the command's result (e.g. the classes)


class Trainer(ABC):
    """The steps of one training command that differ from the others; one instance per run."""

    command: str  # the run-dir step's command, e.g. "lora-train"
    resume_keys: tuple[str, ...] = ()  # settings a resumed run must share with its checkpoint

    def __init__(self, cfg, run, *, out_rel: str, resume: bool = False, force: bool = False):
        self.cfg, self.run, self.out_rel, self.resume, self.force = cfg, run, out_rel, resume, force
        self.checkpoint_dir = run.path(out_rel, "checkpoints")  # written live while training runs

    # ---- before the step: no model, no accelerator --------------------------------------------------

    def check(self) -> Any:
        """Validate the config and check what can fail before any data is read; returns what later steps need."""
        self.cfg.validate()
        settings = self.settings_before_data()
        if self.resume and settings is not None:
            self.check_resume(settings)
        return None

    def settings_before_data(self) -> dict | None:
        """Settings a --resume can be checked against before any data is read (None: only once the model is built)."""
        return None

    def check_resume(self, settings: dict) -> None:
        """--resume: a checkpoint must exist, and its saved config must agree with `settings` on `resume_keys`."""
        check_resume(self.checkpoint_dir / "last", settings, self.resume_keys)

    @abstractmethod
    def make_splits(self, context: Any) -> Any:
        """The train / val / test data of the config."""

    def plan(self, splits, context: Any, *, device: str) -> Plan:
        """The step records the config, the files and cache tokens of every split it reads, and its output folder."""
        from gesture_cli.core.config import config_to_dict

        datasets = [d for d in (splits.train, splits.val, splits.test) if d is not None]
        sources = sorted({str(p) for d in datasets for p in d.source_files})
        tokens = {f"dataset:{d.split}": d.cache_token for d in datasets if d.cache_token}
        return Plan(out_rel=self.out_rel, config={**config_to_dict(self.cfg), "device": device}, inputs=[Path(p) for p in sources],
                    input_keys=tokens, splits=splits, context=context)

    @staticmethod
    def describe_splits(splits) -> str:
        """"train N (name), val N (name), test N": the sizes in a data notice (data.splits.Splits)."""
        return (f"train {len(splits.train)} ({splits.names['train']}), val {len(splits.val) if splits.val else 0}"
                f"{' (' + splits.names['val'] + ')' if 'val' in splits.names else ''}, test {len(splits.test) if splits.test else 0}")

    @staticmethod
    def score_splits(splits, score: Callable[[Any], dict]) -> dict:
        """{"val": {"split": name, **score(dataset)}, "test": ...} over the held-out splits there are (data.splits.Splits)."""
        return {role: {"split": splits.names.get(role, role), **score(ds)} for role, ds in (("val", splits.val), ("test", splits.test))
                if ds is not None}

    # ---- in the step ----------------------------------------------------------------------------------

    def train_config(self):
        """fit()'s settings (loop.TrainConfig)."""
        return self.cfg.train_config()

    @abstractmethod
    def build(self, plan: Plan, *, acc, prec, say: Callable[[str], None]) -> Built:
        """The model on `acc.device` (and, with --resume, the check of the settings it resolved)."""

    @abstractmethod
    def make_data(self, plan: Plan, built: Built, *, acc, say: Callable[[str], None]) -> FitData:
        """Batches, loss and validation for fit()."""

    @abstractmethod
    def evaluate(self, plan: Plan, built: Built, data: FitData, result, *, prec) -> Outcome:
        """Scores of the trained model (best weights loaded, eval mode) and the summary of `result` (loop.FitResult)."""

    @abstractmethod
    def save(self, out: Path, plan: Plan, built: Built, outcome: Outcome) -> None:
        """The artifacts under the staged output folder (train_log.csv and checkpoints/ are added by the skeleton)."""


def _history_rows(history: list, key: str) -> list[dict]:
    """[[first step, value], ...] as metrics.json lists it: [{"from_step": 0, key: value}, ...]."""
    return [{"from_step": step, key: value} for step, value in history]


def fit_summary(result, *, best: str | None = None, after_best: dict | None = None, processes: bool = True) -> dict:
    """The summary fields every trainer reports about fit(): steps, epochs, best step, timings, weights, precision.

    best: the key of the best validation number (e.g. "best_val_accuracy"), placed after best_step with
    `after_best`; processes: whether num_processes is reported."""
    st = result.state
    out = {"steps": st.step, "epochs": round(st.epochs_done, 3), "best_step": st.best_step}
    if best is not None:
        out[best] = st.best_metric
    out.update(after_best or {})
    out.update({"stopped_early": st.stopped_early, "resumed_from": st.resumed_from, "train_seconds": round(st.elapsed_s, 2),
                "train_samples_per_s": round(st.samples / max(1e-9, st.elapsed_s), 2),
                "weights": "best" if result.best_dir is not None else "last"})
    if processes:
        out["num_processes"] = st.num_processes
    if len(st.num_processes_history) > 1:  # resumed with another process count
        out["num_processes_history"] = _history_rows(st.num_processes_history, "num_processes")
    out["precision"] = st.precision
    if len(st.precision_history) > 1:  # resumed in another precision: which steps ran in which
        out["precision_history"] = _history_rows(st.precision_history, "precision")
    out["skipped_steps"] = st.skipped_steps
    return out


def prepare(trainer: Trainer, *, device: str) -> Plan:
    """Everything before the run-dir step opens: it reads the data, but builds no model."""
    context = trainer.check()
    if trainer.resume:
        check_resume_loop(trainer.checkpoint_dir / "last", trainer.train_config(),
                          committed=lambda: trainer.run.last_ok(trainer.command, trainer.out_rel) is not None)
    else:
        refuse_unfinished(trainer.checkpoint_dir / "last", force=trainer.force)
    splits = trainer.make_splits(context)
    return trainer.plan(splits, context, device=device)


def train_in_step(trainer: Trainer, plan: Plan, step, *, device: str = "auto", callbacks: dict[str, list[Callable]] | None = None,
                  notify: Callable[[str], None] | None = None) -> dict:
    """Build, train, score and stage the output folder inside an opened (not cached) run-dir step.

    `notify(line)` receives one-line notices; `callbacks` go to fit(). Returns the command's result."""
    from gesture_cli.core.device import make_precision
    from gesture_cli.train.checkpoint import load_checkpoint, load_model_state, read_checkpoint_state
    from gesture_cli.train.loop import fit, make_accelerator

    say = notify or (lambda _line: None)
    acc = make_accelerator(device)
    prec = make_precision(acc.device, trainer.cfg.precision)
    built = trainer.build(plan, acc=acc, prec=prec, say=say)
    is_main = acc.is_main_process
    if is_main:
        for line in (f"precision: {prec.describe()}", *built.notices):
            say(line)
        if trainer.resume:
            st = read_checkpoint_state(trainer.checkpoint_dir / "last")["trainer"]
            say(f"resuming from step {st['step']}/{st['total_steps']} (epoch {st['epoch']})")
    data = trainer.make_data(plan, built, acc=acc, say=say)
    with step if is_main else contextlib.nullcontext():
        set_aside_checkpoints(step, trainer.checkpoint_dir, resume=trainer.resume, is_main=is_main)
        result = fit(data.model, train_data=data.train_data, loss_fn=data.loss_fn, eval_fn=data.eval_fn, cfg=trainer.train_config(),
                     checkpoint_dir=trainer.checkpoint_dir, params=data.params, callbacks=callbacks, resume=trainer.resume,
                     meta=built.meta, accelerator=acc, precision=prec)
        if not is_main:
            return {"is_main": False}
        if result.best_dir is not None:  # the final artifacts carry the best validation weights
            tensors, _, _, _ = load_checkpoint(result.best_dir, device=acc.device)
            load_model_state(data.model, tensors, source=result.best_dir)
        data.model.eval()
        outcome = trainer.evaluate(plan, built, data, result, prec=prec)
        out = step.stage(plan.out_rel)
        trainer.save(out, plan, built, outcome)
        shutil.copy2(result.log_path, out / "train_log.csv")
        link_tree(trainer.checkpoint_dir, out / "checkpoints")
        step.metrics.update({"precision": outcome.summary["precision"], **outcome.step_metrics})
    return {**step.entry, "cached": False, "is_main": True, "summary": outcome.summary, "metrics": outcome.metrics,
            "out": str(trainer.run.path(plan.out_rel)), **outcome.extra}


__all__ = ["Built", "FitData", "Outcome", "Plan", "Trainer", "fit_summary", "prepare", "train_in_step"]
