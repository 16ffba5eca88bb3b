"""Opening the run-dir step of a trainer: prepare -> run.begin -> train inside the step (train/skeleton.py).

The one place that opens a trainer's step; each task module's training function (tasks.classify.train_lora,
tasks.keypoint.train_keypoint, tasks.segment.train_segment, tasks.translate.pretrain_pose / finetune_pose)
builds its trainer with the artifact folder it owns and hands it here.
"""

from __future__ import annotations

from collections.abc import Callable

from gesture_cli.train.skeleton import Trainer, prepare, train_in_step


def run_trainer(trainer: Trainer, *, device: str = "auto", argv: list[str] | None = None,
                callbacks: dict[str, list[Callable]] | None = None, notify: Callable[[str], None] | None = None) -> dict:
    """Prepare, open the trainer's step (a cached one returns at once) and train in it; returns the command's result."""
    plan = prepare(trainer, device=device)
    step = trainer.run.begin(trainer.command, config=plan.config, inputs=plan.inputs, input_keys=plan.input_keys, outputs=[plan.out_rel],
                             argv=argv, force=trainer.force or trainer.resume)
    if step.cached:
        return {**step.entry, "cached": True, "is_main": True}
    return train_in_step(trainer, plan, step, device=device, callbacks=callbacks, notify=notify)


__all__ = ["run_trainer"]
