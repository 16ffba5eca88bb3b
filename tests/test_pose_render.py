"""`gx pose-render`: real .pose files and their source video to MP4 / PNG, masked points left out, clean errors."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import invoke

AUTSL = "sign_pose/autsl/signer0_sample1000.pose"  # 43 frames, 30 fps, 512x512 frame
AUTSL_VIDEO = "sign_pose/autsl/signer0_sample1000_color.mp4"  # the recording it was extracted from: 43 frames


def _decode(path):
    """(RGB frames [N, H, W, 3] decoded by OpenCV, frame count decoded by PyAV, fps)."""
    import av
    import cv2

    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    with av.open(str(path)) as container:
        n_av = sum(1 for _ in container.decode(video=0))
    return np.stack(frames), n_av, fps


def _one_error_line(res, needle: str) -> None:
    assert "Traceback" not in res.output and needle in res.output, res.output
    assert len([ln for ln in res.output.splitlines() if ln.startswith("Error:")]) == 1, res.output


def test_real_pose_file_to_mp4_and_contact_sheet(real_data, runner, tmp_path):
    import cv2

    res = invoke(runner, "pose-render", real_data / AUTSL, "-o", tmp_path / "autsl.mp4", "--png", tmp_path / "autsl.png", "--size", "320")
    assert res.exit_code == 0, res.output
    assert "43 frames at 30 fps" in res.output and "recorded frame 512x512" in res.output
    frames, n_av, fps = _decode(tmp_path / "autsl.mp4")
    assert frames.shape == (43, 320, 320, 3) and n_av == 43 and abs(fps - 30) < 0.01
    lit = (frames.max(-1) > 80).mean(axis=(1, 2))  # the skeleton over black: a small, non-empty share of each frame
    assert (lit > 0.002).all() and (lit < 0.3).all(), lit
    assert not (frames[0] == frames[-1]).all()  # the signer moves
    sheet = cv2.imread(str(tmp_path / "autsl.png"))
    assert sheet is not None and sheet.shape[1] > 600 and sheet.shape[0] > 300
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # atomic writes leave no temporary file


def test_drawn_over_the_source_video(real_data, runner, tmp_path):
    from gesture_cli.data.video import read_video

    out = tmp_path / "overlay.mp4"
    res = invoke(runner, "pose-render", real_data / AUTSL, "--video", real_data / AUTSL_VIDEO, "-o", out)
    assert res.exit_code == 0, res.output
    assert "warning" not in res.output  # same recording: frame counts, frame size and fps agree
    frames, n_av, _ = _decode(out)
    assert frames.shape == (43, 512, 512, 3) and n_av == 43
    source = np.stack([f for _, f in read_video(real_data / AUTSL_VIDEO)])
    diff = np.abs(frames.astype(int) - source.astype(int)).max(-1)
    assert (diff < 40).mean() > 0.85  # mostly the video itself (both went through a lossy codec) ...
    assert (diff > 100).mean() > 0.003  # ... with the skeleton drawn over it


def _line_sample(*, wrist_seen: bool):
    """openpose-137 on a 200x100 frame: right shoulder (50, 50), elbow (100, 50), wrist (150, 50); nothing else seen."""
    from gesture_cli.data.pose import PoseSample

    kp = np.zeros((3, 137, 2), dtype=np.float32)
    mask = np.zeros((3, 137), dtype=bool)
    for i, x in ((2, 50), (3, 100), (4, 150)):
        kp[:, i] = (x, 50)
        mask[:, i] = True
    mask[:, 4] = wrist_seen
    return PoseSample(id="wrist-seen" if wrist_seen else "wrist-masked", keypoints=kp, mask=mask, fps=10.0, layout="openpose-137",
                      meta={"format": "pose", "width": 200, "height": 100})


def test_masked_points_and_their_edges_are_not_drawn(runner, tmp_path):
    from gesture_cli.data.pose import PoseDataset, write_pose_folder
    from gesture_cli.viz.pose_render import make_canvas, make_drawing, render_frames

    for seen in (True, False):
        sample = _line_sample(wrist_seen=seen)
        drawing = make_drawing(sample.layout)
        canvas = make_canvas(sample, drawing, size=200)
        assert (canvas.width, canvas.height, canvas.scale) == (200, 100, (1.0, 1.0))
        (frame, *_) = list(render_frames(sample, drawing, canvas))
        grey = frame.max(-1)
        assert grey[50, 75] > 150 and grey[50, 100] > 150  # shoulder-elbow edge and the elbow
        if seen:
            assert grey[50, 125] > 150 and grey[50, 150] > 150
        else:  # no wrist dot, no elbow-wrist edge: not a pixel right of the elbow's dot
            assert grey[:, 106:].max() == 0
        assert grey[:40].max() == 0 and grey[60:].max() == 0  # nothing at a masked point's would-be (0, 0) either

    # the same through the CLI, from a gx pose folder with --sample-id
    ds = PoseDataset(spec="test", split=None, layout="openpose-137", samples=[_line_sample(wrist_seen=True), _line_sample(wrist_seen=False)])
    folder = write_pose_folder(ds, tmp_path / "gx")
    res = invoke(runner, "pose-render", folder, "--sample-id", "wrist-masked", "-o", tmp_path / "m.mp4", "--size", "200")
    assert res.exit_code == 0, res.output
    frames, n_av, fps = _decode(tmp_path / "m.mp4")
    assert frames.shape == (3, 100, 200, 3) and n_av == 3 and abs(fps - 10) < 0.01
    grey = frames.max(-1)
    assert grey[:, 50, 75].min() > 120 and grey[:, 40:61, 112:].max() < 40  # codec noise only where the wrist would be


def test_openpose_json_folder_and_synthetic_signs(real_data, runner, tmp_path):
    import cv2

    res = invoke(runner, "pose-render", real_data / "sign_pose/how2sign_openpose_json", "-s", "_fZbAxSSbX4_0-5-rgb_front", "--png", tmp_path)
    assert res.exit_code == 0, res.output
    assert cv2.imread(str(tmp_path / "test__fZbAxSSbX4_0-5-rgb_front.png")) is not None
    res = invoke(runner, "pose-render", "synthetic-signs", "--split", "test", "-s", "test-00001", "-o", tmp_path / "s.mp4", "--keypoints", "body,hands", "--size", "160")
    assert res.exit_code == 0, res.output
    from gesture_cli.data.pose import make_pose_dataset

    expected = next(s for s in make_pose_dataset("synthetic-signs", split="test").samples if s.id == "test-00001").num_frames
    frames, n_av, fps = _decode(tmp_path / "s.mp4")
    assert len(frames) == n_av == expected and max(frames.shape[1:3]) == 160 and abs(fps - 25) < 0.01


def test_bad_input_is_a_one_line_error(real_data, runner, tmp_path):
    pose, video = real_data / AUTSL, real_data / AUTSL_VIDEO
    other = real_data / "sign_pose/pose_format_tests/mediapipe.pose"  # 170 frames at 24 fps: not that video's recording
    truncated = tmp_path / "cut.pose"
    truncated.write_bytes(pose.read_bytes()[:5000])
    (tmp_path / "broken.mkv").write_bytes(b"not a video at all")
    for args, code, needle in (
        ([tmp_path / "missing.pose"], 2, "no such file or folder"),
        (["pose:" + str(tmp_path / "missing.pose")], 1, "no such file"),
        ([truncated, "--png", tmp_path / "x.png"], 1, "truncated"),
        ([other, "--video", video, "-o", tmp_path / "x.mp4"], 1, "43 frames (30 fps), the pose 'mediapipe' 170 frames"),
        ([pose, "--video", tmp_path / "broken.mkv", "-o", tmp_path / "x.mp4"], 1, "not a readable video"),
        ([pose, "--video", tmp_path / "nothing.mp4", "-o", tmp_path / "x.mp4"], 1, "no such video file"),
        ([pose, "-o", tmp_path / "x.avi"], 2, "must end in .mp4"),
        ([pose, "-o", tmp_path / "x.mp4", "--fps", "0"], 2, "--fps must be a positive number of frames per second; got 0"),
        ([pose, "-o", tmp_path / "x.mp4", "--fps", "-5"], 2, "got -5"),
        ([pose, "--keypoints", "body,hnads", "--png", tmp_path / "x.png"], 2, "did you mean 'hands'"),
        ([real_data / "sign_pose/how2sign_openpose_json", "--png", tmp_path], 2, "holds 3 samples; pass --sample-id"),
        ([real_data / "sign_pose/how2sign_openpose_json", "-s", "_fZbAxSSbX4_0-5-rgb_frnt", "--png", tmp_path], 2, "did you mean"),
    ):
        res = invoke(runner, "pose-render", *args)
        assert res.exit_code == code, (args, res.output)
        _one_error_line(res, needle)
    assert not list(tmp_path.glob("*.mp4")) and not list(tmp_path.glob("x.png"))  # failures leave no output behind

    # a mismatch the user accepts: the frames both have, and a warning that says so
    res = invoke(runner, "pose-render", other, "--video", video, "--allow-mismatch", "-o", tmp_path / "ok.mp4")
    assert res.exit_code == 0, res.output
    assert "warning:" in res.output and "drawing the 43 frames both have" in res.output
    frames, n_av, fps = _decode(tmp_path / "ok.mp4")
    assert len(frames) == n_av == 43 and abs(fps - 24) < 0.01


@pytest.mark.parametrize("k, n, expected", [(8, 43, [0, 6, 12, 18, 24, 30, 36, 42]), (8, 3, [0, 1, 2]), (1, 10, [0])])
def test_sheet_frames_are_spread_over_the_sequence(k, n, expected):
    from gesture_cli.viz.pose_render import sheet_indices

    assert sheet_indices(n, k) == expected
