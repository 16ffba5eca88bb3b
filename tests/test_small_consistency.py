"""Small inconsistencies of issue #18, item 8: each case failed before its fix."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
from conftest import invoke, one_line_error


# ---- non-finite numbers are refused up front, like nan ---------------------------------------------
@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_lr_must_be_finite_on_the_command_line(runner, tmp_path, value):
    res = invoke(runner, "lora-train", "--backbone", "tiny-vit", "--dataset", "synthetic-hands", "--lr", value, "-r", tmp_path)
    one_line_error(res, 2, "'lr' must be a finite number", value)
    assert not (tmp_path / "lora").exists()


def test_non_finite_numbers_in_a_config_file_are_refused(tmp_path):
    from gesture_cli.core.config import resolve_config
    from gesture_cli.core.errors import UsageError
    from gesture_cli.train.lora import LoraTrainConfig

    cfg = tmp_path / "train.yaml"
    cfg.write_text("lr: .inf\n")  # YAML's infinity
    with pytest.raises(UsageError, match=r"--config .*train.yaml: 'lr' must be a finite number, got inf"):
        resolve_config(LoraTrainConfig, cfg)


# ---- a missing artifact exits 1 from infer and from evaluate ---------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ("infer", "classify", "--from", "lora", "--input", "IMG"),
        ("evaluate", "classify", "--from", "lora"),
        ("infer", "classify", "--from", "lora", "--backbone", "tiny-vit", "--input", "IMG"),
        ("evaluate", "classify", "--from", "lora", "--backbone", "tiny-vit"),
        ("infer", "classify", "--from", "probe", "--input", "IMG"),
        ("evaluate", "classify", "--from", "probe"),
        ("infer", "segment", "--input", "IMG"),
        ("evaluate", "segment"),
        ("infer", "keypoint", "--input", "IMG"),
        ("evaluate", "keypoint"),
    ],
    ids=lambda a: " ".join(x for x in a if x != "IMG"),
)
def test_a_missing_artifact_exits_1_from_infer_and_evaluate(runner, tmp_path, args):
    import numpy as np
    from PIL import Image

    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    res = invoke(runner, *[str(img) if a == "IMG" else a for a in args], "-r", tmp_path / "run")
    one_line_error(res, 1, "first")  # every message says which command to run first


# ---- --config DIR ----------------------------------------------------------------------------------
def test_config_that_is_a_directory_says_so(runner, tmp_path):
    res = invoke(runner, "lora-train", "--config", tmp_path, "-r", tmp_path / "run")
    line = one_line_error(res, 2, f"--config {tmp_path}: is a directory", "YAML or JSON file")
    assert "not found" not in line


# ---- messages keep their bracketed words -------------------------------------------------------------
def _mpii(tmp_path, joints) -> str:
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "a.jpg")
    rec = {"image": "a.jpg", "joints": joints, "joints_vis": [1] * 16, "center": [32, 32], "scale": 0.2}
    (tmp_path / "valid.json").write_text(json.dumps([rec]))
    return f"mpii:{tmp_path / 'valid.json'}:{tmp_path}"


@pytest.mark.parametrize(
    ("joints", "needle"),
    [
        ([[1, 1]] * 15 + [["a", 1]], "expected [x, y] numbers"),
        ([[1, 1]] * 3, "MPII needs 16 [x, y] pairs (r_ankle .. l_wrist)"),
    ],
    ids=["not-numbers", "too-few"],
)
def test_error_messages_keep_bracketed_words(runner, tmp_path, joints, needle):
    res = invoke(runner, "keypoint-train", "--backbone", "tiny-vit", "--dataset", _mpii(tmp_path, joints), "-r", tmp_path / "run")
    one_line_error(res, 1, needle)


def test_error_boundary_escapes_markup_in_any_message(runner):
    import typer

    from gesture_cli.cli.options import gx_command
    from gesture_cli.core.errors import DataError

    app = typer.Typer()

    @app.command()
    @gx_command
    def fail() -> None:
        raise DataError("frames[0].pose[3] must be [x, y, z] or null; see [bold]docs[/]")

    res = runner.invoke(app, [])
    one_line_error(res, 1, "frames[0].pose[3] must be [x, y, z] or null; see [bold]docs[/]")


# ---- a FIFO is not called a device file ----------------------------------------------------------------
def _tar(path, kind: bytes, name: str):
    with tarfile.open(path, "w") as tar:
        ok = tarfile.TarInfo("data/ok.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        info = tarfile.TarInfo(name)
        info.type = kind
        tar.addfile(info)
    return path


def test_download_names_a_fifo_member(tmp_path):
    from gesture_cli.core.errors import DownloadError
    from gesture_cli.data.fetch import safe_extract

    with pytest.raises(DownloadError) as err:
        safe_extract(_tar(tmp_path / "a.tar", tarfile.FIFOTYPE, "data/pipe"), tmp_path / "dest", replace=True)
    assert str(err.value) == "refusing to unpack a.tar: member 'data/pipe' has the type FIFO (a named pipe)"
    with pytest.raises(DownloadError) as err:
        safe_extract(_tar(tmp_path / "b.tar", tarfile.BLKTYPE, "data/disk"), tmp_path / "dest", replace=True)
    assert str(err.value) == "refusing to unpack b.tar: member 'data/disk' has a device file"


def test_download_names_a_fifo_member_in_a_zip(tmp_path):
    import stat
    import zipfile

    from gesture_cli.core.errors import DownloadError
    from gesture_cli.data.fetch import safe_extract

    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("data/pipe")
        info.external_attr = (stat.S_IFIFO | 0o644) << 16
        zf.writestr(info, b"")
    with pytest.raises(DownloadError, match=r"member 'data/pipe' has the type FIFO \(a named pipe\)"):
        safe_extract(archive, tmp_path / "dest", replace=True)
