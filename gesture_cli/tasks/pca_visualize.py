"""`gx pca-visualize`: a run's PCA + videos / images -> pca/<backbone>/renders/*.{mp4,png}.

Renders live inside the PCA's folder because they belong to it: recomputing the PCA
(`gx pca-compute --force`, or with other options) replaces `pca/<backbone>/` and its old renders.
The colours themselves (`colorize`, `render_frame`, the contact sheet, the MP4 writer) are
`gesture_cli.viz.pca_render`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gesture_cli.core.errors import ArtifactError, DataError, UsageError, shell_word
from gesture_cli.models.backbone_ref import backbone_dirname
from gesture_cli.models.pca import PatchProjector
from gesture_cli.tasks.pca import PCA_JSON, PCA_TENSORS, describe_pca, find_pca_dirs, load_pca, load_pca_info, resolve_pca_dir
from gesture_cli.viz.pca_render import DEFAULT_FPS, UPSAMPLE_MODES, VideoWriter, render_contact_sheet, render_frame, write_png


@dataclass(frozen=True)
class VisualizeConfig:
    input: str = ""  # a video file, an image file, or a folder of them
    backbone: str | None = None  # default: the backbone of the PCA in use
    pca: str | None = None  # a PCA folder or run dir; default: pca/<backbone> of the run dir
    start_component: int = 0  # first component shown
    n_components: int = 3  # 1 grey, 2 red+green, 3 RGB
    side_by_side: bool = False  # input | features
    upsample: str = "bilinear"  # nearest (blocks) | bilinear
    fps: float | None = None  # output frame rate; None = the input's (divided by the stride)
    contact_frame: int | None = None  # frame (of the input's numbering) for the contact sheet; None = middle
    frame_stride: int = 1  # render frames 0, s, 2s, ...
    max_frames: int | None = None  # cap on frames rendered per input
    batch_size: int = 0  # frames per forward pass; 0 = auto
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (core.device.resolve_precision: bf16 where fast, fp16 on older GPUs)
    mask_background: bool = True  # black out background patches when the PCA was computed with --foreground

    def validate(self) -> None:
        if not self.input:
            raise UsageError("--input is required: a video, an image or a folder of them")
        if self.start_component < 0:
            raise UsageError("--start-component must be 0 or more")
        if self.n_components not in (1, 2, 3):
            raise UsageError(f"--n-components must be 1 (grey), 2 (red, green) or 3 (RGB); got {self.n_components}")
        if self.upsample not in UPSAMPLE_MODES:
            raise UsageError(f"--upsample '{self.upsample}' is not one of {', '.join(UPSAMPLE_MODES)}")
        if self.fps is not None and self.fps <= 0:
            raise UsageError("--fps must be positive")
        if self.frame_stride < 1:
            raise UsageError("--frame-stride must be at least 1")
        if self.max_frames is not None and self.max_frames < 1:
            raise UsageError("--max-frames must be at least 1")
        if self.batch_size < 0:
            raise UsageError("--batch-size must be 0 (auto) or a positive number")


@dataclass(frozen=True)
class RenderInput:
    path: Path
    kind: str  # "video" | "image"
    name: str  # output file stem: the file's stem, or its path below --input DIR with '__' for '/'


def list_inputs(spec: str) -> list[RenderInput]:
    from gesture_cli.data.images import IMAGE_EXTENSIONS
    from gesture_cli.data.video import VIDEO_EXTENSIONS, natural_key

    root = Path(spec).expanduser()

    def kind(p: Path) -> str | None:
        suffix = p.suffix.lower()
        return "video" if suffix in VIDEO_EXTENSIONS else "image" if suffix in IMAGE_EXTENSIONS else None

    if root.is_file():
        k = kind(root)
        if k is None:
            raise DataError(f"{root}: neither a video nor an image file (suffix {root.suffix or 'none'})")
        return [RenderInput(root, k, root.stem)]
    if not root.is_dir():
        raise DataError(f"--input {root}: no such file or directory")
    files = sorted((p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".") and kind(p)), key=lambda p: natural_key(str(p)))
    if not files:
        raise DataError(f"--input {root}: no videos or images in this folder")
    return [RenderInput(p, kind(p), "__".join(p.relative_to(root).with_suffix("").parts)) for p in files]


def _component_tag(cfg: VisualizeConfig) -> str:
    s, e = cfg.start_component, cfg.start_component + cfg.n_components - 1
    return f"pc{s}" if s == e else f"pc{s}-{e}"


def output_names(item: RenderInput, cfg: VisualizeConfig) -> tuple[str, str]:
    """(render file name, contact sheet file name) for one input."""
    ext = ".mp4" if item.kind == "video" else ".png"
    return f"{item.name}_{_component_tag(cfg)}{'_sbs' if cfg.side_by_side else ''}{ext}", f"{item.name}_contact.png"


def choose_pca(run, *, backbone: str | None, pca: str | None) -> Path:
    """The PCA folder to render with: --pca, else pca/<backbone>, else the only PCA of the run dir."""

    if pca is not None:
        return resolve_pca_dir(pca, backbone)
    found = find_pca_dirs(run.root) if run.root.is_dir() else []
    if backbone is not None:
        mine = [d for d in found if d.name == backbone_dirname(backbone)]
        if mine:
            return mine[0]
        if len(found) == 1:  # the user's PCA is of another backbone: the check below says so
            return found[0]
    if not found:
        raise ArtifactError(f"{run.root}: no PCA here; run gx pca-compute -r {shell_word(run.root)}{f' --backbone {shell_word(backbone)}' if backbone else ''} first")
    if backbone is not None or len(found) > 1:
        names = ", ".join(d.name for d in found)
        what = f"no PCA for backbone '{backbone}'" if backbone else "several PCAs"
        raise UsageError(f"{run.root}: {what} (found: {names}); pass --backbone NAME or --pca DIR")
    return found[0]


def _rel(run, path: Path) -> str:
    try:
        return Path(path).resolve().relative_to(run.root.resolve()).as_posix()
    except ValueError:
        return str(path)


def check_backbone(run, pca_dir: Path, info: dict, desc: dict, spec: str) -> None:
    """A one-line error when the PCA was computed with another backbone, patch size or width."""

    saved = info["backbone"]
    same_model = desc["name"] == saved["name"] or (desc["source"] == saved["source"] and saved["source"] != "tiny")
    if same_model and desc["embed_dim"] == info["embed_dim"] and desc["patch_size"] == info["patch_size"]:
        return
    raise ArtifactError(
        f"{_rel(run, pca_dir / 'pca.json')} was computed with {describe_pca(info)} but --backbone {spec} has "
        f"embed_dim {desc['embed_dim']}, patch {desc['patch_size']}; recompute with gx pca-compute --backbone {spec}"
    )


def _frames_of(item: RenderInput, cfg: VisualizeConfig, warnings: list[str]) -> Iterator[tuple[np.ndarray, int]]:
    from gesture_cli.data.images import decode_image, to_rgb
    from gesture_cli.data.video import read_video

    if item.kind == "image":
        yield to_rgb(decode_image(item.path)), 0
        return
    for index, frame in read_video(item.path, stride=cfg.frame_stride, max_frames=cfg.max_frames, warnings=warnings):
        yield frame, index


def render_pca(
    cfg: VisualizeConfig,
    run,
    *,
    device: str = "auto",
    force: bool = False,
    argv: list[str] | None = None,
    on_input: Callable[[str, int | None], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    on_backoff: Callable[[int], None] | None = None,
    on_memory: Callable[[str], None] | None = None,
    notify: Callable[[str], None] | None = None,
) -> dict:
    """Render every input with the run's PCA into pca/<backbone>/renders/; returns the step entry.

    `notify(line)` gets the one "precision: bf16 on cpu" line. The step's cache key holds the precision
    --precision resolves to on this device, not the option as given: a render made in bf16 is not reused
    where auto now means fp32 (GX_NATIVE_BF16=0, another machine), and --precision fp32 reuses an auto
    render that was fp32 already."""
    from gesture_cli.core.device import make_precision, resolve_device
    from gesture_cli.data.video import video_info

    items = list_inputs(cfg.input)
    pca_dir = choose_pca(run, backbone=cfg.backbone, pca=cfg.pca)
    info = load_pca_info(pca_dir)
    spec = cfg.backbone or info["model_name"]
    end = cfg.start_component + cfg.n_components
    if end > info["pca_components"]:
        raise UsageError(
            f"--start-component {cfg.start_component} --n-components {cfg.n_components} needs {end} components; "
            f"{_rel(run, pca_dir)} has {info['pca_components']} (recompute with gx pca-compute --n-components {end})"
        )
    if info.get("ranges") is None:
        raise ArtifactError(f"{_rel(run, pca_dir / PCA_JSON)} has no colour ranges (computed with --reservoir-size 0); recompute it")

    inside = _rel(run, pca_dir) != str(pca_dir)  # a --pca folder elsewhere: render into this run's pca/<backbone>/
    renders = f"{_rel(run, pca_dir) if inside else f'pca/{backbone_dirname(spec)}'}/renders"
    names = {item: output_names(item, cfg) for item in items}
    outputs = [f"{renders}/{n}" for pair in names.values() for n in pair]
    if len(set(outputs)) < len(outputs):
        raise UsageError(f"--input {cfg.input}: two inputs map to the same output name; render them separately")
    infos = {item: video_info(item.path) for item in items if item.kind == "video"}  # bad videos fail before any work
    dev = resolve_device(device)
    prec = make_precision(dev, cfg.precision)
    if notify is not None:
        notify(f"precision: {prec.describe()}")
    step = run.begin(
        "pca-visualize",
        config={**_asdict(cfg), "precision": prec.name, "pca": str(pca_dir), "backbone": spec, "device": device},
        inputs=[item.path for item in items] + [pca_dir / PCA_TENSORS, pca_dir / PCA_JSON],
        outputs=outputs,
        argv=argv,
        force=force,
    )
    if step.cached:
        return {**step.entry, "cached": True}

    from gesture_cli.models.backbones import build_backbone
    from gesture_cli.models.pca import auto_batch_size, iter_patch_batches

    dtype = prec.dtype
    try:
        backbone = build_backbone(spec, device=dev, dtype=dtype, image_size=info["image_size"])
    except UsageError:  # the PCA's image size is no multiple of this backbone's patch: another backbone
        backbone = build_backbone(spec, device=dev, dtype=dtype)
    check_backbone(run, pca_dir, info, backbone.describe(), spec)
    _, tensors = load_pca(pca_dir)
    proj = PatchProjector(tensors, device=dev)
    comps = list(range(cfg.start_component, end))
    mask = cfg.mask_background and proj.fg is not None
    batch_size = cfg.batch_size or auto_batch_size(dev, backbone.image_size)
    results = []
    with step:
        for item in items:
            render_name, contact_name = names[item]
            warnings: list[str] = []
            vi = infos.get(item)
            fps = cfg.fps or ((vi.fps or DEFAULT_FPS) / cfg.frame_stride if vi else DEFAULT_FPS)
            if vi is None:
                contact = 0
            elif cfg.contact_frame is not None:
                contact = cfg.contact_frame
            else:
                contact = (vi.frames // 2) // cfg.frame_stride * cfg.frame_stride if vi.frames else 0
            total = None if vi is None else (-(-vi.frames // cfg.frame_stride) if vi.frames else None)
            if total is not None and cfg.max_frames is not None:
                total = min(total, cfg.max_frames)
            if on_input is not None:
                on_input(item.path.name, 1 if vi is None else total)
            render_tmp = step.stage(f"{renders}/{render_name}", is_dir=False)
            contact_tmp = step.stage(f"{renders}/{contact_name}", is_dir=False)
            work = render_tmp.with_name(f".{step.id}-{render_name}")  # keeps the .mp4 suffix for OpenCV
            sheet = None  # (frame index, contact sheet) of the chosen frame, else the last one seen
            done = 0
            try:
                writer = VideoWriter(work, fps=fps) if item.kind == "video" else None
                frames = ((f, i) for f, i in _frames_of(item, cfg, warnings))
                for metas, patches, grid, originals in iter_patch_batches(
                    backbone, frames, batch_size=batch_size, keep_frames=True, on_backoff=on_backoff, on_memory=on_memory
                ):
                    scores, fg = proj(patches, grid, mask=mask)
                    for j, (frame, index) in enumerate(zip(originals, metas, strict=True)):
                        m = fg[j] if fg is not None else None
                        out = render_frame(frame, scores[j][..., comps], proj.ranges[comps], mode=cfg.upsample, side_by_side=cfg.side_by_side, mask=m)
                        if writer is not None:
                            writer.write(out)
                        else:
                            write_png(work, out)
                        if sheet is None or index <= contact:  # the contact frame, or the last before it
                            sheet = (index, frame, scores[j], m)
                    done += len(metas)
                    if on_progress is not None:
                        on_progress(done)
                if writer is not None:
                    writer.close()
                os.replace(work, render_tmp)
            finally:
                work.unlink(missing_ok=True)
            index, frame, s, m = sheet
            write_png(
                contact_tmp,
                render_contact_sheet(frame, s, proj.ranges, mode=cfg.upsample, mask=m, caption=f"{item.path.name} frame {index}"),
            )
            results.append(
                {
                    "input": str(item.path),
                    "render": f"{renders}/{render_name}",
                    "contact_sheet": f"{renders}/{contact_name}",
                    "contact_frame": index,
                    "frames": done,
                    "input_frames": vi.frames if vi else 1,
                    "fps": round(fps, 3),
                    "warnings": warnings,
                }
            )
        step.metrics.update({"inputs": len(items), "frames": sum(r["frames"] for r in results)})
    return {**step.entry, "cached": False, "renders": results, "pca": _rel(run, pca_dir), "masked": mask}


def _asdict(cfg) -> dict:
    from gesture_cli.core.config import config_to_dict

    return config_to_dict(cfg)
