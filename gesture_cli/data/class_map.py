"""Class maps: `--class-map FILE.json` folds a dataset's classes into fewer groups.

    {
      "name": "ade20k_to_26",
      "groups": {"building": ["building", "house", "skyscraper"], "sky": ["sky"], ...},
      "ignore": ["..."],          optional: source classes whose pixels become ignore (255)
      "unmapped": "error"         optional: "error" (default) or "ignore" for classes no group names
    }

The order of `groups` is the order of the new class ids. A map is applied to labels (a mask of source
class ids becomes a mask of group ids) and, for a head trained on the source classes, to its
predictions (`aggregation_matrix`: group score = sum of its members' scores). Names are compared
case-insensitively with surrounding spaces dropped. A map that names a class the dataset lacks is a
UsageError; a mask pixel of a class the map leaves out is a DataError raised by the dataset.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gesture_cli.core.errors import UsageError, did_you_mean

IGNORE_INDEX = 255
UNMAPPED = -2  # lookup value of a source class that no group names (and that is not ignored)
UNMAPPED_CHOICES = ("error", "ignore")


def norm_name(name: str) -> str:
    return " ".join(str(name).strip().lower().split())


@dataclass(frozen=True)
class ClassMap:
    name: str  # the map's "name", else its file stem
    groups: tuple[str, ...]  # new class names; index = new class id
    members: dict[str, tuple[str, ...]]  # group -> source class names
    ignore: tuple[str, ...] = ()  # source classes mapped to IGNORE_INDEX
    unmapped: str = "error"  # what happens to a source class no group names: error | ignore
    path: str = ""  # where it was read from ("" for a map built in code)
    token: str = field(default="", compare=False)  # content hash, for cache keys

    def to_json(self) -> dict:
        return {"name": self.name, "groups": {g: list(self.members[g]) for g in self.groups}, "ignore": list(self.ignore),
                "unmapped": self.unmapped}

    def check_classes(self, classes: list[str], *, what: str) -> None:
        """UsageError when the map names a class that `classes` (the dataset's or a head's) lacks."""
        known = {norm_name(c): c for c in classes}
        for group in self.groups:
            for member in self.members[group]:
                if norm_name(member) not in known:
                    raise UsageError(
                        f"class map {self.path or self.name}: group '{group}' names '{member}', which is not a class of {what}"
                        f"{did_you_mean(norm_name(member), known)}; its classes are: {_preview(classes)}"
                    )
        for member in self.ignore:
            if norm_name(member) not in known:
                raise UsageError(
                    f"class map {self.path or self.name}: \"ignore\" names '{member}', which is not a class of {what}"
                    f"{did_you_mean(norm_name(member), known)}; its classes are: {_preview(classes)}"
                )

    def lookup(self, classes: list[str], *, what: str) -> np.ndarray:
        """int16 [len(classes)]: source class id -> group id, IGNORE_INDEX, or UNMAPPED."""
        self.check_classes(classes, what=what)
        index = {norm_name(c): i for i, c in enumerate(classes)}
        out = np.full(len(classes), IGNORE_INDEX if self.unmapped == "ignore" else UNMAPPED, dtype=np.int16)
        for member in self.ignore:
            out[index[norm_name(member)]] = IGNORE_INDEX
        for g, group in enumerate(self.groups):
            for member in self.members[group]:
                out[index[norm_name(member)]] = g
        return out

    def aggregation_matrix(self, classes: list[str], *, what: str) -> np.ndarray:
        """float32 [len(classes), len(groups)]: 1 where a source class belongs to a group (ignored and
        unmapped classes have an all-zero row), so `scores @ matrix` gives group scores."""
        lut = self.lookup(classes, what=what)
        mat = np.zeros((len(classes), len(self.groups)), dtype=np.float32)
        for i, g in enumerate(lut):
            if 0 <= g < len(self.groups):
                mat[i, g] = 1.0
        return mat


def _preview(classes: list[str], n: int = 8) -> str:
    shown = ", ".join(classes[:n])
    return shown + (f", ... ({len(classes)} in all)" if len(classes) > n else "")


def parse_class_map(data: object, *, source: str, name: str = "") -> ClassMap:
    """Validate the JSON object of a class map (see the module docstring)."""
    where = f"class map {source}"
    if not isinstance(data, dict):
        raise UsageError(f"{where}: the top level must be an object with a \"groups\" mapping")
    unknown = sorted(set(data) - {"name", "description", "source", "groups", "ignore", "unmapped", "notes"})
    if unknown:
        raise UsageError(f"{where}: unknown key '{unknown[0]}'; valid keys: description, groups, ignore, name, notes, source, unmapped")
    groups = data.get("groups")
    if not isinstance(groups, dict) or not groups:
        raise UsageError(f"{where}: \"groups\" must be a non-empty object of group name -> list of source class names")
    members: dict[str, tuple[str, ...]] = {}
    owner: dict[str, str] = {}
    for group, names in groups.items():
        if not str(group).strip():
            raise UsageError(f"{where}: a group has an empty name")
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
            raise UsageError(f"{where}: group '{group}' must list one or more source class names")
        for n in names:
            key = norm_name(n)
            if key in owner:
                raise UsageError(f"{where}: source class '{n}' is in two groups ('{owner[key]}' and '{group}'); a class belongs to one group")
            owner[key] = str(group)
        members[str(group)] = tuple(n.strip() for n in names)
    ignore = data.get("ignore", [])
    if not isinstance(ignore, list) or not all(isinstance(n, str) for n in ignore):
        raise UsageError(f"{where}: \"ignore\" must be a list of source class names")
    for n in ignore:
        if norm_name(n) in owner:
            raise UsageError(f"{where}: '{n}' is both in group '{owner[norm_name(n)]}' and in \"ignore\"")
    unmapped = data.get("unmapped", "error")
    if unmapped not in UNMAPPED_CHOICES:
        raise UsageError(f"{where}: \"unmapped\" must be one of {', '.join(UNMAPPED_CHOICES)}; got {unmapped!r}")
    if len(members) >= IGNORE_INDEX:
        raise UsageError(f"{where}: {len(members)} groups; at most {IGNORE_INDEX - 1} fit a label PNG")
    canonical = json.dumps({"groups": {g: list(m) for g, m in members.items()}, "ignore": ignore, "unmapped": unmapped}, sort_keys=True)
    return ClassMap(
        name=str(data.get("name") or name or "class-map"), groups=tuple(members), members=members, ignore=tuple(n.strip() for n in ignore),
        unmapped=unmapped, path=source, token=hashlib.sha256(canonical.encode()).hexdigest()[:16],
    )


def load_class_map(path: Path | str) -> ClassMap:
    """Read and validate a class map JSON file; UsageError with the file and the problem otherwise."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"--class-map {path}: file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"class map {path}: not valid JSON ({exc})") from None
    return parse_class_map(data, source=str(path), name=path.stem)


__all__ = ["IGNORE_INDEX", "UNMAPPED", "ClassMap", "load_class_map", "norm_name", "parse_class_map"]
