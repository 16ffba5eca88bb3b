"""`gx evaluate TASK`: score a trained artifact of the run dir on a dataset split.

The tasks are one registry (cli/artifact_tasks.py, shared with `gx infer`); `classify` scores a probe
(`--from probe`) or a `gx lora-train` classifier (`--from lora`).
"""

from __future__ import annotations

from typing import Annotated

import typer

from gesture_cli.cli.options import ArtifactPrecisionOpt, DatasetOpt, check_task_options, flags, gx_command, make_console

EXAMPLE = "Example: gx evaluate classify --from lora --backbone tiny-dinov2 -r runs/demo"


@gx_command
def evaluate(
    task: Annotated[str, typer.Argument(help="What to evaluate: classify, segment, keypoint, translate.", show_default=False)],
    source: Annotated[str | None, typer.Option("--from", help="Which artifact: probe | lora [default: probe].", show_default=False)] = None,
    backbone=None,
    dataset: DatasetOpt = None,
    split: Annotated[str | None, typer.Option("--split", help="Dataset split to score [default: test].", show_default=False)] = None,
    max_samples: Annotated[int | None, typer.Option("--max-samples", help="Score only the first N samples (extracts features anew).", show_default=False)] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Images per batch when extracting; 0 = auto.", show_default=False)] = None,
    inference: Annotated[str | None, typer.Option("--inference", help="segment: whole | slide (sliding S x S windows) [default: whole].", show_default=False)] = None,
    class_map: Annotated[str | None, typer.Option("--class-map", help="segment: fold the head's classes and the labels into groups (JSON class map).", show_default=False)] = None,
    num_beams: Annotated[int | None, typer.Option("--num-beams", help="translate: beam search width; 1 = greedy [default: the model's].", show_default=False)] = None,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens", help="translate: tokens generated per sequence at most [default: the model's].", show_default=False)] = None,
    precision: ArtifactPrecisionOpt = None,
    run_dir=None, device="auto", seed=None, config=None, force=False, verbose=False,
) -> None:
    """Score a trained artifact of the run on a dataset split; writes its results under eval/.

    classify: accuracy, macro/weighted precision, recall, F1 and a per-class report. --from probe
    reuses the extracted features when the dataset is the one they came from; otherwise the backbone
    is rebuilt from the classifier's header. --from lora runs the fine-tuned classifier on the split
    (built as `gx lora-train` built it) and also writes eval/confusion-lora-<backbone>.png. With both
    results for one backbone, the summary shows them side by side.

    segment: mIoU, per-class IoU and pixel accuracy (--inference whole|slide, --class-map).
    keypoint: PCKh@0.5 and PCK@0.2 per joint and mean. translate: BLEU-1..4, chrF, ROUGE-L and the
    SLT per-sentence ROUGE-L (beta 1.2), with per-sample references and hypotheses.
    """
    from gesture_cli.cli.artifact_tasks import task_runner
    from gesture_cli.core.config import resolve_config
    from gesture_cli.core.rundir import RunDir
    from gesture_cli.tasks.classify import EvaluateConfig
    from gesture_cli.tasks.datasets import config_as_recorded

    runner = task_runner(task, "evaluate")
    check_task_options("evaluate", task, **{"--from": (source, ("classify",)), "--backbone": (backbone, ("classify", "segment", "keypoint")),
                                            "--inference": (inference, ("segment",)),
                                            "--class-map": (class_map, ("segment",)), "--num-beams": (num_beams, ("translate",)),
                                            "--max-new-tokens": (max_new_tokens, ("translate",))})
    cfg = config_as_recorded(resolve_config(
        EvaluateConfig, config,
        flags(source=source, backbone=backbone, dataset=dataset, split=split, max_samples=max_samples, batch_size=batch_size, seed=seed,
              precision=precision),
    ))
    runner(cfg, run=RunDir(run_dir), device=device, force=force, console=make_console())


def register(app: typer.Typer) -> None:
    app.command("evaluate", epilog=EXAMPLE)(evaluate)
