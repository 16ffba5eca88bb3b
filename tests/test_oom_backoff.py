"""CUDA out-of-memory back-off, exercised on the CPU by raising torch's real OOM error above a batch size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gesture_cli.core.device import run_with_oom_backoff


def _oom():
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_run_with_oom_backoff_halves_until_it_fits():
    seen, halvings = [], []

    def fn(bs):
        seen.append(bs)
        if bs > 10:
            raise _oom()
        return bs

    assert run_with_oom_backoff(fn, 64, on_backoff=halvings.append) == 8
    assert seen == [64, 32, 16, 8] and halvings == [32, 16, 8]


def test_run_with_oom_backoff_reraises_other_errors_and_at_the_floor():
    with pytest.raises(ValueError):
        run_with_oom_backoff(lambda bs: (_ for _ in ()).throw(ValueError("not memory")), 8)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        run_with_oom_backoff(lambda bs: (_ for _ in ()).throw(_oom()), 4, min_batch_size=4)


def test_extract_split_backs_off_and_gives_the_same_features():
    from gesture_cli.data import make_dataset
    from gesture_cli.models.backbones import build_backbone
    from gesture_cli.models.features import extract_split

    ds = make_dataset("synthetic-hands", split="test", test_per_class=2)  # 48 images
    bb = build_backbone("tiny-vit")
    ref, ref_labels = extract_split(bb, ds, pool="cls", batch_size=48, device=torch.device("cpu"))

    real = bb.forward_features

    def tight_memory(pixels):
        if pixels.shape[0] > 12:
            raise _oom()
        return real(pixels)

    bb.forward_features = tight_memory
    halvings = []
    feats, labels = extract_split(bb, ds, pool="cls", batch_size=48, device=torch.device("cpu"), on_backoff=halvings.append)
    assert halvings == [24, 12]
    torch.testing.assert_close(feats, ref, rtol=1e-4, atol=1e-5)
    assert torch.equal(labels, ref_labels) and np.array_equal(labels.numpy(), ds.labels)
