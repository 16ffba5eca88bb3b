"""Artifact files follow the umask, whoever writes them (issue #18, item 7).

safetensors' save_file (called by transformers' and PEFT's save_pretrained) creates 0600 files, so
adapter/adapter_model.safetensors, backbone/model.safetensors and text_model/model.safetensors came out
0600 while gx's own files were 0644.
"""

from __future__ import annotations

import os
import stat

import pytest
from conftest import invoke


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_step_outputs_follow_the_umask(tmp_path, umask, mask, expected):
    import torch
    from safetensors.torch import save_file

    from gesture_cli.core.artifacts import save_json
    from gesture_cli.core.rundir import RunDir

    umask(mask)
    run = RunDir(tmp_path / "run")
    step = run.begin("demo-step", config={"a": 1}, outputs=["out"], force=True)
    with step:
        out = step.stage("out")
        (out / "adapter").mkdir()
        save_file({"w": torch.zeros(2)}, str(out / "adapter" / "adapter_model.safetensors"))  # the 0600 writer
        save_json(out / "meta.json", {"x": 1})
        script = out / "run.sh"
        script.write_text("#!/bin/sh\n")
        script.chmod(0o700)
    final = run.path("out")
    assert _mode(final / "adapter" / "adapter_model.safetensors") == expected
    assert _mode(final / "meta.json") == expected
    assert _mode(final / "run.sh") == (0o777 & ~mask)  # an executable stays executable, within the umask


def test_follow_umask_leaves_links_alone(tmp_path, umask):
    from gesture_cli.core.artifacts import follow_umask

    umask(0o022)
    target = tmp_path / "outside.txt"
    target.write_text("x")
    target.chmod(0o600)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "link").symlink_to(target)
    follow_umask(tmp_path / "d")
    assert _mode(target) == 0o600  # a link out of the artifact is not followed


@pytest.mark.usefixtures("one_torch_thread")
def test_lora_adapter_is_written_0644(runner, tmp_path, umask):
    umask(0o022)
    res = invoke(runner, "lora-train", "--backbone", "tiny-vit", "--method", "lora", "--dataset", "synthetic-hands", "--image-size", "32",
                 "--max-samples", "48", "--batch-size", "16", "--epochs", "1", "--device", "cpu", "--precision", "fp32", "-r", tmp_path)
    assert res.exit_code == 0, res.output
    out = tmp_path / "lora" / "tiny-vit"
    adapter = out / "adapter" / "adapter_model.safetensors"
    assert adapter.is_file()
    modes = {p.relative_to(out).as_posix(): _mode(p) for p in out.rglob("*") if p.is_file() and not p.is_symlink()}
    assert modes and set(modes.values()) == {0o644}, modes
