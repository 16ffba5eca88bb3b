"""Typed, frozen configs: dataclass defaults < config file (YAML/JSON) < CLI flags.

Each command declares a frozen dataclass whose field defaults carry a comment with their meaning
or unit. `resolve_config(Cls, file, flags)` merges the three layers, converts values to the field
types, and rejects unknown keys with the closest valid key suggested. A `*_opts` field (a list of
KEY=VALUE strings, e.g. dataset_opts, encoder_opts) is merged per key: a flag's `d_model=32` replaces
only the file's `d_model=...`, and the file may write it as a mapping (`encoder_opts: {d_model: 64}`).
The resolved config is what goes into `run.json` and into the step's cache key.
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


def read_config_file(path: Path | str, *, option: str = "--config") -> dict[str, Any]:
    """Read a YAML or JSON mapping; the file's top level must be a mapping of option names, at least one.
    `option` is the command-line option that named the file, for messages (--config, --encoder-config)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a directory; pass a YAML or JSON file of options")
    if not path.is_file():
        raise UsageError(f"{option} {path}: file not found")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"{option} {path}: cannot parse ({first})") from None
    if data is None or data == {}:  # an empty or comment-only file: most likely the wrong file, not "all defaults"
        raise UsageError(f"{option} {path} sets no options; write at least one 'key: value' line, or drop {option}")
    if not isinstance(data, dict):
        raise UsageError(f"{option} {path}: the top level must be a mapping of option names to values")
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


def _is_opts_field(name: str, tp: Any) -> bool:
    """A list of KEY=VALUE strings (dataset_opts, encoder_opts): merged per key across the layers."""
    tp, _ = _strip_optional(tp)
    return name.endswith("_opts") and typing.get_origin(tp) in (list, tuple) and typing.get_args(tp)[:1] == (str,)


def _opts_text(value: Any) -> str:
    """A mapping's value as the VALUE of a KEY=VALUE string (YAML reads `true` as a bool, `0.3` as a float)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _opts_items(name: str, value: Any, source: str) -> Any:
    """A *_opts value written as a mapping ({d_model: 64}) as KEY=VALUE strings; anything else as it is."""
    if not isinstance(value, dict):
        return value
    for key, item in value.items():
        if isinstance(item, (dict, list)):
            raise UsageError(f"{source}: '{name}' must be a list of KEY=VALUE strings or a mapping of keys to single values; "
                             f"'{key}' has {item!r}")
    return [f"{key}={_opts_text(item)}" for key, item in value.items()]


def _opts_key(item: str) -> str:
    """The KEY of a KEY=VALUE string as the option readers compare it (a string without '=' is its own key)."""
    key, sep, _ = item.partition("=")
    return key.strip().replace("-", "_") if sep else item


def merge_opts(base: tuple[str, ...], over: tuple[str, ...]) -> tuple[str, ...]:
    """KEY=VALUE strings of `base`, each replaced by `over`'s entry of the same key; `over`'s new keys after them."""
    merged = {_opts_key(item): item for item in base}
    for item in over:
        merged[_opts_key(item)] = item
    return tuple(merged.values())


def resolve_config(cls: type[C], file: Path | str | None = None, flags: dict[str, Any] | None = None, *,
                   file_option: str = "--config") -> C:
    """Build a frozen `cls` from defaults, then the config file, then flags that were given (not None).
    `file_option` names the option that gave the file, for messages."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    layers: list[tuple[str, dict[str, Any]]] = []
    if file is not None:
        layers.append((f"{file_option} {file}", read_config_file(file, option=file_option)))
    layers.append(("command line", {k: v for k, v in (flags or {}).items() if v is not None}))
    for source, layer in layers:
        for key, value in layer.items():
            if key not in fields:
                raise UsageError(f"{source}: unknown key '{key}'{did_you_mean(key, fields)}; valid keys: {', '.join(sorted(fields))}")
            if _is_opts_field(key, hints[key]):
                value = _coerce(key, _opts_items(key, value, source), hints[key], source)
                values[key] = merge_opts(values[key], value) if key in values else value
                continue
            values[key] = _coerce(key, value, hints[key], source)
    obj = cls(**values)
    check = getattr(obj, "validate", None)
    if callable(check):
        check()
    return obj


def config_to_dict(cfg: Any) -> dict[str, Any]:
    out = dataclasses.asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
