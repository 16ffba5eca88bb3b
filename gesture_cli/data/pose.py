"""Pose (keypoint-sequence) datasets: the `pose:` source, gx's own format, and the splits
(`make_pose_splits`) that training and evaluation share. Normalisation and batches for a model
(`collate_pose`, `PoseBatches`) are in data/pose_batches.py.

    from gesture_cli.data.pose import make_pose_dataset
    ds = make_pose_dataset("pose:data/phoenix", split="train")        # or "synthetic-signs"
    ds.samples[0].keypoints                                             # float32 [T, K, C]

A `PoseSample` is one sequence: keypoints float32 [T, K, C] (C = 2: x, y; or 3: x, y, z) on a layout
of models/skeletons.py, and a bool mask [T, K]; it is defined in data/pose_sample.py, below both this
module and the readers, so that neither imports the other to build one. A missing point (not
detected, zero confidence, NaN) has mask False and NaN coordinates, so code that forgets the mask
fails loudly instead of learning from a fake (0, 0); `collate_pose` (data/pose_batches.py) turns NaN
into 0 for the model, next to the mask.

Specs (DESIGN §5): `pose:FILE|DIR` (every format of data/pose_readers.py, and gx's own format below)
and `synthetic-signs` (data/synthetic_signs.py). Sources register in the one dataset registry
(data/registry.py) with `@register_dataset(name, kind="pose")` and are imported on first lookup.

gx's pose format (`gx pose-convert` writes it): a folder with
    meta.json       {"schema", "kind": "pose-dataset", "layout", "num_samples", "splits", "skipped", "source"}
    index.jsonl     one line per sample: id, path, text, gloss, split, signer, layout, fps, frames, dims, meta
    samples/*.safetensors   `keypoints` float32 [T, K, C] (NaN where masked) and `mask` bool [T, K]
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from gesture_cli.core.errors import ArtifactError, DataError, UsageError
from gesture_cli.data.pose_sample import PoseSample, normalize_split
from gesture_cli.data.registry import DatasetSpec, parse_dataset, register_dataset
from gesture_cli.data.splits import capped_indices, held_out_name

POSE_SPLITS = ("train", "val", "test")
POSE_DATASET_KIND = "pose-dataset"
POSE_SAMPLE_KIND = "pose-sample"
POSE_FORMAT_SCHEMA = 1


@dataclass
class PoseDataset:
    spec: str  # the spec string as given
    split: str | None  # the split asked for; None = every sample
    layout: str  # the layout every sample shares
    samples: list[PoseSample]
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count; nothing is dropped silently
    source_files: list[Path] = field(default_factory=list)  # files read (fingerprinted for cache keys)
    cache_token: str = ""  # changes when a generator or its parameters change

    def __post_init__(self) -> None:
        dims = {s.dims for s in self.samples}
        for s in self.samples:
            if s.layout != self.layout:
                raise DataError(f"{s.source or s.id}: sample '{s.id}' is {s.layout}, the dataset is {self.layout}")
        if len(dims) > 1:
            raise DataError(f"{self.spec}: samples mix 2D and 3D keypoints ({sorted(dims)}); convert them separately")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> PoseSample:
        return self.samples[i]

    def __iter__(self) -> Iterator[PoseSample]:
        return iter(self.samples)

    def __repr__(self) -> str:
        skipped = f", skipped={self.skipped}" if self.skipped else ""
        return f"PoseDataset(spec={self.spec!r}, split={self.split!r}, {len(self)} samples, {self.layout}{skipped})"

    @property
    def dims(self) -> int:
        return self.samples[0].dims if self.samples else 0

    @property
    def texts(self) -> list[str]:
        return [s.text for s in self.samples]

    @property
    def glosses(self) -> list[str]:
        return [s.gloss for s in self.samples]

    def frame_counts(self) -> np.ndarray:
        return np.array([s.num_frames for s in self.samples], dtype=np.int64)

    def split_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.samples:
            out[s.split or "-"] = out.get(s.split or "-", 0) + 1
        return out

    def subset(self, idx: Sequence[int], *, split: str | None = None) -> PoseDataset:
        return replace(self, split=split if split is not None else self.split, samples=[self.samples[int(i)] for i in idx],
                       skipped=dict(self.skipped), source_files=list(self.source_files))


# ---- the pose datasets of the one registry (data/registry.py, kind "pose") ------------------------


def make_pose_dataset(spec: str | DatasetSpec, *, split: str | None = None, seed: int = 0, **opts) -> PoseDataset:
    """Build a pose dataset (one split, or every sample with split=None) from its spec.

    `opts` are the source's own options, e.g. `allow_pickle=`, `layout=`, `texts=`, `fps=` for
    `pose:`, `train_size=` for synthetic-signs; any other key is a UsageError naming the valid ones.
    """
    spec = parse_dataset(spec, opts, kind="pose")
    if split is not None:
        split = normalize_split(split)
        if split not in POSE_SPLITS:
            raise UsageError(f"pose dataset split '{split}' is not one of {', '.join(POSE_SPLITS)}")
    ds = spec.source.make(spec.arg, spec=spec.text, split=split, seed=int(seed), **spec.options)
    ds.spec, ds.split = spec.text, split
    return ds


def auto_split(sample_id: str, *, seed: int = 0, fractions: tuple[float, float] = (0.8, 0.1)) -> str:
    """Deterministic train/val/test (80/10/10) from a hash of (seed, id): stable when samples are added."""
    u = zlib.crc32(f"{seed}:{sample_id}".encode()) / 2**32
    return "train" if u < fractions[0] else "val" if u < fractions[0] + fractions[1] else "test"


def select_split(samples: list[PoseSample], split: str | None, *, seed: int = 0) -> list[PoseSample]:
    """Samples of one split; a sample whose source gives no split is assigned one by `auto_split`."""
    if split is None:
        return samples
    return [s for s in samples if (s.split or auto_split(s.id, seed=seed)) == split]


@register_dataset(
    "pose", kind="pose", splits=POSE_SPLITS, arg="FILE|DIR", arg_required=True,
    help=".pose, OpenPose JSON, Kaggle parquet, ASL-App JSON, gx pose folder (or a pickle with allow_pickle); labels from CSV tables beside them",
)
def make_pose_files(
    arg: str, *, spec: str, split: str | None, seed: int, allow_pickle: bool = False, layout: str | None = None,
    texts: str | None = None, fps: float | None = None, channels: str = "auto",
) -> PoseDataset:
    """`pose:PATH`: a gx pose folder (index.jsonl) or any file/folder data/pose_readers.py reads."""
    path = Path(arg).expanduser()
    if path.is_dir() and (path / "index.jsonl").is_file():
        samples, meta = read_pose_folder(path)
        if layout not in (None, "", "auto") and meta.get("layout") != layout:
            raise DataError(f"{path}: holds {meta.get('layout')} keypoints, not {layout}")
        skipped, files = dict(meta.get("skipped") or {}), [path / "index.jsonl", path / "samples"]
        if texts:
            from gesture_cli.data.pose_readers import relabel_from_texts

            relabel_from_texts(samples, texts, allow_pickle=allow_pickle)
    else:
        from gesture_cli.data.pose_readers import read_pose_path

        samples, skipped, files = read_pose_path(path, allow_pickle=allow_pickle, layout=layout, texts=texts, fps=fps, channels=channels)
    lay = samples[0].layout if samples else (layout or "")
    return PoseDataset(spec=spec, split=split, layout=lay, samples=select_split(samples, split, seed=seed), skipped=skipped, source_files=files)


# ---- gx's own format -----------------------------------------------------------------------------
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _file_name(sample_id: str, used: set[str]) -> str:
    base = _SAFE.sub("_", sample_id).strip("._") or "sample"
    name, n = base[:150], 1
    while name.lower() in used:  # case-insensitive file systems
        n += 1
        name = f"{base[:140]}-{n}"
    used.add(name.lower())
    return name


_WRITTEN = {"meta.json", "index.jsonl", "samples"}  # what write_pose_folder puts in OUTDIR


def _is_os_metadata(entry: Path) -> bool:
    """A hidden plain file (.DS_Store, ._x, .~lock.x#): OS or editor metadata, replaced with the folder it is in.
    A hidden folder (.git) is the user's, not metadata."""
    return entry.name.startswith(".") and entry.is_file() and not entry.is_symlink()


def _is_gx_pose_folder(out: Path) -> bool:
    """Whether `out` has a meta.json of kind pose-dataset (what write_pose_folder writes)."""
    try:
        return json.loads((out / "meta.json").read_text(encoding="utf-8")).get("kind") == POSE_DATASET_KIND
    except (OSError, ValueError, AttributeError):
        return False


def _foreign_entries(out: Path, *, is_gx: bool) -> list[str]:
    """What the existing folder `out` holds that write_pose_folder did not write (relative names), OS metadata files
    aside; [] for a gx pose folder: meta.json of kind pose-dataset, index.jsonl and samples/*.safetensors, nothing
    else. Without such a meta.json (`is_gx`: _is_gx_pose_folder(out), read once by the caller) everything in it is
    foreign (an index.jsonl of the user's own is not gx's)."""
    names = sorted(p.name for p in out.iterdir() if not _is_os_metadata(p))
    if not is_gx:
        return names
    foreign = [n for n in names if n not in _WRITTEN]
    if (out / "index.jsonl").is_dir():
        foreign.append("index.jsonl")
    if (out / "samples").exists() and not (out / "samples").is_dir():
        foreign.append("samples")
    if (out / "samples").is_dir():
        foreign += [f"samples/{p.name}" for p in sorted((out / "samples").iterdir())
                    if not (p.is_file() and p.suffix == ".safetensors") and not _is_os_metadata(p)]
    return foreign


def check_pose_outdir(out_dir: Path | str, *, overwrite: bool = False, inputs: Sequence[Path] = ()) -> None:
    """UsageError unless write_pose_folder may write `out_dir`: it must not be, hold or lie inside an input, and an
    existing one must be empty or a gx pose folder (`_foreign_entries`; OS metadata files such as .DS_Store aside), so
    that nothing else in it is ever deleted; an empty one is used as it is, a gx pose folder replaced only with
    `overwrite`."""
    from gesture_cli.core.output_paths import check_apart_from_inputs, check_not_cwd

    out = Path(out_dir).expanduser()
    check_apart_from_inputs(out, inputs)
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir() or out.is_symlink():
        what = "a link" if out.is_symlink() else "a file" if out.is_file() else "not a folder"
        raise UsageError(f"-o {out} is {what}, not a gx pose folder; it will not be replaced: choose another -o")
    check_not_cwd(out)
    is_gx = _is_gx_pose_folder(out)  # reads and parses meta.json: once
    foreign = _foreign_entries(out, is_gx=is_gx)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        if is_gx:  # gx's own folder plus the user's files: replacing it would delete them
            them = "it" if len(foreign) == 1 else "them"
            raise UsageError(f"-o {out} holds a gx pose folder and also {shown}, which replacing it would delete; "
                             f"move {them} out of {out} (or choose another -o), then rerun with --force")
        raise UsageError(f"-o {out} is not a gx pose folder (it holds {shown}); it will not be replaced: choose another -o")
    if not overwrite and is_gx:
        raise UsageError(f"-o {out} already holds a gx pose folder; pass --force to replace it")


def write_pose_folder(ds: PoseDataset, out_dir: Path | str, *, overwrite: bool = False, inputs: Sequence[Path] = ()) -> Path:
    """Write a dataset in gx's pose format (module docstring); atomic: a crash leaves the old folder or none.

    `out_dir` is checked by check_pose_outdir against `inputs` and the files the dataset was read from."""
    from safetensors.numpy import save

    from gesture_cli.core.artifacts import atomic_write_text

    out = Path(out_dir).expanduser()
    check_pose_outdir(out, overwrite=overwrite, inputs=[*inputs, *ds.source_files])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    (tmp / "samples").mkdir(parents=True)
    try:
        used: set[str] = set()
        lines = []
        for s in ds.samples:
            rel = f"samples/{_file_name(s.id, used)}.safetensors"
            header = {"gx": json.dumps({"schema": POSE_FORMAT_SCHEMA, "kind": POSE_SAMPLE_KIND, "id": s.id, "layout": s.layout})}
            (tmp / rel).write_bytes(save({"keypoints": np.ascontiguousarray(s.keypoints), "mask": np.ascontiguousarray(s.mask)}, metadata=header))
            lines.append(json.dumps({
                "id": s.id, "path": rel, "text": s.text, "gloss": s.gloss, "split": s.split, "signer": s.signer, "layout": s.layout,
                "fps": s.fps, "frames": s.num_frames, "dims": s.dims, "meta": s.meta,
            }, ensure_ascii=False, default=str))
        atomic_write_text(tmp / "index.jsonl", "".join(line + "\n" for line in lines))
        meta = {
            "schema": POSE_FORMAT_SCHEMA, "kind": POSE_DATASET_KIND, "layout": ds.layout, "dims": ds.dims, "num_samples": len(ds),
            "splits": ds.split_counts(), "skipped": ds.skipped, "source": ds.spec,
        }
        atomic_write_text(tmp / "meta.json", json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # an existing OUTDIR is, as checked above, empty or only what an earlier write_pose_folder wrote (and OS metadata)
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}" if out.exists() else None
    try:
        if old is not None:
            out.rename(old)
        tmp.rename(out)
    except BaseException:
        if old is not None and old.exists() and not out.exists():
            old.rename(out)  # the old folder back where it was
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out


def read_pose_folder(root: Path | str) -> tuple[list[PoseSample], dict]:
    """Samples and meta of a gx pose folder; every problem is a one-line error naming file and line."""
    from safetensors import safe_open

    from gesture_cli.models.skeletons import LAYOUT_SIZES

    root = Path(root)
    meta: dict = {}
    if (root / "meta.json").is_file():
        try:
            meta = json.loads((root / "meta.json").read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"{root / 'meta.json'}: not valid JSON ({exc})") from None
        if meta.get("kind") != POSE_DATASET_KIND or int(meta.get("schema", 0)) > POSE_FORMAT_SCHEMA:
            raise ArtifactError(f"{root / 'meta.json'}: not a gx pose folder of schema <= {POSE_FORMAT_SCHEMA} (kind {meta.get('kind')!r}, schema {meta.get('schema')!r})")
    index = root / "index.jsonl"
    samples = []
    for n, line in enumerate(index.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{index} line {n}: not valid JSON ({exc.msg})") from None
        missing = [k for k in ("id", "path", "layout", "fps") if k not in row]
        if missing:
            raise DataError(f"{index} line {n}: missing key(s) {', '.join(missing)}")
        f = root / row["path"]
        if not f.is_file():
            raise DataError(f"{index} line {n}: sample file {f} not found")
        try:
            with safe_open(str(f), framework="numpy") as st:
                kp, mask = st.get_tensor("keypoints"), st.get_tensor("mask")
        except Exception as exc:  # safetensors raises several types for corrupt files and missing tensors
            raise DataError(f"{f}: not a readable gx pose sample ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        k = LAYOUT_SIZES.get(row["layout"])
        if kp.ndim != 3 or mask.shape != kp.shape[:2] or (k is not None and kp.shape[1] != k):
            raise DataError(f"{f}: keypoints {list(kp.shape)} / mask {list(mask.shape)} do not fit layout {row['layout']} ({k} points)")
        if "frames" in row and int(row["frames"]) != kp.shape[0]:
            raise DataError(f"{index} line {n}: says {row['frames']} frames, {f.name} holds {kp.shape[0]}")
        samples.append(PoseSample(
            id=str(row["id"]), keypoints=kp, mask=mask.astype(bool), fps=float(row["fps"]), layout=row["layout"],
            text=str(row.get("text") or ""), gloss=str(row.get("gloss") or ""), split=normalize_split(str(row.get("split") or "")),
            signer=str(row.get("signer") or ""), source=str(f), meta=dict(row.get("meta") or {}),
        ))
    if not samples:
        raise DataError(f"{index}: no samples")
    return samples, meta


# ---- splits and batches of training and evaluation ---------------------------------------------
@dataclass
class PoseSplits:
    train: Any  # PoseDataset
    val: Any
    test: Any | None
    names: dict[str, str]  # role -> where it came from
    source_files: list[Path]
    cache_token: str


def _cap(samples: list, n: int | None, seed: int) -> list:
    idx = capped_indices(len(samples), n, seed)
    return samples if idx is None else [samples[int(i)] for i in idx]


def make_pose_splits(spec: str | DatasetSpec, dataset_opts: Sequence[str] = (), *, seed: int, max_samples: int | None, val_fraction: float,
                     need_text: bool = True, training: bool = True) -> PoseSplits:
    """Train / val / test of a pose dataset, read once, as `gx pose-pretrain` / `gx pose-finetune` train on them
    and `gx evaluate translate` rebuilds them (train/pose_common.py's docstring: Data).

    The dataset's own splits (a sample without one gets a stable `auto_split`); an empty val split is
    replaced by a seeded `val_fraction` of train; then each is capped at a seeded `max_samples` subset.
    `training=False` (evaluation) needs neither a train nor a val split: it scores whichever split it is asked for."""
    ds = make_pose_dataset(parse_dataset(spec, dataset_opts, kind="pose"), split=None, seed=seed)
    spec = ds.spec
    parts = {name: select_split(ds.samples, name, seed=seed) for name in ("train", "val", "test")}
    names = {"train": "train", "val": "val", "test": "test"}
    if not parts["train"] and training:
        raise DataError(f"dataset '{spec}': the training split is empty ({len(ds)} samples in all: {ds.split_counts()})")
    if need_text:
        missing = [s for s in parts["train"] if not s.text.strip()]
        if missing:
            raise DataError(f"{missing[0].source or spec}: sample '{missing[0].id}' has no text ({len(missing)} of {len(parts['train'])} "
                            "training samples have none); give texts with `gx pose-convert --texts TABLE`")
    if not parts["val"] and val_fraction > 0 and len(parts["train"]) > 1:
        order = np.random.default_rng([seed % 2**32, 11]).permutation(len(parts["train"]))
        k = max(1, int(round(val_fraction * len(order))))
        held = set(order[:k].tolist())
        parts["val"] = [s for i, s in enumerate(parts["train"]) if i in held]
        parts["train"] = [s for i, s in enumerate(parts["train"]) if i not in held]
        names["val"] = "held out of train"  # named with its count once capped, below
    if not parts["val"] and training:
        raise DataError(f"dataset '{spec}': no validation samples; give it a val split or use --val-fraction > 0")
    parts = {k: _cap(v, max_samples, seed) for k, v in parts.items()}
    if names["val"] != "val":
        names["val"] = held_out_name(len(parts["val"]), "train")
    make = lambda name: replace(ds, split=name, samples=parts[name]) if parts[name] else None  # noqa: E731
    return PoseSplits(train=make("train"), val=make("val"), test=make("test"), names=names, source_files=list(ds.source_files),
                      cache_token=ds.cache_token)

