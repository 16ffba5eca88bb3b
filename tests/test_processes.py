"""1 and N processes: every trainer under `torchrun`, and the commands that run in one process when a script
launches them under `torchrun` / `accelerate launch` anyway (rank 0 does the work, the other ranks exit).

lora-train, extract-features and pca-compute have their own torchrun tests (test_lora, test_extract_scale).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, invoke

from gesture_cli.core.rundir import RunDir

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LAUNCHER_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


def test_tensors_load_onto_an_indexed_cpu(tmp_path):
    """A CPU process under torchrun computes on torch.device('cpu', 0), which safetensors' loader refuses by name;
    pose-finetune stopped there, calling a good artifact unreadable."""
    import torch

    from gesture_cli.core.artifacts import load_tensors, save_tensors

    path = tmp_path / "t.safetensors"
    save_tensors(path, {"w": torch.arange(4.0)}, kind="test")
    for device in (torch.device("cpu", 0), "cpu:0", "cpu"):
        tensors, _ = load_tensors(path, kind="test", device=device)
        assert tensors["w"].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_every_process_names_commands_that_exist():
    import typer.main

    from gesture_cli.cli.app import EVERY_PROCESS, app

    assert EVERY_PROCESS <= set(typer.main.get_command(app).commands)


def _launched(monkeypatch, *, rank: int, world: int) -> None:
    for name, value in zip(LAUNCHER_VARS, (world, rank, rank, world), strict=True):
        monkeypatch.setenv(name, str(value))


def test_a_one_process_command_does_nothing_on_a_rank_other_than_0(runner, monkeypatch, tmp_path):
    _launched(monkeypatch, rank=1, world=2)
    res = invoke(runner, "report", "-r", tmp_path / "run")
    assert res.exit_code == 0 and res.output == ""
    assert not (tmp_path / "run").exists()
    assert os.environ["WORLD_SIZE"] == "2"  # the others keep their world: they only leave


def test_a_one_process_command_runs_alone_on_rank_0(runner, monkeypatch, tmp_path):
    res = invoke(runner, "extract-features", "--backbone", "tiny-vit", "--dataset", "synthetic-hands", "--dataset-opt", "train_per_class=1",
                 "--dataset-opt", "test_per_class=1", "--precision", "fp32", "-r", tmp_path / "run")  # a run to report on
    assert res.exit_code == 0, res.output
    _launched(monkeypatch, rank=0, world=4)  # no MASTER_ADDR: joining the launcher's group would fail at once
    res = invoke(runner, "report", "-r", tmp_path / "run")
    assert res.exit_code == 0, res.output
    assert "gx report runs in one process: rank 0 does it, and the other 3 launched processes exit at once" in res.output
    assert (tmp_path / "run" / "report.html").is_file()
    assert not [v for v in LAUNCHER_VARS if v in os.environ]  # a plain one-process run from here on: nothing to join


def _torchrun(tmp_path, *args: str, precision: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))}
    for name in LAUNCHER_VARS:
        env.pop(name, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "gesture_cli", *args,
           *(("--precision", precision) if args[0] != "evaluate" else ()), "-r", str(tmp_path / "run")]
    res = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"gx {args[0]}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_every_trainer_under_torchrun_with_two_processes(tmp_path, precision):
    """segment-train (cached tokens), keypoint-train, pose-pretrain then pose-finetune from its encoder, then an
    evaluation, each launched with 2 processes: one manifest entry and one artifact each, made in `precision`."""
    trainers = {
        "segment/tiny-dinov2": ("segment-train", "--backbone", "tiny-dinov2", "--dataset", "synthetic-scenes", "--cache-features",
                                "--epochs", "2", "--lr", "1e-2"),
        "keypoint/tiny-dinov2": ("keypoint-train", "--backbone", "tiny-dinov2", "--dataset", "synthetic-keypoints", "--method", "full",
                                 "--image-size", "32", "--dataset-opt", "side=32", "--dataset-opt", "clutter=false",
                                 "--dataset-opt", "train_samples=64", "--rotate", "0", "--scale-jitter", "0", "--max-steps", "4"),
        "pose/pretrain": ("pose-pretrain", "--dataset", "synthetic-signs", "--text-model", "tiny-umt5", "--encoder-opt", "d_model=32",
                          "--encoder-opt", "n_layers=1", "--encoder-opt", "gcn_dims=16", "--keypoints", "body,hands",
                          "--max-frames", "8", "--embed-dim", "32", "--epochs", "1"),
        "pose/finetune": ("pose-finetune", "--bridge", "direct", "--max-frames", "8", "--epochs", "1"),
    }
    for out, args in trainers.items():
        res = _torchrun(tmp_path, *args, precision=precision)
        assert res.stdout.count("Wrote ") == 1, res.stdout  # rank 0 alone reports and writes
        metrics = json.loads((tmp_path / "run" / out / "metrics.json").read_text())
        assert metrics["precision"] == precision and metrics["steps"] >= 1
    res = _torchrun(tmp_path, "evaluate", "translate", precision=precision)
    assert "runs in one process" in res.stderr and res.stdout.count("Wrote ") == 3  # translate.json, the text summary, predictions
    steps = RunDir(tmp_path / "run").steps()
    assert [s["command"] for s in steps] == ["segment-train", "keypoint-train", "pose-pretrain", "pose-finetune", "evaluate"]
    assert all(s["status"] == "ok" for s in steps)


def test_errors_under_a_launcher_name_the_rank_and_a_shared_stop_is_said_once(runner, monkeypatch, capsys):
    import typer

    from gesture_cli.cli.options import gx_command
    from gesture_cli.train.loop import TrainingInterrupted

    _launched(monkeypatch, rank=1, world=2)
    res = invoke(runner, "lora-train", "--method", "bogus")  # refused before any process group is joined
    assert res.exit_code == 2 and "Error: (rank 1) unknown method 'bogus'" in res.output, res.output

    @gx_command
    def stopped():
        raise TrainingInterrupted("training stopped at step 5/9 (SIGTERM received)", signum=15)

    capsys.readouterr()
    with pytest.raises(typer.Exit) as exc:
        stopped()
    assert exc.value.exit_code == 143 and capsys.readouterr().err == ""  # the exit code, not a second copy of rank 0's line
    _launched(monkeypatch, rank=0, world=2)
    with pytest.raises(typer.Exit):
        stopped()
    assert "Error: training stopped at step 5/9" in capsys.readouterr().err

    from gesture_cli.core.errors import Terminated

    @gx_command
    def terminated():  # SIGTERM outside a trainer's loop (extract-features, a trainer's setup)
        raise Terminated("SIGTERM received")

    for rank, said in ((1, ""), (0, "Terminated (SIGTERM).")):
        _launched(monkeypatch, rank=rank, world=2)
        with pytest.raises(typer.Exit) as exc:
            terminated()
        err = capsys.readouterr().err
        assert exc.value.exit_code == 143 and (said in err if said else err == ""), (rank, err)
