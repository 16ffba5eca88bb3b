"""Device choice, the one precision policy (`Precision`), and CUDA out-of-memory batch-size back-off.

`--precision auto` means bf16 on CUDA with bf16 support, fp16 on CUDA without it (T4, V100), bf16 on
CPUs with native bf16 matmul (AVX512-BF16 or AMX) and fp32 elsewhere. On other CPUs bf16 matmul is
emulated and hundreds of times slower than fp32 (measured: 0.16 vs 66 GFLOP/s on an AVX2-only EPYC),
and fp16 on any of these CPUs runs at about 1 GFLOP/s, so it is refused there.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from gesture_cli.core.errors import NonFiniteError, UsageError

T = TypeVar("T")

DEVICE_CHOICES = "auto|cpu|cuda|cuda:N|mps"


def resolve_device(spec: str | None = "auto"):
    """Turn `auto|cpu|cuda|cuda:N|mps` into a torch.device, checking that it exists."""
    import torch

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise UsageError("--device mps: no Apple MPS device here; use --device cpu or auto")
        return torch.device("mps")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {spec}: CUDA is not available on this machine; use --device cpu or auto")
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) here")
        return dev
    raise UsageError(f"--device '{spec}' is not one of {DEVICE_CHOICES}")


# Forces the native-bf16 answer for tests and support: "1" = the CPU multiplies bf16 natively, "0" = it
# does not, unset or empty = read /proc/cpuinfo. CI runs the suite once with each value.
NATIVE_BF16_ENV = "GX_NATIVE_BF16"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PRECISION_HELP = ("auto | fp32 | bf16 | fp16 [default: auto: bf16 on CUDA with bf16 and on CPUs that multiply bf16 natively, "
                  "fp16 on older CUDA cards, else fp32]")


@functools.lru_cache(maxsize=1)
def _cpuinfo_has_native_bf16() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    return False


def cpu_has_native_bf16() -> bool:
    """True when the CPU multiplies bf16 natively (avx512_bf16 or amx_bf16), unless $GX_NATIVE_BF16 says otherwise."""
    import os

    forced = os.environ.get(NATIVE_BF16_ENV, "").strip().lower()
    if forced in ("1", "true", "yes", "on"):
        return True
    if forced in ("0", "false", "no", "off"):
        return False
    if forced:
        raise UsageError(f"${NATIVE_BF16_ENV}='{forced}' is not 1 or 0; unset it to read the CPU's flags")
    return _cpuinfo_has_native_bf16()


def check_precision_name(precision: str | None) -> str:
    """`--precision` lower-cased and checked against PRECISIONS (None = auto); a UsageError names the choices."""
    name = (precision or "auto").strip().lower()
    if name not in PRECISIONS:
        raise UsageError(f"--precision '{precision}' is not one of {'|'.join(PRECISIONS)}")
    return name


def resolve_precision(device, precision: str | None = "auto") -> str:
    """`--precision` for a torch.device -> "fp32" | "bf16" | "fp16" (DESIGN section 8).

    auto: bf16 on CUDA with bf16 support, fp16 on CUDA without it (T4, V100), bf16 on CPUs that multiply
    it natively, fp32 elsewhere (MPS included). fp16 on a CPU is refused: it runs at about 1 GFLOP/s there.
    """
    import torch

    name = check_precision_name(precision)
    kind = device.type
    if name == "auto":
        if kind == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if kind == "cpu" and cpu_has_native_bf16():
            return "bf16"
        return "fp32"
    if name == "fp16" and kind == "cpu":
        raise UsageError("--precision fp16 on a CPU runs at about 1 GFLOP/s (no fp16 matmul units); "
                         "use --precision bf16 (fast where the CPU has AVX512-BF16/AMX) or fp32")
    if name == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise UsageError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bf16 support; use --precision fp16 or fp32")
    return name


def inference_precision(device, requested: str | None, recorded: str | None) -> Precision:
    """The precision `evaluate`/`infer`/`gradcam` run an artifact in.

    `--precision` when given; else the one the artifact was made in (`recorded`) when this device runs
    it at speed (an fp16 artifact on a CPU, or a bf16 one on a CPU without native bf16, falls back to
    auto); else auto.
    """
    import torch

    dev = device if isinstance(device, torch.device) else resolve_device(str(device))
    if requested:
        return make_precision(dev, requested)
    if recorded in ("fp32", "bf16", "fp16"):
        if dev.type == "cuda":
            runs_well = recorded != "bf16" or torch.cuda.is_bf16_supported()
        else:  # fp16 only on CUDA; bf16 on a CPU only where it is native (MPS runs bf16)
            runs_well = recorded != "fp16" and not (dev.type == "cpu" and recorded == "bf16" and not cpu_has_native_bf16())
        if runs_well:
            return Precision(recorded, dev)
    return make_precision(dev, "auto")


def compute_dtype(device, precision: str | None = "auto"):
    """The torch dtype that `--precision` means on `device` (see resolve_precision)."""
    return make_precision(device, precision).dtype


def make_precision(device, precision: str | None = "auto") -> Precision:
    """The Precision for `--precision` on `device` (a torch.device or a device string)."""
    import torch

    dev = device if isinstance(device, torch.device) else resolve_device(str(device))
    return Precision(resolve_precision(dev, precision), dev)


@dataclasses.dataclass(frozen=True)
class Precision:
    """The one precision policy, applied by its methods and nowhere else (DESIGN section 8).

    - `store_frozen(model)`: parameters that are not trained (and the buffers of wholly frozen modules) are
      stored in the compute dtype; the main speed and memory lever. Trained parameters stay fp32 master weights.
    - `wrap(model)`: the model's forward (and any method named in `model.autocast_methods`) converts its
      floating tensor inputs to the model's parameter dtype *before* entering autocast, runs under autocast,
      and returns floating outputs as fp32. Data loading therefore never runs inside an autocast region.
    - `grad_scaler()`: a GradScaler for fp16 (loss scaling, overflow steps skipped), None otherwise.

    Construct it with `make_precision`, which refuses what the device cannot run well; constructing one
    directly (fp16 on a CPU) is how tests exercise the fp16 path through the same code.
    """

    name: str  # fp32 | bf16 | fp16
    device: Any  # torch.device

    @property
    def dtype(self):
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.name]

    @property
    def mixed(self) -> bool:
        return self.name != "fp32"

    def autocast(self):
        """Autocast to the compute dtype (a no-op context in fp32)."""
        import contextlib

        import torch

        if not self.mixed:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def store_frozen(self, model, trainable=None):
        """Cast every parameter not in `trainable` (default: those without requires_grad) to the compute dtype.

        Floating buffers move too when their module holds no trained parameter (BatchNorm statistics of a
        trained head stay fp32). A module whose class sets `keep_fp32 = True` (one that turns autocast off
        because its maths needs fp32) is left whole. Returns the model.
        """
        if not self.mixed:
            return model
        keep = {id(p) for p in trainable} if trainable is not None else {id(p) for p in model.parameters() if p.requires_grad}
        pinned = {id(m) for top in model.modules() if getattr(top, "keep_fp32", False) for m in top.modules()}
        for module in model.modules():
            if id(module) in pinned:
                continue
            own = list(module.parameters(recurse=False))
            for p in own:
                if id(p) not in keep and p.is_floating_point():
                    p.data = p.data.to(self.dtype)
            if not any(id(p) in keep for p in module.parameters()):
                for name, b in module.named_buffers(recurse=False):
                    if b is not None and b.is_floating_point():
                        setattr(module, name, b.to(self.dtype))
        return model

    def wrap(self, model):
        """Run `model`'s forward (and `model.autocast_methods`) under this precision; idempotent. Returns the model.

        The wrappers are methods bound to the instance (what its class defines, wrapped), so a deep copy of the
        model gets wrappers bound to the copy."""
        import functools
        import types

        if getattr(model, "_gx_precision", None) == self.name:
            return model
        policy = self
        for attr in ("forward", *getattr(model, "autocast_methods", ())):
            fn = getattr(type(model), attr)  # the class's own function: rewrapping never stacks wrappers

            @functools.wraps(fn)
            def run(module, *args, _fn=fn, **kwargs):
                args, kwargs = _cast_floating((args, kwargs), _param_dtype(module))
                with policy.autocast():
                    out = _fn(module, *args, **kwargs)
                return _cast_floating(out, _torch().float32) if policy.mixed else out

            object.__setattr__(model, attr, types.MethodType(run, model))
        object.__setattr__(model, "_gx_precision", self.name)
        return model

    def for_inference(self, model):
        """Eval mode, every parameter stored in the compute dtype, forward under this precision. Returns the model."""
        model.eval()
        return self.wrap(self.store_frozen(model, trainable=()))

    def grad_scaler(self):
        """torch.amp.GradScaler for fp16 (scales the loss, skips steps whose gradients overflow); None for fp32/bf16."""
        if self.name != "fp16":
            return None
        import torch

        return torch.amp.GradScaler(self.device.type)

    def check_finite(self, tensor, *, what: str) -> None:
        """Raise a one-line error when `tensor` holds NaN or Inf (`what` names the output)."""
        import torch

        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            hint = "; rerun with --precision fp32" if self.mixed else ""
            raise NonFiniteError(f"non-finite values (NaN/Inf) in {what} at --precision {self.name}{hint}")

    def describe(self) -> str:
        return f"{self.name} on {self.device}"


def _torch():
    import torch

    return torch


def _param_dtype(model):
    """The dtype inputs should have: that of the first trained parameter (fp32 master weights) if any, else of
    the first floating parameter (a wholly frozen model stored in the compute dtype)."""
    first = None
    for p in model.parameters():
        if p.is_floating_point():
            if p.requires_grad:
                return p.dtype
            first = first or p.dtype
    return first


def _cast_floating(obj, dtype):
    """Floating tensors inside nested tuples/lists/dicts -> dtype; everything else unchanged."""
    torch = _torch()
    if dtype is None:
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.to(dtype) if obj.is_floating_point() and obj.dtype != dtype else obj
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(_cast_floating(o, dtype) for o in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cast_floating(o, dtype) for o in obj)
    if isinstance(obj, dict):
        return type(obj)({k: _cast_floating(v, dtype) for k, v in obj.items()}) if type(obj) is dict else _cast_dict_like(obj, dtype)
    return obj


def _cast_dict_like(obj, dtype):
    """ModelOutput and other dict subclasses: cast the values in place (their constructors take keywords)."""
    for k in list(obj.keys()):
        obj[k] = _cast_floating(obj[k], dtype)
    return obj


def is_cuda_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "CUDA out of memory" in str(exc)


def run_with_oom_backoff(fn: Callable[[int], T], batch_size: int, *, min_batch_size: int = 1, on_backoff=None) -> T:
    """Call fn(batch_size); on CUDA OOM free the cache, halve the batch and retry.

    `on_backoff(new_batch_size)` is called after each halving (for a log line).
    """
    import torch

    while True:
        try:
            return fn(batch_size)
        except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is a RuntimeError
            if not is_cuda_oom(exc) or batch_size <= min_batch_size:
                raise
            torch.cuda.empty_cache()
            batch_size = max(min_batch_size, batch_size // 2)
            if on_backoff is not None:
                on_backoff(batch_size)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) for reproducible runs."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
