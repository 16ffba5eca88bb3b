"""`gx gradcam`: where a fine-tuned classifier looks (Grad-CAM / Grad-CAM++ and attention rollout)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gesture_cli.cli.options import ArtifactPrecisionOpt, DatasetOpt, argv, flags, gx_command, make_console, precision_line

EXAMPLE = ("Example: gx gradcam --from lora --backbone tiny-dinov2 --samples-per-class 2 --method gradcam++ -r runs/demo   |   "
           "gx gradcam --target true -r runs/demo   |   gx gradcam --target B -r runs/demo")


@gx_command
def gradcam(
    source: Annotated[str | None, typer.Option("--from", help="Which classifier: lora | probe [default: lora].", show_default=False)] = None,
    backbone=None,
    input_path: Annotated[Path | None, typer.Option("--input", "-i", help="An image file, a folder of images, or a Sign-MNIST-style CSV; default: --samples-per-class from the dataset.", show_default=False)] = None,
    samples_per_class: Annotated[int | None, typer.Option("--samples-per-class", "-n", help="Images per class from the dataset's split when no --input [default: 1].", show_default=False)] = None,
    dataset: DatasetOpt = None,
    split: Annotated[str | None, typer.Option("--split", help="Dataset split the samples come from [default: test].", show_default=False)] = None,
    method: Annotated[str | None, typer.Option("--method", help="gradcam | gradcam++ [default: gradcam].", show_default=False)] = None,
    target: Annotated[str | None, typer.Option("--target", metavar="CLASS|pred|true", help="Class the Grad-CAM explains: pred (the predicted class), true (each image's label) or a class name such as B [default: pred].", show_default=False)] = None,
    compare: Annotated[bool, typer.Option("--compare", help="Render the probe's and the LoRA classifier's maps of one backbone side by side.")] = False,
    max_images: Annotated[int | None, typer.Option("--max-images", help="At most this many images [default: 48].", show_default=False)] = None,
    precision: ArtifactPrecisionOpt = None,
    run_dir=None, device="auto", config=None, verbose=False,
) -> None:
    """Explain a classifier: per image a PNG strip input | Grad-CAM | attention rollout, in gradcam/<from>-<backbone>/.

    Grad-CAM uses the patch tokens of the last transformer block (its input when the head reads only
    the CLS token; CLS and registers removed) on the backbone's patch grid; attention maps need eager attention and are the CLS row, or for a backbone
    without CLS (I-JEPA) the mean attention each patch receives. maps.npz holds every map, including
    the last layer's per-head CLS attention; gradcam.json lists the images, predictions and the class
    each map explains (--target), and a deletion check of the maps: how much greying out the top 10%
    of patches by Grad-CAM lowers log p(class), against as many random patches. Whatever --precision the
    models run in, the maps are computed in fp32.
    """
    from gesture_cli.core.config import resolve_config
    from gesture_cli.core.rundir import RunDir
    from gesture_cli.tasks.datasets import config_as_recorded
    from gesture_cli.tasks.gradcam import GradcamConfig, render_gradcam_run

    cfg = config_as_recorded(resolve_config(
        GradcamConfig, config,
        flags(source=source, backbone=backbone, input=str(input_path) if input_path is not None else None, samples_per_class=samples_per_class,
              dataset=dataset, split=split, method=method, compare=compare or None, max_images=max_images, target=target,
              precision=precision),
    ))
    console = make_console()
    res = render_gradcam_run(cfg, RunDir(run_dir), device=device, argv=argv(), notify=precision_line(console))
    preds = [r for r in res["images"] if r["label"] is not None]
    for src in res["from"]:
        if preds:
            acc = sum(r["label"] == r[f"{src}_pred"] for r in preds) / len(preds)
            console.print(f"{src}: top-1 on the {len(preds)} labelled image(s) {acc:.3f}")
        d = res["deletion"][src]
        random = f"{d['patches']} random patch{'es' if d['patches'] != 1 else ''}"
        console.print(f"{src}: greying the {d['patches']} of {d['of']} patches the maps mark first lowers log p(class) by "
                      f"{d['mean_drop_top']:.3f}, {random} by {d['mean_drop_random']:.3f} (a faithful map: the first is larger)")
    if res["attention"] == "received":
        console.print("[dim]no CLS token: attention maps show the mean attention each patch receives[/]")
    explains = {"pred": "the predicted class", "true": "the true class"}.get(res["target"], f"class {res['target']}")
    console.print(f"{res['method']} of {explains}: {res['n']} strip(s) in {res['output']}")


def register(app: typer.Typer) -> None:
    app.command("gradcam", epilog=EXAMPLE)(gradcam)
