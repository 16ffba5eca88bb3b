"""gx pca-compute / pca-visualize: exact streaming PCA, merging, video sources, renders, clean errors.

Tiny backbones (64 px, 8x8 patches, 64-d) on `synthetic-video` (3 clips x 24 frames, 2 subjects) and
on the real signing video of the shared data (58 frames, 540x720), read in place, never copied.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import SHARED_REAL, invoke

REAL_VIDEO = SHARED_REAL / "video" / "pose_format_test_video.mp4"
REAL_FRAMES = 58
TINY_PATCHES = 64  # 8x8 grid at 64 px


def _ok(res) -> None:
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output


def _one_line_error(res, code: int, *substrings: str) -> str:
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    err = lines[-1]
    assert err.startswith("Error: ") and len([ln for ln in lines if ln.startswith("Error")]) == 1, res.output
    for s in substrings:
        assert s in err, err
    return err


def _load(run: Path, backbone: str = "tiny-dinov2") -> tuple[dict, dict]:
    from gesture_cli.tasks.pca import load_pca

    return load_pca(run / "pca" / backbone)


def _count_frames(path: Path) -> tuple[int, tuple[int, int, int] | None]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    n, shape = 0, None
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        n, shape = n + 1, frame.shape
    cap.release()
    return n, shape


def _read_png(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _assert_same_up_to_sign(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-6) -> None:
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    assert torch.all(cos.abs() > 1 - tol), cos


@pytest.fixture(scope="module")
def synth_run(tmp_path_factory) -> Path:
    """One pca-compute over all of synthetic-video, shared by the tests that only read it."""
    from typer.testing import CliRunner

    run = tmp_path_factory.mktemp("pca") / "all"
    _ok(invoke(CliRunner(), "pca-compute", "-b", "tiny-dinov2", "-d", "synthetic-video", "-r", run, "--precision", "fp32"))  # compared with an fp32 numpy reference
    return run


# ----------------------------------------------------------------------------------------------
# The accumulator
# ----------------------------------------------------------------------------------------------


def test_accumulator_matches_numpy_and_merges_exactly():
    from gesture_cli.models.pca import PatchPCA

    rng = np.random.default_rng(0)
    d = 24
    x = rng.standard_normal((3000, d)) @ rng.standard_normal((d, d)) * np.linspace(3, 0.1, d) + 5.0  # offset mean
    ref_vals, ref_vecs = np.linalg.eigh(np.cov(x, rowvar=False))
    ref_vals, ref_vecs = ref_vals[::-1], ref_vecs[:, ::-1].T

    one = PatchPCA(d, reservoir_size=500)
    for chunk in np.array_split(x, 7):
        one.update(torch.from_numpy(chunk))
    res = one.finalize(6)
    torch.testing.assert_close(res.mean, torch.from_numpy(x.mean(0)), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(res.eigenvalues, torch.from_numpy(ref_vals[:6].copy()), rtol=1e-8, atol=1e-8)
    _assert_same_up_to_sign(res.components, torch.from_numpy(ref_vecs[:6].copy()), tol=1e-9)
    assert res.explained_variance_ratio[0] == pytest.approx(ref_vals[0] / ref_vals.sum())

    a, b = PatchPCA(d, reservoir_size=500, seed=1), PatchPCA(d, reservoir_size=500, seed=2)
    a.update(torch.from_numpy(x[:1234]))
    b.update(torch.from_numpy(x[1234:]))
    merged = PatchPCA.from_state(a.state_dict()).merge(PatchPCA.from_state(b.state_dict()))
    assert merged.n == one.n == 3000 and len(merged.reservoir.rows) == 500
    torch.testing.assert_close(merged.xtx, one.xtx, rtol=1e-12, atol=1e-9)
    mres = merged.finalize(6)
    torch.testing.assert_close(mres.components, res.components, rtol=0, atol=1e-8)  # same deterministic signs
    with pytest.raises(ValueError, match="cannot merge"):
        merged.merge(PatchPCA(d + 1))


def test_reservoir_is_a_bounded_uniform_sample():
    from gesture_cli.models.pca import RowReservoir

    r = RowReservoir(1, 2000, seed=0)
    for lo in range(0, 100_000, 5000):
        r.update(torch.arange(lo, lo + 5000, dtype=torch.float64)[:, None])
    assert r.rows.shape == (2000, 1)
    vals = r.rows[:, 0].numpy()
    assert len(np.unique(vals)) == 2000
    assert abs(vals.mean() - 50_000) < 3000 and abs(np.median(vals) - 50_000) < 4000  # not just the first rows


def test_reservoir_keeps_the_same_rows_in_any_arrival_order():
    from gesture_cli.models.pca import RowReservoir

    gen = torch.Generator().manual_seed(3)
    rows = torch.randn(3000, 4, generator=gen)
    keys = torch.rand(3000, generator=gen, dtype=torch.float64)
    keys[100:400] = keys[7]  # ties, some at the cut: the ids decide
    ids = torch.arange(3000)
    kept = []
    for perm, chunk in ((torch.arange(3000), 3000), (torch.randperm(3000, generator=gen), 97), (torch.arange(2999, -1, -1), 1)):
        r = RowReservoir(4, 250)
        for lo in range(0, 3000, chunk):
            p = perm[lo : lo + chunk]
            r.offer(rows[p], keys[p], ids[p])
        kept.append(r.ordered())
    first = torch.argsort(ids)[torch.argsort(keys, stable=True)][:250]
    assert torch.equal(kept[0][2], ids[first])
    for other in kept[1:]:
        assert all(torch.equal(a, b) for a, b in zip(kept[0], other, strict=True))


def test_plan_blocks_depends_on_the_source_only():
    from gesture_cli.models.pca import plan_blocks

    assert plan_blocks([24, 24, 24], 8) == [range(0, 1), range(1, 2), range(2, 3)]
    assert plan_blocks([5, 5, 5], 8) == [range(0, 2), range(2, 3)]
    assert plan_blocks([1] * 10, 4) == [range(0, 4), range(4, 8), range(8, 10)]
    assert plan_blocks([3, None, 2, 2], 8) == [range(0, 2), range(2, 4)]  # an unknown count ends its block


class _Group:
    """What the ranks of one simulated launch share: a barrier for collectives and rank -> rank 0 queues."""

    def __init__(self, world: int):
        import queue
        import threading

        self.world = world
        self.barrier = threading.Barrier(world, timeout=120)
        self.slots: list = [None] * world
        self.to_main = [queue.Queue() for _ in range(world)]


class _ThreadDist:
    """core.dist.Dist's interface for a rank that is a thread: the collectives pca-compute uses, in process."""

    def __init__(self, group: _Group, rank: int):
        self.group, self.rank, self.world = group, rank, group.world
        self.local_rank, self.local_world, self.device = rank, group.world, torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        self.group.barrier.wait()

    def all_gather(self, obj) -> list:
        self.group.slots[self.rank] = obj
        self.group.barrier.wait()
        out = list(self.group.slots)
        self.group.barrier.wait()  # nobody overwrites a slot before every rank has read them
        return out

    def broadcast(self, obj):
        return self.all_gather(obj)[0]

    def send_to_main(self, tensor) -> None:
        self.group.to_main[self.rank].put(tensor.clone())

    def recv_from(self, src: int, like):
        return self.group.to_main[src].get(timeout=120)

    def close(self) -> None:
        pass


def _simulated_launch(monkeypatch, cfg, run: Path, world: int) -> None:
    """compute_pca as `world` ranks (threads) of one launch, each with its own backbone and reservoir."""
    import threading

    import gesture_cli.core.dist as dist
    import gesture_cli.models.backbones as backbones
    from gesture_cli.core.rundir import RunDir
    from gesture_cli.tasks.pca import compute_pca

    group, local, errors = _Group(world), threading.local(), []
    monkeypatch.setattr(dist, "launched_world_size", lambda: world)
    monkeypatch.setattr(dist, "init_dist", lambda device: local.ctx)
    # Tiny backbones seed torch's one global generator to draw their weights: processes each have
    # their own, threads would draw from it at once. One build at a time gives every rank the weights.
    build, lock = backbones.build_backbone, threading.Lock()

    def build_one_at_a_time(*args, **kwargs):
        with lock:
            return build(*args, **kwargs)

    monkeypatch.setattr(backbones, "build_backbone", build_one_at_a_time)

    def rank_main(rank: int) -> None:
        local.ctx = _ThreadDist(group, rank)
        try:
            compute_pca(cfg, RunDir(run) if rank == 0 else None, device="cpu")
        except BaseException as e:  # noqa: BLE001 - reported below; the others must not wait for this rank
            errors.append(e)
            group.barrier.abort()

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


@pytest.mark.parametrize("options", [dict(foreground=True), dict(frame_stride=5)], ids=["foreground-3-blocks", "stride-2-blocks"])
def test_blocks_and_reservoir_give_the_same_bits_for_1_2_and_3_processes(monkeypatch, tmp_path, options):
    # Blocks of whole clips, at least one batch each (8 frames): 3 blocks of 24 frames, or with stride 5
    # clips of 5 frames, so [clip0 clip1] [clip2]: 3 ranks leave one idle. 4608 patches, 500 kept.
    from gesture_cli.core.artifacts import load_tensors
    from gesture_cli.models.pca import PCAConfig

    cfg = PCAConfig(backbone="tiny-dinov2", dataset="synthetic-video", n_components=4, batch_size=8, precision="fp32",
                    reservoir_size=500, **options)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same kernels in every rank and in the one-process reference
    try:
        for world in (1, 2, 3):
            _simulated_launch(monkeypatch, cfg, tmp_path / f"w{world}", world)
    finally:
        torch.set_num_threads(threads)
    ref_info, ref = _load(tmp_path / "w1")
    assert len(ref["reservoir"]) == 500 and ref_info["total_frames"] == (72 if "foreground" in options else 15)
    for world in (2, 3):
        info, t = _load(tmp_path / f"w{world}")
        assert sorted(t) == sorted(ref)
        for key in ref:
            assert torch.equal(t[key], ref[key]), (world, key)
        assert info["world_size"] == world
        for key in ("ranges", "eigenvalues", "explained_variance_ratio", "total_patches", "total_frames", "clips", "subjects",
                    "warnings", "foreground"):
            assert info[key] == ref_info[key], (world, key)
    assert load_tensors(tmp_path / "w2/pca/tiny-dinov2/pca.safetensors", kind="pca")[0]["n"].item() == ref_info["total_patches"]


def test_colorize_uses_fixed_ranges_and_channel_layouts():
    from gesture_cli.viz.pca_render import colorize, render_features

    ranges = np.array([[-1.0, 1.0], [0.0, 10.0], [-5.0, 5.0]])
    s = np.array([[[-2.0, 5.0, 0.0], [1.0, 10.0, 5.0]]], np.float32)  # [1, 2, 3]
    rgb = colorize(s, ranges)
    assert rgb.tolist() == [[[0, 128, 128], [255, 255, 255]]]
    assert colorize(s[..., :1], ranges[:1])[0, 1].tolist() == [255, 255, 255]  # grey
    assert colorize(s[..., :2], ranges[:2])[0, 0].tolist() == [0, 128, 0]  # R, G, no blue
    grid = np.random.default_rng(0).standard_normal((8, 8, 3)).astype(np.float32)
    a = render_features(grid, ranges, (40, 56), mode="nearest")
    b = render_features(grid, ranges, (40, 56), mode="nearest")
    assert a.shape == (40, 56, 3) and np.array_equal(a, b)
    assert len(np.unique(a.reshape(-1, 3), axis=0)) <= 64  # nearest: one colour per patch


# ----------------------------------------------------------------------------------------------
# pca-compute on synthetic-video: artifacts, exactness against numpy, cache
# ----------------------------------------------------------------------------------------------


def test_compute_writes_self_describing_artifacts(synth_run):
    info = json.loads((synth_run / "pca" / "tiny-dinov2" / "pca.json").read_text())
    for key in ("image_size", "model_name", "embed_dim", "patches_per_frame", "grid_size", "patch_size", "total_patches",
                "unique_subjects", "unique_clips", "pca_components", "timestamp"):
        assert key in info, key
    assert info["kind"] == "pca" and info["schema"] == 1 and info["gx_version"]
    assert (info["model_name"], info["embed_dim"], info["patch_size"], info["image_size"]) == ("tiny-dinov2", 64, 8, 64)
    assert info["grid_size"] == 8 and info["patches_per_frame"] == TINY_PATCHES
    assert info["total_frames"] == 72 and info["total_patches"] == 72 * TINY_PATCHES
    assert info["unique_subjects"] == 2 and info["unique_clips"] == 3 and info["pca_components"] == 10
    assert info["dataset"] == "synthetic-video"
    ratios = info["explained_variance_ratio"]
    assert len(ratios) == 10 and ratios == sorted(ratios, reverse=True) and 0 < sum(ratios) <= 1
    assert len(info["ranges"]) == 10 and all(lo < hi for lo, hi in info["ranges"])
    _, t = _load(synth_run)
    assert t["components"].shape == (10, 64) and t["xtx"].shape == (64, 64) and int(t["n"][0]) == 72 * TINY_PATCHES
    assert t["reservoir"].shape == (72 * TINY_PATCHES, 64)  # fewer patches than the reservoir holds: all kept


def test_compute_is_exact_against_numpy_on_the_same_features(synth_run):
    from gesture_cli.data.images import resize_image
    from gesture_cli.data.video import make_frame_source
    from gesture_cli.models.backbones import build_backbone

    bb = build_backbone("tiny-dinov2")
    frames = np.stack([resize_image(f, 64) for f, _ in make_frame_source("synthetic-video").iter_frames()])
    with torch.inference_mode():
        _, patches, _ = bb.forward_features(bb.preprocess(torch.from_numpy(frames)))
    x = patches.reshape(-1, 64).double().numpy()
    vals, vecs = np.linalg.eigh(np.cov(x, rowvar=False))
    _, t = _load(synth_run)
    np.testing.assert_allclose(t["mean"].numpy(), x.mean(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(t["eigenvalues"].numpy(), vals[::-1][:10], rtol=1e-5, atol=1e-7)
    _assert_same_up_to_sign(t["components"], torch.from_numpy(vecs[:, ::-1][:, :10].T.copy()), tol=1e-6)


def test_pca_compute_is_keyed_on_the_precision_auto_resolves_to(runner, tmp_path, monkeypatch):
    """As extract-features and pca-visualize: a PCA computed in fp32 is not reused where auto now means bf16."""
    args = ("pca-compute", "-b", "tiny-dinov2", "-d", "synthetic-video", "--max-samples", "6", "--device", "cpu", "-r", tmp_path)
    monkeypatch.setenv("GX_NATIVE_BF16", "0")
    _ok(invoke(runner, *args))
    monkeypatch.setenv("GX_NATIVE_BF16", "1")
    res = invoke(runner, *args)
    _ok(res)
    assert "cached result" not in res.output and "(bfloat16)" in res.output, res.output
    res = invoke(runner, *args, "--precision", "bf16")
    _ok(res)
    assert "cached result" in res.output


def test_second_run_is_cached_and_force_recomputes(runner, tmp_path):
    args = ("pca-compute", "-b", "tiny-dinov2", "-d", "synthetic-video", "--max-samples", "6", "-r", tmp_path)
    _ok(invoke(runner, *args))
    res = invoke(runner, *args)
    _ok(res)
    assert "cached result" in res.output
    steps = json.loads((tmp_path / "run.json").read_text())["steps"]
    assert [s["status"] for s in steps] == ["ok"]
    _ok(invoke(runner, *args, "--n-components", "5"))  # another config: recomputed
    assert json.loads((tmp_path / "pca" / "tiny-dinov2" / "pca.json").read_text())["pca_components"] == 5
    res = invoke(runner, *args, "--n-components", "5", "--force")
    _ok(res)
    assert "cached result" not in res.output and len(json.loads((tmp_path / "run.json").read_text())["steps"]) == 3


# ----------------------------------------------------------------------------------------------
# Merging
# ----------------------------------------------------------------------------------------------


def test_merge_of_two_shards_equals_one_run_over_all(runner, tmp_path, synth_run):
    for i in (0, 1):
        _ok(invoke(runner, "pca-compute", "-b", "tiny-dinov2", "-d", "synthetic-video", "--shard", f"{i}/2", "-r", tmp_path / f"m{i}", "--precision", "fp32"))  # same precision as synth_run
    a = json.loads((tmp_path / "m0" / "pca" / "tiny-dinov2" / "pca.json").read_text())
    b = json.loads((tmp_path / "m1" / "pca" / "tiny-dinov2" / "pca.json").read_text())
    assert (a["unique_clips"], b["unique_clips"]) == (2, 1) and a["total_frames"] + b["total_frames"] == 72
    # a run dir and a pca folder are both accepted
    res = invoke(runner, "pca-compute", "--merge", tmp_path / "m0", tmp_path / "m1" / "pca" / "tiny-dinov2", "-r", tmp_path / "merged")
    _ok(res)
    assert "merged from 2 runs" in res.output
    mi, mt = _load(tmp_path / "merged")
    oi, ot = _load(synth_run)
    for key in ("total_frames", "total_patches", "unique_subjects", "unique_clips", "embed_dim", "model_name"):
        assert mi[key] == oi[key], key
    assert mi["merged_from"] and len(mi["merged_from"]) == 2
    assert int(mt["n"][0]) == int(ot["n"][0])
    torch.testing.assert_close(mt["sum"], ot["sum"], rtol=1e-10, atol=1e-8)
    torch.testing.assert_close(mt["xtx"], ot["xtx"], rtol=1e-10, atol=1e-6)
    _assert_same_up_to_sign(mt["components"], ot["components"], tol=1e-9)
    np.testing.assert_allclose(mi["explained_variance_ratio"], oi["explained_variance_ratio"], atol=1e-6)
    np.testing.assert_allclose(mi["ranges"], oi["ranges"], rtol=1e-5)  # reservoirs hold every patch here: same sample

    # merging again is cached; a different backbone is refused with one line naming both
    assert "cached result" in invoke(runner, "pca-compute", "--merge", tmp_path / "m0", tmp_path / "m1", "-r", tmp_path / "merged").output
    _ok(invoke(runner, "pca-compute", "-b", "tiny-vit", "-d", "synthetic-video", "--max-samples", "4", "-r", tmp_path / "vit"))
    res = invoke(runner, "pca-compute", "--merge", tmp_path / "m0", tmp_path / "vit", "-r", tmp_path / "bad")
    _one_line_error(res, 2, "cannot merge", "tiny-dinov2 (embed_dim 64, patch 8", "tiny-vit (embed_dim 64, patch 8", "different backbones")
    res = invoke(runner, "pca-compute", "--merge", tmp_path / "m0", "-r", tmp_path / "bad")
    _one_line_error(res, 2, "at least two")
    res = invoke(runner, "pca-compute", "--merge", tmp_path / "m0", tmp_path / "m1", "-d", "synthetic-video", "-r", tmp_path / "bad")
    _one_line_error(res, 2, "takes no --dataset")


# ----------------------------------------------------------------------------------------------
# Video sources: real video, subjects/clips layout, bad files
# ----------------------------------------------------------------------------------------------


def _write_layout(root: Path) -> None:
    """DIR/subject0/clip0.mp4, DIR/subject1/clip1/frame_*.png, DIR/subject0/clip2.mp4 from synthetic-video."""
    from gesture_cli.data.synthetic_video import make_synthetic_clips
    from gesture_cli.viz.pca_render import write_png, write_video

    for clip in make_synthetic_clips(seed=0):
        subject, name = clip.clip.split("/")
        if name == "clip1":
            folder = root / subject / name
            folder.mkdir(parents=True)
            for i, f in enumerate(clip.array):
                write_png(folder / f"frame_{i}.png", f)  # unpadded numbers: natural sort keeps 2 before 10
        else:
            (root / subject).mkdir(parents=True, exist_ok=True)
            assert write_video(root / subject / f"{name}.mp4", clip.array, fps=12.0) == 24


def test_subject_clip_layout_counts_like_the_original(runner, tmp_path):
    from gesture_cli.data.video import make_frame_source

    _write_layout(tmp_path / "data")
    src = make_frame_source(f"video:{tmp_path / 'data'}")
    metas = [m for _, m in src.iter_frames(stride=4)]
    assert len(metas) == src.count(stride=4) == 18
    assert [m.frame_index for m in metas if m.clip == "subject1/clip1"] == [0, 4, 8, 12, 16, 20]
    res = invoke(runner, "pca-compute", "-b", "tiny-dinov2", "-d", f"video:{tmp_path / 'data'}", "--frame-stride", "4", "-r", tmp_path / "r")
    _ok(res)
    info, _ = _load(tmp_path / "r")
    assert (info["unique_subjects"], info["unique_clips"], info["total_frames"]) == (2, 3, 18)
    assert info["subjects"] == ["subject0", "subject1"]
    assert info["clips"] == ["subject0/clip0", "subject0/clip2", "subject1/clip1"]


def test_image_datasets_work_through_the_adapter(runner, tmp_path):
    from gesture_cli.data.synthetic_video import generate_clip
    from gesture_cli.viz.pca_render import write_png

    for c, name in enumerate(("open", "fist")):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i, frame in enumerate(generate_clip(seed=1, clip=c, subject=c, n_frames=3)):
            write_png(tmp_path / "imgs" / name / f"{i}.png", frame)
    res = invoke(runner, "pca-compute", "-b", "tiny-vit", "-d", f"folder:{tmp_path / 'imgs'}", "-k", "4", "-r", tmp_path / "r")
    _ok(res)
    info, _ = _load(tmp_path / "r", "tiny-vit")
    assert info["total_frames"] == 6 and info["total_patches"] == 6 * TINY_PATCHES and info["pca_components"] == 4
    assert info["subjects"] == ["fist", "open"] and info["unique_clips"] == 6  # subject = class, one clip per image


def test_real_video_compute_and_render_every_frame(runner, tmp_path, real_data):
    video = real_data / "video" / "pose_format_test_video.mp4"
    res = invoke(runner, "pca-compute", "-b", "tiny-dinov2", "-d", f"video:{video}", "--frame-stride", "6", "--max-samples", "8", "-r", tmp_path)
    _ok(res)
    info, _ = _load(tmp_path)
    assert info["total_frames"] == 8 and info["unique_clips"] == 1
    # --backbone defaults to the only PCA of the run dir; every frame is rendered by default
    res = invoke(runner, "pca-visualize", "--input", video, "--side-by-side", "--upsample", "nearest", "-r", tmp_path)
    _ok(res)
    renders = tmp_path / "pca" / "tiny-dinov2" / "renders"
    n, shape = _count_frames(renders / "pose_format_test_video_pc0-2_sbs.mp4")
    assert n == REAL_FRAMES and shape == (720, 1080, 3)  # input | features, at the input's size
    sheet = _read_png(renders / "pose_format_test_video_contact.png")
    assert sheet.shape[0] > 256 and sheet.shape[1] > 3 * 190  # input + PC 0-2, 3-5, 6-8 tiles
    assert "contact sheet of frame 29" in res.output  # the middle frame
    res = invoke(runner, "pca-visualize", "--input", video, "--side-by-side", "--upsample", "nearest", "-r", tmp_path)
    _ok(res)
    assert "cached renders" in res.output


def test_render_stride_semantics_and_component_channels(runner, tmp_path, synth_run):
    from gesture_cli.data.synthetic_video import generate_clip
    from gesture_cli.viz.pca_render import write_png, write_video

    clip = generate_clip(seed=3, clip=0, subject=1)
    write_video(tmp_path / "clip.mp4", clip, fps=12.0)
    res = invoke(runner, "pca-visualize", "-i", tmp_path / "clip.mp4", "--frame-stride", "5", "-r", synth_run)
    _ok(res)
    out = synth_run / "pca" / "tiny-dinov2" / "renders" / "clip_pc0-2.mp4"
    n, shape = _count_frames(out)
    assert n == 5 and shape == (96, 96, 3)  # frames 0, 5, 10, 15, 20
    import cv2

    assert cv2.VideoCapture(str(out)).get(cv2.CAP_PROP_FPS) == pytest.approx(12.0 / 5, rel=1e-3)
    # images: PNG at the input's size; 1 component -> grey, 2 -> red + green only
    write_png(tmp_path / "img.png", clip[7][:90, :70])
    _ok(invoke(runner, "pca-visualize", "-i", tmp_path / "img.png", "-k", "1", "--start-component", "3", "-r", synth_run))
    grey = _read_png(synth_run / "pca" / "tiny-dinov2" / "renders" / "img_pc3.png")
    assert grey.shape == (90, 70, 3) and np.array_equal(grey[..., 0], grey[..., 2])
    _ok(invoke(runner, "pca-visualize", "-i", tmp_path / "img.png", "-k", "2", "-r", synth_run))
    rg = _read_png(synth_run / "pca" / "tiny-dinov2" / "renders" / "img_pc0-1.png")
    assert rg[..., 2].max() == 0 and rg[..., :2].max() > 0
    res = invoke(runner, "pca-visualize", "-i", tmp_path / "img.png", "--start-component", "8", "-r", synth_run)
    _one_line_error(res, 2, "needs 11 components", "has 10")


def test_backbone_mismatch_is_one_line_naming_both(runner, tmp_path, synth_run):
    res = invoke(runner, "pca-visualize", "-i", REAL_VIDEO, "--backbone", "tiny-vit", "-r", synth_run)
    _one_line_error(
        res, 1,
        "pca/tiny-dinov2/pca.json was computed with tiny-dinov2 (embed_dim 64, patch 8) but --backbone tiny-vit has "
        "embed_dim 64, patch 8; recompute with gx pca-compute --backbone tiny-vit",
    )
    # another width and patch (64 px is no multiple of 14: the check still names both, not the image size)
    from transformers import Dinov2Config, Dinov2Model

    other = tmp_path / "dinov2-p14"
    Dinov2Model(Dinov2Config(hidden_size=48, num_hidden_layers=1, num_attention_heads=2, patch_size=14, image_size=56)).save_pretrained(other)
    res = invoke(runner, "pca-visualize", "-i", REAL_VIDEO, "--pca", synth_run / "pca" / "tiny-dinov2", "--backbone", other, "-r", tmp_path / "r")
    _one_line_error(
        res, 1,
        f"was computed with tiny-dinov2 (embed_dim 64, patch 8) but --backbone {other} has embed_dim 48, patch 14; "
        f"recompute with gx pca-compute --backbone {other}",
    )


def test_unreadable_and_truncated_videos(runner, tmp_path, real_data, synth_run):
    bad = tmp_path / "noise.mp4"
    bad.write_bytes(np.random.default_rng(0).bytes(20_000))
    res = invoke(runner, "pca-compute", "-b", "tiny-dinov2", "-d", f"video:{bad}", "-r", tmp_path / "r")
    _one_line_error(res, 1, "noise.mp4: not a readable video")
    res = invoke(runner, "pca-visualize", "-i", bad, "-r", synth_run)
    _one_line_error(res, 1, "noise.mp4: not a readable video")

    data = (real_data / "video" / "pose_format_test_video.mp4").read_bytes()
    half = tmp_path / "half.mp4"
    half.write_bytes(data[: len(data) // 2])
    res = invoke(runner, "pca-compute", "-b", "tiny-dinov2", "-d", f"video:{half}", "--frame-stride", "4", "-r", tmp_path / "h")
    _ok(res)
    info, _ = _load(tmp_path / "h")
    (warning,) = info["warnings"]
    read = int(warning.split("half.mp4: read ")[1].split(" of 58 frames (truncated or corrupt)")[0])
    assert 0 < read < REAL_FRAMES and info["total_frames"] == -(-read // 4)  # stride 4 over the frames that decode
    assert "of 58 frames (truncated or corrupt)" in res.output
    res = invoke(runner, "pca-visualize", "-i", half, "--frame-stride", "4", "-r", tmp_path / "h")
    _ok(res)
    assert f"read {read} of 58 frames" in res.output
    n, _ = _count_frames(tmp_path / "h" / "pca" / "tiny-dinov2" / "renders" / "half_pc0-2.mp4")
    assert n == -(-read // 4)  # every 4th of the frames that decode

    stub = tmp_path / "stub.mp4"  # header intact, no decodable frame
    stub.write_bytes(data[: len(data) // 40])
    res = invoke(runner, "pca-compute", "-b", "tiny-dinov2", "-d", f"video:{stub}", "-r", tmp_path / "s")
    _one_line_error(res, 1, "stub.mp4: not a readable video")


def test_foreground_pass_is_stored_and_masks_renders(runner, tmp_path, synth_run):
    args = ("pca-compute", "-b", "tiny-dinov2", "-d", "synthetic-video", "--max-samples", "24", "-k", "4")
    res = invoke(runner, *args, "--foreground", "-r", tmp_path / "fg")
    _ok(res)
    info, t = _load(tmp_path / "fg")
    fg = info["foreground"]
    assert fg["threshold"] == 0.0 and 0 < fg["kept_fraction"] <= 0.5 and fg["first_pass_patches"] == 24 * TINY_PATCHES
    assert 0 < info["total_patches"] < 24 * TINY_PATCHES
    assert t["fg_component"].shape == (64,) and t["fg_mean"].shape == (64,) and float(t["fg_threshold"][0]) == 0.0
    from gesture_cli.data.synthetic_video import generate_clip
    from gesture_cli.viz.pca_render import write_png

    write_png(tmp_path / "f.png", generate_clip(seed=0, clip=0, subject=0)[0])
    _ok(invoke(runner, "pca-visualize", "-i", tmp_path / "f.png", "--upsample", "nearest", "-r", tmp_path / "fg"))
    pic = _read_png(tmp_path / "fg" / "pca" / "tiny-dinov2" / "renders" / "f_pc0-2.png")
    black = (pic.reshape(-1, 3).max(1) == 0).mean()
    assert 0.3 < black < 1.0  # background patches masked, foreground coloured
    res = invoke(runner, "pca-compute", "--merge", tmp_path / "fg", synth_run, "-r", tmp_path / "m")
    _one_line_error(res, 2, "--foreground PCAs")
    res = invoke(runner, *args, "--foreground-threshold", "1", "-r", tmp_path / "x")
    _one_line_error(res, 2, "--foreground-threshold needs --foreground")
    res = invoke(runner, *args, "--foreground", "--foreground-threshold", "1e9", "-r", tmp_path / "x")
    _one_line_error(res, 1, "--foreground-threshold 1e+09 keeps 0 of 1536 patches; lower the threshold")


def test_render_says_its_precision_and_keys_its_cache_on_the_resolved_one(runner, tmp_path, synth_run, monkeypatch):
    """As evaluate: auto resolved to bf16 (a CPU with native bf16) is not reused once auto means fp32, and
    an explicit --precision fp32 reuses the render auto made in fp32."""
    import shutil

    from gesture_cli.data.synthetic_video import generate_clip
    from gesture_cli.viz.pca_render import write_png

    run = tmp_path / "run"
    shutil.copytree(synth_run, run)
    write_png(tmp_path / "img.png", generate_clip(seed=3, clip=0, subject=1)[4])
    args = ["pca-visualize", "-i", tmp_path / "img.png", "-r", run, "--device", "cpu"]
    monkeypatch.setenv("GX_NATIVE_BF16", "1")
    res = invoke(runner, *args)
    _ok(res)
    assert [line for line in res.output.splitlines() if line.startswith("precision:")] == ["precision: bf16 on cpu"], res.output
    monkeypatch.setenv("GX_NATIVE_BF16", "0")
    res = invoke(runner, *args)
    _ok(res)
    assert "precision: fp32 on cpu" in res.output and "cached renders" not in res.output  # re-rendered in fp32
    res = invoke(runner, *args, "--precision", "fp32")
    _ok(res)
    assert "precision: fp32 on cpu" in res.output and "cached renders" in res.output
