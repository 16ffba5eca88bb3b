"""A trained sign-to-text translator (a run dir's pose/finetune/): its file kinds and decoding.

`gx pose-finetune` (train/pose_finetune.py) writes the folder: encoder.safetensors (models/pose_encoder.py),
bridge.safetensors (the pose -> text projection, kind BRIDGE_KIND), text_model/ (models/text.py) and
translator.json (kind TRANSLATOR_KIND: layout, parts, normalisation, frames, decoding settings).
`gx evaluate translate` / `gx infer translate` (tasks/translate.py) rebuild it with `load_translator`
and decode with `generate_texts`. Training and the tasks both import this module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gesture_cli.data.pose_batches import PoseBatches

FINETUNE_REL = "pose/finetune"  # where pose-finetune writes in a run dir
BRIDGE_KIND = "pose-bridge"
TRANSLATOR_KIND = "pose-translator"


def pose_inputs(batch: dict, device) -> tuple:
    """(keypoints, point_mask, frame_mask) of a PoseBatches batch on `device`: the pose model's inputs."""
    return (batch["keypoints"].to(device, non_blocking=True), batch["point_mask"].to(device, non_blocking=True),
            batch["frame_mask"].to(device, non_blocking=True))


def device_of(model):
    """The device a model's (first) parameters are on."""
    return next(model.parameters()).device


def generate_texts(model, tokenizer, data: PoseBatches, *, batch_size: int = 32, num_beams: int = 1, max_new_tokens: int = 64,
                   on_progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Decoded text of every sample of `data` (greedy or beam search), in eval mode."""
    import torch

    was = model.training
    model.eval()
    dev = device_of(model)
    out: list[str] = []
    with torch.no_grad():
        for lo in range(0, len(data), batch_size):
            b = data.get_batch(range(lo, min(lo + batch_size, len(data))))
            ids = model.generate(*pose_inputs(b, dev), num_beams=num_beams, max_new_tokens=max_new_tokens)
            out += [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
            if on_progress is not None:
                on_progress(len(out), len(data))
    model.train(was)
    return out


@dataclass
class Translator:
    model: Any  # PoseToText, eval mode
    tokenizer: Any
    info: dict  # translator.json
    path: Path

    def batches(self, samples) -> PoseBatches:
        """The samples batched as the translator was trained on them: its body parts, normalisation and frames."""
        from gesture_cli.models.skeletons import select_parts

        return PoseBatches(samples, points=select_parts(self.info["layout"], self.info["parts"]).indices, normalize=self.info["normalize"],
                           max_frames=int(self.info["max_frames"]), dims=int(self.info["dims"]))


__all__ = ["BRIDGE_KIND", "FINETUNE_REL", "TRANSLATOR_KIND", "Translator", "device_of", "generate_texts", "pose_inputs"]
