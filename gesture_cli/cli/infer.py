"""`gx infer TASK --input PATH`: run a trained artifact of the run dir on new inputs.

The tasks are one registry (cli/artifact_tasks.py, shared with `gx evaluate`); `classify` prints the
top-k classes per input with a probe classifier (`--from probe`) or a `gx lora-train` classifier (`--from lora`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gesture_cli.cli.options import ArtifactPrecisionOpt, check_task_options, flags, gx_command, make_console

EXAMPLE = "Example: gx infer classify --from probe --backbone tiny-dinov2 --input hands.csv --top-k 3 -r runs/demo"


@gx_command
def infer(
    task: Annotated[str, typer.Argument(help="What to run: classify, segment, keypoint, translate.", show_default=False)],
    input_path: Annotated[Path | None, typer.Option("--input", "-i", help="An image file, a folder of images, or a Sign-MNIST-style CSV (784 pixels, or label + 784).", show_default=False)] = None,
    source: Annotated[str | None, typer.Option("--from", help="Which artifact: probe | lora [default: probe].", show_default=False)] = None,
    backbone=None,
    top_k: Annotated[int | None, typer.Option("--top-k", "-k", help="Classes to show per input [default: 3].", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list of predictions instead of a table.")] = False,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Images per batch; 0 = auto.", show_default=False)] = None,
    inference: Annotated[str | None, typer.Option("--inference", help="segment: whole | slide (sliding S x S windows) [default: whole].", show_default=False)] = None,
    class_map: Annotated[str | None, typer.Option("--class-map", help="segment: fold the head's per-class scores into groups (JSON class map).", show_default=False)] = None,
    detect: Annotated[str | None, typer.Option("--detect", metavar="DETECTOR", help="segment: also count objects with this detector (hub id e.g. PekingU/rtdetr_r18vd, a local folder, or tiny-rtdetr); adds det_count_<class> columns to features.csv.", show_default=False)] = None,
    detect_classes: Annotated[list[str] | None, typer.Option("--detect-classes", metavar="NAMES", help="segment --detect: classes to count, comma-separated or repeated [default: person, bicycle, car, motorcycle, bus, truck, traffic light, stop sign, bench, dog].", show_default=False)] = None,
    detect_threshold: Annotated[float | None, typer.Option("--detect-threshold", help="segment --detect: minimum detection score, 0..1 [default: 0.5].", show_default=False)] = None,
    sample_id: Annotated[str | None, typer.Option("--sample-id", help="translate: a sample of the training dataset by id, instead of --input.", show_default=False)] = None,
    num_beams: Annotated[int | None, typer.Option("--num-beams", help="translate: beam search width; 1 = greedy [default: the model's].", show_default=False)] = None,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens", help="translate: tokens generated per sequence at most [default: the model's].", show_default=False)] = None,
    precision: ArtifactPrecisionOpt = None,
    run_dir=None, device="auto", config=None, verbose=False,
) -> None:
    """Run a trained artifact of the run on new inputs; writes under infer/.

    classify: top-k classes with probabilities per image, folder or CSV row (--from probe|lora); the
    backbone is rebuilt from the classifier's header and inputs are preprocessed as in training.
    segment: colour masks, overlays and features.csv of per-class (or --class-map group) area fractions;
    --detect DETECTOR adds per-class object counts. keypoint: the predicted skeleton drawn on each image
    and its coordinates. translate: the text of one pose sequence (--input FILE or --sample-id ID).
    """
    from gesture_cli.cli.artifact_tasks import task_runner
    from gesture_cli.core.config import resolve_config
    from gesture_cli.core.rundir import RunDir
    from gesture_cli.tasks.classify import InferConfig

    runner = task_runner(task, "infer")
    seg, tr = ("segment",), ("translate",)
    check_task_options("infer", task, **{"--from": (source, ("classify",)), "--backbone": (backbone, ("classify", "segment", "keypoint")),
                                         "--top-k": (top_k, ("classify",)), "--inference": (inference, seg),
                                         "--class-map": (class_map, seg), "--detect": (detect, seg), "--detect-classes": (detect_classes, seg),
                                         "--detect-threshold": (detect_threshold, seg), "--sample-id": (sample_id, tr),
                                         "--num-beams": (num_beams, tr), "--max-new-tokens": (max_new_tokens, tr)})
    if task == "translate":  # --input is a keypoint file or --sample-id a dataset sample: it resolves its own config
        return runner(None, run=RunDir(run_dir), device=device, as_json=as_json, console=make_console())
    cfg = resolve_config(
        InferConfig, config,
        flags(input=str(input_path) if input_path is not None else None, source=source, backbone=backbone, top_k=top_k, batch_size=batch_size,
              precision=precision),
    )
    runner(cfg, run=RunDir(run_dir), device=device, as_json=as_json, console=make_console())


def register(app: typer.Typer) -> None:
    app.command("infer", epilog=EXAMPLE)(infer)
