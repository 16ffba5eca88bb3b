"""Training checkpoints: safetensors for tensors, JSON for everything else, never pickle.

A checkpoint is a directory, written into a temporary sibling and renamed into place, so a crash or
SIGKILL at any moment leaves either the previous complete checkpoint or the new one:

    <dir>/
      model.safetensors      trainable parameters by name (adapter + head, or the full model)
      optimizer.safetensors  per-parameter optimizer state tensors, keys "<param index>.<name>"
                             (AdamW: exp_avg, exp_avg_sq, step), plus the RNG states ("rng.*")
      state.json             step / epoch / position in the epoch, optimizer param groups and scalar
                             state, scheduler state, Python + NumPy RNG, best metric, patience, the
                             training log so far, the TrainConfig, and the caller's `meta` (backbone,
                             method, classes...) that resuming code checks before loading

`state.json` is written last inside the temporary directory; a directory without it is never read.
"""

from __future__ import annotations

import os
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gesture_cli.core.artifacts import SCHEMA_VERSION, load_json, load_tensors, save_json, save_tensors
from gesture_cli.core.errors import ArtifactError

CHECKPOINT_KIND = "checkpoint"
MODEL_KIND = "checkpoint-model"
OPTIMIZER_KIND = "checkpoint-optimizer"


# ---- RNG ----------------------------------------------------------------------------------------


def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, json) of the torch CPU/CUDA, NumPy and Python RNG states of this process."""
    tensors = {"rng.torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    tensors["rng.numpy_keys"] = torch.from_numpy(np_keys.astype(np.int64))
    py_version, py_state, py_gauss = random.getstate()
    meta = {
        "numpy": {"name": np_name, "pos": int(np_pos), "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
        "python": {"version": py_version, "state": list(py_state), "gauss_next": py_gauss},
    }
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    if "rng.torch_cpu" in tensors:
        torch.set_rng_state(tensors["rng.torch_cpu"])
    cuda = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    npm = meta.get("numpy")
    if npm and "rng.numpy_keys" in tensors:
        keys = tensors["rng.numpy_keys"].numpy().astype(np.uint32)
        np.random.set_state((npm["name"], keys, npm["pos"], npm["has_gauss"], npm["cached_gaussian"]))
    pym = meta.get("python")
    if pym:
        random.setstate((pym["version"], tuple(pym["state"]), pym["gauss_next"]))


# ---- optimizer state: flatten tensors to safetensors, scalars to JSON ---------------------------


def flatten_optimizer_state(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """torch optimizer state_dict -> (tensors "<param>.<key>", JSON-able rest)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, per_param in state_dict["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state_dict["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("rng."):
            continue
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for pid, per_param in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(per_param)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


# ---- directories --------------------------------------------------------------------------------


def _replace_dir(tmp: Path, target: Path) -> None:
    """Rename tmp over target. Between the two renames a reader finds `.<name>.old-*` (see find_checkpoint)."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_checkpoint(
    directory: Path,
    *,
    model_state: dict[str, torch.Tensor],
    state: dict[str, Any],
    optimizer_state: dict | None = None,
    rng: bool = True,
) -> Path:
    """Write a checkpoint directory atomically; `state` must be JSON-able (it becomes state.json)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".{directory.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        save_tensors(tmp / "model.safetensors", model_state, kind=MODEL_KIND)
        extra: dict[str, Any] = {}
        tensors: dict[str, torch.Tensor] = {}
        if optimizer_state is not None:
            opt_tensors, extra["optimizer"] = flatten_optimizer_state(optimizer_state)
            tensors.update(opt_tensors)
        if rng:
            rng_tensors, extra["rng"] = capture_rng()
            tensors.update(rng_tensors)
        if tensors:
            save_tensors(tmp / "optimizer.safetensors", tensors, kind=OPTIMIZER_KIND)
        save_json(tmp / "state.json", {**state, **extra}, kind=CHECKPOINT_KIND)  # last: marks the dir complete
        _replace_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def find_checkpoint(directory: Path) -> Path | None:
    """The complete checkpoint at `directory`, or None.

    A crash between the two renames of `_replace_dir` leaves only `.<name>.old-*`: it is renamed back.
    Leftover `.tmp-*` directories (a crash while writing) are ignored.
    """
    directory = Path(directory)
    if (directory / "state.json").is_file():
        return directory
    if directory.exists() or not directory.parent.is_dir():
        return None
    for old in sorted(directory.parent.glob(f".{directory.name}.old-*")):
        if (old / "state.json").is_file():
            os.replace(old, directory)
            return directory
    return None


def read_checkpoint_state(directory: Path) -> dict[str, Any]:
    """state.json of a checkpoint (step, epoch, config, meta, ...), checking kind and schema."""
    return load_json(Path(directory) / "state.json", kind=CHECKPOINT_KIND)


def load_checkpoint(directory: Path, *, device="cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any], dict | None, dict]:
    """(model tensors, state, optimizer state_dict or None, rng tensors) of a checkpoint directory."""
    directory = Path(directory)
    state = read_checkpoint_state(directory)
    model, _ = load_tensors(directory / "model.safetensors", kind=MODEL_KIND, device=device)
    optimizer = None
    rng: dict[str, torch.Tensor] = {}
    opt_path = directory / "optimizer.safetensors"
    if opt_path.is_file():
        tensors, _ = load_tensors(opt_path, kind=OPTIMIZER_KIND, device="cpu")
        rng = {k: v for k, v in tensors.items() if k.startswith("rng.")}
        if "optimizer" in state:
            optimizer = unflatten_optimizer_state(tensors, state["optimizer"])
    return model, state, optimizer, rng


def load_model_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor], *, source: Path) -> None:
    """Copy checkpoint tensors into the model's parameters of the same names, in place.

    Every tensor must name a parameter of the same shape; an ArtifactError names the first mismatch.
    """
    params = dict(model.named_parameters())
    missing = [k for k in tensors if k not in params]
    if missing:
        raise ArtifactError(
            f"{source}: checkpoint has {len(missing)} tensor(s) this model lacks (e.g. '{missing[0]}'); "
            "it was written by a different model: use another run dir or --force to start over"
        )
    with torch.no_grad():
        for name, value in tensors.items():
            p = params[name]
            if p.shape != value.shape:
                raise ArtifactError(f"{source}: '{name}' has shape {tuple(value.shape)} in the checkpoint but {tuple(p.shape)} in the model")
            p.copy_(value.to(device=p.device, dtype=p.dtype))


__all__ = [
    "SCHEMA_VERSION",
    "find_checkpoint",
    "load_checkpoint",
    "load_model_state",
    "read_checkpoint_state",
    "write_checkpoint",
]
