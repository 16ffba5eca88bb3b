"""`gx pose-extract`: real signing videos -> .pose files equal to pose-format's load_holistic, a training-ready
dataset, resume, per-video errors, masked no-person frames. Needs the holistic extra (CI installs it)."""

from __future__ import annotations

import csv
import itertools
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SHARED_REAL, invoke, one_line_error

AUTSL = Path("sign_pose/autsl/signer0_sample1000_color.mp4")
PF_VIDEO = Path("video/pose_format_test_video.mp4")
FRAMES = 10  # frames per real video in these tests: Holistic runs ~20 frames/s on one core
NOISE = ("W0000", "I0000", "INFO: Created", "WARNING: All log")  # MediaPipe's C++ log lines on stderr


def _anchor(video: Path, *, max_frames: int, fps: float | None = None, **config):
    """pose-format's own path: video_to_pose's reader + load_holistic in a fresh graph (one video per process there)."""
    from pose_format.utils.holistic import load_holistic
    from simple_video_utils.frames import read_frames_exact
    from simple_video_utils.metadata import video_metadata

    meta = video_metadata(str(video))
    frames = list(itertools.islice(read_frames_exact(str(video), fps=fps), max_frames))
    holistic = {"static_image_mode": False, "model_complexity": 1, "refine_face_landmarks": False, "min_detection_confidence": 0.5,
                "min_tracking_confidence": 0.5, **config}
    return load_holistic(frames, fps=fps or meta.fps, width=meta.width, height=meta.height, additional_holistic_config=holistic, reuse=False)


def _read_pose(path: Path):
    from pose_format import Pose

    return Pose.read(path.read_bytes())


def _no_temporaries(out: Path) -> None:
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")], list(out.rglob("*"))


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """Both real videos listed in a table with texts and splits, extracted by two worker processes."""
    from typer.testing import CliRunner

    if not SHARED_REAL.is_dir():
        pytest.skip(f"shared real data not found at {SHARED_REAL}")
    root = tmp_path_factory.mktemp("extract")
    table = root / "videos.csv"
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "text", "split"])
        w.writerow([str(SHARED_REAL / AUTSL), "I would like to ask", "train"])
        w.writerow([str(SHARED_REAL / PF_VIDEO), "hello there", "val"])
    out = root / "poses"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GX_HOME", str(tmp_path_factory.mktemp("gx_home_extract")))
        res = invoke(CliRunner(), "pose-extract", table, "-o", out, "--max-frames", FRAMES, "--workers", "2")
    assert res.exit_code == 0, res.output
    return {"out": out, "table": table, "output": res.output}


def test_real_videos_equal_pose_formats_load_holistic(extracted):
    """Points and confidences of each .pose equal load_holistic on the same frames (float32 rounding), header included."""
    for video, sid in ((AUTSL, "signer0_sample1000_color"), (PF_VIDEO, "pose_format_test_video")):
        ours = _read_pose(extracted["out"] / f"{sid}.pose")
        ref = _anchor(SHARED_REAL / video, max_frames=FRAMES)
        assert [c.name for c in ours.header.components] == [c.name for c in ref.header.components] == [
            "POSE_LANDMARKS", "FACE_LANDMARKS", "LEFT_HAND_LANDMARKS", "RIGHT_HAND_LANDMARKS", "POSE_WORLD_LANDMARKS"]
        assert ours.header.total_points() == 576
        assert (ours.header.dimensions.width, ours.header.dimensions.height) == (ref.header.dimensions.width, ref.header.dimensions.height)
        assert ours.body.fps == pytest.approx(ref.body.fps)
        a, b = np.ma.getdata(ours.body.data), np.asarray(np.ma.getdata(ref.body.data), dtype=np.float32)
        assert a.shape == b.shape == (FRAMES, 1, 576, 3)
        assert np.abs(a - b).max() <= 1e-4 * max(1.0, np.abs(b).max())  # float32 storage of float64 pixels
        assert np.array_equal(np.asarray(ours.body.confidence), np.asarray(ref.body.confidence, dtype=np.float32))
    autsl = _read_pose(extracted["out"] / "signer0_sample1000_color.pose")
    assert (autsl.header.dimensions.width, autsl.header.dimensions.height, autsl.body.fps) == (512, 512, 30.0)
    assert (np.asarray(autsl.body.confidence)[:, 0, :33] > 0).any(axis=1).all()  # the body is found in every frame


@pytest.mark.slow
def test_whole_real_clips_and_subsampled_ones_equal_load_holistic(runner, real_data, tmp_path):
    """Whole clips (tracking over every frame) and --fps subsampling, two workers: still equal to the anchor."""
    out = tmp_path / "out"
    res = invoke(runner, "pose-extract", real_data / AUTSL, real_data / PF_VIDEO, "-o", out, "--workers", "2")
    assert res.exit_code == 0, res.output
    res = invoke(runner, "pose-extract", real_data / AUTSL, "-o", tmp_path / "fps15", "--fps", "15")
    assert res.exit_code == 0, res.output
    for path, video, fps, frames in ((out / "signer0_sample1000_color.pose", AUTSL, None, 43), (out / "pose_format_test_video.pose", PF_VIDEO, None, 58),
                                     (tmp_path / "fps15" / "signer0_sample1000_color.pose", AUTSL, 15.0, None)):
        ours, ref = _read_pose(path), _anchor(real_data / video, max_frames=10_000, fps=fps)
        a, b = np.ma.getdata(ours.body.data), np.asarray(np.ma.getdata(ref.body.data), dtype=np.float32)
        assert a.shape == b.shape and (frames is None or a.shape[0] == frames)
        assert np.abs(a - b).max() <= 1e-4 * max(1.0, np.abs(b).max())
        assert np.array_equal(np.asarray(ours.body.confidence), np.asarray(ref.body.confidence, dtype=np.float32))
        assert ours.body.fps == pytest.approx(fps or ref.body.fps)
    detected = (np.asarray(_read_pose(out / "signer0_sample1000_color.pose").body.confidence)[:, 0] > 0)
    # the measurement on this clip: body 43/43, right hand 43, left hand 36, face 43
    assert [int(detected[:, a:b].any(axis=1).sum()) for a, b in ((0, 33), (522, 543), (501, 522), (33, 501))] == [43, 43, 36, 43]


def test_summary_table_lists_frames_detection_rates_and_time(extracted):
    out = extracted["output"]
    assert "2 extracted, 0 already done, 0 failed; 2 worker(s)" in out
    row = next(line for line in out.splitlines() if "signer0_sample1000_color" in line)
    cells = [c.strip() for c in row.strip("│┃ ").split("│")]
    assert cells[1:4] == ["done", str(FRAMES), "100%"]  # status, frames, body found in every frame
    assert all(c.endswith("%") for c in cells[3:7]) and float(cells[7]) > 0
    assert f"{2 * FRAMES} frames extracted in" in out and "frames/s" in out


def test_the_output_is_a_pose_dataset_with_texts(extracted):
    from gesture_cli.data.pose import make_pose_dataset

    rows = list(csv.DictReader(open(extracted["out"] / "labels.csv")))
    assert [(r["path"], r["text"], r["split"]) for r in rows] == [
        ("pose_format_test_video.pose", "hello there", "val"), ("signer0_sample1000_color.pose", "I would like to ask", "train")]
    ds = make_pose_dataset(f"pose:{extracted['out']}")
    assert ds.layout == "mediapipe-holistic" and len(ds) == 2 and ds.skipped == {}  # the hidden resume files are not samples
    s = {x.id: x for x in ds}["signer0_sample1000_color"]
    assert (s.text, s.split, s.num_frames, s.num_points) == ("I would like to ask", "train", FRAMES, 543)
    train = make_pose_dataset(f"pose:{extracted['out']}", split="train")
    assert [x.id for x in train] == ["signer0_sample1000_color"]


@pytest.mark.slow
def test_pose_pretrain_and_finetune_train_on_the_extracted_folder(extracted, runner, tmp_path):
    res = invoke(runner, "pose-pretrain", "--dataset", f"pose:{extracted['out']}", "--text-model", "tiny-umt5", "--encoder-opt", "d_model=32",
                 "--encoder-opt", "n_layers=1", "--encoder-opt", "n_heads=2", "--encoder-opt", "gcn_dims=16", "--keypoints", "body,hands",
                 "--embed-dim", "16", "--max-steps", "2", "--batch-size", "2", "--max-frames", "8", "--precision", "fp32", "--device", "cpu",
                 "-r", tmp_path / "run")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run" / "pose" / "pretrain" / "encoder.safetensors").is_file()
    res = invoke(runner, "pose-finetune", "--dataset", f"pose:{extracted['out']}", "--bridge", "direct", "--max-steps", "2", "--batch-size", "2",
                 "--max-frames", "8", "--max-new-tokens", "4", "--precision", "fp32", "--device", "cpu", "-r", tmp_path / "run")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run" / "pose" / "finetune" / "translator.json").is_file()


def test_a_rerun_skips_finished_videos_by_content_key(extracted, runner, tmp_path):
    out = tmp_path / "poses"
    shutil.copytree(extracted["out"], out)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.pose")}
    res = invoke(runner, "pose-extract", extracted["table"], "-o", out, "--max-frames", FRAMES, "--workers", "1")
    assert res.exit_code == 0, res.output
    assert "2 video(s) already extracted by an earlier run: skipped" in res.output and "0 extracted, 2 already done" in res.output
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.pose")} == before
    # other settings are another key: the videos are extracted again
    res = invoke(runner, "pose-extract", SHARED_REAL / PF_VIDEO, "-o", out, "--max-frames", "3", "--workers", "1")
    assert res.exit_code == 0 and "1 extracted, 0 already done" in res.output, res.output
    assert _read_pose(out / "pose_format_test_video.pose").body.data.shape[0] == 3


def test_an_interrupted_run_leaves_no_half_file_and_the_rerun_continues(runner, real_data, tmp_path, monkeypatch):
    from gesture_cli.data import pose_extract

    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a", "b", "c"):
        shutil.copy(real_data / AUTSL, videos / f"{name}.mp4")
    out = tmp_path / "poses"
    real = pose_extract.extract_video
    calls = []

    def killed_on_the_second(video, out_path, cfg, **kw):
        calls.append(video)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(video, out_path, cfg, **kw)

    monkeypatch.setattr(pose_extract, "extract_video", killed_on_the_second)
    res = invoke(runner, "pose-extract", videos, "-o", out, "--max-frames", "4", "--workers", "1")
    assert res.exit_code == 130, res.output
    assert sorted(p.name for p in out.glob("*.pose")) == ["a.pose"]
    (out / "sub").mkdir()
    stale = out / "sub" / ".x.pose.k3j2h1.tmp"  # what a SIGKILL in the middle of a write leaves
    stale.write_bytes(b"half")
    monkeypatch.setattr(pose_extract, "extract_video", real)
    res = invoke(runner, "pose-extract", videos, "-o", out, "--max-frames", "4", "--workers", "1")
    assert res.exit_code == 0, res.output
    assert "1 video(s) already extracted" in res.output and "2 extracted, 1 already done" in res.output
    assert sorted(p.name for p in out.glob("*.pose")) == ["a.pose", "b.pose", "c.pose"]
    assert not stale.exists()
    _no_temporaries(out)
    records = [json.loads(line) for line in (out / ".gx-extract.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == ["a", "b", "c"] and len({r["sha256"] for r in records}) == 1


@pytest.mark.slow
def test_a_sigkilled_run_leaves_only_whole_files_and_the_rerun_continues(real_data, tmp_path):
    """A real kill -9 of `gx pose-extract` in the middle of a folder: every .pose left opens, the rerun does the rest."""
    import os
    import signal
    import subprocess
    import time

    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(4):
        shutil.copy(real_data / PF_VIDEO, videos / f"v{i}.mp4")
    out = tmp_path / "poses"
    cmd = [sys.executable, "-m", "gesture_cli", "pose-extract", str(videos), "-o", str(out), "--workers", "1", "--max-frames", "12"]
    env = {**os.environ, "GX_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    records = out / ".gx-extract.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (records.is_file() and records.read_text().strip()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    left = sorted(out.glob("*.pose"))
    assert left and len(left) < 4, "the kill came too late to test anything"
    for p in left:
        assert _read_pose(p).body.data.shape[0] == 12  # whole files only
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    finished = len(records.read_text().splitlines())
    assert sorted(p.name for p in out.glob("*.pose")) == [f"v{i}.pose" for i in range(4)]
    assert finished == 4 and "already extracted by an earlier run" in done.stdout
    _no_temporaries(out)


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_stopping_a_pooled_run_leaves_no_worker_processes(real_data, tmp_path, sig):
    """kill (SIGTERM) ends the run like Ctrl-C; even kill -9 of gx takes its workers and queue manager down with it."""
    import os
    import signal
    import subprocess
    import time

    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(4):
        shutil.copy(real_data / PF_VIDEO, videos / f"v{i}.mp4")
    cmd = [sys.executable, "-m", "gesture_cli", "pose-extract", str(videos), "-o", str(tmp_path / "out"), "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "GX_HOME": str(tmp_path / "home")})

    def group() -> list[str]:
        ps = subprocess.run(["ps", "-eo", "pid=,pgid="], capture_output=True, text=True).stdout.split("\n")
        return [line.split()[0] for line in ps if line.split() and line.split()[1] == str(proc.pid)]

    deadline = time.monotonic() + 60
    while len(group()) < 4 and time.monotonic() < deadline:  # gx, the queue manager and two workers are up
        time.sleep(0.2)
    assert len(group()) >= 4
    os.kill(proc.pid, getattr(signal, sig))
    out, _ = proc.communicate(timeout=60)
    deadline = time.monotonic() + 20
    while group() and time.monotonic() < deadline:
        time.sleep(0.2)
    left = group()
    for pid in left:  # never leave processes behind, even when the assertion below fails
        os.kill(int(pid), signal.SIGKILL)
    assert left == []
    if sig == "SIGTERM":
        assert proc.returncode == 143 and "Terminated (SIGTERM)." in out  # 128 + 15, like every gx command


def _blank_video(path: Path, frames: int = 5) -> Path:
    import cv2

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 96))
    for _ in range(frames):
        w.write(np.full((96, 96, 3), 200, np.uint8))
    w.release()
    return path


def test_frames_without_a_person_are_masked(runner, tmp_path):
    from gesture_cli.data.pose_format_files import read_pose_file

    video = _blank_video(tmp_path / "empty room.mp4")
    res = invoke(runner, "pose-extract", video, "-o", tmp_path / "out", "--workers", "1")
    assert res.exit_code == 0, res.output
    pose = _read_pose(tmp_path / "out" / "empty room.pose")
    assert pose.body.data.shape[:3] == (5, 1, 576) and not np.asarray(pose.body.confidence).any()
    sample = read_pose_file(tmp_path / "out" / "empty room.pose")
    assert not sample.mask.any() and np.isnan(sample.keypoints).all()
    row = next(line for line in res.output.splitlines() if "empty room" in line)
    assert row.count("0%") == 4


def _bad_inputs(tmp: Path, real: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, expected reason): every kind of bad video the issue lists."""
    tmp.mkdir(parents=True, exist_ok=True)
    text = tmp / "notes.mp4"
    text.write_text("not a video\n" * 20)
    empty = tmp / "empty.mp4"
    empty.write_bytes(b"")
    no_frames = tmp / "header-only.mp4"  # the moov atom (58 frames announced) without the media data
    no_frames.write_bytes((real / PF_VIDEO).read_bytes()[:1547])
    unreadable = tmp / "truncated.mp4"  # a download cut short: the index at the end of the file is missing
    unreadable.write_bytes((real / AUTSL).read_bytes()[:100_000])
    uni = tmp / "手話 vidéo" / "ça.mp4"
    uni.parent.mkdir()
    uni.write_bytes(b"")
    return {"text": (text, "not a video FFmpeg can read"), "empty": (empty, "empty file (0 bytes)"),
            "no-frames": (no_frames, "no frames could be decoded"), "unreadable": (unreadable, "not a video FFmpeg can read"),
            "unicode": (uni, "empty file (0 bytes)")}


@pytest.mark.parametrize("case", ["text", "empty", "no-frames", "unreadable", "unicode"])
def test_a_bad_video_is_one_line_naming_it_and_writes_nothing(runner, real_data, tmp_path, case):
    video, reason = _bad_inputs(tmp_path / "in", real_data)[case]
    out = tmp_path / "out"
    res = invoke(runner, "pose-extract", video, "-o", out)
    one_line_error(res, 1, str(video), reason)
    assert not out.exists()  # no .pose, no half file, no empty folder


def test_one_failing_video_does_not_stop_the_others_and_exits_1(runner, real_data, tmp_path):
    bad = _bad_inputs(tmp_path / "in", real_data)
    good = tmp_path / "in" / "手話 vidéo" / "ok ç.mp4"  # a unicode path that works
    shutil.copy(real_data / AUTSL, good)
    out = tmp_path / "out"
    res = invoke(runner, "pose-extract", tmp_path / "in", "-o", out, "--max-frames", "3", "--workers", "2")
    err = one_line_error(res, 1, "5 of 6 videos failed (listed above); first: ")
    assert err
    listed = [line for line in res.output.splitlines() if line.startswith("failed ")]
    assert len(listed) == 5 and all(any(str(p) in line and why in line for line in listed) for p, why in bad.values())
    assert [p.relative_to(out).as_posix() for p in out.rglob("*.pose")] == ["手話 vidéo/ok ç.pose"]
    assert _read_pose(out / "手話 vidéo" / "ok ç.pose").body.data.shape[0] == 3
    _no_temporaries(out)


def test_a_table_row_naming_a_missing_video(runner, real_data, tmp_path):
    table = tmp_path / "labels.tsv"
    table.write_text(f"name\ttext\n{real_data / AUTSL}\tI would like to ask\nclips/gone.mp4\tnever recorded\n")
    out = tmp_path / "out"
    res = invoke(runner, "pose-extract", table, "-o", out, "--max-frames", "3")
    one_line_error(res, 1, f"{table} row 3: video 'clips/gone.mp4' not found", "(1 other video(s) extracted)")
    assert sorted(p.name for p in out.iterdir()) == [".gx-extract.jsonl", "labels.csv", "signer0_sample1000_color.pose"]
    assert "gone" not in (out / "labels.csv").read_text()


def test_a_folder_and_a_label_table_kept_elsewhere_make_one_dataset(runner, real_data, tmp_path):
    """The table names videos by name only; they are found among the folder's videos and take the table's texts."""
    videos = tmp_path / "videos" / "batch1"
    videos.mkdir(parents=True)
    for name in ("a", "b"):
        shutil.copy(real_data / AUTSL, videos / f"{name}.mp4")
    table = tmp_path / "meta" / "texts.csv"
    table.parent.mkdir()
    table.write_text("name,text,split\na,hello,train\nb,good morning,val\nc,never filmed,test\n")
    out = tmp_path / "out"
    res = invoke(runner, "pose-extract", tmp_path / "videos", table, "-o", out, "--max-frames", "2", "--workers", "1")
    one_line_error(res, 1, f"{table} row 4: video 'c' not found", "and by name in the folder inputs", "(2 other video(s) extracted)")
    assert "2 extracted, 0 already done, 1 failed" in res.output  # each video once, not once per input
    assert sorted(p.name for p in out.glob("*.pose")) == ["a.pose", "b.pose"]
    assert list(csv.reader(open(out / "labels.csv")))[1:] == [["a.pose", "hello", "", "train", ""], ["b.pose", "good morning", "", "val", ""]]


def test_an_autsl_label_table_names_its_color_videos_and_class_texts(runner, real_data, tmp_path):
    """AUTSL's header-less name,class_id table: `<name>_color.mp4` beside it, texts from SignList_ClassId_TR_EN.csv."""
    out = tmp_path / "out"
    res = invoke(runner, "pose-extract", real_data / "sign_pose/autsl/labels.csv", "-o", out, "--max-frames", "2", "--components", "body,hands",
                 "--fps", "15")
    assert res.exit_code == 0, res.output
    pose = _read_pose(out / "signer0_sample1000.pose")
    assert [c.name for c in pose.header.components] == ["POSE_LANDMARKS", "LEFT_HAND_LANDMARKS", "RIGHT_HAND_LANDMARKS"]
    assert pose.body.data.shape[:3] == (2, 1, 75) and pose.body.fps == 15
    assert list(csv.reader(open(out / "labels.csv"))) == [["path", "text", "gloss", "split", "signer"],
                                                         ["signer0_sample1000.pose", "request", "rica_etmek", "", ""]]


def test_options_and_install_errors_are_one_line(runner, real_data, tmp_path, monkeypatch):
    video = real_data / AUTSL
    res = invoke(runner, "pose-extract", video, "-o", tmp_path / "o", "--model-complexity", "2")
    one_line_error(res, 1, "--model-complexity 2 needs pose_landmark_heavy.tflite", "available: --model-complexity 1")
    res = invoke(runner, "pose-extract", video, "-o", tmp_path / "o", "--components", "body,hnads")
    one_line_error(res, 2, "unknown component 'hnads'", "did you mean 'hands'")
    res = invoke(runner, "pose-extract", tmp_path / "nope.mp4", "-o", tmp_path / "o")
    one_line_error(res, 2, "no such file or folder")
    res = invoke(runner, "pose-extract", video, "-o", tmp_path / "o", "--min-detection-confidence", "1.5")
    one_line_error(res, 2, "--min-detection-confidence must be in [0, 1]")
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # as if the holistic extra were not installed
    res = invoke(runner, "pose-extract", video, "-o", tmp_path / "o")
    one_line_error(res, 1, "needs MediaPipe Holistic, which is not installed: pip install 'gesture-cli[holistic]'")
    assert not (tmp_path / "o").exists()


def test_workers_0_is_the_number_of_cores_and_a_negative_count_a_usage_error(runner, real_data, tmp_path, monkeypatch):
    res = invoke(runner, "pose-extract", "--help")
    assert "0 means the number of cores" in " ".join(res.output.split()), res.output
    video = real_data / PF_VIDEO
    for workers in ("-1", "-8"):  # refused before the inputs are read or MediaPipe is looked for
        res = invoke(runner, "pose-extract", tmp_path / "nope.mp4", "-o", tmp_path / "o", "--workers", workers)
        one_line_error(res, 2, f"--workers must be 0 (the number of cores) or more; got {workers}")
    monkeypatch.setattr("gesture_cli.tasks.pose_extract.default_workers", lambda: 1)
    res = invoke(runner, "pose-extract", video, "-o", tmp_path / "o", "--workers", "0", "--max-frames", "2")
    assert res.exit_code == 0 and "1 worker(s)" in res.output, res.output


def test_the_input_table_in_outdir_is_never_rewritten(runner, real_data, tmp_path):
    """`pose-extract DIR/labels.csv -o DIR` would rewrite the user's table as its labels.csv (and then the rerun would
    read its own .pose rows as videos): refused before any video is read, the table untouched."""
    shutil.copy(real_data / AUTSL, tmp_path / "clip1.mp4")
    table = tmp_path / "labels.csv"
    table.write_text("path,text,split,signer\nclip1.mp4,hello world,train,s1\n")
    for _ in range(2):
        err = one_line_error(invoke(runner, "pose-extract", table, "-o", tmp_path, "--max-frames", "2", "--workers", "1"), 2,
                             f"-o {tmp_path} holds the input table {table}", "choose another -o")
        assert "--force" not in err
        assert table.read_text() == "path,text,split,signer\nclip1.mp4,hello world,train,s1\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["clip1.mp4", "labels.csv"]
    # a labels.csv gx did not write is not rewritten either, input or not
    err = one_line_error(invoke(runner, "pose-extract", tmp_path, "-o", tmp_path, "--max-frames", "2", "--workers", "1"), 2,
                         f"{table} is not a labels.csv that pose-extract wrote", "move it or choose another -o")
    assert table.read_text() == "path,text,split,signer\nclip1.mp4,hello world,train,s1\n"


def test_a_table_beside_its_videos_reruns_into_the_same_folder(runner, real_data, tmp_path):
    """The rerun promise with a table named otherwise in OUTDIR: gx's labels.csv is written beside it, and the rerun skips."""
    shutil.copy(real_data / AUTSL, tmp_path / "clip1.mp4")
    table = tmp_path / "texts.csv"
    table.write_text("path,text,split,signer\nclip1.mp4,hello world,train,s1\n")
    args = ("pose-extract", table, "-o", tmp_path, "--max-frames", "2", "--workers", "1")
    res = invoke(runner, *args)
    assert res.exit_code == 0, res.output
    res = invoke(runner, *args)
    assert res.exit_code == 0 and "1 video(s) already extracted by an earlier run: skipped" in res.output, res.output
    assert table.read_text() == "path,text,split,signer\nclip1.mp4,hello world,train,s1\n"
    assert list(csv.reader(open(tmp_path / "labels.csv")))[1:] == [["clip1.pose", "hello world", "", "train", "s1"]]
