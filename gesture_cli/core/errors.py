"""Errors that gx turns into one red line and an exit code at the CLI boundary.

Core code raises these with a message that says what is wrong and how to fix it; it never prints
or exits. `exit_code` follows DESIGN §2: 1 for runtime/data errors, 2 for usage errors.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class GxError(Exception):
    """Base class: a problem the user can fix, reported as one line."""

    exit_code = 1


class UsageError(GxError):
    """A bad option, flag combination or config key."""

    exit_code = 2


class DataError(GxError):
    """A dataset file or row that cannot be read; the message names file, row/field and reason."""


class NonFiniteError(GxError):
    """A model produced NaN or Inf (often an fp16/bf16 range problem): the message suggests --precision fp32."""


class ArtifactError(GxError):
    """A missing, stale or mismatched artifact in the run directory."""


class ModelError(GxError):
    """A backbone or model that cannot be found or built."""


class DownloadError(GxError):
    """A download that failed, did not verify, or would be unsafe to unpack."""


class GxWarning(Warning):
    """Something gx worked around and the user should hear about (files it skipped); core code emits it
    with `warnings.warn`, never prints, and the CLI shows each distinct message once as a yellow line."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return " (did you mean 'x'?)" for the closest choice, or "" when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_choice(kind: str, name: str, choices: Iterable[str]) -> UsageError:
    """A UsageError for an unknown registry name, with a suggestion and the valid names."""
    choices = sorted(choices)
    return UsageError(f"unknown {kind} '{name}'{did_you_mean(name, choices)}; valid: {', '.join(choices)}")
