"""Finding a trained model in a run directory: <folder>/<backbone>/ with its weights file, or an error that says what to run."""

from __future__ import annotations

from pathlib import Path

from gesture_cli.core.errors import ArtifactError, UsageError, shell_word


def trained_dir(run, folder: str, backbone: str | None, *, what: str, command: str, marker: str = "head.safetensors",
                none_hint: str = "") -> tuple[str, Path]:
    """(backbone folder name, <folder>/<backbone>/) of a model `gx {command}` trained; None picks the only one.

    what: the model in words ("LoRA classifier"); marker: the file that marks a finished model;
    none_hint: added to the error when the run has no such model at all (e.g. another source to use).
    """
    from gesture_cli.models.backbone_ref import backbone_dirname

    trained = sorted(p.parent.name for p in run.path(folder).glob(f"*/{marker}"))
    if backbone is None:
        if len(trained) == 1:
            return trained[0], run.path(folder, trained[0])
        if not trained:
            raise ArtifactError(f"no {what} in {run.path(folder)}; run `gx {command} -r {shell_word(run.root)}` first{none_hint}")
        raise UsageError(f"{len(trained)} {what}s in {run.root}: pass --backbone, one of {', '.join(trained)}")
    name = backbone_dirname(backbone)
    path = run.path(folder, name)
    if not (path / marker).is_file():
        hint = f" (trained: {', '.join(trained)})" if trained else ""
        raise ArtifactError(f"{path}: no {what} for backbone '{backbone}'{hint}; run `gx {command} --backbone {shell_word(backbone)} -r {shell_word(run.root)}` first")
    return name, path


def run_precision(device, requested: str | None, recorded: str | None, *, notify=None):
    """The `core.device.Precision` an evaluate/infer/gradcam command runs an artifact in, announced once.

    `requested`: --precision (None = not given), which wins; else the artifact's `recorded` precision where
    this device runs it at speed, else auto (`core.device.inference_precision`). `device`: a torch.device or
    a --device string. `notify(line)` gets the one "precision: bf16 on cpu" line of the command.
    """
    from gesture_cli.core.device import inference_precision

    prec = inference_precision(device, requested, recorded)
    if notify is not None:
        notify(f"precision: {prec.describe()}")
    return prec


def check_precision_option(precision: str | None) -> None:
    """A clean UsageError for a --precision that is not auto|fp32|bf16|fp16, before anything is loaded."""
    from gesture_cli.core.device import check_precision_name

    if precision is not None:
        check_precision_name(precision)
