"""Object detectors for scene features: DETR-family checkpoints from transformers behind one call.

    det = build_detector("PekingU/rtdetr_r18vd")       # hub id, local folder, tiny-rtdetr or tiny-detr
    ids = det.class_ids(["person", "traffic light"])   # UsageError listing close matches for unknown names
    found = det.detect(image, threshold=0.5)          # Detections in pixel coordinates of the uint8 [H, W, 3] image

Sources, resolved like backbones (models/backbones.py):
  tiny-rtdetr, tiny-detr   random-init RT-DETR / DETR from small configs (fixed seed) with the COCO label
                           set (80 names, and DETR's 91 ids with N/A gaps), so tests run offline.
  owner/name               a hub repo, read from the `$GX_HOME/models` cache (`gx download owner/name`);
                           downloaded on first use unless offline (HF_HUB_OFFLINE / GX_OFFLINE).
  DIR                      a local folder with config.json + weights (a saved or downloaded checkpoint).
Any model type of transformers' AutoModelForObjectDetection loads (rt_detr, rt_detr_v2, d_fine, detr,
conditional_detr, deformable_detr, yolos, ...). The default recommendation is RT-DETR
(`PekingU/rtdetr_r18vd`): its ResNet backbone is transformers' own. DETR checkpoints such as
facebook/detr-resnet-50 use a timm backbone, so they need `pip install timm`.

Pre-processing is read from preprocessor_config.json ourselves (the image-processor classes want
torchvision): resize to `size` (height x width, or shortest/longest edge keeping the aspect), rescale,
and normalise when `do_normalize`. The whole image is resized without padding, so the predicted boxes
(normalised cx, cy, w, h) map straight back onto it.

Post-processing: a model whose class logits have one more column than its labels (DETR, YOLOS,
Table Transformer) is scored with a softmax and the last, "no object", column dropped; the others
(RT-DETR, D-FINE, Deformable/Conditional DETR) with a sigmoid per class. Each query gives one detection,
its best class (labels named N/A, DETR's unused COCO ids, never count); DETR-family detectors need no
non-maximum suppression.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gesture_cli.core.errors import ModelError, UsageError

TINY_SEED = 4321  # fixed so tiny detector weights are identical in every process
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
RECOMMENDED = "PekingU/rtdetr_r18vd"
# Families that feed the network 0..1 pixels at a fixed 640 x 640 when the checkpoint has no processor file.
_FIXED_640 = {"rt_detr", "rt_detr_v2", "d_fine"}

COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed",
    "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven",
    "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # the 80 COCO detection classes, in category-id order (RT-DETR's label ids 0..79)
COCO_UNUSED_IDS = (0, 12, 26, 29, 30, 45, 66, 68, 69, 71, 83)  # COCO category ids without boxes: "N/A" in DETR's 91 labels


def coco_id2label(ids: int = 80) -> dict[int, str]:
    """COCO labels as checkpoints name them: 80 contiguous ids (RT-DETR), or the 91 category ids with N/A gaps (DETR)."""
    if ids == 80:
        return dict(enumerate(COCO_CLASSES))
    if ids != 91:
        raise ValueError("COCO label sets have 80 or 91 ids")
    names = iter(COCO_CLASSES)
    return {i: "N/A" if i in COCO_UNUSED_IDS else next(names) for i in range(91)}


def label_key(name: str) -> str:
    """How class names are compared: case, spaces, '-' and '_' do not matter ('Traffic_Light' == 'traffic light')."""
    return re.sub(r"[^0-9a-z]+", " ", str(name).lower()).strip()


@dataclass(frozen=True)
class InputSpec:
    """How an image becomes pixel_values: resize, rescale, optional normalisation."""

    height: int | None = None  # fixed output size ...
    width: int | None = None
    shortest_edge: int | None = None  # ... or aspect-preserving: short side to this, long side at most longest_edge
    longest_edge: int | None = None
    rescale: float = 1 / 255
    mean: tuple[float, float, float] | None = None  # None: no normalisation
    std: tuple[float, float, float] | None = None

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        if self.height and self.width:
            return self.height, self.width
        if not self.shortest_edge:
            return h, w
        scale = self.shortest_edge / min(h, w)
        if self.longest_edge and max(h, w) * scale > self.longest_edge:
            scale = self.longest_edge / max(h, w)
        return max(1, round(h * scale)), max(1, round(w * scale))

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def input_spec(proc: dict, model_type: str, *, where: str = "preprocessor_config.json") -> InputSpec:
    """InputSpec from a checkpoint's preprocessor_config.json ({} when it has none: the family's defaults)."""
    fixed = model_type in _FIXED_640
    kw: dict = {}
    size = proc.get("size") if proc.get("do_resize", True) else None
    if size is None and proc.get("do_resize", True):
        size = {"height": 640, "width": 640} if fixed else {"shortest_edge": 800, "longest_edge": 1333}
    if isinstance(size, int):
        size = {"shortest_edge": size}
    if isinstance(size, dict):
        if isinstance(size.get("height"), int) and isinstance(size.get("width"), int):
            kw.update(height=size["height"], width=size["width"])
        elif isinstance(size.get("shortest_edge"), int):
            kw.update(shortest_edge=size["shortest_edge"], longest_edge=size.get("longest_edge"))
        else:
            raise ModelError(f"{where}: unsupported \"size\" {size!r}; expected height/width or shortest_edge/longest_edge")
    elif size is not None:
        raise ModelError(f"{where}: unsupported \"size\" {size!r}")
    kw["rescale"] = float(proc.get("rescale_factor", 1 / 255)) if proc.get("do_rescale", True) else 1.0
    if proc.get("do_normalize", not fixed):
        mean = tuple(float(v) for v in proc.get("image_mean", IMAGENET_MEAN))
        std = tuple(float(v) for v in proc.get("image_std", IMAGENET_STD))
        if len(mean) != 3 or len(std) != 3:
            raise ModelError(f"{where}: image_mean/image_std must have 3 values, got {mean} / {std}")
        kw.update(mean=mean, std=std)
    return InputSpec(**kw)


@dataclass
class Detections:
    """One image's detections: boxes float32 [N, 4] (x0, y0, x1, y1 in pixels), scores [N], label ids [N]."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    height: int
    width: int

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, label_ids) -> Detections:
        keep = np.isin(self.labels, np.asarray(list(label_ids), dtype=np.int64))
        return Detections(self.boxes[keep], self.scores[keep], self.labels[keep], self.height, self.width)

    def union_area_fraction(self) -> float:
        """Share of the image's pixels inside at least one box (overlaps counted once)."""
        if not len(self):
            return 0.0
        covered = np.zeros((self.height, self.width), dtype=bool)
        for x0, y0, x1, y1 in self.boxes:
            covered[int(np.floor(y0)) : int(np.ceil(y1)), int(np.floor(x0)) : int(np.ceil(x1))] = True
        return float(covered.mean())


class Detector:
    """A DETR-family object detector in eval mode (see the module docstring)."""

    def __init__(self, model, *, name: str, source: str, spec: InputSpec, device):
        self.model = model
        self.name = name
        self.source = source
        self.spec = spec
        self.device = torch.device(device)
        config = model.config
        self.model_type = str(config.model_type)
        self.id2label = {int(k): str(v) for k, v in config.id2label.items()}
        self.num_labels = len(self.id2label)
        # Placeholder labels (DETR's "N/A" ids of unused COCO categories) are never predicted.
        self._placeholder = torch.tensor([label_key(self.id2label.get(i, "")) in {"n a", ""} for i in range(self.num_labels)],
                                         device=self.device)

    @property
    def labels(self) -> list[str]:
        """Label names, N/A placeholders left out, each once, in id order."""
        seen, out = set(), []
        for i in sorted(self.id2label):
            name = self.id2label[i]
            if label_key(name) not in seen and label_key(name) not in {"n a", ""}:
                seen.add(label_key(name))
                out.append(name)
        return out

    def class_ids(self, names: list[str]) -> list[tuple[int, ...]]:
        """Label ids of each class name (usually one id); UsageError naming close matches for an unknown name."""
        by_key: dict[str, list[int]] = {}
        for i, label in self.id2label.items():
            by_key.setdefault(label_key(label), []).append(i)
        out = []
        for name in names:
            ids = by_key.get(label_key(name))
            if not ids or label_key(name) == "n a":
                labels = self.labels
                close = difflib.get_close_matches(label_key(name), [label_key(c) for c in labels], n=3, cutoff=0.6)
                named = {label_key(c): c for c in labels}
                hint = (f"close matches: {', '.join(repr(named[c]) for c in close)}" if close
                        else f"its classes: {', '.join(labels[:12])}{', ...' if len(labels) > 12 else ''}")
                raise UsageError(f"--detect-classes: '{name}' is not a class of detector '{self.name}' ({len(labels)} classes); {hint}")
            out.append(tuple(sorted(ids)))
        return out

    def pixel_values(self, image: np.ndarray) -> torch.Tensor:
        """float32 [1, 3, h, w] network input of one uint8 [H, W, 3] RGB image."""
        h, w = image.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(image)).to(self.device).permute(2, 0, 1)[None].float()
        oh, ow = self.spec.output_size(h, w)
        if (oh, ow) != (h, w):
            x = F.interpolate(x, size=(oh, ow), mode="bilinear", align_corners=False, antialias=oh < h or ow < w)
        x = x * self.spec.rescale
        if self.spec.mean is not None:
            mean = torch.tensor(self.spec.mean, device=self.device).view(1, 3, 1, 1)
            std = torch.tensor(self.spec.std, device=self.device).view(1, 3, 1, 1)
            x = (x - mean) / std
        return x

    def detect(self, image: np.ndarray, *, threshold: float = 0.5) -> Detections:
        """Detections with score >= threshold, one per query (its best class)."""
        h, w = image.shape[:2]
        with torch.inference_mode():
            out = self.model(pixel_values=self.pixel_values(image))
            logits, boxes = out.logits[0].float(), out.pred_boxes[0].float()
            if logits.shape[-1] == self.num_labels + 1:
                probs = logits.softmax(-1)[:, :-1]
            elif logits.shape[-1] == self.num_labels:
                probs = logits.sigmoid()
            else:
                raise ModelError(f"detector '{self.name}': {logits.shape[-1]} class logits for {self.num_labels} labels in its config")
            scores, labels = probs.masked_fill(self._placeholder, 0.0).max(-1)
            keep = scores >= threshold
            cx, cy, bw, bh = boxes[keep].clamp(0, 1).unbind(-1)
            xyxy = torch.stack([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h], -1)
            xyxy = torch.minimum(xyxy.clamp(min=0), torch.tensor([w, h, w, h], dtype=xyxy.dtype, device=xyxy.device))
        return Detections(xyxy.cpu().numpy().astype(np.float32), scores[keep].cpu().numpy().astype(np.float32),
                          labels[keep].cpu().numpy().astype(np.int64), h, w)

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, "model_type": self.model_type, "labels": self.num_labels,
                "input": self.spec.to_json()}


# ---- building ---------------------------------------------------------------------------------------


def _tiny_rtdetr_config():
    from transformers import RTDetrConfig, RTDetrResNetConfig

    backbone = RTDetrResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], layer_type="basic",
                                  out_features=["stage2", "stage3", "stage4"])
    return RTDetrConfig(backbone_config=backbone, encoder_in_channels=[32, 64, 128], encoder_hidden_dim=32, d_model=32,
                        decoder_in_channels=[32, 32, 32], encoder_ffn_dim=64, decoder_ffn_dim=64, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, num_queries=30, num_denoising=0,
                        id2label=coco_id2label(80), label2id={v: k for k, v in coco_id2label(80).items()})


def _tiny_detr_config():
    from transformers import DetrConfig, ResNetConfig

    backbone = ResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], layer_type="basic",
                            out_features=["stage4"])
    return DetrConfig(use_timm_backbone=False, backbone_config=backbone, d_model=32, encoder_layers=1, decoder_layers=1,
                      encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=20,
                      id2label=coco_id2label(91), label2id={v: k for k, v in coco_id2label(91).items() if v != "N/A"})


# name -> (config builder, input spec): 64 x 64 inputs; RT-DETR takes 0..1 pixels, DETR ImageNet-normalised ones.
TINY_DETECTORS = {
    "tiny-rtdetr": (_tiny_rtdetr_config, InputSpec(height=64, width=64)),
    "tiny-detr": (_tiny_detr_config, InputSpec(height=64, width=64, mean=IMAGENET_MEAN, std=IMAGENET_STD)),
}


def build_tiny_detector_model(name: str):
    """The random-init transformers model of a tiny-* detector (fixed seed, RNG of the caller untouched)."""
    from transformers import AutoModelForObjectDetection

    make_config, _ = TINY_DETECTORS[name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        return AutoModelForObjectDetection.from_config(make_config())


def detector_model_types() -> list[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES

    return sorted(MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES)


def build_detector(spec: str, *, device="cpu") -> Detector:
    """A detector in eval mode, fp32, on `device`: tiny-rtdetr | tiny-detr | owner/name (hub cache) | local folder."""
    device = torch.device(device)
    if spec in TINY_DETECTORS:
        model = build_tiny_detector_model(spec)
        return Detector(model.to(device).eval(), name=spec, source="tiny", spec=TINY_DETECTORS[spec][1], device=device)
    path = Path(spec).expanduser()
    if path.exists():
        if not (path.is_dir() and (path / "config.json").is_file()):
            raise ModelError(f"detector path '{spec}' is not a model folder with config.json (a saved or downloaded checkpoint)")
        return _load_folder(path, name=spec, source=str(path), device=device)
    if _HUB_ID.fullmatch(spec):
        from gesture_cli.models.backbones import resolve_snapshot

        return _load_folder(resolve_snapshot(spec, name=spec), name=spec, source=spec, device=device)
    if spec.startswith((".", "~", "/")) or spec.count("/") > 1 or "\\" in spec:
        raise ModelError(f"detector folder '{spec}' not found")
    choices = sorted(TINY_DETECTORS)
    close = difflib.get_close_matches(spec, choices, n=1, cutoff=0.5)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise UsageError(f"unknown detector '{spec}'{hint}; pass a hub id such as {RECOMMENDED}, a local checkpoint folder, "
                     f"or one of: {', '.join(choices)}")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return data


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _load_folder(directory: Path, *, name: str, source: str, device) -> Detector:
    config = _read_json(directory / "config.json")
    model_type = str(config.get("model_type"))
    types = detector_model_types()
    if model_type not in types:
        raise ModelError(f"detector '{name}' is a '{model_type}' model, not an object detector; "
                         f"use a DETR-family checkpoint such as {RECOMMENDED} (model types: {', '.join(types)})")
    proc_path = directory / "preprocessor_config.json"
    spec = input_spec(_read_json(proc_path) if proc_path.is_file() else {}, model_type, where=str(proc_path))

    from transformers import AutoModelForObjectDetection

    try:
        model = AutoModelForObjectDetection.from_pretrained(directory, dtype=torch.float32)
    except ImportError as exc:
        raise ModelError(f"cannot load detector '{name}': {_first_line(exc)} (DETR checkpoints with a timm backbone need "
                         f"`pip install timm`; RT-DETR, e.g. {RECOMMENDED}, does not)") from exc
    except (OSError, ValueError, RuntimeError) as exc:
        again = f"; if this is a partial download, run `gx download {name} --force`" if source == name and _HUB_ID.fullmatch(name) else ""
        raise ModelError(f"cannot load detector '{name}' from {directory}: {_first_line(exc).rstrip('.')}{again}") from exc
    return Detector(model.to(device).eval(), name=name, source=source, spec=spec, device=device)


__all__ = [
    "COCO_CLASSES",
    "TINY_DETECTORS",
    "Detections",
    "Detector",
    "InputSpec",
    "build_detector",
    "coco_id2label",
    "input_spec",
    "label_key",
]
