"""The precision policy (DESIGN section 8): what `auto` picks, how `Precision` stores and runs a model, the
fp16 gradient-scaler path of `fit` on a CPU, and every model command in fp32 and bf16 whatever this CPU is.

bf16 runs on any CPU (emulated where it is not native, so slowly but correctly); the tests force the
native-bf16 answer with $GX_NATIVE_BF16 where `auto` matters, so their result does not depend on the machine.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import invoke, one_line_error
from torch import nn

from gesture_cli.core.device import NATIVE_BF16_ENV, Precision, inference_precision, make_precision, resolve_precision
from gesture_cli.core.errors import NonFiniteError, UsageError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = torch.device("cpu")


# ---- what auto picks ------------------------------------------------------------------------------


@pytest.mark.parametrize(("native", "want"), [("1", "bf16"), ("0", "fp32")])
def test_auto_on_a_cpu_follows_native_bf16_and_the_env_var_forces_it(monkeypatch, native, want):
    monkeypatch.setenv(NATIVE_BF16_ENV, native)
    assert resolve_precision(CPU, "auto") == want
    assert resolve_precision(CPU, None) == want
    assert resolve_precision(CPU, "fp32") == "fp32" and resolve_precision(CPU, "bf16") == "bf16"


def test_a_bad_env_value_and_a_bad_name_are_usage_errors(monkeypatch):
    monkeypatch.setenv(NATIVE_BF16_ENV, "maybe")
    with pytest.raises(UsageError, match="GX_NATIVE_BF16='maybe'"):
        resolve_precision(CPU, "auto")
    monkeypatch.delenv(NATIVE_BF16_ENV)
    with pytest.raises(UsageError, match="'fp8' is not one of auto|fp32|bf16|fp16"):
        resolve_precision(CPU, "fp8")


def test_fp16_on_a_cpu_is_refused_with_the_alternatives():
    with pytest.raises(UsageError) as err:
        resolve_precision(CPU, "fp16")
    assert "fp16" in str(err.value) and "bf16" in str(err.value) and "fp32" in str(err.value)


@pytest.mark.parametrize(("bf16_ok", "want"), [(True, "bf16"), (False, "fp16")])
def test_auto_on_cuda_is_bf16_where_supported_else_fp16(monkeypatch, bf16_ok, want):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_ok)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla T4")
    cuda = torch.device("cuda", 0)
    assert resolve_precision(cuda, "auto") == want
    assert resolve_precision(cuda, "fp16") == "fp16"
    if not bf16_ok:
        with pytest.raises(UsageError, match="Tesla T4 has no bf16"):
            resolve_precision(cuda, "bf16")


def test_inference_follows_the_artifact_unless_told_or_too_slow_here(monkeypatch):
    monkeypatch.setenv(NATIVE_BF16_ENV, "1")
    assert inference_precision(CPU, None, "bf16").name == "bf16"
    assert inference_precision(CPU, None, "fp32").name == "fp32"
    assert inference_precision(CPU, "fp32", "bf16").name == "fp32"  # --precision overrides
    assert inference_precision(CPU, None, "fp16").name == "bf16"  # a GPU's fp16 artifact: auto on this CPU
    assert inference_precision(CPU, None, None).name == "bf16"  # an old artifact without a record: auto
    monkeypatch.setenv(NATIVE_BF16_ENV, "0")
    assert inference_precision(CPU, None, "bf16").name == "fp32"  # emulated bf16 would be hundreds of times slower


# ---- how Precision stores and runs a model ----------------------------------------------------------


class _Net(nn.Module):
    """A frozen 'backbone', a trained head with BatchNorm, and a concatenation of its inputs (the op that bf16
    autocast refuses for float16 inputs)."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8)).requires_grad_(False)
        self.head = nn.Sequential(nn.Linear(16, 4), nn.BatchNorm1d(4))

    def forward(self, a, b):
        x = torch.cat([self.backbone(a), b], dim=-1)
        return self.head(x)


def test_store_frozen_keeps_trained_parameters_and_their_buffers_in_fp32():
    net = Precision("bf16", CPU).store_frozen(_Net())
    assert {p.dtype for p in net.backbone.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in net.head.parameters()} == {torch.float32}
    assert net.head[1].running_mean.dtype == torch.float32
    assert Precision("fp32", CPU).store_frozen(_Net()).backbone[0].weight.dtype == torch.float32


def test_a_keep_fp32_module_is_left_whole():
    class Pinned(nn.Module):
        keep_fp32 = True

        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(4, 4).requires_grad_(False)

    net = nn.Sequential(nn.Linear(4, 4).requires_grad_(False), Pinned())
    Precision("bf16", CPU).store_frozen(net)
    assert net[0].weight.dtype == torch.bfloat16 and net[1].inner.weight.dtype == torch.float32


def test_wrap_converts_inputs_before_autocast_so_float16_data_is_safe():
    a, b = torch.randn(3, 8), torch.randn(3, 8).half()  # cached float16 tokens, as segment-train stores them
    bare = Precision("bf16", CPU).store_frozen(_Net()).eval()
    with pytest.raises(RuntimeError), torch.autocast("cpu", dtype=torch.bfloat16):  # the bug of the issue
        bare(a, b)
    net = Precision("bf16", CPU).for_inference(_Net())
    out = net(a, b)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert Precision("bf16", CPU).wrap(net) is net  # idempotent: no second layer of wrapping
    assert net.forward.__wrapped__ is _Net.forward
    Precision("fp32", CPU).wrap(net)  # another precision replaces the wrapper instead of stacking on it
    assert net.forward.__wrapped__ is _Net.forward
    import copy

    twin = copy.deepcopy(Precision("bf16", CPU).wrap(net))  # the copy's forward runs the copy, not the original
    assert twin.forward.__self__ is twin
    with torch.no_grad():
        twin.head[0].weight.zero_()
        twin.head[0].bias.fill_(1.0)
    assert not torch.equal(twin(a, b), net(a, b))


def test_check_finite_names_the_output_and_suggests_fp32():
    with pytest.raises(NonFiniteError, match=r"in the features at --precision bf16; rerun with --precision fp32"):
        Precision("bf16", CPU).check_finite(torch.tensor([1.0, float("nan")]), what="the features")
    Precision("bf16", CPU).check_finite(torch.ones(3), what="x")


# ---- fp16 through fit on a CPU: loss scaling and skipped overflow steps ----------------------------


class _Pairs:
    def __init__(self, n=64):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 8, generator=g)
        self.y = (self.x[:, :4] * 2).sum(1, keepdim=True)

    def __len__(self):
        return len(self.x)

    def get_batch(self, idx):
        return self.x[idx], self.y[idx]


def _fit_fp16(tmp_path, *, poison_step=None, max_steps=12, resume=False):
    from gesture_cli.train.loop import TrainConfig, fit, make_accelerator

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    calls = {"n": 0}

    def loss_fn(m, batch):
        x, y = batch
        out = m(x)
        calls["n"] += 1
        loss = nn.functional.mse_loss(out, y)
        if poison_step is not None and calls["n"] == poison_step:
            out.register_hook(lambda g: g * float("inf"))  # an overflowing gradient, the loss itself stays finite
        return loss

    cfg = TrainConfig(max_steps=max_steps, batch_size=16, lr=3e-2, warmup_steps=0, checkpoint_every=4, log_every=1)
    res = fit(model, train_data=_Pairs(), loss_fn=loss_fn, cfg=cfg, checkpoint_dir=tmp_path / "ckpt", accelerator=make_accelerator("cpu"),
              precision=Precision("fp16", CPU), resume=resume)
    return model, res


def test_fp16_fit_scales_the_loss_and_learns(tmp_path):
    model, res = _fit_fp16(tmp_path, max_steps=80)
    losses = [r["loss"] for r in res.state.log]
    assert res.state.precision == "fp16" and all(math.isfinite(v) for v in losses)
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.5 * first, (first, last)
    state = json.loads((res.last_dir / "state.json").read_text())
    assert state["scaler"]["scale"] > 0  # the scaler's state travels with the checkpoint
    assert all(p.dtype == torch.float32 for p in model.parameters())  # fp32 master weights


def test_fp16_fit_skips_a_step_whose_gradients_overflow(tmp_path):
    _, clean = _fit_fp16(tmp_path / "clean", max_steps=30)  # the scaler's own early overflows (scale starts at 2^16)
    model, res = _fit_fp16(tmp_path / "poisoned", poison_step=20, max_steps=30)
    assert res.state.skipped_steps == clean.state.skipped_steps + 1
    assert all(torch.isfinite(p).all() for p in model.parameters())
    state = json.loads((res.last_dir / "state.json").read_text())
    assert state["trainer"]["skipped_steps"] == res.state.skipped_steps


def test_a_resume_in_another_precision_is_said_and_recorded(tmp_path):
    """A bf16 run stopped at step 6 and resumed in fp16 (a card without bf16): it trains on, says so once, and the
    checkpoint and metrics.json say which steps ran in which precision."""
    import warnings

    from gesture_cli.core.errors import GxWarning
    from gesture_cli.train.loop import TrainConfig, TrainingInterrupted, fit, make_accelerator
    from gesture_cli.train.skeleton import fit_summary

    def run(precision, *, resume):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
        cfg = TrainConfig(max_steps=12, batch_size=16, lr=3e-2, warmup_steps=0, checkpoint_every=3, log_every=1)
        stop = {"on_step_end": [lambda st: st.request_stop("test") if st.step == 6 and not resume else None]}
        return fit(model, train_data=_Pairs(), loss_fn=lambda m, b: nn.functional.mse_loss(m(b[0]), b[1]), cfg=cfg,
                   checkpoint_dir=tmp_path / "ckpt", accelerator=make_accelerator("cpu"), precision=Precision(precision, CPU),
                   resume=resume, callbacks=stop)

    with pytest.raises(TrainingInterrupted, match="step 6/12"):
        run("bf16", resume=False)
    assert json.loads((tmp_path / "ckpt" / "last" / "state.json").read_text())["trainer"]["precision_history"] == [[0, "bf16"]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = run("fp16", resume=True)
    said = [str(w.message) for w in caught if issubclass(w.category, GxWarning)]
    assert len(said) == 1 and "in fp16, but its steps up to 6 ran in bf16" in said[0], said
    assert res.state.step == 12 and res.state.resumed_from == 6
    summary = fit_summary(res)
    assert summary["precision"] == "fp16"
    assert summary["precision_history"] == [{"from_step": 0, "precision": "bf16"}, {"from_step": 6, "precision": "fp16"}]
    state = json.loads((res.last_dir / "state.json").read_text())["trainer"]
    assert state["precision"] == "fp16" and state["precision_history"] == [[0, "bf16"], [6, "fp16"]]
    with warnings.catch_warnings(record=True) as caught:  # the same precision again: nothing to say
        warnings.simplefilter("always")
        run("fp16", resume=True)
    assert not [w for w in caught if issubclass(w.category, GxWarning)]


def test_a_resume_after_mixed_precisions_says_which_steps_ran_in_which(tmp_path):
    """fp32 steps 1-4, bf16 steps 5-8, then resumed in fp32: the warning said "its steps up to 8 ran in bf16"."""
    import warnings

    from gesture_cli.core.errors import GxWarning
    from gesture_cli.train.loop import TrainConfig, TrainingInterrupted, fit, make_accelerator

    def run(precision, *, resume, stop_at=None):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
        cfg = TrainConfig(max_steps=12, batch_size=16, lr=3e-2, warmup_steps=0, checkpoint_every=4, log_every=1)
        stop = {"on_step_end": [lambda st: st.request_stop("test") if st.step == stop_at else None]}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                fit(model, train_data=_Pairs(), loss_fn=lambda m, b: nn.functional.mse_loss(m(b[0]), b[1]), cfg=cfg,
                    checkpoint_dir=tmp_path / "ckpt", accelerator=make_accelerator("cpu"), precision=Precision(precision, CPU),
                    resume=resume, callbacks=stop)
            except TrainingInterrupted:
                pass
        return [str(w.message) for w in caught if issubclass(w.category, GxWarning)]

    assert run("fp32", resume=False, stop_at=4) == []
    said = run("bf16", resume=True, stop_at=8)
    assert len(said) == 1 and "in bf16, but its steps up to 4 ran in fp32" in said[0], said
    said = run("fp32", resume=True)
    assert len(said) == 1 and "in fp32; its steps 1-4 ran in fp32, 5-8 in bf16; metrics.json lists each" in said[0], said
    assert "pass --precision bf16" in said[0]
    state = json.loads((tmp_path / "ckpt" / "last" / "state.json").read_text())["trainer"]
    assert state["precision_history"] == [[0, "fp32"], [4, "bf16"], [8, "fp32"]]


def test_step_ranges_leave_out_a_precision_that_ran_no_step():
    from gesture_cli.train.loop import _step_ranges

    assert _step_ranges([[0, "fp32"], [4, "bf16"], [4, "fp32"]], upto=9) == [(1, 9, "fp32")]
    assert _step_ranges([[0, "bf16"], [6, "fp16"]], upto=6) == [(1, 6, "bf16")]
    assert _step_ranges([[0, "bf16"]], upto=0) == []


def _resume_a_checkpoint_rewritten(tmp_path, **trainer):
    """Train a tiny model in one process and stop it at step 3, write `trainer` into its checkpoint's state.json (as
    another run would have left it), then resume to step 12: (the fit result, the GxWarnings said)."""
    import warnings

    from gesture_cli.core.errors import GxWarning
    from gesture_cli.train.loop import TrainConfig, TrainingInterrupted, fit, make_accelerator

    def run(*, resume):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
        cfg = TrainConfig(max_steps=12, batch_size=16, lr=3e-2, warmup_steps=0, checkpoint_every=3, log_every=1)
        stop = {"on_step_end": [lambda st: st.request_stop("test") if st.step == 3 and not resume else None]}
        return fit(model, train_data=_Pairs(), loss_fn=lambda m, b: nn.functional.mse_loss(m(b[0]), b[1]), cfg=cfg,
                   checkpoint_dir=tmp_path / "ckpt", accelerator=make_accelerator("cpu"), precision=Precision("fp32", CPU),
                   resume=resume, callbacks=stop)

    with pytest.raises(TrainingInterrupted):
        run(resume=False)
    state_path = tmp_path / "ckpt" / "last" / "state.json"
    state = json.loads(state_path.read_text())
    state["trainer"].update(trainer)
    state_path.write_text(json.dumps(state))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = run(resume=True)
    return res, [str(w.message) for w in caught if issubclass(w.category, GxWarning)]


def test_a_resume_with_another_process_count_is_said_and_recorded(tmp_path):
    """A checkpoint written by 2 processes (its state.json says so) resumed by 1: said once, the history kept,
    and the epochs reported from the place in the epoch order (the steps per epoch doubled)."""
    from gesture_cli.train.skeleton import fit_summary

    per_epoch = len(_Pairs()) // 16  # micro-batches of one process per epoch
    # as 2 processes wrote it
    res, said = _resume_a_checkpoint_rewritten(tmp_path, num_processes=2, num_processes_history=[[0, 2]], batch_in_epoch=1)
    assert len(said) == 1 and "with 1 process(es), but its steps up to 3 ran with 2" in said[0], said
    summary = fit_summary(res)
    assert summary["num_processes"] == 1 and summary["steps"] == 12
    assert summary["num_processes_history"] == [{"from_step": 0, "num_processes": 2}, {"from_step": 3, "num_processes": 1}]
    # 4 micro-batches an epoch for 1 process: 1 of 2 processes' is 2 of one's, then 9 more steps -> 11 = 2.75 epochs
    assert summary["epochs"] == 2.75 and per_epoch == 4
    # a history of several counts is said span by span (it said "its steps up to N ran with" the last count only)
    from gesture_cli.train.loop import _ran_text, _step_ranges

    ran = _step_ranges([[0, 4], [2, 2]], upto=3)
    assert _ran_text(ran, verb="with", unit=" process(es)") == "steps 1-2 ran with 4 process(es), 3 with 2 process(es)"


@pytest.mark.parametrize(("history", "saved", "said", "recorded"), [
    ([[0, 1], [3, 2]], 2, None, [[0, 1]]),  # resumed with 2 and stopped before a step: every step ran with 1, as this resume
    ([[0, 2], [3, 1]], 1, "with 1 process(es), but its steps up to 3 ran with 2", [[0, 2], [3, 1]]),  # resumed with 1, no step
])
def test_a_resume_names_the_process_count_its_steps_ran_with(tmp_path, history, saved, said, recorded):
    """The warning named the count of the latest resume even where that resume ran no step ("ran with 2" of steps
    that all ran with 1), and said nothing where the latest resume's count matched but no step ran with it."""
    res, told = _resume_a_checkpoint_rewritten(tmp_path, num_processes=saved, num_processes_history=history)
    assert told == [] if said is None else (len(told) == 1 and said in told[0]), told
    # the history keeps no entry for a resume that ran no step (it held [[0, 1], [3, 2], [3, 1]])
    assert res.state.num_processes_history == recorded
    assert res.state.step == 12


# ---- every model command in fp32 and bf16 -------------------------------------------------------------

PRECISIONS = ["fp32", "bf16"]


def _ok(res):
    assert res.exit_code == 0, res.output
    return res


def _losses(path):
    import csv

    rows = list(csv.DictReader(path.open()))
    return [float(r["loss"]) for r in rows if r.get("loss")]


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """Features of one small split in each precision (the same images)."""
    from safetensors.torch import load_file
    from typer.testing import CliRunner

    out = {}
    for p in PRECISIONS:
        run = tmp_path_factory.mktemp(f"x-{p}")
        res = _ok(invoke(CliRunner(), "extract-features", "-b", "tiny-dinov2", "-d", "synthetic-hands", "--max-samples", "48",
                         "--split", "train", "--pool", "cls+mean", "--precision", p, "-r", run))
        tensors = load_file(run / "features" / "tiny-dinov2" / "train.safetensors")
        meta = json.loads((run / "features" / "tiny-dinov2" / "meta.json").read_text())
        out[p] = (tensors, meta, res.output)
    return out


def test_extract_features_in_bf16_agrees_with_fp32(extracted):
    f32, meta32, _ = extracted["fp32"]
    b16, meta16, output = extracted["bf16"]
    assert meta32["dtype"] == "float32" and meta16["dtype"] == "bfloat16" and "bfloat16" in output
    x, y = f32["features"].double(), b16["features"].double()
    assert torch.isfinite(y).all() and x.shape == y.shape
    cos = nn.functional.cosine_similarity(x, y, dim=1)
    assert cos.min() >= 0.999, cos.min()
    assert torch.equal(f32["labels"], b16["labels"])


@pytest.mark.parametrize("precision", PRECISIONS)
def test_pca_compute_and_visualize(runner, tmp_path, precision):
    from gesture_cli.data.synthetic_video import generate_clip
    from gesture_cli.viz.pca_render import write_video

    _ok(invoke(runner, "pca-compute", "-b", "tiny-dinov2", "-d", "synthetic-video", "--max-samples", "12", "--precision", precision, "-r", tmp_path))
    from safetensors.torch import load_file

    t = load_file(tmp_path / "pca" / "tiny-dinov2" / "pca.safetensors")
    assert all(torch.isfinite(v.double()).all() for v in t.values())
    write_video(tmp_path / "clip.mp4", generate_clip(seed=1, clip=0, subject=0)[:6], fps=6.0)
    _ok(invoke(runner, "pca-visualize", "-i", tmp_path / "clip.mp4", "--precision", precision, "-r", tmp_path))
    assert list((tmp_path / "pca" / "tiny-dinov2" / "renders").glob("clip*.mp4"))


def _check_trained(metrics_path, log_path, precision):
    m = json.loads(metrics_path.read_text())
    assert m["precision"] == precision
    losses = _losses(log_path)
    assert losses and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0], losses  # it learned something
    return m


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize(("backbone", "size"), [("tiny-dinov2", "16"), ("tiny-dinov3", "32")])  # dinov3: RoPE and registers
def test_lora_train(runner, tmp_path, precision, backbone, size):
    res = _ok(invoke(runner, "lora-train", "--backbone", backbone, "--dataset", "synthetic-hands", "--image-size", size, "--max-samples", "96",
                     "--batch-size", "32", "--max-steps", "30", "--lr", "3e-3", "--precision", precision, "-r", tmp_path))
    assert f"precision: {precision} on cpu" in res.output
    out = tmp_path / "lora" / backbone
    _check_trained(out / "metrics.json", out / "train_log.csv", precision)
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("precision", PRECISIONS)
def test_keypoint_train(runner, tmp_path, precision):
    _ok(invoke(runner, "keypoint-train", "--backbone", "tiny-dinov2", "--method", "full", "--image-size", "32", "--dataset-opt", "train_samples=200",
               "--dataset-opt", "eval_samples=32", "--dataset-opt", "side=32", "--dataset-opt", "clutter=false", "--rotate", "0",
               "--scale-jitter", "0", "--batch-size", "32", "--max-steps", "25", "--lr", "3e-3", "--precision", precision, "-r", tmp_path))
    out = tmp_path / "keypoint" / "tiny-dinov2"
    _check_trained(out / "metrics.json", out / "train_log.csv", precision)


@pytest.mark.parametrize("cache", [True, False], ids=["cached-tokens", "pixels"])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_segment_train(runner, tmp_path, precision, cache):
    _ok(invoke(runner, "segment-train", "--backbone", "tiny-dinov2", "--dataset", "synthetic-scenes", "--dataset-opt", "size=64",
               "--dataset-opt", "train_images=32", "--dataset-opt", "val_images=8", "--dataset-opt", "test_images=8",
               *(["--cache-features"] if cache else []), "--epochs", "4", "--lr", "1e-2", "--precision", precision, "-r", tmp_path))
    out = tmp_path / "segment" / "tiny-dinov2"
    m = _check_trained(out / "metrics.json", out / "train_log.csv", precision)
    assert math.isfinite(m["test"]["mIoU"])


@pytest.mark.parametrize("precision", PRECISIONS)
def test_pose_pretrain_and_finetune(runner, tmp_path, precision):
    data = [a for o in ("train_size=64", "val_size=16", "test_size=16", "signers=1", "max_glosses=3") for a in ("--dataset-opt", o)]
    enc = [a for o in ("d_model=32", "n_layers=1", "n_heads=4", "gcn_dims=16") for a in ("--encoder-opt", o)]
    _ok(invoke(runner, "pose-pretrain", *data, *enc, "--keypoints", "body,hands", "--max-frames", "12", "--text-model", "tiny-umt5",
               "--embed-dim", "32", "--epochs", "4", "--batch-size", "16", "--lr", "2e-3", "--precision", precision, "-r", tmp_path))
    pre = tmp_path / "pose" / "pretrain"
    _check_trained(pre / "metrics.json", pre / "train_log.csv", precision)
    _ok(invoke(runner, "pose-finetune", *data, "--bridge", "direct", "--max-frames", "12", "--epochs", "4", "--batch-size", "16",
               "--lr", "5e-3", "--max-new-tokens", "8", "--precision", precision, "-r", tmp_path))
    fin = tmp_path / "pose" / "finetune"
    _check_trained(fin / "metrics.json", fin / "train_log.csv", precision)


def test_fp16_on_a_cpu_is_a_one_line_usage_error(runner, tmp_path):
    res = invoke(runner, "lora-train", "--backbone", "tiny-dinov2", "--dataset", "synthetic-hands", "--precision", "fp16", "--device", "cpu",
                 "-r", tmp_path)
    one_line_error(res, 2, "--precision fp16", "bf16", "fp32")
    assert not (tmp_path / "lora").exists()


def test_make_precision_takes_device_strings():
    assert make_precision("cpu", "fp32") == Precision("fp32", CPU)

