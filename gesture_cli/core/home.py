"""Where gx keeps downloaded datasets and model snapshots: `$GX_HOME`, default `~/.cache/gx`."""

from __future__ import annotations

import os
from pathlib import Path

from gesture_cli.core.errors import UsageError, file_in_the_way


def gx_home() -> Path:
    """The cache root; read each call so tests and users can point `GX_HOME` elsewhere. A root that is a file
    (or lies inside one) is a UsageError here: every reader below would otherwise report a missing cache."""
    given = os.environ.get("GX_HOME")
    root = Path(given or Path.home() / ".cache" / "gx").expanduser()
    blocker = file_in_the_way(root)
    if blocker is not None:
        where = f"GX_HOME={given}" if given else f"the gx cache folder {root}"
        what = "is a file" if blocker == root else f"is inside {blocker}, which is a file"
        fix = "point GX_HOME at a folder" if given else "move that file away or point GX_HOME at a folder"
        raise UsageError(f"{where} {what}, not a folder; {fix} (gx keeps downloaded datasets and models there)")
    return root


def datasets_dir() -> Path:
    return gx_home() / "datasets"


def models_dir() -> Path:
    """Hugging Face hub cache layout (models--owner--name/snapshots/...) lives here."""
    return gx_home() / "models"


def offline() -> bool:
    """True when the user asked for no network (`HF_HUB_OFFLINE=1` or `GX_OFFLINE=1`)."""
    return any(os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"} for v in ("HF_HUB_OFFLINE", "GX_OFFLINE"))
