"""Pose data: every real sample under shared/data/real/sign_pose, bad inputs, gx's format, synthetic-signs, skeletons."""

from __future__ import annotations

import csv
import gzip
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from gesture_cli.core.errors import DataError, UsageError
from gesture_cli.data.pose import PoseSample, make_pose_dataset, read_pose_folder
from gesture_cli.data.pose_batches import collate_pose, normalize_max_abs, normalize_sample, normalize_shoulders, subsample_frames
from gesture_cli.data.pose_format_files import read_pose_file
from gesture_cli.data.pose_kaggle import read_kaggle_parquet
from gesture_cli.data.pose_openpose import read_openpose_clip
from gesture_cli.data.pose_pickle import read_pickle_samples
from gesture_cli.models import skeletons as sk
from tests.conftest import SHARED_REAL, invoke

POSE_DIR = SHARED_REAL / "sign_pose"
needs_real = pytest.mark.skipif(not POSE_DIR.is_dir(), reason=f"shared real data not found at {POSE_DIR}")
REAL_POSE_FILES = sorted(POSE_DIR.rglob("*.pose")) if POSE_DIR.is_dir() else []


def one_line(err: pytest.ExceptionInfo, *parts: str) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    for part in parts:
        assert part in msg, f"{part!r} not in {msg!r}"
    return msg


def header_frames(path: Path) -> tuple[int, list[str], int]:
    """(frames, component names, points) from the file's own header fields, without pose-format's body reader."""
    from pose_format.pose_header import PoseHeader
    from pose_format.utils.reader import BufferReader

    data = path.read_bytes()
    r = BufferReader(data)
    h = PoseHeader.read(r)
    off = r.read_offset
    if round(h.version, 3) == 0.2:
        _, frames = struct.unpack_from("<fI", data, off)
    else:  # v0.0 and v0.1: two uint16 (fps, frames)
        _, frames = struct.unpack_from("<HH", data, off)
    return frames, [c.name for c in h.components], sum(len(c.points) for c in h.components)


def nan_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))


# ---- every real .pose file ---------------------------------------------------------------------------
@needs_real
@pytest.mark.parametrize("path", REAL_POSE_FILES, ids=lambda p: f"{p.parent.name}/{p.name[:24]}")
def test_real_pose_file_loads_with_header_frames_layout_and_points(path):
    from pose_format import Pose

    frames, comps, _ = header_frames(path)
    s = read_pose_file(path)
    assert s.num_frames == frames > 0
    openpose = comps[0] == "pose_keypoints_2d"
    assert s.layout == ("openpose-137" if openpose else "mediapipe-holistic")
    assert s.keypoints.shape == (frames, 137 if openpose else 543, 2 if openpose else 3)
    assert s.keypoints.dtype == np.float32 and s.mask.dtype == bool
    assert np.isnan(s.keypoints[~s.mask]).all() and np.isfinite(s.keypoints[s.mask]).all()
    # the observed points are exactly the file's points with confidence > 0 (world landmarks and iris points dropped)
    pose = Pose.read(path.read_bytes())
    conf = np.asarray(pose.body.confidence)[:, 0]
    keep, offset = [], 0
    for c in pose.header.components:
        n = len(c.points)
        if c.name != "POSE_WORLD_LANDMARKS":
            keep += [offset + i for i in range(min(n, 468) if c.name == "FACE_LANDMARKS" else n)]
        offset += n
    assert int(s.mask.sum()) == int((conf[:, keep] > 0).sum())
    # point mapping: the right-hand wrist and the left shoulder land where the layout says
    data = np.asarray(pose.body.data.data)[:, 0]
    names = {c.name: (sum(len(x.points) for x in pose.header.components[:i]), c) for i, c in enumerate(pose.header.components)}
    if not openpose:
        start, comp = names["RIGHT_HAND_LANDMARKS"]
        ok = conf[:, start] > 0
        np.testing.assert_array_equal(s.keypoints[ok, 522], data[ok, start, :3])
        start, comp = names["POSE_LANDMARKS"]
        j = start + list(comp.points).index("LEFT_SHOULDER")
        ok = conf[:, j] > 0
        np.testing.assert_array_equal(s.keypoints[ok, 11], data[ok, j, :3])
    assert s.fps == pytest.approx(float(pose.body.fps))


@needs_real
def test_reduced_mediapipe_file_maps_by_point_name_and_masks_the_rest():
    s = read_pose_file(POSE_DIR / "pose_format_tests" / "mediapipe.pose")
    observed = np.flatnonzero(s.mask.any(axis=0))
    assert len(observed) <= 178
    pose_points = {i for i in observed if i < 33}
    assert pose_points <= {11, 12, 13, 14, 15, 16, 23, 24}  # the 8 pose points this reduced file keeps
    assert not s.mask[:, 0].any()  # no nose in the reduced file: masked, not zero


@needs_real
def test_truncated_pose_file_is_a_one_line_error(tmp_path):
    src = POSE_DIR / "phoenix2014t" / "25October_2010_Monday_tagesschau-17.pose"
    bad = tmp_path / "half.pose"
    bad.write_bytes(src.read_bytes()[: src.stat().st_size // 2])  # pose-format alone reads this as 42 frames
    with pytest.raises(DataError) as err:
        read_pose_file(bad)
    one_line(err, str(bad), "truncated", "86 frames")
    tiny = tmp_path / "tiny.pose"
    tiny.write_bytes(src.read_bytes()[:40])
    with pytest.raises(DataError) as err:
        make_pose_dataset(f"pose:{tiny}")
    one_line(err, str(tiny), "not a readable .pose file")


# ---- labelled folders: texts, glosses, splits, signers -----------------------------------------------
@needs_real
def test_phoenix_sample_gets_gloss_and_text_from_the_corpus_csv():
    with open(POSE_DIR / "phoenix2014t" / "PHOENIX-2014-T.sample.corpus.csv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="|"))
    ds = make_pose_dataset(f"pose:{POSE_DIR / 'phoenix2014t'}")
    (s,) = ds.samples
    assert s.id == rows[0]["name"]
    assert s.text == rows[0]["translation"] and s.gloss == rows[0]["orth"] and s.signer == rows[0]["speaker"]
    assert s.num_frames == header_frames(POSE_DIR / "phoenix2014t" / f"{rows[0]['name']}.pose")[0] == 86
    assert ds.skipped == {"not a pose or label file": 2, "pickle not read in a folder scan (pass it as the input with --allow-pickle, or as --texts)": 1}


@needs_real
def test_autsl_sample_gets_its_class_from_labels_and_the_class_list():
    name, cid = (POSE_DIR / "autsl" / "labels.csv").read_text().strip().split(",")
    with open(POSE_DIR / "autsl" / "SignList_ClassId_TR_EN.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["ClassId"] == cid)
    (s,) = make_pose_dataset(f"pose:{POSE_DIR / 'autsl'}").samples
    assert (s.id, s.gloss, s.text, s.signer) == (name, row["TR"], row["EN"], "signer0")
    assert s.num_frames == 43 and s.fps == 30


@needs_real
@pytest.mark.parametrize("folder,index", [("fingerspelling_ase", "index_all_languages.csv"), ("sgg_lexicon", "index.csv")])
def test_lexicon_folders_get_words_and_glosses_from_their_index(folder, index):
    root = POSE_DIR / folder
    expected: dict[str, tuple[str, str]] = {}
    with open(root / index, newline="") as f:
        for r in csv.DictReader(f):
            if (root / r["path"]).is_file():
                expected.setdefault(r["path"][: -len(".pose")], (r["words"], r["glosses"]))
    ds = make_pose_dataset(f"pose:{root}")
    assert len(ds) == len(list(root.rglob("*.pose"))) == len(expected)
    for s in ds:
        assert (s.text, s.gloss) == expected[s.id]
        assert s.num_frames == header_frames(root / f"{s.id}.pose")[0]
    if folder == "fingerspelling_ase":
        assert sorted(s.text for s in ds) == [chr(c) for c in range(ord("A"), ord("Z") + 1)]


@needs_real
def test_pose_evaluation_glosses_come_from_the_file_names():
    ds = make_pose_dataset(f"pose:{POSE_DIR / 'pose_evaluation'}")
    assert {s.id: s.gloss for s in ds} == {p.stem: p.stem.rsplit("-", 1)[1] for p in (POSE_DIR / "pose_evaluation").glob("*.pose")}
    assert all(s.text == "" for s in ds)


@needs_real
def test_how2sign_openpose_json_clips_with_texts_and_splits():
    root = POSE_DIR / "how2sign_openpose_json"
    with open(root / "texts_derived.csv", newline="") as f:
        texts = {r["clip"]: (r["split_dir"], r["text"]) for r in csv.DictReader(f)}
    ds = make_pose_dataset(f"pose:{root}")
    assert len(ds) == len(list(root.rglob("*_keypoints.json"))) == 3 and ds.layout == "openpose-137" and ds.dims == 2
    for s in ds:
        split, clip = s.id.split("/")
        assert (s.split, s.text) == (split, texts[clip][1]) and split == texts[clip][0]
        assert s.num_frames == 1
        (frame_file,) = (root / split).glob(f"{clip}_*_keypoints.json")
        person = json.loads(frame_file.read_text())["people"][0]
        flat = np.array(person["pose_keypoints_2d"] + person["face_keypoints_2d"] + person["hand_left_keypoints_2d"] + person["hand_right_keypoints_2d"]).reshape(137, 3)
        np.testing.assert_array_equal(s.mask[0], flat[:, 2] > 0)
        np.testing.assert_allclose(s.keypoints[0][s.mask[0]], flat[flat[:, 2] > 0, :2], rtol=1e-6)
    assert [s.id for s in make_pose_dataset(f"pose:{root}", split="val")] == ["val/_2FBDaOPYig_1-3-rgb_front"]


@needs_real
def test_how2sign_texts_from_the_labels_pickle_need_the_flag():
    root = POSE_DIR / "how2sign_openpose_json"
    with pytest.raises(DataError) as err:
        make_pose_dataset(f"pose:{root}", texts=str(root / "how2sign_labels.test.pkl.gz"))
    one_line(err, "how2sign_labels.test.pkl.gz", "arbitrary code", "--allow-pickle")
    labels = pickle.loads(gzip.decompress((root / "how2sign_labels.test.pkl.gz").read_bytes()))
    ds = make_pose_dataset(f"pose:{root}", split="test", texts=str(root / "how2sign_labels.test.pkl.gz"), allow_pickle=True)
    assert ds[0].text == labels["_fZbAxSSbX4_0-5-rgb_front.mp4"]["text"]
    with pytest.raises(DataError) as err:  # a labels-only pickle is not a sample file
        make_pose_dataset(f"pose:{root / 'how2sign_labels.test.pkl.gz'}", allow_pickle=True)
    one_line(err, "labels", "no keypoint arrays", "--texts")


@needs_real
def test_silfa_kaggle_parquet_folder_with_train_csv():
    root = POSE_DIR / "silfa_kaggle_format_parquet"
    with open(root / "train.csv", newline="") as f:
        signs = {r["path"]: (r["sign"], r["participant_id"]) for r in csv.DictReader(f)}
    files = sorted(root.rglob("*.parquet"))
    ds = make_pose_dataset(f"pose:{root}")
    assert len(ds) == len(files) == 24 and ds.layout == "mediapipe-holistic"
    for s in ds:
        rel = f"{s.id}.parquet"
        assert (s.gloss, s.text, s.signer) == (signs[rel][0], signs[rel][0], signs[rel][1])
        assert s.num_frames == 1 and s.mask.all()
    import pandas as pd

    df = pd.read_parquet(files[0])
    s = read_kaggle_parquet(files[0])
    for kind, offset in (("pose", 0), ("face", 33), ("left_hand", 501), ("right_hand", 522)):
        rows = df[df["type"] == kind].sort_values("landmark_index")
        np.testing.assert_allclose(s.keypoints[0, offset: offset + len(rows)], rows[["x", "y", "z"]].to_numpy(), rtol=1e-6)
    # one file on its own still finds train.csv two folders up
    (single,) = make_pose_dataset(f"pose:{files[0]}").samples
    assert single.gloss == signs[files[0].relative_to(root).as_posix()][0]


@needs_real
def test_kaggle_gislr_text_dump_as_parquet_masks_missing_hands(tmp_path):
    import pandas as pd

    dump = POSE_DIR / "kaggle_gislr_text_dump" / "2044_635217_parquet_to_string.txt"
    df = pd.read_csv(dump, sep=r"\s+")  # pandas' to_string(): an index column and the 7 named columns
    assert list(df.columns) == ["frame", "row_id", "type", "landmark_index", "x", "y", "z"]
    df.to_parquet(tmp_path / "635217.parquet")
    s = read_kaggle_parquet(tmp_path / "635217.parquet")
    assert s.num_frames == df["frame"].nunique() == 7
    assert int((~s.mask).sum()) == int(df["x"].isna().sum()) > 0
    assert not s.mask[:, 501:522].any()  # the left hand is NaN in every frame of this sequence


@needs_real
def test_asl_app_landmark_json_folder():
    root = POSE_DIR / "asl_app_landmarks_json"
    meta = json.loads((root / "metadata.json").read_text())
    files = sorted((root / "signs").glob("*.json"))
    ds = make_pose_dataset(f"pose:{root}")
    assert len(ds) == len(files) == 25
    for s in ds:
        doc = json.loads((root / f"{s.id}.json").read_text())
        assert s.num_frames == doc["frame_count"] == len(doc["frames"])
        assert s.gloss == doc["sign"] and s.text == doc["sign"].replace("_", " ") and s.fps == doc["fps"]
        face_seen = np.flatnonzero(s.mask[:, 33:501].any(axis=0))
        assert set(face_seen) <= set(meta["face_indices"])
        nulls = sum(p is None for fr in doc["frames"] for part in ("pose", "left_hand", "right_hand", "face") for p in (fr[part] or [None] * {"face": 33, "pose": 33}.get(part, 21)))
        assert int((~s.mask[:, np.r_[0:33, 33 + np.array(meta["face_indices"]), 501:543]]).sum()) == nulls


@needs_real
def test_mixed_layouts_in_one_folder_need_a_layout_choice():
    root = POSE_DIR / "pose_format_tests"
    with pytest.raises(DataError) as err:
        make_pose_dataset(f"pose:{root}")
    one_line(err, "mixes keypoint layouts", "--layout")
    ds = make_pose_dataset(f"pose:{root}", layout="openpose-137")
    assert [s.id for s in ds] == ["openpose"] and ds.skipped == {"layout mediapipe-holistic, not openpose-137": 1}


# ---- bad inputs ----------------------------------------------------------------------------------
def _openpose_person(n_conf: float = 0.9) -> dict:
    return {k: [1.0, 2.0, n_conf] * n for k, n in (("pose_keypoints_2d", 25), ("face_keypoints_2d", 70), ("hand_left_keypoints_2d", 21), ("hand_right_keypoints_2d", 21))}


def test_openpose_frame_without_a_person_is_fully_masked(tmp_path):
    clip = tmp_path / "clipA"
    clip.mkdir()
    for i, people in enumerate([[_openpose_person()], [], [_openpose_person()]]):
        (clip / f"clipA_{i:012d}_keypoints.json").write_text(json.dumps({"version": 1.3, "people": people}))
    (s,) = make_pose_dataset(f"pose:{tmp_path}").samples
    assert s.id == "clipA" and s.num_frames == 3
    assert s.mask[0].all() and not s.mask[1].any() and s.mask[2].all()
    assert np.isnan(s.keypoints[1]).all()  # masked, never (0, 0)


@pytest.mark.parametrize("content,expected", [
    ("{not json", "not valid JSON"),
    (json.dumps({"version": 1.3}), "missing key 'people'"),
    (json.dumps({"people": [{k: v for k, v in _openpose_person().items() if k != "face_keypoints_2d"}]}), "lacks key 'face_keypoints_2d'"),
    (json.dumps({"people": [{**_openpose_person(), "pose_keypoints_2d": [1.0, 2.0]}]}), "pose_keypoints_2d has 2 values"),
])
def test_bad_openpose_json_is_a_one_line_error_naming_file_and_key(tmp_path, content, expected):
    f = tmp_path / "c_000000000000_keypoints.json"
    f.write_text(content)
    with pytest.raises(DataError) as err:
        read_openpose_clip([(0, f)], sample_id="c")
    one_line(err, str(f), expected)


def test_parquet_with_missing_columns_names_them(tmp_path):
    import pandas as pd

    f = tmp_path / "bad.parquet"
    pd.DataFrame({"frame": [0], "type": ["pose"], "x": [0.5]}).to_parquet(f)
    with pytest.raises(DataError) as err:
        make_pose_dataset(f"pose:{f}")
    one_line(err, str(f), "missing columns landmark_index, y")
    g = tmp_path / "badtype.parquet"
    pd.DataFrame({"frame": [0], "type": ["torso"], "landmark_index": [0], "x": [0.5], "y": [0.5], "z": [0.0]}).to_parquet(g)
    with pytest.raises(DataError) as err:
        read_kaggle_parquet(g)
    one_line(err, str(g), "row 0", "'torso'")


def _pickle_samples(tmp_path: Path) -> tuple[Path, list[dict]]:
    rng = np.random.default_rng(0)
    kp = rng.random((12, 543, 3)).astype(np.float32)
    kp[3, 501:522] = np.nan  # a lost left hand
    wb = rng.random((9, 133, 3)).astype(np.float32)
    wb[:, 100, 2] = 0.0  # zero confidence
    entries = [
        {"name": "clip-1", "keypoint": kp, "text": "hello there", "gloss": "HELLO", "signer": "s1"},
        {"name": "clip-2", "keypoints": wb, "text": "good morning", "gloss": "GOOD MORNING"},
        {"name": "no-kps", "text": "labels only"},
    ]
    path = tmp_path / "samples.pkl"
    path.write_bytes(pickle.dumps(entries))
    return path, entries


def test_pickle_needs_the_flag_and_then_loads_liberally(tmp_path):
    path, entries = _pickle_samples(tmp_path)
    with pytest.raises(DataError) as err:
        make_pose_dataset(f"pose:{path}")
    one_line(err, str(path), "arbitrary code", "--allow-pickle")
    samples, skipped = read_pickle_samples(path, allow_pickle=True)
    a, b = samples
    assert (a.id, a.layout, a.text, a.gloss, a.signer, a.num_frames) == ("clip-1", "mediapipe-holistic", "hello there", "HELLO", "s1", 12)
    assert not a.mask[3, 501:522].any() and a.mask[3, 522:].all()
    assert (b.layout, b.dims, b.num_frames) == ("coco-wholebody-133", 2, 9)  # x, y, confidence on a 2D-detector layout
    assert not b.mask[:, 100].any() and b.mask[:, :100].all()
    assert skipped == {"pickle entry without keypoints": 1}
    with pytest.raises(DataError) as err:  # as a dataset, one layout only
        make_pose_dataset(f"pose:{path}", allow_pickle=True)
    one_line(err, "mixes keypoint layouts")


# ---- gx's format and pose-convert --------------------------------------------------------------------
@needs_real
@pytest.mark.parametrize("folder", ["fingerspelling_ase", "how2sign_openpose_json", "phoenix2014t"])
def test_pose_convert_round_trip_through_the_cli(runner, tmp_path, folder):
    src = make_pose_dataset(f"pose:{POSE_DIR / folder}")
    out = tmp_path / "gx"
    res = invoke(runner, "pose-convert", POSE_DIR / folder, "-o", out)
    assert res.exit_code == 0, res.output
    assert f"Wrote {out}" in res.output
    back = make_pose_dataset(f"pose:{out}")
    assert [s.id for s in back] == [s.id for s in src]
    for a, b in zip(src, back, strict=True):
        assert nan_equal(a.keypoints, b.keypoints) and np.array_equal(a.mask, b.mask)
        assert (a.text, a.gloss, a.split, a.signer, a.layout, a.fps) == (b.text, b.gloss, b.split, b.signer, b.layout, b.fps)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["kind"] == "pose-dataset" and meta["num_samples"] == len(src) and meta["layout"] == src.layout
    res = invoke(runner, "pose-convert", POSE_DIR / folder, "-o", out)  # existing output: refuse without --force
    assert res.exit_code == 2 and "--force" in res.output


def test_pose_convert_errors_are_one_line(runner, tmp_path):
    path, _ = _pickle_samples(tmp_path)
    res = invoke(runner, "pose-convert", path, "-o", tmp_path / "out")
    assert res.exit_code == 1 and "arbitrary code" in res.output and "--allow-pickle" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
    res = invoke(runner, "pose-convert", path, "--allow-pickle", "--layout", "openpose-137", "-o", tmp_path / "out")
    assert res.exit_code == 1 and "has 543 points; layout openpose-137 has 137" in res.output


def test_gx_folder_errors_name_file_and_line(tmp_path):
    ds = make_pose_dataset("synthetic-signs", split="val", val_size=3)
    from gesture_cli.data.pose import write_pose_folder

    out = write_pose_folder(ds, tmp_path / "gx")
    lines = (out / "index.jsonl").read_text().splitlines()
    (out / "index.jsonl").write_text(lines[0] + "\n{broken\n")
    with pytest.raises(DataError) as err:
        read_pose_folder(out)
    one_line(err, "index.jsonl line 2", "not valid JSON")
    row = json.loads(lines[0])
    (out / row["path"]).write_bytes(b"garbage")
    (out / "index.jsonl").write_text(lines[0] + "\n")
    with pytest.raises(DataError) as err:
        read_pose_folder(out)
    one_line(err, row["path"].split("/")[-1], "not a readable gx pose sample")


# ---- normalisation, subsampling, collate ------------------------------------------------------------
def _toy(t: int = 5, seed: int = 0) -> PoseSample:
    rng = np.random.default_rng(seed)
    kp = rng.normal(size=(t, 543, 3)).astype(np.float32) * 50 + 300
    kp[:, 11] = (400.0, 300.0, 0.0)  # left shoulder
    kp[:, 12] = (200.0, 300.0, 0.0)  # right shoulder: width 200, midpoint (300, 300)
    kp[2, 12] += (100.0, 0.0, 0.0)  # frame 2: narrower shoulders (width 100)
    mask = np.ones((t, 543), dtype=bool)
    mask[:, 501:522] = False
    kp[:, 501:522] = 1e6  # garbage where masked: must not affect anything
    return PoseSample(id="toy", keypoints=kp, mask=mask, fps=25.0, layout="mediapipe-holistic")


def test_masked_points_hold_nan_not_plausible_coordinates():
    s = _toy()
    assert np.isnan(s.keypoints[:, 501:522]).all()


def test_max_abs_normalisation_uses_valid_points_only():
    s = _toy()
    out = normalize_max_abs(s.keypoints, s.mask)
    assert np.nanmax(np.abs(out[s.mask])) == pytest.approx(1.0)
    assert np.isnan(out[~s.mask]).all()


def test_shoulder_normalisation_per_sequence_and_per_frame():
    s = _toy()
    seq = normalize_shoulders(s.keypoints, s.mask, layout=s.layout, per="sequence")
    frame = normalize_shoulders(s.keypoints, s.mask, layout=s.layout, per="frame")
    mid = (frame[:, 11] + frame[:, 12]) / 2
    np.testing.assert_allclose(mid[:, :2], 0.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(frame[:, 11, :2] - frame[:, 12, :2], axis=-1), 1.0, rtol=1e-6)
    # per sequence: one centre (mean midpoint x = (4 * 300 + 350) / 5 = 310) and one width ((4 * 200 + 100) / 5 = 180)
    np.testing.assert_allclose(seq[:, 11, 0], [(400 - 310) / 180] * 5, rtol=1e-5)
    assert np.isnan(seq[:, 501:522]).all()
    assert normalize_sample(s, "shoulders-frame").keypoints.shape == s.keypoints.shape
    with pytest.raises(UsageError):
        normalize_sample(s, "zscore")


def test_subsample_and_collate_pad_and_mask():
    a, b = _toy(5), _toy(9, seed=1)
    assert subsample_frames(b, max_frames=4).num_frames == 4
    assert subsample_frames(b, stride=2).num_frames == 5 and subsample_frames(b, stride=2).fps == pytest.approx(25 * 5 / 9)
    r = subsample_frames(b, max_frames=3, rng=np.random.default_rng(0))
    assert r.num_frames == 3
    sel = sk.select_parts("mediapipe-holistic", "body,hands,face-lite")
    batch = collate_pose([a, b], points=sel.indices, dims=2, normalize="shoulders", pad_multiple=4)
    kp, pm, fm = batch["keypoints"], batch["point_mask"], batch["frame_mask"]
    assert tuple(kp.shape) == (2, 12, sel.num_points, 2) and tuple(pm.shape) == (2, 12, sel.num_points)
    assert fm[0].tolist() == [True] * 5 + [False] * 7 and batch["lengths"].tolist() == [5, 9]
    assert not kp.isnan().any() and (kp[~pm] == 0).all()
    capped = collate_pose([a, b], max_frames=6)
    assert capped["keypoints"].shape[1] == 6 and capped["lengths"].tolist() == [5, 6]


# ---- synthetic-signs -----------------------------------------------------------------------------
def test_synthetic_signs_defaults_splits_and_grammar():
    from gesture_cli.data.synthetic_signs import VOCABULARY

    ds = make_pose_dataset("synthetic-signs")
    assert ds.split_counts() == {"train": 400, "val": 60, "test": 60}
    assert ds.layout == "mediapipe-holistic" and ds.dims == 3 and 16 <= len(VOCABULARY) <= 24
    frames = ds.frame_counts()
    assert frames.min() >= 25 and frames.max() <= 100 and 35 <= frames.mean() <= 70
    for s in ds:
        glosses = s.gloss.split()
        assert 2 <= len(glosses) <= 4 and set(glosses) <= set(VOCABULARY)
        assert s.text[0].isupper() and s.text.endswith(".") and s.fps == 25.0
        assert not s.mask[:, 25:33].any()  # legs out of frame
    from gesture_cli.data.synthetic_signs import translate

    assert translate(["YESTERDAY", "FRIEND", "SCHOOL", "GO"]) == "Yesterday my friend went to school."
    assert translate(["ME", "WATER", "DRINK", "NOT"]) == "I do not drink water."
    assert translate(["TOMORROW", "MOTHER", "HAPPY"]) == "Tomorrow my mother will be happy."
    assert translate(["YOU", "TIRED"]) == "You are tired."
    assert any((~s.mask[:, 501:543]).any() for s in ds)  # some hands drop out


def test_synthetic_signs_seeded_disjoint_and_prefix_stable():
    small = make_pose_dataset("synthetic-signs", split="train", train_size=4, seed=3)
    big = make_pose_dataset("synthetic-signs", split="train", train_size=8, seed=3)
    for a, b in zip(small, big, strict=False):  # big has 4 more
        assert nan_equal(a.keypoints, b.keypoints) and a.text == b.text
    val = make_pose_dataset("synthetic-signs", split="val", val_size=4, seed=3)
    assert not any(nan_equal(a.keypoints, b.keypoints) for a in small for b in val if a.keypoints.shape == b.keypoints.shape)
    other = make_pose_dataset("synthetic-signs", split="train", train_size=4, seed=4)
    assert not nan_equal(small[0].keypoints, other[0].keypoints)
    with pytest.raises(UsageError) as err:
        make_pose_dataset("synthetic-signs", train_sise=3)
    one_line(err, "did you mean 'train_size'")


def test_pose_spec_errors():
    with pytest.raises(UsageError) as err:
        make_pose_dataset("synthetic-sign")
    one_line(err, "did you mean 'synthetic-signs'")
    with pytest.raises(UsageError):
        make_pose_dataset("pose")
    with pytest.raises(DataError) as err:
        make_pose_dataset("pose:/nonexistent/x.pose")
    one_line(err, "no such file")


# ---- skeletons -----------------------------------------------------------------------------------
def _header_limbs(path: Path) -> dict[str, set[tuple[int, int]]]:
    from pose_format import Pose

    pose = Pose.read(path.read_bytes())
    return {c.name: {tuple(sorted(map(int, e))) for e in c.limbs} for c in pose.header.components}


def _norm(edges) -> set[tuple[int, int]]:
    return {tuple(sorted(e)) for e in edges}


@needs_real
def test_skeleton_edges_match_pose_format_headers():
    mp = _header_limbs(POSE_DIR / "autsl" / "signer0_sample1000.pose")
    assert _norm(sk.MP_POSE_EDGES) == mp["POSE_LANDMARKS"]
    assert _norm(sk.MP_HAND_EDGES) == mp["LEFT_HAND_LANDMARKS"] == mp["RIGHT_HAND_LANDMARKS"]
    assert _norm(sk.MP_FACE_EDGES) == mp["FACE_LANDMARKS"]  # FACEMESH_CONTOURS
    op = _header_limbs(POSE_DIR / "pose_format_tests" / "openpose.pose")
    assert _norm(sk.OP_HAND_EDGES) == op["hand_left_keypoints_2d"]
    assert _norm(sk.IBUG_FACE_EDGES) == op["face_keypoints_2d"]
    # BODY_25: OpenPose renders eye -> ear, pose-format's header draws nose -> ear; the rest agrees
    assert _norm(sk.OP_BODY25_EDGES) ^ op["pose_keypoints_2d"] == {(15, 17), (16, 18), (0, 17), (0, 18)}


@pytest.mark.parametrize("layout", sk.list_layouts())
def test_parts_selection_and_normalised_adjacency(layout):
    skel = sk.get_skeleton(layout)
    assert skel.num_points == sk.LAYOUT_SIZES[layout]
    assert all(0 <= a < skel.num_points and 0 <= b < skel.num_points for a, b in skel.edges)
    assert 20 <= len(skel.parts["face-lite"]) <= 30
    sel = sk.select_parts(layout, "body,hands,face-lite")
    assert sel.parts == ("body", "left-hand", "right-hand", "face-lite")
    assert sel.num_points == len(skel.parts["body"]) + 42 + len(skel.parts["face-lite"])
    assert sel.edges.max() < sel.num_points and len(sel.edges) > sel.num_points - 4  # near-connected: 4 parts linked
    a = sk.adjacency_matrix(sel.num_points, sel.edges) + np.eye(sel.num_points)
    d = a.sum(1)
    expected = a / np.sqrt(d[:, None] * d[None, :])
    np.testing.assert_allclose(sk.normalized_adjacency(sel.num_points, sel.edges), expected, rtol=1e-6)
    assert np.abs(np.linalg.eigvalsh(expected)).max() <= 1 + 1e-5
    with pytest.raises(UsageError) as err:
        sk.select_parts(layout, "body,hnads")
    one_line(err, "did you mean 'hands'")


def test_a_label_table_that_labels_nothing_is_named(tmp_path):
    """A labels.csv that is empty, has no name column, or names none of the files no longer leaves every sample
    silently without text; texts given explicitly that name no sample are an error."""
    import shutil

    from conftest import SHARED_REAL

    from gesture_cli.core.errors import GxWarning
    from gesture_cli.data.pose_readers import read_pose_path

    src = SHARED_REAL / "sign_pose" / "pose_format_tests" / "mediapipe.pose"
    if not src.is_file():
        pytest.skip("shared .pose sample not found")
    folder = tmp_path / "poses"
    folder.mkdir()
    for name in ("a", "b"):
        shutil.copy(src, folder / f"{name}.pose")
    for content, needle in (("", "labels.csv: not a label table"), ("foo,bar\n1,2\n", "labels.csv: not a label table"),
                            ("path,text\nghost.pose,hello\n", "labels.csv: names none of the 2 samples")):
        (folder / "labels.csv").write_text(content)
        with pytest.warns(GxWarning, match=needle):
            ds = make_pose_dataset(f"pose:{folder}")
        assert [s.text for s in ds.samples] == ["", ""]
    (folder / "labels.csv").write_text("path,text\na.pose,hello\n")  # one sample labelled: nothing to say
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", GxWarning)
        assert sorted(s.text for s in make_pose_dataset(f"pose:{folder}").samples) == ["", "hello"]
    (folder / "labels.csv").unlink()
    texts = tmp_path / "texts.csv"
    texts.write_text('path,text\n"a.pose,unterminated\nfoo\n')
    with pytest.raises(DataError, match=r"texts.csv: none of its rows names one of the 2 samples \(e.g. 'a'\)"):
        read_pose_path(folder, texts=texts)


def _openpose_folder(folder: Path, names: list[str]) -> Path:
    """One empty OpenPose frame per clip (a fully masked frame is still a 1-frame sample)."""
    folder.mkdir()
    for name in names:
        (folder / f"{name}_000000000000_keypoints.json").write_text('{"people": []}')
    return folder


def test_a_sample_listed_twice_with_different_labels_is_named_once(tmp_path):
    """A label table that lists a sample in two rows with different texts used to give it the first row's
    silently: the first row still wins, and one warning names the table, the count, the first sample and its
    rows. Repeated rows with equal labels (a lexicon's languages) and rows naming absent files stay silent."""
    import warnings

    from gesture_cli.core.errors import GxWarning
    from gesture_cli.data.pose_readers import read_pose_path

    folder = _openpose_folder(tmp_path / "clips", ["a", "b", "c"])
    labels = folder / "labels.csv"
    labels.write_text("path,text\na,hello\nb,one\na,hello\nb,two\n\nc,x\nc,y\nc,z\nghost,p\nghost,q\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        samples, _, _ = read_pose_path(folder)
    assert {s.id: s.text for s in samples} == {"a": "hello", "b": "one", "c": "x"}  # first row wins
    said = [str(w.message) for w in caught if issubclass(w.category, GxWarning)]
    assert said == [f"{labels}: 2 samples listed in several rows with different labels (e.g. 'b' in rows 3 and 5); "
                    "the first row is used (keep one row per sample, or give its rows the same labels)"]

    labels.write_text("path,text,spoken_language\na,hello,en\na,hello,fr\nb,one,en\nghost,p,en\nghost,q,fr\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error", GxWarning)
        samples, _, _ = read_pose_path(folder)
    assert {s.id: s.text for s in samples} == {"a": "hello", "b": "one", "c": ""}

    labels.write_text("path,text\nghost,p\nghost,q\n")  # nothing matches: only the existing warning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_pose_path(folder)
    said = [str(w.message) for w in caught if issubclass(w.category, GxWarning)]
    assert len(said) == 1 and "names none of the 3 samples" in said[0]

    labels.unlink()
    texts = tmp_path / "texts.tsv"
    texts.write_text("name\ttext\nc\tx\nb\tone\nc\ty\n")
    with pytest.warns(GxWarning, match=r"texts.tsv: 1 sample listed in several rows with different labels \(e.g. 'c' in rows 2 and 4\)"):
        samples, _, _ = read_pose_path(folder, texts=texts)
    assert {s.id: s.text for s in samples} == {"a": "", "b": "one", "c": "x"}


def test_label_table_records_rows_with_other_labels(tmp_path):
    """LabelTable.conflicts: [the row used, the later rows that differ] per key; AUTSL's header-less rows count from 1."""
    from gesture_cli.data.label_tables import read_label_table

    table = tmp_path / "index.csv"
    table.write_text("path,text,split\nx/a.pose,A,train\nx/a.pose,A,test\nx/a.pose,A,train\nx/b.pose,B,train\n")
    got = read_label_table(table)
    assert got["x/a"] == {"text": "A", "split": "train"} and got.conflicts == {"x/a": [2, 3], "a": [2, 3]}
    (tmp_path / "SignList_ClassId_TR_EN.csv").write_text("ClassId,TR,EN\n0,abla,sister\n1,acele,hurry\n")
    autsl = tmp_path / "labels.csv"
    autsl.write_text("signer0_sample1,0\nsigner0_sample2,1\nsigner0_sample1,1\n")
    got = read_label_table(autsl, class_lists=[tmp_path / "SignList_ClassId_TR_EN.csv"])
    assert got["signer0_sample1"] == {"text": "sister", "gloss": "abla"} and got.conflicts == {"signer0_sample1": [1, 3]}


def test_texts_on_a_gx_pose_folder_warns_of_conflicting_rows_and_refuses_a_table_naming_none(tmp_path):
    """`pose:GXFOLDER --dataset-opt texts=TABLE` joined the table in pose.py without the checks read_pose_path has:
    a table naming none of the samples labelled nothing silently, and conflicting rows were not said."""
    import warnings

    from gesture_cli.core.errors import GxWarning
    from gesture_cli.data.pose import make_pose_dataset, write_pose_folder

    _openpose_folder(tmp_path / "clips", ["a", "b"])
    gx = write_pose_folder(make_pose_dataset(f"pose:{tmp_path / 'clips'}", split=None), tmp_path / "gx")
    texts = tmp_path / "texts.csv"
    texts.write_text("name,text\na,hello\nb,one\nb,two\n")
    with pytest.warns(GxWarning, match=r"texts.csv: 1 sample listed in several rows with different labels \(e.g. 'b' in rows 3 and 4\)"):
        ds = make_pose_dataset(f"pose:{gx}", split=None, texts=str(texts))
    assert sorted((s.id, s.text) for s in ds.samples) == [("a", "hello"), ("b", "one")]
    texts.write_text("name,text\na,hello\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error", GxWarning)
        ds = make_pose_dataset(f"pose:{gx}", split=None, texts=str(texts))
    assert sorted((s.id, s.text) for s in ds.samples) == [("a", "hello"), ("b", "")]
    texts.write_text("name,text\nghost,p\n")
    with pytest.raises(DataError, match=r"texts.csv: none of its rows names one of the 2 samples"):
        make_pose_dataset(f"pose:{gx}", split=None, texts=str(texts))
