"""Small pieces every trainer shares around `fit`: refusing to overwrite an unfinished run, and
publishing the checkpoints next to the final artifacts."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from gesture_cli.core.errors import UsageError


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
