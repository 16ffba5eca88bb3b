"""Train / validation / test splits of a dataset, the same for every trainer and for the evaluation
that must score exactly what training held out (`gx evaluate` rebuilds them from a run's config).

A dataset here is anything with `len()` and `.subset(indices, split=...)` (ImageDataset, SegDataset,
KeypointDataset, PoseDataset). Caps and hold-outs are seeded random subsets; `stream` keeps the choices
of different callers that share a seed apart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gesture_cli.core.errors import DataError


def capped_indices(length: int, n: int | None, seed: int, *, stream: int = 7) -> np.ndarray | None:
    """Sorted indices of a seeded random subset of at most n of `length` samples; None when nothing is cut.

    `stream` separates the random choices of different callers that share a seed."""
    if n is None or length <= n:
        return None
    return np.sort(np.random.default_rng([seed % 2**32, stream]).permutation(length)[:n])


def cap_samples(ds, n: int | None, seed: int, *, stream: int = 7):
    """A dataset cut to `capped_indices` with `.subset` (None, or one that fits, passes through)."""
    idx = None if ds is None else capped_indices(len(ds), n, seed, stream=stream)
    return ds if idx is None else ds.subset(idx)


def random_holdout(seed: int, *, stream: int) -> Callable:
    """A `holdout` for `make_splits`: a seeded random share of the training samples (at least one, never all)."""

    def carve(train, fraction: float):
        if len(train) < 2:
            return None
        perm = np.random.default_rng([seed % 2**32, stream]).permutation(len(train))
        n_val = min(len(train) - 1, max(1, int(round(len(train) * fraction))))
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])

    return carve


def held_out_name(n: int, split: str) -> str:
    """How a validation set carved out of the training split is named in summaries: '15 held out of split val'."""
    return f"{n} held out of split {split}"


@dataclass
class Splits:
    """What a trainer trains, validates and tests on; `names` says where each came from."""

    train: Any
    val: Any | None
    test: Any | None
    names: dict[str, Any] = field(default_factory=dict)  # role -> split name; val_from_train: True when val was carved out


def make_splits(spec: str, available: Sequence[str], make: Callable[[str], Any], *, val_fraction: float,
                holdout: Callable, max_samples: int | None, seed: int, cap_stream: int = 7) -> Splits:
    """Train / validation / test datasets of one dataset spec, the same way for every trainer.

    train: the `train` split (else the first one). val: the dataset's own `val` split when it has one,
    else `holdout(train, val_fraction)` -> (train indices, val indices) carved out of the training
    split (skipped when val_fraction is 0 or it returns None). test: the `test` split, when there is
    one. Each is then capped at `max_samples` (`cap_samples`). `make(split name)` builds one split.
    """
    if not available:
        raise DataError(f"dataset '{spec}' has no splits (no samples found)")
    train_name = "train" if "train" in available else available[0]
    names: dict[str, Any] = {"train": train_name}
    train = make(train_name)
    val = None
    if "val" in available and train_name != "val":
        val, names["val"] = make("val"), "val"
    elif val_fraction > 0:
        carved = holdout(train, val_fraction)
        if carved is not None and len(carved[0]) and len(carved[1]):
            train, val = train.subset(carved[0]), train.subset(carved[1], split=f"{train_name}[val]")
            names["val_from_train"] = True
    test = None
    if "test" in available and train_name != "test":
        test, names["test"] = make("test"), "test"
    train, val, test = (cap_samples(d, max_samples, seed, stream=cap_stream) for d in (train, val, test))
    if names.get("val_from_train"):  # a count, not val_fraction: a stratified holdout keeps a sample of every class
        names["val"] = held_out_name(len(val), train_name)
    if len(train) == 0:
        raise DataError(f"dataset '{spec}': the training split '{train_name}' is empty")
    return Splits(train=train, val=val, test=test, names=names)


__all__ = ["Splits", "cap_samples", "capped_indices", "held_out_name", "make_splits", "random_holdout"]
