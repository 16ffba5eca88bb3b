"""Typed, frozen configs: dataclass defaults < config file (YAML/JSON) < CLI flags.

Each command declares a frozen dataclass whose field defaults carry a comment with their meaning
or unit. `resolve_config(Cls, file, flags)` merges the three layers, converts values to the field
types, and rejects unknown keys with the closest valid key suggested. The resolved config is what
goes into `run.json` and into the step's cache key.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from gesture_cli.core.errors import UsageError, did_you_mean

C = TypeVar("C")


def read_config_file(path: Path | str) -> dict[str, Any]:
    """Read a YAML or JSON mapping; the file's top level must be a mapping of option names, at least one."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise UsageError(f"--config {path}: is a directory; pass a YAML or JSON file of options")
    if not path.is_file():
        raise UsageError(f"--config {path}: file not found")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"--config {path}: cannot parse ({first})") from None
    if data is None or data == {}:  # an empty or comment-only file: most likely the wrong file, not "all defaults"
        raise UsageError(f"--config {path} sets no options; write at least one 'option: value' line (e.g. max_steps: 100), or drop --config")
    if not isinstance(data, dict):
        raise UsageError(f"--config {path}: the top level must be a mapping of option names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(name: str, value: Any, tp: Any, source: str) -> Any:
    tp, optional = _strip_optional(tp)
    if value is None:
        if optional:
            return None
        raise UsageError(f"{source}: '{name}' may not be empty")
    origin = typing.get_origin(tp)
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in {"true", "yes", "1", "on", "false", "no", "0", "off"}:
                return value.lower() in {"true", "yes", "1", "on"}
            raise ValueError
        if tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if not math.isfinite(number):  # inf and nan pass most range checks (`not lr > 0` misses inf) and fail mid-run
                raise UsageError(f"{source}: '{name}' must be a finite number, got {value!r}")
            return number
        if tp is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
        if tp is Path:
            return str(value)
        if origin in (list, tuple):
            (inner, *_) = typing.get_args(tp) or (str,)
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, (list, tuple)):
                raise ValueError
            return tuple(_coerce(name, v, inner, source) for v in value)
        if origin is dict or tp is dict:
            if not isinstance(value, dict):
                raise ValueError
            return dict(value)
    except (TypeError, ValueError):
        type_name = getattr(tp, "__name__", str(tp))
        raise UsageError(f"{source}: '{name}' must be {type_name}, got {value!r}") from None
    return value


def resolve_config(cls: type[C], file: Path | str | None = None, flags: dict[str, Any] | None = None) -> C:
    """Build a frozen `cls` from defaults, then the config file, then flags that were given (not None)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    layers: list[tuple[str, dict[str, Any]]] = []
    if file is not None:
        layers.append((f"--config {file}", read_config_file(file)))
    layers.append(("command line", {k: v for k, v in (flags or {}).items() if v is not None}))
    for source, layer in layers:
        for key, value in layer.items():
            if key not in fields:
                raise UsageError(f"{source}: unknown key '{key}'{did_you_mean(key, fields)}; valid keys: {', '.join(sorted(fields))}")
            values[key] = _coerce(key, value, hints[key], source)
    obj = cls(**values)
    check = getattr(obj, "validate", None)
    if callable(check):
        check()
    return obj


def config_to_dict(cfg: Any) -> dict[str, Any]:
    out = dataclasses.asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
