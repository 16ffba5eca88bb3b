"""gx report: a self-contained page built from run.json and the files of each step; checked in Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from tests.conftest import invoke


@pytest.fixture(scope="module")
def run_with_steps(tmp_path_factory):
    """A run with real extract + probe steps, a step with a training log, and a failed step."""
    from typer.testing import CliRunner

    from gesture_cli.core.rundir import RunDir
    from gesture_cli.viz.pca_render import write_png

    runner = CliRunner()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GX_HOME", str(tmp_path_factory.mktemp("gx_home_report")))
        mp.setenv("HF_HUB_OFFLINE", "1")
        run = tmp_path_factory.mktemp("report") / "run"
        res = invoke(runner, "extract-features", "--backbone", "tiny-dinov2", "--dataset", "synthetic-hands", "--image-size", "8", "-r", run)
        assert res.exit_code == 0, res.output
        res = invoke(runner, "probe", "-r", run, "--max-iter", "50")
        assert res.exit_code == 0, res.output

    rd = RunDir(run)
    step = rd.begin("lora-train", config={"lr": 0.001}, outputs=["lora/fake"], argv=["gx", "lora-train", "--lr", "0.001"])
    with step:
        out = step.stage("lora/fake", is_dir=True)
        rows = ["step,epoch,lr,loss,val_accuracy"] + [f"{s},{s // 10},0.001,{2.0 / (1 + s):.4f},{'' if s % 10 else min(1, s / 50):}" for s in range(0, 60, 5)]
        (out / "train_log.csv").write_text("\n".join(rows) + "\n")
        write_png(out / "curve.png", np.full((40, 60, 3), 200, np.uint8))
        (out / "metrics.json").write_text(json.dumps({"accuracy": 0.5, "per_class": [{"class": "A", "f1": 0.4}, {"class": "B", "f1": 0.6}]}))
        step.metrics["accuracy"] = 0.5
    failing = rd.begin("segment-train", config={}, outputs=["segment/x"], argv=["gx", "segment-train"])
    with pytest.raises(RuntimeError), failing:
        raise RuntimeError("mask size differs from image")
    return run


def test_report_is_self_contained_and_shows_every_step(run_with_steps, runner):
    res = invoke(runner, "report", "-r", run_with_steps)
    assert res.exit_code == 0, res.output
    page = (run_with_steps / "report.html").read_text()
    srcs = re.findall(r"<img src='([^']*)'", page)
    assert len(srcs) >= 3  # probe summary + confusion matrix + the fake step's picture
    assert all(s.startswith("data:image/") for s in srcs)
    assert not re.search(r"(src|href)=['\"]https?://", page)  # nothing fetched when viewed
    assert "<script" not in page
    for title in ("Feature extraction", "Linear probes", "Fine-tuning", "Overview"):
        assert f">{title}</h2>" in page
    # training curves from train_log.csv: loss and val_accuracy series
    assert page.count("<polyline") >= 2 and ">val_accuracy</text>" in page
    # provenance: the command line that made the step, its versions and input hashes
    assert "gx lora-train --lr 0.001" in page and "version torch" in page and "input dataset:train" in page
    # the failed step is shown with its error, and its (rolled back) outputs are not
    assert "mask size differs from image" in page and "status-failed" in page
    assert "per_class" in page  # nested records in a collapsed block


def test_report_keeps_only_the_newest_writer_of_each_output(run_with_steps, runner, tmp_path):
    from gesture_cli.core.rundir import RunDir
    from gesture_cli.tasks.report import current_steps

    rd = RunDir(run_with_steps)
    for lr in (0.1, 0.2):
        step = rd.begin("lora-train", config={"lr": lr}, outputs=["lora/again"], argv=["gx", "lora-train", f"--lr={lr}"])
        with step:
            (step.stage("lora/again", is_dir=True) / "metrics.json").write_text("{}")
    shown = [" ".join(s["argv"]) for s in current_steps(rd) if s["outputs"] == ["lora/again"]]
    assert shown == ["gx lora-train --lr=0.2"]
    out = tmp_path / "elsewhere" / "r.html"
    res = invoke(runner, "report", "-r", run_with_steps, "-o", out)
    assert res.exit_code == 0 and out.is_file()


def test_evaluate_and_infer_of_a_task_sit_with_its_training(tmp_path):
    from gesture_cli.core.rundir import RunDir
    from gesture_cli.tasks.report import build_report

    rd = RunDir(tmp_path / "run")
    for command, out in (("segment-train", "segment/b"), ("evaluate", "eval/segment-b.json"), ("evaluate", "eval/classify-lora-b.json"),
                         ("infer", "infer/translate.json")):
        step = rd.begin(command, config={"out": out}, outputs=[out], argv=["gx", command])
        with step:
            path = step.stage(out, is_dir=not out.endswith(".json"))
            if out.endswith(".json"):
                path.write_text("{}")
    page = build_report(rd)
    seg, ev, st = page.index(">Segmentation</h2>"), page.index(">Evaluation</h2>"), page.index(">Sign-to-text</h2>")
    assert ev < page.index("eval/classify-lora-b.json</code>") < seg < page.index("eval/segment-b.json</code>") < st
    assert page.index("infer/translate.json</code>") > st


def test_report_of_a_folder_without_run_json_is_a_clean_error(runner, tmp_path):
    res = invoke(runner, "report", "-r", tmp_path / "nothing")
    assert res.exit_code == 2
    assert "no run.json" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "nothing" / "report.html").exists()


def test_big_pictures_are_downscaled_before_embedding(tmp_path):
    from gesture_cli.viz.pca_render import write_png
    from gesture_cli.viz.report import MAX_IMAGE_BYTES, image_data_uri

    rng = np.random.default_rng(0)
    path = tmp_path / "noise.png"
    write_png(path, rng.integers(0, 255, (1600, 1600, 3), dtype=np.uint8))
    assert path.stat().st_size > MAX_IMAGE_BYTES
    uri = image_data_uri(path)
    assert uri.startswith("data:image/jpeg;base64,") and len(uri) * 3 / 4 < path.stat().st_size


CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)

# Put in front of the page's own content: records script errors, console errors and broken images.
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e.type)), true);
const _ce = console.error; console.error = (...a) => { window.__errors.push(a.join(' ')); _ce(...a); };
window.addEventListener('load', () => {
  const broken = [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt);
  document.body.setAttribute('data-check', JSON.stringify({images: document.images.length, broken, errors: window.__errors}));
});
</script>"""


def _chromium(*args: str, timeout: int = 90) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install chromium); .ci/run installs it")
def test_report_renders_in_chromium_without_broken_images_or_errors(run_with_steps, runner, tmp_path):
    res = invoke(runner, "report", "-r", run_with_steps)
    assert res.exit_code == 0, res.output
    page = (run_with_steps / "report.html").read_text()
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("<head>", "<head>" + PROBE, 1))
    dom = _chromium("--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    m = re.search(r'data-check="([^"]*)"', dom.stdout)
    assert m, f"page did not finish loading in Chromium: {dom.stderr[-500:]}"
    check = json.loads(m.group(1).replace("&quot;", '"'))
    assert check["images"] >= 3
    assert check["broken"] == [] and check["errors"] == []

    shot = tmp_path / "report.png"
    out = _chromium("--window-size=1200,1600", f"--screenshot={shot}", (run_with_steps / "report.html").as_uri())
    assert shot.is_file(), out.stderr[-500:]
    import cv2

    img = cv2.imread(str(shot))
    assert img.shape[:2] == (1600, 1200)
    # a rendered page, not a blank one: the dark header band and many distinct colours
    assert img[:40].mean() < 100 and len(np.unique(img.reshape(-1, 3), axis=0)) > 50


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install chromium); .ci/run installs it")
def test_chromium_probe_catches_a_broken_image_and_a_script_error(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><head>" + PROBE + "</head><body><img src='data:image/png;base64,AAAA' alt='bad'>"
                    "<script>undefinedFunction()</script></body></html>")
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    check = json.loads(re.search(r'data-check="([^"]*)"', dom.stdout).group(1).replace("&quot;", '"'))
    assert check["broken"] == ["bad"] and any("undefinedFunction" in e for e in check["errors"])


def test_a_nested_output_is_shown_once_with_the_step_that_wrote_it(tmp_path):
    from gesture_cli.core.rundir import RunDir
    from gesture_cli.tasks.report import build_report
    from gesture_cli.viz.pca_render import write_png

    rd = RunDir(tmp_path / "run")
    outer = rd.begin("pca-compute", config={}, outputs=["pca/b"], argv=["gx", "pca-compute"])
    with outer:
        write_png(outer.stage("pca/b", is_dir=True) / "sheet.png", np.zeros((8, 8, 3), np.uint8))
    inner = rd.begin("pca-visualize", config={}, outputs=["pca/b/renders"], argv=["gx", "pca-visualize"])
    with inner:
        write_png(inner.stage("pca/b/renders", is_dir=True) / "render.png", np.zeros((8, 8, 3), np.uint8))
    page = build_report(rd)
    assert page.count("alt='pca/b/renders/render.png'") == 1 and page.count("alt='pca/b/sheet.png'") == 1


def test_json_tables_flat_nested_and_keyed_records(tmp_path):
    """render_json: scalars, a flat dict, a dict of flat dicts (one row per key, e.g. gradcam's deletion), records."""
    from gesture_cli.viz.report import render_json

    path = tmp_path / "gradcam.json"
    path.write_text(json.dumps({
        "kind": "gradcam", "method": "gradcam", "n": 2,
        "deletion": {"lora": {"patches": 2, "mean_drop_top": 0.54}, "probe": {"patches": 2, "mean_drop_top": 0.11, "note": "x<y"}},
        "images": [{"file": "000.png", "lora_pred": "A"}, {"file": "001.png", "lora_pred": "B"}],
        "deep": {"a": {"b": {"c": 1}}},  # not flat: not a table
    }))
    html = render_json(path, "gradcam/lora/gradcam.json")
    cells = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", html)
    assert "kind" not in cells and ["method", "gradcam"] == cells[cells.index("method"):cells.index("method") + 2]
    header = cells.index("deletion")
    assert cells[header:header + 4] == ["deletion", "patches", "mean_drop_top", "note"]
    assert ["lora", "2", "0.5400", ""] == cells[header + 4:header + 8] and cells[header + 8] == "probe" and "x&lt;y" in cells
    assert "001.png" in cells and "deep" not in cells
