"""Where gx keeps downloaded datasets and model snapshots: `$GX_HOME`, default `~/.cache/gx`."""

from __future__ import annotations

import os
from pathlib import Path


def gx_home() -> Path:
    """The cache root; read each call so tests and users can point `GX_HOME` elsewhere."""
    return Path(os.environ.get("GX_HOME") or Path.home() / ".cache" / "gx").expanduser()


def datasets_dir() -> Path:
    return gx_home() / "datasets"


def models_dir() -> Path:
    """Hugging Face hub cache layout (models--owner--name/snapshots/...) lives here."""
    return gx_home() / "models"


def offline() -> bool:
    """True when the user asked for no network (`HF_HUB_OFFLINE=1` or `GX_OFFLINE=1`)."""
    return any(os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"} for v in ("HF_HUB_OFFLINE", "GX_OFFLINE"))
