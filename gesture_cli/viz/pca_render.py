"""Render patch-feature PCA as colours: `gx pca-visualize`.

Each frame's patch tokens are projected on the stored components; components
`start .. start+n-1` become the channels of a picture (n=1 grey, n=2 red+green, n=3 RGB), each mapped
to 0..255 with the fixed range measured at compute time (1st..99th percentile), so colours mean
the same thing in every frame and do not flicker. The patch grid is upsampled to the frame's size
(nearest: one block per patch, or bilinear), optionally next to the input (`--side-by-side`).

Videos become MP4 (OpenCV VideoWriter, fourcc mp4v), images PNG, into `pca/<backbone>/renders/`,
plus a contact sheet of one frame: input | PC 0-2 | PC 3-5 | PC 6-8. Every frame is rendered by
default (`--frame-stride 1`): the output has as many frames as the input and the same fps; with
stride s it has frames 0, s, 2s, ... at fps/s, so it lasts as long as the input. MPEG-4 needs even
sizes: an odd width or height is padded with one black row or column.

Renders live inside the PCA's folder because they belong to it: recomputing the PCA
(`gx pca-compute --force`, or with other options) replaces `pca/<backbone>/` and its old renders.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gesture_cli.core.errors import ArtifactError, DataError, UsageError

UPSAMPLE_MODES = ("nearest", "bilinear")
DEFAULT_FPS = 25.0  # when a video's header has no frame rate
CONTACT_GROUPS = ((0, 1, 2), (3, 4, 5), (6, 7, 8))  # components per contact-sheet tile
CONTACT_HEIGHT = 256  # pixels per contact-sheet tile (label bar not included)
LABEL_BAR = 22  # pixels above each tile for its caption


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


# ----------------------------------------------------------------------------------------------
# Pure rendering: scores -> colours -> pictures
# ----------------------------------------------------------------------------------------------


def colorize(scores: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """float [..., n] scores, [n, 2] (lo, hi) ranges -> uint8 [..., 3]: n=1 grey, n=2 (R, G, 0), n=3 RGB."""
    ranges = np.asarray(ranges, dtype=np.float32)
    n = scores.shape[-1]
    if n not in (1, 2, 3) or ranges.shape != (n, 2):
        raise ValueError(f"colorize: need 1-3 channels and matching [n, 2] ranges, got {scores.shape} and {ranges.shape}")
    v = (scores.astype(np.float32) - ranges[:, 0]) / (ranges[:, 1] - ranges[:, 0])
    v = (np.clip(v, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if n == 1:
        return np.repeat(v, 3, axis=-1)
    if n == 2:
        return np.concatenate([v, np.zeros_like(v[..., :1])], axis=-1)
    return v


def upsample(grid: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """[gh, gw, c] (float or uint8) -> [H, W, c] with cv2 (nearest: blocks; bilinear: smooth)."""
    import cv2

    h, w = size
    interp = cv2.INTER_NEAREST if mode == "nearest" else cv2.INTER_LINEAR
    out = cv2.resize(np.ascontiguousarray(grid), (w, h), interpolation=interp)
    return out.reshape(h, w, -1) if out.ndim == 2 else out


def render_features(scores: np.ndarray, ranges: np.ndarray, size: tuple[int, int], *, mode: str, mask: np.ndarray | None = None) -> np.ndarray:
    """Grid scores [gh, gw, n] -> uint8 [H, W, 3] picture; `mask` [gh, gw] bool keeps foreground patches.

    Colours (and the mask) are applied on the patch grid, then upsampled: 30x cheaper than colouring
    every output pixel, identical for nearest, and for bilinear it blends colours instead of scores
    (the same except where a score leaves its range between two patches).
    """
    grid = colorize(scores, ranges)
    if mask is not None:
        grid[~mask] = 0
    return upsample(grid, size, mode)


def render_frame(frame: np.ndarray, scores: np.ndarray, ranges: np.ndarray, *, mode: str, side_by_side: bool, mask=None) -> np.ndarray:
    """One output frame: features at the input's size, or input | features."""
    pic = render_features(scores, ranges, frame.shape[:2], mode=mode, mask=mask)
    return np.concatenate([frame, pic], axis=1) if side_by_side else pic


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    import cv2

    bar = np.zeros((LABEL_BAR, tile.shape[1], 3), np.uint8)
    cv2.putText(bar, text, (4, LABEL_BAR - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([bar, tile], axis=0)


def render_contact_sheet(
    frame: np.ndarray, scores: np.ndarray, ranges: np.ndarray, *, mode: str, mask=None, caption: str = "input", groups=CONTACT_GROUPS
) -> np.ndarray:
    """uint8 picture under a `caption` bar: input | PC 0-2 | PC 3-5 | PC 6-8 (groups past the stored components left out).

    scores [gh, gw, k] and ranges [k, 2] hold every stored component.
    """
    import cv2

    h, w = frame.shape[:2]
    th, tw = CONTACT_HEIGHT, max(1, round(w * CONTACT_HEIGHT / h))
    tiles = [_label(cv2.resize(frame, (tw, th), interpolation=cv2.INTER_AREA), "input")]
    k = scores.shape[-1]
    for group in groups:
        comps = [c for c in group if c < k]
        if not comps:
            continue
        pic = render_features(scores[..., comps], ranges[comps], (th, tw), mode=mode, mask=mask)
        name = f"PC {comps[0]}" if len(comps) == 1 else f"PC {comps[0]}-{comps[-1]}"
        tiles.append(_label(pic, name))
    gap = np.zeros((th + LABEL_BAR, 4, 3), np.uint8)
    row = [tiles[0]]
    for t in tiles[1:]:
        row += [gap, t]
    return _label(np.concatenate(row, axis=1), caption)  # title bar: which input and frame


def write_png(path: Path, rgb: np.ndarray) -> None:
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ArtifactError(f"{path}: cannot encode PNG")
    Path(path).write_bytes(buf.tobytes())


class VideoWriter:
    """MP4 (fourcc mp4v) from RGB frames of one size; odd sizes are padded to even with black.

        with VideoWriter(path, fps=25.0) as out:
            out.write(frame_rgb)
    """

    def __init__(self, path: Path, *, fps: float):
        self.path, self.fps = Path(path), float(fps)
        self.frames = 0
        self._writer = None
        self._size: tuple[int, int] | None = None

    def write(self, rgb: np.ndarray) -> None:
        import cv2

        h, w = rgb.shape[:2]
        if self._writer is None:
            self._size = (h, w)
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w + w % 2, h + h % 2))
            if not self._writer.isOpened():
                raise ArtifactError(f"{self.path}: OpenCV cannot write MP4 (mp4v) here; check the folder is writable")
        elif (h, w) != self._size:
            raise DataError(f"{self.path}: frame {self.frames} is {w}x{h}, earlier frames {self._size[1]}x{self._size[0]}; a video needs one size")
        if h % 2 or w % 2:
            rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)))
        self._writer.write(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_video(path: Path, frames, *, fps: float) -> int:
    """Write RGB frames to an MP4; returns the number written."""
    with VideoWriter(path, fps=fps) as out:
        for f in frames:
            out.write(f)
    return out.frames


# ----------------------------------------------------------------------------------------------
# gx pca-visualize
# ----------------------------------------------------------------------------------------------


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
    from gesture_cli.models.features import backbone_dirname
    from gesture_cli.models.pca import find_pca_dirs, resolve_pca_dir

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
        raise ArtifactError(f"{run.root}: no PCA here; run gx pca-compute -r {run.root}{f' --backbone {backbone}' if backbone else ''} first")
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
    from gesture_cli.models.pca import describe_pca

    saved = info["backbone"]
    same_model = desc["name"] == saved["name"] or (desc["source"] == saved["source"] and saved["source"] != "tiny")
    if same_model and desc["embed_dim"] == info["embed_dim"] and desc["patch_size"] == info["patch_size"]:
        return
    raise ArtifactError(
        f"{_rel(run, pca_dir / 'pca.json')} was computed with {describe_pca(info)} but --backbone {spec} has "
        f"embed_dim {desc['embed_dim']}, patch {desc['patch_size']}; recompute with gx pca-compute --backbone {spec}"
    )


class Projector:
    """Stored PCA on the backbone's device: patch tokens -> scores on every component (+ foreground mask)."""

    def __init__(self, tensors: dict, *, device):
        import torch

        f32 = dict(device=device, dtype=torch.float32)
        self.mean = tensors["mean"].to(**f32)  # [D]
        self.components = tensors["components"].to(**f32)  # [k, D]
        self.ranges = tensors["ranges"].double().cpu().numpy() if "ranges" in tensors else None  # [k, 2]
        self.fg = None
        if "fg_component" in tensors:
            self.fg = (tensors["fg_mean"].to(**f32), tensors["fg_component"].to(**f32), float(tensors["fg_threshold"][0]))

    @property
    def k(self) -> int:
        return int(self.components.shape[0])

    def __call__(self, patches, grid: tuple[int, int], *, mask: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """patches [B, N, D] -> (scores float32 [B, gh, gw, k], foreground bool [B, gh, gw] or None)."""
        b = patches.shape[0]
        scores = (patches - self.mean) @ self.components.T  # [B, N, k]
        fg = None
        if mask and self.fg is not None:
            mean, comp, thr = self.fg
            fg = (((patches - mean) @ comp) > thr).reshape(b, *grid).cpu().numpy()
        return scores.reshape(b, *grid, -1).cpu().numpy(), fg


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
) -> dict:
    """Render every input with the run's PCA into pca/<backbone>/renders/; returns the step entry."""
    from gesture_cli.data.video import video_info
    from gesture_cli.models.pca import PCA_JSON, PCA_TENSORS, _load_info

    items = list_inputs(cfg.input)
    pca_dir = choose_pca(run, backbone=cfg.backbone, pca=cfg.pca)
    info = _load_info(pca_dir)
    spec = cfg.backbone or info["model_name"]
    end = cfg.start_component + cfg.n_components
    if end > info["pca_components"]:
        raise UsageError(
            f"--start-component {cfg.start_component} --n-components {cfg.n_components} needs {end} components; "
            f"{_rel(run, pca_dir)} has {info['pca_components']} (recompute with gx pca-compute --n-components {end})"
        )
    if info.get("ranges") is None:
        raise ArtifactError(f"{_rel(run, pca_dir / PCA_JSON)} has no colour ranges (computed with --reservoir-size 0); recompute it")
    from gesture_cli.models.features import backbone_dirname

    inside = _rel(run, pca_dir) != str(pca_dir)  # a --pca folder elsewhere: render into this run's pca/<backbone>/
    renders = f"{_rel(run, pca_dir) if inside else f'pca/{backbone_dirname(spec)}'}/renders"
    names = {item: output_names(item, cfg) for item in items}
    outputs = [f"{renders}/{n}" for pair in names.values() for n in pair]
    if len(set(outputs)) < len(outputs):
        raise UsageError(f"--input {cfg.input}: two inputs map to the same output name; render them separately")
    infos = {item: video_info(item.path) for item in items if item.kind == "video"}  # bad videos fail before any work
    step = run.begin(
        "pca-visualize",
        config={**_asdict(cfg), "pca": str(pca_dir), "backbone": spec, "device": device},
        inputs=[item.path for item in items] + [pca_dir / PCA_TENSORS, pca_dir / PCA_JSON],
        outputs=outputs,
        argv=argv,
        force=force,
    )
    if step.cached:
        return {**step.entry, "cached": True}

    from gesture_cli.core.device import compute_dtype, resolve_device
    from gesture_cli.models.backbones import build_backbone
    from gesture_cli.models.pca import auto_batch_size, iter_patch_batches, load_pca

    dev = resolve_device(device)
    dtype = compute_dtype(dev, cfg.precision)
    try:
        backbone = build_backbone(spec, device=dev, dtype=dtype, image_size=info["image_size"])
    except UsageError:  # the PCA's image size is no multiple of this backbone's patch: another backbone
        backbone = build_backbone(spec, device=dev, dtype=dtype)
    check_backbone(run, pca_dir, info, backbone.describe(), spec)
    _, tensors = load_pca(pca_dir)
    proj = Projector(tensors, device=dev)
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
