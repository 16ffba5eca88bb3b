"""Dataset specs as the commands take them from the command line (cli may reach data/ only through tasks/)."""

from __future__ import annotations


def spec_as_recorded(text: str | None) -> str | None:
    """`--dataset` as runs record it: a relative local path made absolute, so that evaluate, report and
    --resume find the data from any folder (data.registry.absolute_spec_text)."""
    from gesture_cli.data.registry import absolute_spec_text

    return absolute_spec_text(text)


__all__ = ["spec_as_recorded"]
