"""`gx demo`: the whole toolchain on the embedded defaults (synthetic data, tiny backbones, no network).

Each step is an ordinary gx command line, run in this process by the `invoke` callable the caller
passes: `gx demo` (cli/demo.py) passes one that runs the same Typer app a user's shell reaches, so the
demo exercises exactly the code paths of a real run (and its run directory looks like one); this
module never imports the command line itself. The step cache makes a second run nearly instant;
`fresh=True` adds `--force` to every step that takes it. The only thing the demo does itself is write
the few input files that `infer` and `pca-visualize` read (`RUN/inputs/`), generated from the same
seeded synthetic sources.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gesture_cli.core.errors import GxError

BACKBONES = ("tiny-dinov2", "tiny-dinov3")
MAIN = BACKBONES[0]


@dataclass(frozen=True)
class DemoStep:
    title: str
    args: tuple[str, ...]
    forceable: bool = True  # the command takes --force


@dataclass
class StepResult:
    step: DemoStep
    seconds: float
    status: str  # ran | cached | failed
    exit_code: int = 0


def demo_steps(run: Path) -> list[DemoStep]:
    r = ("-r", str(run))
    inputs = run / "inputs"
    return [
        *(DemoStep(f"extract features ({b})", ("extract-features", "--backbone", b, "--dataset", "synthetic-hands", *r)) for b in BACKBONES),
        DemoStep("linear probes + comparison", ("probe", *r)),
        # A tiny random-init ViT learns the 24 hand shapes only from small inputs in a few hundred steps.
        DemoStep("fine-tune (full, tiny)", ("lora-train", "--backbone", MAIN, "--dataset", "synthetic-hands", "--method", "full",
                                            "--image-size", "16", "--max-steps", "300", "--batch-size", "64", "--lr", "3e-3",
                                            "--eval-every", "50", *r)),
        DemoStep("evaluate the fine-tuned classifier", ("evaluate", "classify", "--from", "lora", "--backbone", MAIN, "--dataset", "synthetic-hands", *r)),
        DemoStep("infer on new images", ("infer", "classify", "--from", "lora", "--backbone", MAIN, "--input", str(inputs / "hands"), "--top-k", "3", *r),
                 forceable=False),
        DemoStep("Grad-CAM and attention maps", ("gradcam", "--from", "lora", "--backbone", MAIN, "--dataset", "synthetic-hands",
                                                 "--samples-per-class", "1", "--max-images", "6", *r), forceable=False),
        DemoStep("PCA of patch features", ("pca-compute", "--backbone", MAIN, "--dataset", "synthetic-video", *r)),
        DemoStep("PCA video render", ("pca-visualize", "--input", str(inputs / "clip.mp4"), "--backbone", MAIN, "--side-by-side", *r)),
        DemoStep("segmentation head on the frozen backbone", ("segment-train", "--backbone", MAIN, "--dataset", "synthetic-scenes",
                                                               "--cache-features", "--epochs", "8", "--lr", "1e-2", *r)),
        DemoStep("evaluate segmentation", ("evaluate", "segment", "--backbone", MAIN, *r)),
        DemoStep("segment new images", ("infer", "segment", "--backbone", MAIN, "--input", str(inputs / "scenes"), *r), forceable=False),
        DemoStep("keypoint regression", ("keypoint-train", "--backbone", MAIN, "--dataset", "synthetic-keypoints", "--method", "full",
                                         "--image-size", "32", "--dataset-opt", "side=32", "--dataset-opt", "clutter=false",
                                         "--dataset-opt", "train_samples=800", "--rotate", "0", "--scale-jitter", "0",
                                         "--max-steps", "200", "--lr", "3e-3", *r)),
        DemoStep("evaluate keypoints (PCKh)", ("evaluate", "keypoint", "--backbone", MAIN, *r)),
        DemoStep("keypoints on new images", ("infer", "keypoint", "--backbone", MAIN, "--input", str(inputs / "figures"), *r), forceable=False),
        DemoStep("align pose encoder with text (InfoNCE)", ("pose-pretrain", "--dataset", "synthetic-signs", "--text-model", "tiny-umt5",
                                                            "--encoder-opt", "d_model=64", "--encoder-opt", "n_layers=2",
                                                            "--encoder-opt", "gcn_dims=32", "--keypoints", "body,hands",
                                                            "--max-frames", "16", "--embed-dim", "64", "--epochs", "6", "--lr", "2e-3", *r)),
        DemoStep("train the translator", ("pose-finetune", "--bridge", "direct", "--max-frames", "16", "--epochs", "12", "--lr", "3e-3", *r)),
        DemoStep("evaluate translation (BLEU, ROUGE)", ("evaluate", "translate", *r)),
        DemoStep("translate one sample", ("infer", "translate", "--sample-id", "test-00003", *r), forceable=False),
        DemoStep("report", ("report", *r), forceable=False),
    ]


def prepare_inputs(run: Path) -> None:
    """RUN/inputs/: six synthetic hands, three street scenes, three stick figures (PNG) and one synthetic clip (MP4)."""
    import numpy as np

    from gesture_cli.data.synthetic_hands import SIGN_MNIST_LETTERS, generate_hands
    from gesture_cli.data.synthetic_keypoints import render_figure
    from gesture_cli.data.synthetic_scenes import render_scene
    from gesture_cli.data.synthetic_video import generate_clip
    from gesture_cli.viz.pca_render import write_png, write_video

    def hands() -> dict:
        images, labels = generate_hands(n_per_class=1, seed=7, split="demo-input")
        return {f"{k:02d}_{SIGN_MNIST_LETTERS[labels[k]]}.png": np.repeat(images[k][..., None], 3, axis=-1) for k in range(0, 24, 4)}

    folders = {  # folder -> () -> {file name: image}, called only when the folder is missing
        "hands": hands,
        "scenes": lambda: {f"scene{k}.png": render_scene(np.random.default_rng([7, k]), 96, 96)[0] for k in range(3)},
        "figures": lambda: {f"figure{k}.png": render_figure(np.random.default_rng([7, k]), 64, clutter=False)[0] for k in range(3)},
    }
    for name, make_images in folders.items():
        folder = run / "inputs" / name
        if folder.is_dir():
            continue
        tmp = folder.with_name(f".{name}.tmp")  # written whole, then renamed: a killed demo leaves no half folder
        tmp.mkdir(parents=True, exist_ok=True)
        for file, image in make_images().items():
            write_png(tmp / file, image)
        tmp.rename(folder)
    clip = run / "inputs" / "clip.mp4"
    if not clip.is_file():
        tmp = clip.with_name(".clip.tmp.mp4")
        write_video(tmp, generate_clip(seed=7, clip=0, subject=0), fps=12.0)
        tmp.rename(clip)


def _manifest_len(run: Path) -> int:
    import json

    try:
        return len(json.loads((run / "run.json").read_text()).get("steps", []))
    except (OSError, ValueError):
        return 0


def run_step(step: DemoStep, run: Path, *, fresh: bool, invoke: Callable[[list[str]], int]) -> StepResult:
    args = [*step.args, *(["--force"] if fresh and step.forceable else [])]
    before = _manifest_len(run)
    t0 = time.perf_counter()
    code = invoke(args)
    dt = time.perf_counter() - t0
    if code != 0:
        return StepResult(step, dt, "failed", code)
    ran = _manifest_len(run) > before or not step.forceable
    return StepResult(step, dt, "ran" if ran else "cached")


@dataclass
class DemoResult:
    run: Path
    results: list[StepResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.status != "failed" for r in self.results)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.results)


def run_demo(run: Path, *, invoke: Callable[[list[str]], int], fresh: bool = False,
             on_step: Callable[[int, int, DemoStep], None] | None = None) -> DemoResult:
    """Every step of `demo_steps` in order through `invoke(args) -> exit code`, up to the first failure."""
    run = Path(run)
    try:
        run.mkdir(parents=True, exist_ok=True)
        prepare_inputs(run)
    except OSError as exc:
        raise GxError(f"{run}: cannot write the demo run there ({exc.strerror or exc}); pass another --run-dir") from None
    steps = demo_steps(run)
    out = DemoResult(run)
    for i, step in enumerate(steps):
        if on_step:
            on_step(i, len(steps), step)
        res = run_step(step, run, fresh=fresh, invoke=invoke)
        out.results.append(res)
        if res.status == "failed":
            break
    return out
