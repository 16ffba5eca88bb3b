"""A backbone reference, read once: the text a user gives for `--backbone` -> `BackboneRef`.

    ref = parse_backbone_ref("dinov2-small", registry)   # kind 'registry', hub_id 'facebook/dinov2-small'
    ref = parse_backbone_ref("timm:vit_small_patch14_dinov2.lvd142m", registry)   # kind 'timm'
    ref.dirname                                          # 'timm-vit_small_patch14_dinov2.lvd142m'

Kinds, tried in this order: a registry name (`tiny-*` built offline, the rest fetched from their hub
repo), `timm:NAME`, a local path (an existing file or folder, or any `.pt`/`.pt2` file name), a hub id
`owner/name`. Anything else is a UsageError that names the closest registry name.

No torch here: `gx download` reads references without loading a model. The registry is handed in
(models/backbone_registry.py's `REGISTRY`, or a function that returns it, called only for a plain name that
could be one), so this module imports nothing of models/ and data/hub.py can use it too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gesture_cli.core.errors import ModelError, unknown_choice

KINDS = ("registry", "timm", "path", "hub")
TORCHSCRIPT_SUFFIXES = (".pt", ".pt2")
# the files a build reads from a hub snapshot, so `gx download NAME` fetches exactly those
HF_ALLOW_PATTERNS = ["*.json", "*.safetensors"]
TORCHSCRIPT_ALLOW_PATTERNS = ["*.json", "*.pt2", "*.pt"]
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
TIMM_PREFIX = "timm:"


@dataclass(frozen=True)
class BackboneRef:
    spec: str  # the text as given; artifacts record it, and `dirname` is made from it
    kind: str  # one of KINDS
    name: str  # registry name, timm model name (no prefix), the path text, or the hub id
    hub_id: str | None  # the hub repo to fetch: a registry entry's source or the id; None for tiny, timm and paths
    entry: Any = None  # the registry entry (family, gated, sizes) of a registry name

    @property
    def display(self) -> str:
        return self.spec

    @property
    def path(self) -> Path:
        return Path(self.name).expanduser()

    @property
    def family(self) -> str | None:
        return self.entry.family if self.entry is not None else None

    @property
    def gated(self) -> bool:
        return bool(self.entry is not None and self.entry.gated)

    @property
    def is_tiny(self) -> bool:
        return self.entry is not None and self.entry.source == "tiny"

    @property
    def dirname(self) -> str:
        return backbone_dirname(self.spec)


def backbone_dirname(spec: str) -> str:
    """A filesystem-safe folder name for a backbone spec (hub ids keep owner--name, paths their stem).

    A function of the text alone (no lookup), so a name read back from an old artifact maps to the
    same folder even when its path or registry entry is gone."""
    p = Path(spec)
    if spec.startswith(("/", "./", "../", "~")) or p.suffix in set(TORCHSCRIPT_SUFFIXES):
        spec = p.stem if p.suffix else p.name
    spec = spec.replace(TIMM_PREFIX, "timm-").replace("/", "--")
    return re.sub(r"[^A-Za-z0-9._+-]", "_", spec) or "backbone"


def parse_backbone_ref(spec: str | BackboneRef, registry: Mapping[str, Any] | Callable[[], Mapping[str, Any]]) -> BackboneRef:
    """The one reading of a backbone reference (kinds and order in the module docstring).

    `registry`: name -> entry (with `.source`, `.family`, `.gated`), or a function returning it, called
    only when the text could be a registry name. A `.pt`/`.pt2` name that does not exist is a
    ModelError; an unknown name a UsageError with a suggestion.
    """
    if isinstance(spec, BackboneRef):
        return spec
    text = str(spec)
    plain = not (text.startswith(TIMM_PREFIX) or "/" in text)  # registry names are plain words
    table = (registry() if callable(registry) else registry) if plain else {}
    if text in table:
        entry = table[text]
        return BackboneRef(text, "registry", text, entry.source if HUB_ID.fullmatch(entry.source) else None, entry)
    if text.startswith(TIMM_PREFIX):
        return BackboneRef(text, "timm", text[len(TIMM_PREFIX) :], None)
    path = Path(text).expanduser()
    if path.exists():
        return BackboneRef(text, "path", text, None)
    if path.suffix in TORCHSCRIPT_SUFFIXES:
        raise ModelError(f"TorchScript file '{text}' does not exist")
    if HUB_ID.fullmatch(text):
        return BackboneRef(text, "hub", text, text)
    raise unknown_choice("backbone", text, registry() if callable(registry) else registry)
