"""`gx evaluate TASK` and `gx infer TASK`: one registry of the tasks a trained artifact is run for.

TASK -> the command module that runs it: its `run_evaluate(cfg, *, run, device, force, console)` and
`run_infer(cfg, *, run, device, as_json, console)` call the task's tasks/ function and print the summary.
Modules are imported on first use (by name, as cli/app.py's COMMAND_MODULES), so `gx --help` stays fast.
"""

from __future__ import annotations

import importlib

ARTIFACT_TASKS = {  # task name -> command module with run_evaluate / run_infer
    "classify": "gesture_cli.cli.classify",
    "segment": "gesture_cli.cli.segment",
    "keypoint": "gesture_cli.cli.keypoint",
    "translate": "gesture_cli.cli.pose",
}


def task_runner(task: str, verb: str):
    """The run_evaluate / run_infer (verb "evaluate" / "infer") of `task`; a UsageError naming the tasks if unknown."""
    from gesture_cli.core.errors import unknown_choice

    if task not in ARTIFACT_TASKS:
        raise unknown_choice("task", task, ARTIFACT_TASKS)
    return getattr(importlib.import_module(ARTIFACT_TASKS[task]), f"run_{verb}")
