"""Dataset registry: spec strings (`name` or `name:ARG`) -> one `make` function per source.

Each source module registers itself with `@register_dataset`; the modules are imported on the first
lookup, so `import gesture_cli.data` (and `gx --help`) stays cheap. A source is a function

    make(arg, *, spec, split, seed, **its_own_options) -> ImageDataset

where `arg` is the text after the first ':' of the spec (or None). Its keyword-only parameters after
`seed` are the options `make_dataset(..., **opts)` accepts; any other key is a UsageError that names
the closest valid one.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gesture_cli.core.errors import UsageError, did_you_mean, unknown_choice

if TYPE_CHECKING:
    from gesture_cli.data.images import ImageDataset

# Modules that register the built-in sources; imported on first lookup. A new source module adds
# itself here (one line) and decorates its make function.
SOURCE_MODULES = (
    "gesture_cli.data.sign_mnist",
    "gesture_cli.data.folder",
    "gesture_cli.data.synthetic_hands",
    "gesture_cli.data.hagrid",
    "gesture_cli.data.video",
    "gesture_cli.data.synthetic_video",
    "gesture_cli.data.hub_dataset",
)

_BASE_PARAMS = ("arg", "spec", "split", "seed")


@dataclass(frozen=True)
class DatasetSource:
    name: str
    help: str  # one line, shown by `list_datasets()` / --help
    make: Callable[..., ImageDataset]
    splits: Callable[[str | None], list[str]]  # arg -> the splits this spec offers
    arg: str | None  # metavar of the text after ':' ("DIR", "FILE"), None when the spec takes none
    arg_required: bool

    @property
    def options(self) -> list[str]:
        """Keyword options of `make` beyond arg/spec/split/seed."""
        params = inspect.signature(self.make).parameters
        return [p for p, v in params.items() if p not in _BASE_PARAMS and v.kind is inspect.Parameter.KEYWORD_ONLY]

    @property
    def usage(self) -> str:
        if self.arg is None:
            return self.name
        return f"{self.name}:{self.arg}" if self.arg_required else f"{self.name}[:{self.arg}]"


_REGISTRY: dict[str, DatasetSource] = {}


def register_dataset(
    name: str,
    *,
    help: str,
    splits: Sequence[str] | Callable[[str | None], list[str]] = ("train", "test"),
    arg: str | None = None,
    arg_required: bool = False,
):
    """Decorator: register `make(arg, *, spec, split, seed, **opts) -> ImageDataset` under `name`.

    `splits` is a fixed list or a function of the spec's argument (e.g. a folder's subfolders);
    `arg` names what follows ':' in the spec ("DIR", "FILE"), None if nothing may follow.
    """
    if name in _REGISTRY:
        raise ValueError(f"dataset '{name}' is registered twice")
    split_fn = splits if callable(splits) else (lambda _arg, _s=tuple(splits): list(_s))

    def decorator(fn: Callable[..., ImageDataset]) -> Callable[..., ImageDataset]:
        _REGISTRY[name] = DatasetSource(name=name, help=help, make=fn, splits=split_fn, arg=arg, arg_required=arg_required)
        return fn

    return decorator


def _load_sources() -> dict[str, DatasetSource]:
    for module in SOURCE_MODULES:
        importlib.import_module(module)  # idempotent: a module registers once, on its first import
    return _REGISTRY


def parse_spec(spec: str) -> tuple[str, str | None]:
    """'csv:data/x.csv' -> ('csv', 'data/x.csv'); 'synthetic-hands' -> ('synthetic-hands', None).

    Only the first ':' separates, so an argument may itself hold colons (`mpii:JSON:IMGDIR`).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError("empty dataset spec; e.g. --dataset synthetic-hands or --dataset folder:DIR")
    name, sep, arg = spec.strip().partition(":")
    return name.strip().lower(), (arg if sep else None)


# Datasets of the other tasks, named when someone hands one to an image-classification command.
OTHER_TASK_DATASETS = {
    "synthetic-scenes": ("segmentation masks", "segment-train"),
    "seg": ("segmentation masks", "segment-train"),
    "synthetic-keypoints": ("body keypoints", "keypoint-train"),
    "mpii": ("body keypoints", "keypoint-train"),
    "synthetic-signs": ("pose sequences with texts", "pose-pretrain / gx pose-finetune"),
    "pose": ("pose sequences with texts", "pose-pretrain / gx pose-finetune"),
}


def get_source(spec: str) -> tuple[DatasetSource, str | None]:
    """The registered source of a spec and its argument, or a UsageError with a suggestion."""
    name, arg = parse_spec(spec)
    sources = _load_sources()
    source = sources.get(name)
    if source is None:
        if name in OTHER_TASK_DATASETS:
            kind, command = OTHER_TASK_DATASETS[name]
            raise UsageError(f"dataset '{name}' holds {kind}, not labelled images; use it with `gx {command}`; "
                             f"image datasets are: {', '.join(sorted(sources))}")
        err = unknown_choice("dataset", name, sources)
        if arg is None and Path(spec).expanduser().exists():
            fmt = "folder" if Path(spec).expanduser().is_dir() else "csv"
            err = UsageError(f"{err}; '{spec}' is a path: name its format, e.g. {fmt}:{spec}")
        raise err
    if source.arg is None and arg is not None:
        raise UsageError(f"dataset '{name}' takes no ':{source.arg or 'ARG'}' part; got '{spec}' (use plain '{name}')")
    if source.arg_required and not (arg or "").strip():
        raise UsageError(f"dataset '{name}' needs a {source.arg}: use {source.usage}, e.g. {name}:path/to/{source.arg.lower()}")
    if arg is not None and not arg.strip():
        raise UsageError(f"dataset spec '{spec}' has an empty {source.arg} after ':'; use {source.usage}")
    return source, arg


def dataset_splits(spec: str) -> list[str]:
    """The splits a spec offers, e.g. ['train', 'test'] (a folder: the subfolders it has)."""
    source, arg = get_source(spec)
    return list(source.splits(arg))


def make_dataset(spec: str, *, split: str = "train", seed: int = 0, **opts) -> ImageDataset:
    """Build one split of a dataset from its spec string (see DESIGN §5 and `list_datasets()`).

    `seed` drives deterministic splits and generators; `opts` are the source's own options
    (e.g. `train_per_class=` for synthetic-hands, `label_map=` for Sign MNIST CSVs).
    """
    source, arg = get_source(spec)
    valid = source.options
    for key in opts:
        if key not in valid:
            if not valid:
                raise UsageError(f"dataset '{source.name}' takes no options; got '{key}'")
            raise UsageError(f"unknown option '{key}' for dataset '{source.name}'{did_you_mean(key, valid)}; valid: {', '.join(valid)}")
    splits = list(source.splits(arg))
    if split not in splits:
        raise UsageError(f"dataset '{spec}' has no split '{split}'{did_you_mean(split, splits)}; valid splits: {', '.join(splits)}")
    ds = source.make(arg, spec=spec, split=split, seed=int(seed), **opts)
    ds.spec, ds.split = spec, split
    return ds


def list_datasets() -> list[tuple[str, str]]:
    """(name, one-line help) of every registered dataset, sorted by name; the help starts with its spec form."""
    return [(s.name, f"{s.usage}: {s.help}") for s in sorted(_load_sources().values(), key=lambda s: s.name)]


def parse_dataset_opts(items: tuple[str, ...] | list[str]) -> dict[str, object]:
    """Turn `--dataset-opt KEY=VALUE` strings into keyword options (int, float, bool or str)."""
    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UsageError(f"--dataset-opt '{item}' must look like KEY=VALUE, e.g. label_map=contiguous")
        out[key] = _parse_value(value.strip())
    return out


def _parse_value(text: str) -> object:
    low = text.lower()
    if low in {"true", "yes", "on"}:
        return True
    if low in {"false", "no", "off"}:
        return False
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text
