"""`gx pose-view`: one self-contained HTML player; played in headless Chromium; embedded by `gx report`."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tests.conftest import invoke, one_line_error
from tests.test_report import CHROMIUM, PROBE, _chromium

SIGNS = ("--dataset-opt", "train_size=4", "--dataset-opt", "val_size=3", "--dataset-opt", "test_size=3")
SIGN_OPTS = ["train_size=4", "val_size=3", "test_size=3"]


def _payload(page: str) -> dict:
    blob = re.search(r"<script type='application/json' id='gx-pose-data'>(.*?)</script>", page, flags=re.S).group(1)
    return json.loads(blob.replace("<\\/", "</"))


def test_a_pose_file_becomes_a_self_contained_page(runner, real_data, tmp_path):
    src = real_data / "sign_pose/autsl/signer0_sample1000.pose"
    res = invoke(runner, "pose-view", src, "-o", tmp_path / "v.html")
    assert res.exit_code == 0, res.output
    page = (tmp_path / "v.html").read_text()
    assert not re.search(r"https?://", page) and not re.search(r"\s(src|href)=", page)  # nothing to fetch
    data = _payload(page)
    s = data["samples"][0]
    assert s["id"] == "signer0_sample1000" and s["frames"] == 43 and s["fps"] == pytest.approx(30.0)
    assert set(data["parts"]) == {"body", "left-hand", "right-hand", "face"} and len(data["pointPart"]) == len(data["dots"])
    xy = np.array(s["xy"])
    assert xy.shape == (43, 2 * len(data["pointPart"])) and ((xy == -1) | ((xy >= -1000) & (xy <= 2000))).all()
    conf = np.array(s["conf"])  # the body's visibility from the .pose file: shading has something to show
    body = [i for i, p in enumerate(data["pointPart"]) if p == "body"]
    assert conf.shape == (43, len(data["pointPart"])) and 0 < conf[:, body].mean() < 100
    assert all(a < len(data["pointPart"]) and b < len(data["pointPart"]) for a, b in data["edges"])


def test_a_dataset_with_texts_and_long_samples_is_compacted(runner, tmp_path):
    res = invoke(runner, "pose-view", "synthetic-signs", *SIGNS, "--split", "val", "--max-frames", "10", "-o", tmp_path)
    assert res.exit_code == 2  # pose-view takes no --dataset-opt: a usage error, not a silent default
    res = invoke(runner, "pose-view", "synthetic-signs", "--split", "val", "--max-frames", "10", "--max-samples", "2", "-o", tmp_path)
    assert res.exit_code == 0, res.output
    page = (tmp_path / "synthetic-signs.html").read_text()
    data = _payload(page)
    assert len(data["samples"]) == 2 and all(s["frames"] <= 10 and s["text"] and s["gloss"] for s in data["samples"])
    assert "the first 2; --max-samples shows more" in res.output
    res = invoke(runner, "pose-view", "synthetic-signs", "--sample-id", "nope", "-o", tmp_path / "x.html")
    assert res.exit_code != 0 and not (tmp_path / "x.html").exists()
    res = invoke(runner, "pose-view", tmp_path / "missing.pose")
    one_line_error(res, 2, "no such file or folder")


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install chromium); .ci/run installs it")
def test_playing_changes_the_frame_without_console_errors(runner, real_data, tmp_path):
    src = real_data / "sign_pose/autsl/signer0_sample1000.pose"
    res = invoke(runner, "pose-view", src, "-o", tmp_path / "v.html")
    assert res.exit_code == 0, res.output
    page = (tmp_path / "v.html").read_text()
    play = """<script>
window.addEventListener('load', () => {
  const cv = document.getElementById('cv'), before = cv.dataset.frame;
  const toggle = document.querySelector('#parts input'); toggle.click();  // a part off and on again
  toggle.click();
  document.getElementById('play').click();
  setTimeout(() => document.body.setAttribute('data-play', JSON.stringify({before, after: cv.dataset.frame,
    button: document.getElementById('play').textContent, width: cv.width, errors: window.__errors})), 1500);
});
</script>"""
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("<head>", "<head>" + PROBE, 1).replace("</body>", play + "</body>", 1))
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", probed.as_uri())
    m = re.search(r'data-play="([^"]*)"', dom.stdout)
    assert m, f"the page did not play in Chromium: {dom.stderr[-500:]}"
    got = json.loads(m.group(1).replace("&quot;", '"'))
    assert got["before"] == "0" and int(got["after"]) > 0 and got["button"] == "Pause" and got["width"] > 100
    assert got["errors"] == []


def test_report_embeds_the_viewer_for_pose_datasets_and_translations(tmp_path):
    from gesture_cli.core.rundir import RunDir
    from gesture_cli.tasks.report import build_report

    rd = RunDir(tmp_path / "run")
    step = rd.begin("pose-pretrain", config={"dataset": "synthetic-signs", "dataset_opts": SIGN_OPTS, "seed": 0}, outputs=["pose/pretrain"],
                    argv=["gx", "pose-pretrain"])
    with step:
        (step.stage("pose/pretrain", is_dir=True) / "metrics.json").write_text("{}")
    from gesture_cli.data.pose import make_pose_dataset

    test = make_pose_dataset("synthetic-signs", split="test", train_size=4, val_size=3, test_size=3)
    ev = rd.begin("evaluate", config={"task": "translate", "dataset": "synthetic-signs", "dataset_opts": SIGN_OPTS, "split": "test", "seed": 0},
                  outputs=["eval/translate.json", "eval/predictions.csv"], argv=["gx", "evaluate", "translate"])
    with ev:
        ev.stage("eval/translate.json", is_dir=False).write_text("{}")
        ev.stage("eval/predictions.csv", is_dir=False).write_text(
            "id,reference,hypothesis,bleu4,rouge_l_slt,gloss\n" + f"{test[0].id},{test[0].text},a model's guess,12.5,0.3,\n")
    page = build_report(rd)
    assert "<script" not in page  # the player runs inside the iframes' own documents
    frames = re.findall(r"<iframe [^>]*srcdoc=\"([^\"]*)\"", page)
    assert len(frames) == 2
    import html

    pre, tra = (_payload(html.unescape(f)) for f in frames)
    assert [s["id"] for s in pre["samples"]] == [s.id for s in make_pose_dataset("synthetic-signs", split="val", train_size=4, val_size=3,
                                                                                  test_size=3)]
    assert [(s["id"], s["extra"]["hypothesis"]) for s in tra["samples"]] == [(test[0].id, "a model's guess")]


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install chromium); .ci/run installs it")
def test_a_report_with_a_viewer_renders_in_chromium(tmp_path):
    from gesture_cli.core.rundir import RunDir
    from gesture_cli.tasks.report import write_report

    rd = RunDir(tmp_path / "run")
    step = rd.begin("pose-pretrain", config={"dataset": "synthetic-signs", "dataset_opts": SIGN_OPTS}, outputs=["pose/pretrain"],
                    argv=["gx", "pose-pretrain"])
    with step:
        (step.stage("pose/pretrain", is_dir=True) / "metrics.json").write_text("{}")
    out, _ = write_report(rd.root)
    shot = tmp_path / "report.png"
    res = _chromium("--window-size=1000,1400", "--virtual-time-budget=3000", f"--screenshot={shot}", out.as_uri())
    assert shot.is_file(), res.stderr[-500:]
    import cv2

    img = cv2.imread(str(shot))
    # the player's black canvas (at least 240 px wide) with coloured skeleton lines is on the page
    black = (img.max(axis=2) < 8).mean()
    assert black > 240 * 240 / img[..., 0].size and len(np.unique(img.reshape(-1, 3), axis=0)) > 50

