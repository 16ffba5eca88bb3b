"""Library noise (transformers load reports, progress bars, warnings) is hidden unless --verbose."""

from __future__ import annotations

import logging

import pytest

from tests.conftest import invoke


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            self.messages.append(record.getMessage())


@pytest.fixture
def noisy_model(tmp_path):
    """A tiny saved Dinov2 with one unexpected weight: loading it makes transformers log a LOAD REPORT warning."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import Dinov2Config, Dinov2Model

    model_dir = tmp_path / "tiny"
    config = Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=28, patch_size=14)
    Dinov2Model(config).save_pretrained(model_dir)
    weights = load_file(model_dir / "model.safetensors")
    weights["stray.weight"] = torch.zeros(2)
    save_file(weights, model_dir / "model.safetensors", metadata={"format": "pt"})
    return model_dir


def test_transformers_noise_hidden_by_default_and_shown_with_verbose(runner, tmp_path, noisy_model):
    records = _Records()
    hf_logger = logging.getLogger("transformers")
    hf_logger.addHandler(records)  # whatever stream transformers' own handler was bound to, records arrive here
    args = ["extract-features", "--backbone", noisy_model, "--dataset", "synthetic-hands", "--split", "test", "--max-samples", "4"]
    try:
        quiet = invoke(runner, *args, "-r", tmp_path / "a")
        assert quiet.exit_code == 0, quiet.output
        quiet_records = list(records.messages)
        records.messages.clear()
        loud = invoke(runner, "--verbose", *args, "-r", tmp_path / "b")
        assert loud.exit_code == 0, loud.output
        loud_records = list(records.messages)
        quiet_again = invoke(runner, *args, "--force", "-r", tmp_path / "a")  # quiet once more after a verbose run
    finally:
        hf_logger.removeHandler(records)

    assert quiet_records == [], quiet_records
    assert "Loading weights" not in quiet.output and "\r" not in quiet.output
    assert len(quiet.output.splitlines()) < 15, quiet.output
    # the same command with --verbose shows what was hidden, so the checks above can fail
    assert any("LOAD REPORT" in m for m in loud_records), loud_records
    assert "Loading weights" in loud.output
    assert quiet_again.exit_code == 0 and "Loading weights" not in quiet_again.output
