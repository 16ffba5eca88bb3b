"""The shared training loop (gesture_cli.train.loop) on a toy model: schedule, data order, checkpoints,
exact resume, signals, early stopping, and the errors a user can hit."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from gesture_cli.core.errors import ArtifactError, UsageError
from gesture_cli.train.checkpoint import (
    find_checkpoint,
    flatten_optimizer_state,
    load_checkpoint,
    unflatten_optimizer_state,
    write_checkpoint,
)
from gesture_cli.train.loop import TrainConfig, TrainingInterrupted, epoch_order, fit, micro_batches, warmup_cosine


class ToyData:
    """200 points in 8-d, label = sign of the first coordinate (learnable in a few steps)."""

    def __init__(self, n: int = 200):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 8, generator=g)
        self.y = (self.x[:, 0] > 0).long()

    def __len__(self) -> int:
        return len(self.y)

    def get_batch(self, idx):
        return self.x[idx], self.y[idx]


def make_model() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 2))


def loss_fn(model, batch):
    x, y = batch
    x = x + 0.1 * torch.randn_like(x)  # randomness inside the step: must replay exactly on resume
    return torch.nn.functional.cross_entropy(model(x), y)


DATA = ToyData()


def eval_fn(model):
    return {"val_accuracy": (model(DATA.x).argmax(1) == DATA.y).float().mean().item()}


CFG = TrainConfig(epochs=3, batch_size=16, grad_accum=2, lr=5e-2, checkpoint_every=4, log_every=2, seed=5)


def _run(tmp: Path, **kw):
    model = make_model()
    kw.setdefault("cfg", CFG)
    return model, fit(model, train_data=DATA, loss_fn=loss_fn, eval_fn=eval_fn, checkpoint_dir=tmp, **kw)


def test_warmup_cosine_schedule():
    lr = [warmup_cosine(s, warmup=4, total=20) for s in range(21)]
    assert lr[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])  # linear warm-up, never a zero first step
    assert lr[4] == pytest.approx(1.0) and lr[20] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(lr[4:], lr[5:], strict=False))  # cosine decays monotonically
    assert warmup_cosine(20, warmup=0, total=20, min_ratio=0.1) == pytest.approx(0.1)


def test_epoch_order_is_seeded_and_shards_cover_everything():
    a, b = epoch_order(50, seed=3, epoch=0), epoch_order(50, seed=3, epoch=0)
    assert torch.equal(a, b) and not torch.equal(a, epoch_order(50, seed=3, epoch=1))
    assert not torch.equal(a, epoch_order(50, seed=4, epoch=0))
    shards = [micro_batches(a, batch_size=4, rank=r, world=2, drop_last=False) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 7  # 50 = 6 full global batches of 8 + a tail of 2 (one each)
    seen = sorted(i for s in shards for batch in s for i in batch)
    assert seen == list(range(50))
    single = micro_batches(a, batch_size=8, rank=0, world=1, drop_last=True)
    assert len(single) == 6 and all(len(b) == 8 for b in single)


def test_fit_learns_logs_and_checkpoints(tmp_path):
    model, result = _run(tmp_path / "ck")
    st = result.state
    assert st.finished and st.step == st.total_steps == 21  # 13 micro-batches / 2 -> 7 steps per epoch
    assert st.metrics["val_accuracy"] > 0.8
    losses = [row["loss"] for row in st.log]
    assert losses[-1] < losses[0]
    header = result.log_path.read_text().splitlines()[0].split(",")
    assert header[:6] == ["step", "epoch", "lr", "loss", "samples_per_s", "elapsed_s"] and "val_accuracy" in header
    assert result.best_dir is not None and (result.best_dir / "model.safetensors").is_file()
    files = sorted(p.name for p in (tmp_path / "ck").rglob("*") if p.is_file())
    assert set(files) <= {"model.safetensors", "optimizer.safetensors", "state.json", "train_log.csv"}  # never pickle
    assert not [p for p in (tmp_path / "ck").iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    tensors, state, opt, _ = load_checkpoint(result.last_dir)
    assert state["trainer"]["step"] == 21 and state["trainer"]["finished"]
    assert set(tensors) == {n for n, p in model.named_parameters()}
    assert opt is not None and opt["state"][0]["exp_avg"].shape == model[0].weight.shape
    torch.testing.assert_close(tensors["0.weight"], model[0].weight.detach(), rtol=0, atol=0)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    straight, _ = _run(tmp_path / "a")

    def stop_at_9(state):  # mid-epoch (7 steps per epoch) and between two checkpoints
        if state.step == 9:
            state.request_stop("simulated pre-emption")

    with pytest.raises(TrainingInterrupted, match="step 9/21.*--resume"):
        _run(tmp_path / "b", callbacks={"on_step_end": [stop_at_9]})
    _, state, _, _ = load_checkpoint(tmp_path / "b" / "last")
    assert state["trainer"]["step"] == 9 and state["trainer"]["batch_in_epoch"] == 4 and not state["trainer"]["finished"]
    resumed, result = _run(tmp_path / "b", resume=True)
    assert result.state.resumed_from == 9 and result.state.step == 21
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    log_a = (tmp_path / "a" / "train_log.csv").read_text().splitlines()
    log_b = (tmp_path / "b" / "train_log.csv").read_text().splitlines()
    strip = lambda lines: [line.split(",")[:4] for line in lines]  # noqa: E731 (timing columns differ)
    assert strip(log_a) == strip(log_b)


def test_sigterm_saves_last_and_restores_handlers(tmp_path):
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda *a: seen.append("outer"))
    try:
        def kill_at_3(state):
            if state.step == 3:
                os.kill(os.getpid(), signal.SIGTERM)

        with pytest.raises(TrainingInterrupted, match="SIGTERM"):
            _run(tmp_path / "ck", callbacks={"on_step_end": [kill_at_3]})
        assert read_step(tmp_path / "ck" / "last") == 3
        os.kill(os.getpid(), signal.SIGTERM)  # the handler in place before fit() is back
        assert seen == ["outer"]
    finally:
        signal.signal(signal.SIGTERM, previous)


def read_step(directory: Path) -> int:
    return json.loads((directory / "state.json").read_text())["trainer"]["step"]


def test_early_stopping_with_patience(tmp_path):
    model = make_model()
    cfg = TrainConfig(epochs=10, batch_size=50, lr=1e-3, patience=2, checkpoint_every=0)
    result = fit(model, train_data=DATA, loss_fn=loss_fn, eval_fn=lambda m: {"val_accuracy": 0.5}, cfg=cfg, checkpoint_dir=tmp_path)
    assert result.state.stopped_early and result.state.step == 3 * 4  # best at epoch 1, two worse: stop after 3 epochs
    assert result.state.best_step == 4 and read_step(result.best_dir) == 4


def test_resume_errors(tmp_path):
    with pytest.raises(ArtifactError, match="nothing to resume"):
        _run(tmp_path / "none", resume=True)
    _run(tmp_path / "ck", cfg=TrainConfig(epochs=1, batch_size=16, checkpoint_every=2))
    with pytest.raises(UsageError, match="batch_size 16 -> 32"):
        _run(tmp_path / "ck", cfg=TrainConfig(epochs=1, batch_size=32), resume=True)
    with pytest.raises(UsageError, match="--batch-size must be at least 1"):
        _run(tmp_path / "x", cfg=TrainConfig(batch_size=0))


def test_fit_refuses_to_resume_with_another_schedule(tmp_path):
    """The saved optimizer and scheduler keep the old lr, and a new length would bend the schedule mid-run: fit()
    itself refuses (the trainers say it earlier, in option names: tests/test_resume_settings.py)."""
    _run(tmp_path / "ck", cfg=TrainConfig(epochs=1, batch_size=16, checkpoint_every=2))
    with pytest.raises(UsageError, match=r"different settings \(lr 0.001 -> 0.01\)"):
        _run(tmp_path / "ck", cfg=TrainConfig(epochs=1, batch_size=16, lr=1e-2), resume=True)
    with pytest.raises(UsageError, match=r"different settings \(max_steps None -> 40\)"):
        _run(tmp_path / "ck", cfg=TrainConfig(epochs=1, batch_size=16, max_steps=40), resume=True)


def test_checkpoint_survives_a_crash_between_renames(tmp_path):
    target = tmp_path / "last"
    write_checkpoint(target, model_state={"w": torch.ones(2)}, state={"trainer": {"step": 1}})
    target.rename(tmp_path / ".last.old-deadbeef")  # as if killed between the two renames
    (tmp_path / ".last.tmp-0000").mkdir()  # and a half-written one
    assert find_checkpoint(target) == target and read_step(target) == 1


def test_optimizer_state_round_trip():
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.8, 0.9))
    model(DATA.x).sum().backward()
    opt.step()
    tensors, meta = flatten_optimizer_state(opt.state_dict())
    meta = json.loads(json.dumps(meta))  # must survive JSON
    restored = unflatten_optimizer_state(tensors, meta)
    fresh = torch.optim.AdamW(make_model().parameters(), lr=1.0)
    fresh.load_state_dict(restored)
    assert fresh.param_groups[0]["betas"] == (0.8, 0.9) and fresh.param_groups[0]["lr"] == 1e-3
    for k, v in opt.state_dict()["state"][0].items():
        assert torch.equal(fresh.state_dict()["state"][0][k], v)


@pytest.mark.parametrize(("batch_size", "world", "fixes"), [
    (8, 1, "; lower --batch-size"),
    (8, 2, "; lower --batch-size or launch fewer than 2 processes"),
    (1, 2, "; launch fewer than 2 processes"),  # a batch of one cannot be lowered
])
def test_too_few_samples_for_one_batch_says_what_can_be_changed(tmp_path, batch_size, world, fixes):
    from types import SimpleNamespace

    acc = SimpleNamespace(num_processes=world, process_index=0, is_main_process=True, device=torch.device("cpu"))
    cfg = TrainConfig(max_steps=2, batch_size=batch_size, drop_last=True)
    with pytest.raises(UsageError) as err:
        fit(make_model(), train_data=ToyData(n=1), loss_fn=loss_fn, cfg=cfg, checkpoint_dir=tmp_path, accelerator=acc)
    assert str(err.value) == f"1 training samples make no full batch of {batch_size} x {world} processes{fixes}"
