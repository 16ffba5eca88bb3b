"""Dataset specs as the commands take them from the command line (cli may reach data/ only through tasks/)."""

from __future__ import annotations

import dataclasses
from typing import TypeVar

C = TypeVar("C")


def config_as_recorded(cfg: C) -> C:
    """A command's resolved config with its dataset as runs record it: the local paths of `dataset` and of the
    `dataset_opts` values (texts=, classes=, class_map=) made absolute when relative, so that evaluate, report and
    --resume find the data from any folder; a --config file's as well as the flags' (relative to the current
    folder). Everything else as typed (data.registry.absolute_spec_text, absolute_opts_text)."""
    from gesture_cli.data.registry import absolute_opts_text, absolute_spec_text

    changes: dict[str, object] = {}
    dataset, opts = getattr(cfg, "dataset", None), getattr(cfg, "dataset_opts", None)
    if isinstance(dataset, str) and absolute_spec_text(dataset) != dataset:
        changes["dataset"] = absolute_spec_text(dataset)
    if opts and absolute_opts_text(opts) != tuple(opts):
        changes["dataset_opts"] = absolute_opts_text(opts)
    return dataclasses.replace(cfg, **changes) if changes else cfg


__all__ = ["config_as_recorded"]
