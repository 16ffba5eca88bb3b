"""gx demo: ordinary gx command lines in order, cache-aware, stops at the first failure."""

from __future__ import annotations

import json

import pytest

from gesture_cli.tasks.demo import demo_steps, run_demo
from tests.conftest import invoke, one_line_error


def _fake_invoke(run, *, fail_at: str | None = None, calls: list | None = None):
    """Stands in for the Typer app: appends a manifest entry per step unless the step was 'cached'."""
    def fake(args: list[str]) -> int:
        calls.append(args)
        if fail_at and args[0] == fail_at:
            return 2
        manifest = run / "run.json"
        data = json.loads(manifest.read_text()) if manifest.is_file() else {"steps": []}
        if "--force" in args or not any(s["argv"] == args for s in data["steps"]):
            data["steps"].append({"argv": [a for a in args if a != "--force"]})
            manifest.write_text(json.dumps(data))
        return 0
    return fake


def test_demo_runs_every_command_once_then_hits_the_cache(tmp_path):
    run = tmp_path / "demo"
    calls: list = []
    first = run_demo(run, invoke=_fake_invoke(run, calls=calls))
    assert first.ok and [r.status for r in first.results if r.step.forceable] == ["ran"] * sum(s.forceable for s in demo_steps(run))
    commands = [a[0] for a in calls]
    assert commands[-1] == "report" and commands.index("extract-features") < commands.index("probe")
    for needed in ("lora-train", "evaluate", "infer", "gradcam", "pca-compute", "pca-visualize", "segment-train", "keypoint-train",
                   "pose-pretrain", "pose-finetune"):
        assert needed in commands
    assert all(["-r", str(run)] == a[-2:] for a in calls)  # every step writes into the demo run
    assert (run / "inputs" / "clip.mp4").is_file() and len(list((run / "inputs" / "hands").glob("*.png"))) == 6

    calls.clear()
    again = run_demo(run, invoke=_fake_invoke(run, calls=calls))
    assert [r.status for r in again.results if r.step.forceable] == ["cached"] * sum(s.forceable for s in demo_steps(run))
    assert not any("--force" in a for a in calls)

    calls.clear()
    fresh = run_demo(run, fresh=True, invoke=_fake_invoke(run, calls=calls))
    assert all("--force" in a for a, s in zip(calls, demo_steps(run), strict=True) if s.forceable)
    assert all(r.status == "ran" for r in fresh.results)


def test_demo_stops_at_a_failing_step(tmp_path, runner, monkeypatch):
    run = tmp_path / "demo"
    calls: list = []
    res = run_demo(run, invoke=_fake_invoke(run, fail_at="probe", calls=calls))
    assert not res.ok and res.results[-1].step.args[0] == "probe" and res.results[-1].exit_code == 2
    assert [a[0] for a in calls][-1] == "probe"  # nothing after it ran

    import gesture_cli.cli.demo as cli_demo

    monkeypatch.setattr(cli_demo, "invoke_gx", _fake_invoke(run, fail_at="probe", calls=[]))
    out = invoke(runner, "demo", "-r", run)
    assert out.exit_code == 1
    assert "gx probe -r" in out.output and "failed with exit code 2" in out.output and "Traceback" not in out.output


def test_an_unwritable_demo_run_dir_is_a_clean_error(runner, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    res = invoke(runner, "demo", "-r", blocker / "demo")
    assert res.exit_code == 1 and "cannot write the demo run there" in res.output and "Traceback" not in res.output


def test_demo_run_dir_empty_is_refused_and_tilde_expanded(runner, tmp_path, monkeypatch):
    """`gx demo -r ""` would have made the current folder the demo run, and `-r '~/d'` a folder named '~' here."""
    import gesture_cli.tasks.demo as task_demo
    from gesture_cli.core.errors import GxError

    monkeypatch.chdir(tmp_path)
    res = invoke(runner, "demo", "-r", "")
    one_line_error(res, 2, "-r/--run-dir is empty")
    assert not any(tmp_path.iterdir())
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    seen: list = []
    def stop(run, **_kw):
        seen.append(run)
        raise GxError("stopped here")

    monkeypatch.setattr(task_demo, "run_demo", stop)
    one_line_error(invoke(runner, "demo", "-r", "~/d"), 1, "stopped here")
    assert seen == [tmp_path / "home" / "d"] and not (tmp_path / "~").exists()


@pytest.mark.slow
def test_the_real_demo_runs_every_step_and_a_rerun_is_cached(tmp_path, runner):
    run = tmp_path / "demo"
    res = invoke(runner, "demo", "-r", run)
    assert res.exit_code == 0, res.output[-3000:]
    steps = json.loads((run / "run.json").read_text())["steps"]
    assert steps and all(s["status"] == "ok" for s in steps)
    assert {s["command"] for s in steps} >= {"extract-features", "probe", "lora-train", "evaluate", "infer", "gradcam", "pca-compute",
                                             "pca-visualize", "segment-train", "keypoint-train", "pose-pretrain", "pose-finetune"}
    page = (run / "report.html").read_text()
    for title in ("Linear probes", "Fine-tuning", "Segmentation", "Keypoints", "Sign-to-text"):
        assert f">{title}</h2>" in page
    metrics = {s["command"]: s["metrics"] for s in steps if s["command"] in ("lora-train", "pose-pretrain")}
    assert metrics["lora-train"]["test_accuracy"] > 2 / 24  # the fine-tuned tiny model learns (chance 1/24)

    from gesture_cli.cli.demo import invoke_gx

    again = run_demo(run, invoke=invoke_gx)  # the real commands again, in this process
    assert again.ok and all(r.status == "cached" for r in again.results if r.step.forceable)
