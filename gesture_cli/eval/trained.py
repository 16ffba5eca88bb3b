"""Finding a trained model in a run directory: <folder>/<backbone>/ with its weights file, or an error that says what to run."""

from __future__ import annotations

from pathlib import Path

from gesture_cli.core.errors import ArtifactError, UsageError


def trained_dir(run, folder: str, backbone: str | None, *, what: str, command: str, marker: str = "head.safetensors",
                none_hint: str = "") -> tuple[str, Path]:
    """(backbone folder name, <folder>/<backbone>/) of a model `gx {command}` trained; None picks the only one.

    what: the model in words ("LoRA classifier"); marker: the file that marks a finished model;
    none_hint: added to the error when the run has no such model at all (e.g. another source to use).
    """
    from gesture_cli.models.features import backbone_dirname

    trained = sorted(p.parent.name for p in run.path(folder).glob(f"*/{marker}"))
    if backbone is None:
        if len(trained) == 1:
            return trained[0], run.path(folder, trained[0])
        if not trained:
            raise ArtifactError(f"no {what} in {run.path(folder)}; run `gx {command} -r {run.root}` first{none_hint}")
        raise UsageError(f"{len(trained)} {what}s in {run.root}: pass --backbone, one of {', '.join(trained)}")
    name = backbone_dirname(backbone)
    path = run.path(folder, name)
    if not (path / marker).is_file():
        hint = f" (trained: {', '.join(trained)})" if trained else ""
        raise ArtifactError(f"{path}: no {what} for backbone '{backbone}'{hint}; run `gx {command} --backbone {backbone} -r {run.root}` first")
    return name, path
