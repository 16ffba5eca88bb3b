"""--resume keeps the settings that the saved optimizer and LR schedule fix (lr, schedule length, warm-up, weight
decay, ...) and refuses a run that already finished: every trainer goes through the same check (skeleton.prepare),
before any data is read and before run.json records anything."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from gesture_cli.core.errors import UsageError
from gesture_cli.core.rundir import RunDir
from gesture_cli.train.common import link_tree


def _lora(run, **kw):
    from gesture_cli.train.lora import LoraTrainConfig, LoraTrainer

    return LoraTrainer(LoraTrainConfig(backbone="tiny-vit", **kw), run, out_rel="lora/tiny-vit", resume=True)


def _segment(run, **kw):
    from gesture_cli.train.segment import SegmentTrainConfig, SegmentTrainer

    return SegmentTrainer(SegmentTrainConfig(backbone="tiny-vit", **kw), run, out_rel="segment/tiny-vit", resume=True,
                          cache_root=run.path("cache"))


def _keypoint(run, **kw):
    from gesture_cli.train.keypoint import KeypointTrainConfig, KeypointTrainer

    return KeypointTrainer(KeypointTrainConfig(backbone="tiny-vit", **kw), run, out_rel="keypoint/tiny-vit", resume=True)


def _pretrain(run, **kw):
    from gesture_cli.train.pose_pretrain import PosePretrainConfig, PretrainTrainer

    return PretrainTrainer(PosePretrainConfig(text_model="tiny-umt5", **kw), run, out_rel="pose/pretrain", resume=True)


def _finetune(run, **kw):
    from gesture_cli.train.pose_finetune import FinetuneTrainer, PoseFinetuneConfig

    return FinetuneTrainer(PoseFinetuneConfig(init="scratch", text_model="tiny-umt5", **kw), run, out_rel="pose/finetune", resume=True)


TRAINERS = {"lora-train": _lora, "segment-train": _segment, "keypoint-train": _keypoint, "pose-pretrain": _pretrain,
            "pose-finetune": _finetune}


def _checkpoint(trainer, *, finished: bool = False, **trained_with) -> None:
    """A checkpoint in the trainer's checkpoints/last/ as fit() writes it, of a run trained with the trainer's
    settings but `trained_with`; meta holds no model settings (those are check_resume's, tested elsewhere)."""
    from gesture_cli.train.checkpoint import write_checkpoint

    config = {**asdict(trainer.train_config()), **trained_with}
    trainer_state = {"step": 10 if finished else 3, "total_steps": 10, "epoch": 0, "finished": finished, "stopped_early": False}
    write_checkpoint(trainer.checkpoint_dir / "last", model_state={"w": torch.zeros(1)}, rng=False,
                     state={"trainer": trainer_state, "config": config, "meta": {"config": {}}})


def _prepare_without_data(trainer, monkeypatch):
    from gesture_cli.train.skeleton import prepare

    def no_data(*_args):
        raise AssertionError("data was read before the --resume check")

    monkeypatch.setattr(trainer, "make_splits", no_data)
    return prepare(trainer, device="cpu")


@pytest.mark.parametrize("command", TRAINERS)
@pytest.mark.parametrize(("given", "trained", "needles"), [
    ({"lr": 0.01}, {"lr": 0.003}, ["--lr 0.003, this command has --lr 0.01", "resume with --lr 0.003,"]),
    ({"max_steps": 600}, {"max_steps": 400}, ["--max-steps 400, this command has --max-steps 600", "resume with --max-steps 400,"]),
    ({"max_steps": 600}, {"max_steps": None}, ["no --max-steps, this command has --max-steps 600", "resume without --max-steps,"]),
    ({"warmup_steps": 5, "weight_decay": 0.1}, {"warmup_steps": None, "weight_decay": 0.01}, ["no --warmup-steps, this command has --warmup-steps 5 (and --weight-decay)"]),
])
def test_a_changed_schedule_setting_is_refused(tmp_path, monkeypatch, command, given, trained, needles):
    trainer = TRAINERS[command](RunDir(tmp_path / "run"), **given)
    _checkpoint(trainer, **trained)
    with pytest.raises(UsageError) as err:
        _prepare_without_data(trainer, monkeypatch)
    message = str(err.value)
    assert message.startswith(f"cannot resume {trainer.checkpoint_dir / 'last'}: it was trained with ") and "\n" not in message
    for needle in [*needles, "--force without --resume, or another -r"]:
        assert needle in message, message
    assert not (tmp_path / "run" / "run.json").exists() or not RunDir(tmp_path / "run").steps()


@pytest.mark.parametrize("command", TRAINERS)
def test_a_finished_run_is_not_resumed(tmp_path, monkeypatch, command):
    """A finished run whose step committed its artifacts: --resume would train nothing (and record settings it did not
    use); a new run is the way to train longer. Without the committed step (killed while writing its artifacts) it resumes."""
    run = RunDir(tmp_path / "run")
    trainer = TRAINERS[command](run)
    _checkpoint(trainer, finished=True, max_steps=400)  # another schedule too: that it finished is what to say
    step = run.begin(command, config={}, outputs=[trainer.out_rel])
    with step:  # as skeleton.train_in_step commits a run: its checkpoints linked into the output folder
        link_tree(trainer.checkpoint_dir, step.stage(trainer.out_rel) / "checkpoints")
    with pytest.raises(UsageError, match=r"that run finished at step 10/10, so there is nothing to resume; to train longer, start a new "
                                         r"run: --force without --resume \(it replaces this one\) or another -r$"):
        _prepare_without_data(trainer, monkeypatch)


def test_a_finished_run_without_its_artifacts_may_resume(tmp_path, monkeypatch):
    trainer = _lora(RunDir(tmp_path / "run"))
    _checkpoint(trainer, finished=True)
    with pytest.raises(AssertionError, match="data was read"):  # past the check: the resume writes the artifacts
        _prepare_without_data(trainer, monkeypatch)


def test_an_unfinished_run_resumes_without_looking_for_its_committed_step(tmp_path, monkeypatch):
    """Whether the output step committed matters only for a finished checkpoint; finding it may hash the whole output
    folder (checkpoints included) where an older finished step exists, so an unfinished resume does not look."""
    run = RunDir(tmp_path / "run")
    trainer = _lora(run)
    with run.begin("lora-train", config={}, outputs=[trainer.out_rel]) as step:  # an older finished training
        (step.stage(trainer.out_rel) / "head.safetensors").write_bytes(b"old")
    _checkpoint(trainer)  # then retrained with --force and killed at step 3/10

    def looked(*_args):
        raise AssertionError("looked for the committed step")

    monkeypatch.setattr(run, "last_ok", looked)
    with pytest.raises(AssertionError, match="data was read"):  # past the check, without looking
        _prepare_without_data(trainer, monkeypatch)


def test_resume_conflicts_count_what_applies():
    from gesture_cli.train.loop import TrainConfig, resume_conflicts

    base = asdict(TrainConfig(max_steps=100, warmup_steps=10))
    assert resume_conflicts(base, {**base, "epochs": 3, "warmup_ratio": 0.2, "patience": 4, "eval_every": 7, "precision": "fp32"}) == []
    assert resume_conflicts(base, {**base, "max_steps": None}) == ["max_steps"]
    by_epochs = asdict(TrainConfig())
    assert resume_conflicts(by_epochs, {**by_epochs, "epochs": 3, "warmup_ratio": 0.1, "min_lr_ratio": 0.1}) == [
        "epochs", "warmup_ratio", "min_lr_ratio"]
    assert resume_conflicts(by_epochs, {**by_epochs, "batch_size": 8, "lr": 1.0}) == ["batch_size", "lr"]


@pytest.mark.parametrize("command", ["pose-pretrain", "pose-finetune"])
def test_a_changed_pose_encoder_names_only_the_settings_that_differ(tmp_path, command):
    """--resume with another --encoder-opt printed both whole encoder configs; it names each changed key with both values."""
    from gesture_cli.models.pose_encoder import PoseEncoderConfig
    from gesture_cli.train.checkpoint import write_checkpoint

    trainer = TRAINERS[command](RunDir(tmp_path / "run"))
    old = PoseEncoderConfig(d_model=64, n_heads=4).to_dict()
    saved = {"encoder": old, "max_frames": 128, "seed": 0}
    write_checkpoint(trainer.checkpoint_dir / "last", model_state={"w": torch.zeros(1)}, rng=False,
                     state={"trainer": {"step": 3, "total_steps": 10, "epoch": 0, "finished": False}, "config": {}, "meta": {"config": saved}})
    trainer.check_resume(dict(saved))  # the same encoder: nothing to say
    new = PoseEncoderConfig(d_model=32, n_heads=2).to_dict()
    with pytest.raises(UsageError) as err:
        trainer.check_resume({**saved, "encoder": new})
    message = str(err.value)
    assert message == (f"cannot resume {trainer.checkpoint_dir / 'last'}: it was trained with another encoder (d_model 64 -> 32, "
                       "n_heads 4 -> 2); use the same settings or --force without --resume"), message
    with pytest.raises(UsageError, match=r"another encoder \(parts body,hands,face-lite -> body\); max_frames, seed differ too; use the same"):
        trainer.check_resume({**saved, "encoder": {**old, "parts": ["body"]}, "max_frames": 64, "seed": 1})
