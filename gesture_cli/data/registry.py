"""One dataset registry for every kind, and one parser: spec text (+ `--dataset-opt` strings) -> `DatasetSpec`.

    spec = parse_dataset("synthetic-hands", ["train_per_class=4"])          # kind="image" by default
    spec.name, spec.arg, spec.options                                       # 'synthetic-hands', None, {'train_per_class': 4}
    parse_dataset("pose:data/phoenix", kind="pose").splits()               # ['train', 'val', 'test']

A dataset kind is what its samples are: `image` (labelled images, `make_dataset`), `pose` (keypoint
sequences with texts, data/pose.py), `segmentation` (images + masks, data/segmentation.py), `keypoints`
(person crops + joints, data/keypoints.py), `frames` (a `FrameSource` of clips for `gx pca-compute`,
data/video.py; a name that is no frame source is read there as an image dataset). Each source
registers itself with `@register_dataset(name, kind=...)`; the modules are imported on the first
lookup of their kind, so `import gesture_cli.data` (and `gx --help`) stays cheap. A source is a function

    make(arg, *, spec, split, seed, **its_own_options) -> the kind's dataset

where `arg` is the text after the first ':' of the spec (or None); a frame source has no splits and
takes no `split` (`make(arg, *, spec, seed)`). Its keyword-only parameters after `seed` are the
options it accepts; any other key is a UsageError that names the closest valid one.
The same name may be registered under two kinds (`hf-dataset` holds images or poses; `video` is an
image dataset of frames and a frame source of clips).
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gesture_cli.core.errors import DataError, UsageError, did_you_mean, unknown_choice, unknown_split

KINDS = ("image", "pose", "segmentation", "keypoints", "frames")

# Modules that register the built-in sources of each kind; imported on the first lookup of that kind.
# A new source module adds itself here (one line) and decorates its make function.
SOURCE_MODULES = {
    "image": (
        "gesture_cli.data.sign_mnist",
        "gesture_cli.data.folder",
        "gesture_cli.data.synthetic_hands",
        "gesture_cli.data.hagrid",
        "gesture_cli.data.video",
        "gesture_cli.data.synthetic_video",
        "gesture_cli.data.hub_dataset",
    ),
    "pose": ("gesture_cli.data.pose", "gesture_cli.data.synthetic_signs", "gesture_cli.data.hub_dataset"),
    "segmentation": ("gesture_cli.data.segmentation",),
    "keypoints": ("gesture_cli.data.keypoints", "gesture_cli.data.synthetic_keypoints"),
    "frames": ("gesture_cli.data.video", "gesture_cli.data.synthetic_video"),
}

_BASE_PARAMS = ("arg", "spec", "split", "seed")


@dataclass(frozen=True)
class KindRules:
    """How a kind names itself in errors (each kind keeps the wording its users have seen)."""

    what: str  # "dataset", "pose dataset", ...: the word in unknown-name errors
    owner: str  # the word in unknown-option errors
    empty: str  # the error for an empty spec
    no_arg: str  # template: the source takes no ':ARG'
    needs_arg: str  # template: the source needs its ARG
    holds: str  # what its samples are, named when a spec is handed to a command of another kind
    command: str  # the command that reads it
    maker_options: tuple[str, ...] = ()  # options the kind's maker takes itself, beside each source's own
    no_options: str | None = None  # template: an option for a source that takes none (None: the unknown-option error)
    path_hint: Callable[[str, bool], str] | None = None  # (spec, has ':') -> hint for a name that is a path


def _image_path_hint(spec: str, sep: bool) -> str:
    path = Path(spec).expanduser()
    if sep or not path.exists():
        return ""
    return f"; '{spec}' is a path: name its format, e.g. {'folder' if path.is_dir() else 'csv'}:{spec}"


def _pose_path_hint(spec: str, sep: bool) -> str:
    return f"; '{spec}' is a path: write pose:{spec}" if not sep and Path(spec).expanduser().exists() else ""


def _seg_path_hint(spec: str, sep: bool) -> str:
    return f"; '{spec}' is a folder: use seg:{spec}" if not sep and Path(spec).expanduser().is_dir() else ""


KIND_RULES = {
    "image": KindRules(
        what="dataset", owner="dataset", empty="empty dataset spec; e.g. --dataset synthetic-hands or --dataset folder:DIR",
        no_arg="dataset '{name}' takes no ':ARG' part; got '{spec}' (use plain '{name}')",
        needs_arg="dataset '{name}' needs a {arg}: use {usage}, e.g. {name}:path/to/{arg_lower}",
        holds="labelled images", command="train", path_hint=_image_path_hint,
        no_options="dataset '{name}' takes no options; got '{key}'",
    ),
    "pose": KindRules(
        what="pose dataset", owner="pose dataset", empty="empty pose dataset spec; e.g. synthetic-signs or pose:DIR",
        no_arg="pose dataset '{name}' takes no ':' part; got '{spec}' (use plain '{name}')",
        needs_arg="pose dataset '{name}' needs a {arg}: use {usage}",
        holds="pose sequences with texts", command="pose-pretrain / gx pose-finetune", path_hint=_pose_path_hint,
    ),
    "segmentation": KindRules(
        what="segmentation dataset", owner="dataset", empty="empty dataset spec; e.g. --dataset synthetic-scenes or --dataset seg:DIR",
        no_arg="dataset '{name}' takes no ':...' part; got '{spec}'",
        needs_arg="dataset '{name}' needs a {arg}: use {name}:{arg}",
        holds="segmentation masks", command="segment-train", maker_options=("class_map",), path_hint=_seg_path_hint,
    ),
    "keypoints": KindRules(
        what="keypoint dataset", owner="keypoint dataset", empty="empty dataset spec; e.g. --dataset synthetic-hands or --dataset folder:DIR",
        no_arg="keypoint dataset '{name}' takes no ':' part; got '{spec}'",
        needs_arg="keypoint dataset '{name}' needs {arg}: use {name}:{arg}",
        holds="body keypoints", command="keypoint-train",
    ),
    # Frame sources keep the image wording: `gx pca-compute --dataset` reads them beside image datasets.
    # `video` is the one frame source with an ARG, hence the needs_arg text names its forms.
    "frames": KindRules(
        what="dataset", owner="dataset", empty="empty dataset spec; e.g. --dataset synthetic-hands or --dataset folder:DIR",
        no_arg="dataset '{name}' takes no ':ARG' part; got '{spec}' (use plain '{name}')",
        needs_arg="dataset '{name}' needs a FILE or DIR: use {name}:path/to/clip.mp4 or {name}:path/to/dir",
        holds="video frames", command="pca-compute",
        no_options="dataset '{name}' takes no options; got '{key}'",
    ),
}


@dataclass(frozen=True)
class DatasetSource:
    name: str
    kind: str  # one of KINDS
    help: str  # one line, shown by `list_datasets()` / --help
    make: Callable[..., Any]
    splits: Callable[[str | None], list[str]]  # arg -> the splits this spec offers
    arg: str | None  # metavar of the text after ':' ("DIR", "FILE"), None when the spec takes none
    arg_required: bool

    @property
    def parameters(self) -> dict[str, inspect.Parameter]:
        """Keyword options of `make` beyond arg/spec/split/seed -> their parameter (default, annotation)."""
        params = inspect.signature(self.make).parameters
        return {p: v for p, v in params.items() if p not in _BASE_PARAMS and v.kind is inspect.Parameter.KEYWORD_ONLY}

    @property
    def options(self) -> list[str]:
        return list(self.parameters)

    @property
    def usage(self) -> str:
        if self.arg is None:
            return self.name
        return f"{self.name}:{self.arg}" if self.arg_required else f"{self.name}[:{self.arg}]"


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset spec read once: which source of which kind, its argument and its checked options."""

    text: str  # the spec as given ("csv:data/x.csv"); datasets record it as their `spec`
    name: str  # registered source name, lower case
    arg: str | None  # text after the first ':', None without one
    kind: str  # one of KINDS
    options: Mapping[str, object] = field(default_factory=dict)  # read-only: the source's own options (and the kind's maker options)

    def __str__(self) -> str:
        return self.text

    @property
    def source(self) -> DatasetSource:
        return dataset_sources(self.kind)[self.name]

    def splits(self) -> list[str]:
        """The splits this spec offers, e.g. ['train', 'test'] (a folder: the subfolders it has)."""
        return list(self.source.splits(self.arg))


_REGISTRY: dict[str, dict[str, DatasetSource]] = {kind: {} for kind in KINDS}


def register_dataset(
    name: str,
    *,
    help: str,
    kind: str = "image",
    splits: Sequence[str] | Callable[[str | None], list[str]] = ("train", "test"),
    arg: str | None = None,
    arg_required: bool = False,
):
    """Decorator: register `make(arg, *, spec, split, seed, **opts)` under `name` for datasets of `kind`.

    `splits` is a fixed list or a function of the spec's argument (e.g. a folder's subfolders);
    `arg` names what follows ':' in the spec ("DIR", "FILE"), None if nothing may follow.
    """
    if kind not in _REGISTRY:
        raise ValueError(f"dataset kind '{kind}' is not one of {KINDS}")
    if name in _REGISTRY[kind]:
        raise ValueError(f"{KIND_RULES[kind].what} '{name}' is registered twice")
    split_fn = splits if callable(splits) else (lambda _arg, _s=tuple(splits): list(_s))

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        _REGISTRY[kind][name] = DatasetSource(name=name, kind=kind, help=help, make=fn, splits=split_fn, arg=arg, arg_required=arg_required)
        return fn

    return decorator


def dataset_sources(kind: str = "image") -> dict[str, DatasetSource]:
    """The registered sources of a kind, name -> source; their modules are imported on the first call."""
    for module in SOURCE_MODULES[kind]:
        importlib.import_module(module)  # idempotent: a module registers once, on its first import
    return _REGISTRY[kind]


def parse_spec(spec: str) -> tuple[str, str | None]:
    """'csv:data/x.csv' -> ('csv', 'data/x.csv'); 'synthetic-hands' -> ('synthetic-hands', None).

    Only the first ':' separates, so an argument may itself hold colons (`mpii:JSON:IMGDIR`).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError(KIND_RULES["image"].empty)
    name, sep, arg = spec.strip().partition(":")
    return name.strip().lower(), (arg if sep else None)


def _other_kind_error(name: str, kind: str) -> UsageError | None:
    """A name that belongs to another kind, handed to an image command: say which command reads it.

    Frame sources are no other kind here: every one is an image dataset too, and `gx pca-compute`
    reads image datasets as well.
    """
    if kind != "image":
        return None
    for other in KINDS:
        if other in ("image", "frames"):
            continue
        if name in dataset_sources(other):
            rules = KIND_RULES[other]
            return UsageError(f"dataset '{name}' holds {rules.holds}, not {KIND_RULES[kind].holds}; use it with `gx {rules.command}`; "
                              f"image datasets are: {', '.join(sorted(dataset_sources(kind)))}")
    return None


def get_source(spec: str, *, kind: str = "image") -> tuple[DatasetSource, str | None]:
    """The registered source of a spec and its argument, or a UsageError with a suggestion."""
    rules = KIND_RULES[kind]
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError(rules.empty)
    name, arg = parse_spec(spec)
    sources = dataset_sources(kind)
    source = sources.get(name)
    if source is None:
        other = _other_kind_error(name, kind)
        if other is not None:
            raise other
        err = unknown_choice(rules.what, name, sources)
        hint = rules.path_hint(spec, arg is not None) if rules.path_hint else ""
        raise UsageError(f"{err}{hint}") if hint else err
    if source.arg is None and arg is not None:
        raise UsageError(rules.no_arg.format(name=name, spec=spec))
    if source.arg_required and not (arg or "").strip():
        raise UsageError(rules.needs_arg.format(name=name, arg=source.arg, usage=source.usage, arg_lower=source.arg.lower()))
    if arg is not None and not arg.strip():
        raise UsageError(f"dataset spec '{spec}' has an empty {source.arg} after ':'; use {source.usage}")
    return source, arg


def check_options(source: DatasetSource, opts: Mapping[str, object]) -> dict[str, object]:
    """`opts` if every key is an option of the source (or of its kind's maker), else a UsageError naming the closest."""
    rules = KIND_RULES[source.kind]
    valid = source.options
    for key in opts:
        if key in rules.maker_options or key in valid:
            continue
        if not valid and rules.no_options:
            raise UsageError(rules.no_options.format(name=source.name, key=key))
        listed = ", ".join([*rules.maker_options, *valid])
        raise UsageError(f"unknown option '{key}' for {rules.owner} '{source.name}'{did_you_mean(key, valid)}; valid: {listed}")
    return dict(opts)


def parse_dataset(spec: str | DatasetSpec, opts: Sequence[str] | Mapping[str, object] = (), *, kind: str = "image") -> DatasetSpec:
    """The one parser of dataset specs: `name[:ARG]` + `--dataset-opt KEY=VALUE` strings -> a checked `DatasetSpec`.

    `opts` are `KEY=VALUE` strings (typed as int, float, bool or str; a str-only option keeps its text)
    or keyword values already typed. Errors, in the order a user meets them: a malformed option, an
    unknown source or a bad argument, an option the source does not take.
    """
    if isinstance(spec, DatasetSpec):
        if spec.kind != kind:
            raise UsageError(f"dataset '{spec.text}' holds {KIND_RULES[spec.kind].holds}, not {KIND_RULES[kind].holds}; "
                             f"use it with `gx {KIND_RULES[spec.kind].command}`")
        if not opts:
            return spec
        # more options for a spec already read: type and check them against its source; the text is not read again
        source = spec.source
        more = dict(opts) if isinstance(opts, Mapping) else _typed_opts(_split_opts(opts), source)
        return replace(spec, options=MappingProxyType(check_options(source, {**spec.options, **more})))
    if isinstance(opts, Mapping):
        given = dict(opts)  # keyword values from code: already typed
        source, arg = get_source(spec, kind=kind)
    else:
        texts = _split_opts(opts)
        source, arg = get_source(spec, kind=kind)
        given = _typed_opts(texts, source)
    typed = check_options(source, given)
    return DatasetSpec(text=spec, name=source.name, arg=arg, kind=kind, options=MappingProxyType(typed))


PATH_ARGS = ("DIR", "FILE", "FILE|DIR", "JSON[:IMGDIR]")  # sources whose argument is a local path
# options whose value may name a local file: pose texts=FILE, seg classes=FILE, the segmentation maker's class_map=FILE
PATH_OPTIONS = ("texts", "classes", "class_map")


def same_dataset(recorded: str | None, given: str | None) -> bool:
    """Whether a spec an artifact recorded and one given now name the same data, their local paths compared absolute
    and normalised (`data/x/` is `data/x`; `../data/x` from sub/ is `data/x`): runs made before gx recorded --dataset's
    paths absolute (or normalised) hold them relative (to the folder they ran in, which is this one on --resume)."""
    if recorded is None or given is None:
        return recorded == given
    return recorded == given or _spec_paths_as(recorded, _normal_path_text) == _spec_paths_as(given, _normal_path_text)


def same_dataset_opts(recorded: Sequence[str] | None, given: Sequence[str] | None, *, dataset: str | None = None) -> bool:
    """Whether the --dataset-opt texts an artifact recorded and those given now set the same options of `dataset`'s
    source: compared as KEY -> value, in any order, the last of a key winning, each value typed as parse_dataset
    types it for that source (`clutter=false` is `clutter=False`; `fps=25` is `fps=25.0` where the source takes a
    float); a path option's value (PATH_OPTIONS) compared absolute and normalised, as same_dataset compares specs
    (runs made before gx recorded path options absolute hold them relative)."""
    if recorded is None or given is None:
        return recorded == given
    if list(recorded) == list(given):
        return True
    before, now = _comparable_opts(recorded, dataset), _comparable_opts(given, dataset)
    return before is not None and before == now


def _comparable_opts(opts: Sequence[str], dataset: str | None) -> dict[str, object] | None:
    """KEY=VALUE texts -> {key: comparable value} for same_dataset_opts; None when one is no KEY=VALUE."""
    try:
        texts = _split_opts(opts)
    except UsageError:
        return None
    params = _option_parameters(dataset)
    return {key: _comparable_value(key, text, params.get(key)) for key, text in texts.items()}


def _option_parameters(dataset: str | None) -> dict[str, inspect.Parameter]:
    """The options of the sources named as `dataset`'s, of any kind (`hf-dataset` is two), key -> parameter; where
    two take a key, the one that takes text only, so that two texts one of them would tell apart never match."""
    try:
        name, _ = parse_spec(dataset) if dataset else ("", None)
    except UsageError:
        return {}
    out: dict[str, inspect.Parameter] = {}
    for kind in KINDS:
        source = dataset_sources(kind).get(name)
        for key, param in (source.parameters if source else {}).items():
            if key not in out or str(param.annotation) in _TEXT_ANNOTATIONS:
                out[key] = param
    return out


def _comparable_value(key: str, text: str, param: inspect.Parameter | None) -> object:
    """An option's value as the source receives it (with its type: `1` is no `true`), a float option's whole
    number as a float; a path option's as a normalised absolute path."""
    if key in PATH_OPTIONS:
        return _normal_path_text(text)
    value = _parse_value(text, param)
    if type(value) is int and param is not None and "float" in str(param.annotation):
        value = float(value)
    return type(value).__name__, value


def recorded_dataset(spec: str | DatasetSpec, opts: Sequence[str] | Mapping[str, object] = (), *, kind: str = "image",
                     recorded_in: str) -> DatasetSpec:
    """parse_dataset for a spec read back from an artifact (`recorded_in` names it): when its local data is no
    longer where the run saw it (a run moved with `gx runs import`, data moved since), one line that says so
    and how to point at it, instead of the source's bare "not found"."""
    spec = parse_dataset(spec, opts, kind=kind)
    # the path to look for: the whole argument, or the JSON of `mpii:JSON[:IMGDIR]`
    local = (path_arg_parts(spec.source.arg, spec.arg) or ("",))[0] if spec.arg else ""
    if local and not Path(local).expanduser().exists():
        raise DataError(f"{local}: not found; {recorded_in} was made from the dataset '{spec.text}'; "
                        "pass --dataset with where that data is now")
    return spec


def given_or_recorded_dataset(given: str | None, recorded: str | None, *, recorded_opts: Sequence[str] | None = (),
                              kind: str = "image", recorded_in: str) -> DatasetSpec:
    """The dataset a step reads for an artifact that recorded the one it was made from (`recorded_in` names it):
    `given` (--dataset) when there is one, else `recorded` (recorded_dataset: one line when that data has moved).
    It gets the recorded --dataset-opt values when it names the same data (same_dataset), none otherwise."""
    if not given:
        return recorded_dataset(recorded, list(recorded_opts or ()), kind=kind, recorded_in=recorded_in)
    return parse_dataset(given, list(recorded_opts or ()) if same_dataset(recorded, given) else [], kind=kind)


def path_arg_parts(metavar: str | None, arg: str) -> tuple[str, ...]:
    """The local paths a source's argument names, as typed; joined with ':' they give `arg` back. `metavar` is the
    source's `arg` ("DIR", "JSON[:IMGDIR]"); () for one that names no local path (a hub id, none at all).

        path_arg_parts("DIR", "data/x")                    # ('data/x',)
        path_arg_parts("JSON[:IMGDIR]", "ann.json:imgs")   # ('ann.json', 'imgs'): after the first '.json:'
        path_arg_parts("JSON[:IMGDIR]", "ann:imgs")        # ('ann', 'imgs'): a JSON named otherwise, at the last ':'
    """
    if metavar not in PATH_ARGS:
        return ()
    if metavar != "JSON[:IMGDIR]":
        return (arg,)
    cut = arg.lower().find(".json:")
    if cut >= 0:
        return arg[: cut + len(".json")], arg[cut + len(".json:") :]
    if arg.lower().endswith(".json"):
        return (arg,)
    json_part, _, img_part = arg.rpartition(":")
    return (json_part, img_part) if json_part else (arg,)


def absolute_path_text(text: str) -> str:
    """A local path that exists -> its absolute path, normalised (`..`, `.`, a trailing '/' taken out as the text
    reads, so the record does not depend on the folder it was typed in still being there; a symlink stays as typed);
    anything else (`~/...`, missing, no path at all) as typed, for the parser and the source to judge."""
    path = Path(text).expanduser()
    try:
        if not text.strip() or text.startswith("~") or not path.exists():
            return text
        normal = os.path.abspath(path)
        # `link/..` read as the text reads is not where the link leads: then the absolute path as typed
        return normal if os.path.exists(normal) and os.path.samefile(normal, path) else str(path.absolute())
    except OSError:  # a name too long for the file system, a folder it may not look into: the source will say
        return text


def _normal_path_text(text: str) -> str:
    """A path as same_dataset compares it: absolute (relative to the current folder) and normalised as the text
    reads, whether or not it exists; an empty one (`mpii:JSON:`) as it is."""
    return os.path.abspath(os.path.expanduser(text)) if text.strip() else text


def absolute_spec_text(text: str | None) -> str | None:
    """`--dataset` as commands record it: `name:relative/path` -> `name:/absolute/path` for each local path of
    the argument that exists (both of `mpii:JSON:IMGDIR`), when the source reads local paths. Runs record the
    spec's text, and a later step (evaluate, report, --resume) may run from another folder. Anything else is
    returned as typed, for the parser and the source to judge."""
    return _spec_paths_as(text, absolute_path_text)


def _spec_paths_as(text: str | None, path_text: Callable[[str], str]) -> str | None:
    """The spec with `path_text` applied to each local path of its argument (path_arg_parts), when its source
    reads local paths; anything else as typed."""
    if not text or ":" not in text:
        return text
    name, arg = parse_spec(text)
    if not arg:
        return text
    reads = {dataset_sources(kind)[name].arg for kind in KINDS if name in dataset_sources(kind)}
    parts = {path_arg_parts(metavar, arg) for metavar in reads}
    if len(parts) != 1 or not (named := parts.pop()):  # no such source, no local path, or two ways to read one
        return text
    mapped = ":".join(path_text(part) for part in named)
    return text if mapped == arg else f"{text.strip().partition(':')[0]}:{mapped}"


def absolute_opts_text(opts: Sequence[str]) -> tuple[str, ...]:
    """`--dataset-opt KEY=VALUE` texts as commands record them, like absolute_spec_text: the value of a path
    option (PATH_OPTIONS) made absolute when it is a relative path that exists; anything else as typed (a list
    of class names stays a list, a texts= table inside an hf-dataset snapshot stays relative to it)."""
    out = []
    for item in opts:
        key, sep, value = item.partition("=")
        if sep and key.strip().replace("-", "_") in PATH_OPTIONS and absolute_path_text(value.strip()) != value.strip():
            item = f"{key}={absolute_path_text(value.strip())}"
        out.append(item)
    return tuple(out)


def dataset_splits(spec: str | DatasetSpec) -> list[str]:
    """The splits an image dataset spec offers, e.g. ['train', 'test'] (a folder: the subfolders it has)."""
    return parse_dataset(spec).splits()


def make_dataset(spec: str | DatasetSpec, *, split: str = "train", seed: int = 0, **opts):
    """Build one split of an image dataset from its spec (see DESIGN §5 and `list_datasets()`) -> ImageDataset.

    `seed` drives deterministic splits and generators; `opts` are the source's own options
    (e.g. `train_per_class=` for synthetic-hands, `label_map=` for Sign MNIST CSVs), added to the spec's.
    """
    spec = parse_dataset(spec, opts)
    source = spec.source
    splits = spec.splits()
    if split not in splits:
        raise unknown_split(spec.text, split, splits)
    ds = source.make(spec.arg, spec=spec.text, split=split, seed=int(seed), **spec.options)
    ds.spec, ds.split = spec.text, split
    return ds


def list_datasets(kind: str = "image") -> list[tuple[str, str]]:
    """(name, one-line help) of every registered dataset of a kind, sorted by name; the help starts with its spec form."""
    return [(s.name, f"{s.usage}: {s.help}") for s in sorted(dataset_sources(kind).values(), key=lambda s: s.name)]


def _typed_opts(texts: Mapping[str, str], source: DatasetSource) -> dict[str, object]:
    """`--dataset-opt` texts typed by the source's signature (int, float, bool or str; a str-only option keeps its text)."""
    return {key: _parse_value(text, source.parameters.get(key)) for key, text in texts.items()}


def _split_opts(items: Sequence[str]) -> dict[str, str]:
    """`KEY=VALUE` strings -> {key: value text}; '-' in a key reads as '_'."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UsageError(f"--dataset-opt '{item}' must look like KEY=VALUE, e.g. label_map=contiguous")
        out[key] = value.strip()
    return out


# annotations (text, under `from __future__ import annotations`) of options that take text only
_TEXT_ANNOTATIONS = {"str", "str | None", "Optional[str]"}


def _parse_value(text: str, param: inspect.Parameter | None = None) -> object:
    """Option text -> bool, int, float or str; the text itself where the make function types the option as text."""
    if param is not None and str(param.annotation) in _TEXT_ANNOTATIONS:
        return text
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
