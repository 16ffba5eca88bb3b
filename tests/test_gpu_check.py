"""benchmarks/gpu_check.py, the one-call GPU check (`make gpu-check`): rehearsed on this CPU, since a GPU is
lent only now and then and the check must then work the first time."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_it_adds_precision_to_exactly_the_commands_that_run_a_model(gpu_check):
    """gpu_check appends --device/--precision to MODEL_COMMANDS: every one of them must take both, and every
    command that takes --precision must be in the set (else the GPU check would skip it)."""
    import typer.main

    from gesture_cli.cli.app import app

    commands = typer.main.get_command(app).commands
    takes = {name for name, cmd in commands.items() if any("--precision" in p.opts for p in cmd.params)}
    assert takes == gpu_check.MODEL_COMMANDS
    for name in takes:
        assert any("--device" in p.opts for p in commands[name].params), name


def test_a_failing_step_is_recorded_with_its_output_and_the_next_steps_still_run(gpu_check, monkeypatch, tmp_path):
    from gesture_cli.tasks import demo

    def steps(run):
        return [demo.DemoStep("evaluate before any training", ("evaluate", "classify", "--from", "lora", "--backbone", demo.MAIN,
                                                                 "--dataset", "synthetic-hands", "-r", str(run))),
                demo.DemoStep("extract features", ("extract-features", "--backbone", demo.MAIN, "--dataset", "synthetic-hands",
                                                   "--dataset-opt", "train_per_class=2", "-r", str(run)))]

    monkeypatch.setattr(demo, "demo_steps", steps)
    monkeypatch.setattr(demo, "prepare_inputs", lambda run: None)
    res = gpu_check.run_commands("bf16", tmp_path, device="cpu")
    first, second = res["steps"]
    assert first["status"] == "failed" and first["exit_code"] != 0
    assert "lora" in first["output_tail"]  # the one-line error names what is missing
    assert first["command"].endswith("--device cpu --precision bf16")
    assert second["status"] == "ran" and "output_tail" not in second
    assert not res["ok"]
    assert set(res["recorded_precision"]) == {"lora", "segment", "keypoint", "pose-pretrain", "pose-finetune"}
    assert all(v is None for v in res["recorded_precision"].values())


def test_a_benchmark_that_hangs_is_stopped_with_its_children_and_recorded(gpu_check, monkeypatch, tmp_path):
    """lora.py runs its routes in child processes: a timeout must end them too, not only the script."""
    import os
    import time

    monkeypatch.setattr(gpu_check, "BENCH_TIMEOUT_S", 2)
    pid_file = tmp_path / "child.pid"
    script = ("import subprocess, sys, time; "
              "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
              f"open({str(pid_file)!r}, 'w').write(str(c.pid)); time.sleep(60)")
    out = gpu_check.run_benchmark(["-c", script], tmp_path / "b.json")
    assert out["exit_code"] == 124 and "timed out after 2 s" in out["output"] and "result" not in out
    child = int(pid_file.read_text())
    for _ in range(50):  # the grandchild was killed with its group (reaped by init, or a zombie until then)
        try:
            state = open(f"/proc/{child}/stat").read().split(")")[-1].split()[0]
        except FileNotFoundError:
            break
        if state == "Z":
            break
        time.sleep(0.1)
    else:
        os.kill(child, 9)
        raise AssertionError("the benchmark's child process outlived the timeout")


def test_ctrl_c_in_a_step_stops_the_check_and_keeps_what_ran(gpu_check, monkeypatch, tmp_path):
    from gesture_cli.tasks import demo

    def steps(run):
        return [demo.DemoStep("report", ("report", "-r", str(run)), forceable=False)] * 3

    monkeypatch.setattr(demo, "demo_steps", steps)
    monkeypatch.setattr(demo, "prepare_inputs", lambda run: None)
    monkeypatch.setattr(gpu_check, "invoke_captured", lambda args: (130, "Interrupted."))
    seen = []
    with pytest.raises(KeyboardInterrupt, match="stopped during 'report'"):
        gpu_check.run_commands("bf16", tmp_path, device="cpu", on_step=lambda partial: seen.append(len(partial["steps"])))
    assert seen == [1]  # the summary was written with the interrupted step, and no later step ran


def test_fp16_is_refused_on_a_cpu_rehearsal(gpu_check, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        gpu_check.main(["--device", "cpu", "--precisions", "fp16", "--out", str(tmp_path / "s.json")])
    assert exc.value.code == 2 and "fp16" in capsys.readouterr().err
    assert not (tmp_path / "s.json").exists()


@pytest.mark.slow
def test_the_whole_check_rehearsed_on_this_cpu(gpu_check, tmp_path, monkeypatch):
    """Every demo command with --device cpu --precision bf16 and both benchmarks at tiny settings."""
    monkeypatch.setattr(sys, "argv", ["gpu_check.py"])
    out = tmp_path / "gpu-check.json"
    assert gpu_check.main(["--device", "cpu", "--quick", "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["ok"] and summary["device"] == "cpu" and list(summary["precisions"]) == ["bf16"]
    bf16 = summary["precisions"]["bf16"]
    assert all(s["status"] == "ran" for s in bf16["steps"]) and len(bf16["steps"]) >= 20
    assert set(bf16["recorded_precision"].values()) == {"bf16"}
    assert set(summary["benchmarks"]) == {"lora-bf16", "extract"}
    assert all(b["exit_code"] == 0 and "result" in b for b in summary["benchmarks"].values())
    assert summary["benchmarks"]["lora-bf16"]["result"]["precision"] == "bf16"
    assert not list(tmp_path.glob("*.partial"))


def test_the_offline_runner_names_the_modules_a_gpu_image_lacks(tmp_path):
    """benchmarks/gpu_check_offline.sh run, with a Python that has none of gx's dependencies (the system one, with
    no wheels beside the script): exit 2 and one line naming what to fetch, before anything runs."""
    import shutil
    import subprocess

    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("no system python3")
    (tmp_path / "benchmarks").mkdir()
    script = shutil.copy(REPO / "benchmarks" / "gpu_check_offline.sh", tmp_path / "benchmarks")
    res = subprocess.run(["bash", script, "run"], env={"PATH": "/usr/bin:/bin", "PYTHON": python}, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2
    assert "gx needs these modules, missing here: torch transformers peft" in res.stderr and "gpu_check_offline.sh fetch VERSION PACKAGE" in res.stderr
    res = subprocess.run(["bash", script], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "gpu_check_offline.sh fetch [PYTHON_VERSION [PACKAGE ...]]" in res.stdout
