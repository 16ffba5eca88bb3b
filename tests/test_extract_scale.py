"""extract-features and pca-compute at dataset scale: two processes (torchrun, gloo), a SIGKILL and a
resume, decode workers, and 'all' stored as the rows of train + test.

Every run here is a subprocess with one torch thread, the reference included, so the fp32 features
can be compared bitwise: the same batches through the same kernels on the same thread count.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, invoke

BASE = ["-b", "tiny-dinov2", "-d", "synthetic-hands", "--max-samples", "40", "--shard-size", "8", "--batch-size", "4"]
TORCHRUN = Path(sys.executable).with_name("torchrun")


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "GX_DEBUG": "1"}


def _gx(*args, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    cmd = [*(launcher or [sys.executable]), "-m", "gesture_cli", *map(str, args)]
    res = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def _features(run: Path, split: str):
    from gesture_cli.core.artifacts import load_tensors

    return load_tensors(run / "features" / "tiny-dinov2" / f"{split}.safetensors", kind="features")[0]


def _same_features(a: Path, b: Path, splits=("train", "test")) -> None:
    import torch

    for split in splits:
        ta, tb = _features(a, split), _features(b, split)
        assert torch.equal(ta["features"], tb["features"]), split
        assert torch.equal(ta["labels"], tb["labels"]), split


def _steps(run: Path) -> list[dict]:
    return json.loads((run / "run.json").read_text())["steps"]


precisions = pytest.mark.parametrize("precision", ["fp32", pytest.param("bf16", marks=pytest.mark.slow)])


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed next to this python")
@precisions
def test_two_processes_under_torchrun_equal_one_process(tmp_path, precision):
    one, two = tmp_path / "one", tmp_path / "two"
    _gx("extract-features", *BASE, "--precision", precision, "-r", one)
    res = _gx("extract-features", *BASE, "--precision", precision, "-r", two,
              launcher=[str(TORCHRUN), "--standalone", "--nproc_per_node", "2"])
    assert "2 processes extracted the shards" in res.stdout
    _same_features(one, two)
    meta = json.loads((two / "features/tiny-dinov2/meta.json").read_text())
    assert meta["world_size"] == 2 and meta["splits"]["train"]["shards"] == 5 and meta["splits"]["train"]["batches"] == 10
    steps = _steps(two)
    assert [s["status"] for s in steps] == ["ok"]  # rank 0 alone records the step, once
    assert steps[0]["cache_key"] == _steps(one)[0]["cache_key"]  # the output is the same artifact
    assert not any(p.name.endswith(".partial") for p in (two / "features").iterdir())


KILL_AFTER_TRAIN_SHARDS = """
import os, signal, sys
from gesture_cli.core.rundir import RunDir
from gesture_cli.tasks.features import ExtractConfig, extract_features

done = []
def on_shard(split, index):
    done.append(index)
    if split == "train" and len(done) == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup of any kind, as on a preempted box

cfg = ExtractConfig(backbone="tiny-dinov2", dataset="synthetic-hands", max_samples=40, shard_size=8, batch_size=4,
                    precision=sys.argv[2])
extract_features(cfg, RunDir(sys.argv[1]), device="auto", on_shard=on_shard)  # "auto": the key of the CLI run
"""


@precisions
def test_killed_run_resumes_from_its_last_shard_and_equals_an_uninterrupted_run(tmp_path, precision):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    _gx("extract-features", *BASE, "--precision", precision, "-r", whole)
    res = subprocess.run([sys.executable, "-c", KILL_AFTER_TRAIN_SHARDS, str(killed), precision], cwd=REPO, env=_env(),
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == -signal.SIGKILL, res.stdout + res.stderr
    partial = killed / "features" / ".tiny-dinov2.partial"
    assert sorted(p.name for p in (partial / "train").iterdir()) == ["shard-00000.safetensors", "shard-00001.safetensors"]
    assert not (killed / "features" / "tiny-dinov2").exists()  # nothing half-written where readers look

    res = _gx("extract-features", *BASE, "--precision", precision, "-r", killed)
    assert "resumed train from 2 of 5 finished shards (16 images)" in res.stdout
    _same_features(whole, killed)
    meta = json.loads((killed / "features/tiny-dinov2/meta.json").read_text())
    train, test = meta["splits"]["train"], meta["splits"]["test"]
    # 2 batches per shard: the rerun did the 3 missing train shards and all of test, and not one batch more
    assert (train["resumed_shards"], train["batches"]) == (2, 6)
    assert (test["resumed_shards"], test["batches"]) == (0, 10)
    assert [s["status"] for s in _steps(killed)] == ["interrupted", "ok"]  # the rerun marked the dead step
    assert not partial.exists()


def _jpeg_folder(root: Path, per_class: int = 6) -> Path:
    import cv2

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 256, size=(48 + 8 * i, 40, 3), dtype=np.uint8)
            cv2.imwrite(str(root / c / f"{i}.jpg"), img)
    (root / "a" / "grey.png").write_bytes(cv2.imencode(".png", rng.integers(0, 256, size=(30, 30), dtype=np.uint8))[1].tobytes())
    return root


def test_decode_workers_give_the_features_of_the_main_process(runner, tmp_path):
    import torch

    data = _jpeg_folder(tmp_path / "imgs")
    args = ["extract-features", "-b", "tiny-vit", "-d", f"folder:{data}", "--split", "all", "--precision", "fp32", "--batch-size", "4"]
    assert invoke(runner, *args, "--workers", "0", "-r", tmp_path / "w0").exit_code == 0
    res = invoke(runner, *args, "--workers", "2", "-r", tmp_path / "w2")
    assert res.exit_code == 0, res.output
    a = _load(tmp_path / "w0", "tiny-vit", "all")
    b = _load(tmp_path / "w2", "tiny-vit", "all")
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert json.loads((tmp_path / "w2/features/tiny-vit/meta.json").read_text())["workers"] == 2
    steps = json.loads((tmp_path / "w2/run.json").read_text())["steps"]
    assert "workers" not in steps[0]["config"]  # how the work is spread is not part of the cache key


def _load(run: Path, backbone: str, split: str):
    from gesture_cli.core.rundir import RunDir
    from gesture_cli.tasks.features import load_features

    return load_features(RunDir(run), backbone, split)[0]


def test_all_split_is_stored_as_train_and_test_rows_not_a_second_copy(runner, tmp_path):
    import torch

    from gesture_cli.core.artifacts import load_tensors

    data = _jpeg_folder(tmp_path / "imgs", per_class=10)
    common = ["-b", "tiny-vit", "-d", f"folder:{data}", "--precision", "fp32", "--batch-size", "4", "--workers", "0"]
    res = invoke(runner, "extract-features", *common, "-r", tmp_path / "r")  # train, test, all
    assert res.exit_code == 0, res.output
    assert "rows of train + test" in res.output
    out = tmp_path / "r/features/tiny-vit"
    tensors, meta = load_tensors(out / "all.safetensors", kind="features")
    assert "features" not in tensors and meta["assembled_from"] == ["train", "test"]
    assert (out / "all.safetensors").stat().st_size < (out / "test.safetensors").stat().st_size
    assert invoke(runner, "extract-features", *common, "--split", "all", "-r", tmp_path / "alone").exit_code == 0
    alone, alone_labels = _load(tmp_path / "alone", "tiny-vit", "all"), _features_labels(tmp_path / "alone")
    from gesture_cli.core.rundir import RunDir
    from gesture_cli.tasks.features import load_features

    feats, labels, _ = load_features(RunDir(tmp_path / "r"), "tiny-vit", "all")
    assert torch.equal(labels, alone_labels)
    # the same rows, though in other batches: equal to float rounding, not bitwise
    torch.testing.assert_close(feats, alone, rtol=1e-5, atol=1e-5)
    # probe, which reads train/test, is unaffected; a probe on 'all' reads the assembled rows
    assert invoke(runner, "probe", "-r", tmp_path / "r", "--test-split", "all").exit_code == 0


def _features_labels(run: Path):
    from gesture_cli.core.artifacts import load_tensors

    return load_tensors(run / "features/tiny-vit/all.safetensors", kind="features")[0]["labels"]


@pytest.mark.slow
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed next to this python")
def test_pca_compute_under_torchrun_equals_one_process(tmp_path):
    from gesture_cli.core.artifacts import load_tensors

    # --batch-size 8 makes each 24-frame clip a block: rank 0 sums blocks 0 and 2, rank 1 block 1, and
    # rank 0 adds them in block order as one process does. 1000 of the 4608 patches are kept for the
    # colour ranges: a real sample, the same rows in both runs.
    args = ["pca-compute", "-b", "tiny-dinov2", "-d", "synthetic-video", "-k", "4", "--precision", "fp32",
            "--batch-size", "8", "--reservoir-size", "1000"]
    _gx(*args, "-r", tmp_path / "one")
    _gx(*args, "-r", tmp_path / "two", launcher=[str(TORCHRUN), "--standalone", "--nproc_per_node", "2"])
    one, _ = load_tensors(tmp_path / "one/pca/tiny-dinov2/pca.safetensors", kind="pca")
    two, _ = load_tensors(tmp_path / "two/pca/tiny-dinov2/pca.safetensors", kind="pca")
    assert sorted(one) == sorted(two) and len(one["reservoir"]) == 1000
    for key in one:  # n, sum, xtx, mean, components, eigenvalues, ranges, the reservoir and its keys
        assert torch_equal(one[key], two[key]), key
    info_one = json.loads((tmp_path / "one/pca/tiny-dinov2/pca.json").read_text())
    info = json.loads((tmp_path / "two/pca/tiny-dinov2/pca.json").read_text())
    assert info["ranges"] == info_one["ranges"] and info["eigenvalues"] == info_one["eigenvalues"]
    assert info["world_size"] == 2 and info["total_frames"] == 72 and info["unique_clips"] == 3
    assert [s["status"] for s in _steps(tmp_path / "two")] == ["ok"]
    assert _steps(tmp_path / "two")[0]["cache_key"] == _steps(tmp_path / "one")[0]["cache_key"]


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)


def test_partial_shards_of_another_plan_are_never_mixed_in(tmp_path):
    import torch

    from gesture_cli.tasks.features import PartialDir

    plan = {"cache_key": "abc", "shard_size": 8, "splits": {"train": 20}}
    part = PartialDir(tmp_path / ".bb.partial", plan)
    part.prepare()
    part.save("train", 1, torch.ones(8, 4))
    assert part.completed() == {"train": [1]}
    PartialDir(tmp_path / ".bb.partial", dict(plan)).prepare()  # the same plan: a resume keeps the shard
    assert part.completed() == {"train": [1]}
    other = PartialDir(tmp_path / ".bb.partial", {**plan, "cache_key": "def"})  # another config or other data
    other.prepare()
    assert other.completed() == {"train": []} and not part.shard_path("train", 1).exists()
    (tmp_path / ".bb.partial" / "plan.json").write_text("{not json")
    part.prepare()  # an unreadable plan starts afresh instead of failing
    assert part.completed() == {"train": []}


def test_all_is_derived_only_from_a_full_partition(tmp_path):
    from gesture_cli.data import make_dataset
    from gesture_cli.tasks.features import derived_all_split

    spec = f"folder:{_jpeg_folder(tmp_path / 'imgs')}"
    ds = {s: make_dataset(spec, split=s) for s in ("train", "test", "all")}
    assert derived_all_split(ds, None) == ["train", "test"]
    assert derived_all_split(ds, 5) is None  # capped splits are not a partition of the capped 'all'
    assert derived_all_split({s: ds[s] for s in ("train", "all")}, None) is None  # test rows would be missing
    assert derived_all_split({s: ds[s] for s in ("train", "test")}, None) is None  # no 'all' asked for


def test_damaged_partial_shards_are_dropped_with_a_warning_and_extracted_again(tmp_path):
    import torch

    from gesture_cli.tasks.features import PartialDir

    plan = {"cache_key": "abc", "shard_size": 8, "splits": {"train": 20}}
    part = PartialDir(tmp_path / ".bb.partial", plan)
    part.prepare()
    for i, rows in enumerate((8, 8, 4)):
        part.save("train", i, torch.ones(rows, 6))
    assert part.completed(feature_dim=6) == {"train": [0, 1, 2]}
    whole = part.shard_path("train", 0).read_bytes()
    part.shard_path("train", 0).write_bytes(whole[:-10])  # data cut short
    part.shard_path("train", 1).write_bytes(whole[:5])  # not even the header length
    with pytest.warns(Warning) as caught:
        assert part.completed(feature_dim=6) == {"train": [2]}
    msgs = sorted(str(w.message) for w in caught)
    assert len(msgs) == 2 and all("damaged feature shard" in m and "extracts it again" in m and "\n" not in m for m in msgs)
    assert str(part.shard_path("train", 0)) in msgs[0] and "its header says" in msgs[0]
    assert not part.shard_path("train", 0).exists() and not part.shard_path("train", 1).exists()
    with pytest.warns(Warning, match=r"shape \[4, 6\], expected \[4, 5\]"):
        assert part.completed(feature_dim=5) == {"train": []}  # another width than the backbone's


def test_a_resume_reextracts_a_damaged_shard_instead_of_failing_at_the_end(runner, tmp_path):
    from gesture_cli.core.rundir import RunDir
    from gesture_cli.tasks.features import ExtractConfig, extract_features

    args = [*BASE, "--precision", "fp32", "--device", "cpu"]
    res = invoke(runner, "extract-features", *args, "-r", tmp_path / "whole")
    assert res.exit_code == 0, res.output

    def stop_after_two(split, index):
        if index == 1:
            raise KeyboardInterrupt

    cfg = ExtractConfig(backbone="tiny-dinov2", dataset="synthetic-hands", max_samples=40, shard_size=8, batch_size=4, precision="fp32")
    with pytest.raises(KeyboardInterrupt):
        extract_features(cfg, RunDir(tmp_path / "cut"), device="cpu", on_shard=stop_after_two)
    shard = tmp_path / "cut" / "features" / ".tiny-dinov2.partial" / "train" / "shard-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:100])
    res = invoke(runner, "extract-features", *args, "-r", tmp_path / "cut")
    assert res.exit_code == 0, res.output
    warned = [line for line in res.output.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "shard-00001.safetensors: damaged feature shard" in warned[0], res.output
    assert "resumed train from 1 of 5 finished shards (8 images)" in res.output
    _same_features(tmp_path / "whole", tmp_path / "cut")
