"""Shared fixtures: every test runs offline with its own GX_HOME, and never touches ~/.cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_REAL = REPO.parent / "shared" / "data" / "real"

# Tiny torch work on a 2-core machine: one thread per op avoids oversubscription when pytest runs
# alongside other processes; set before torch is imported by any test.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("gx_home")
    monkeypatch.setenv("GX_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.delenv("GX_RUN_DIR", raising=False)
    monkeypatch.delenv("GX_DEBUG", raising=False)
    yield


@pytest.fixture
def runner():
    from typer.testing import CliRunner

    return CliRunner()


@pytest.fixture
def real_data() -> Path:
    if not SHARED_REAL.is_dir():
        pytest.skip(f"shared real data not found at {SHARED_REAL}")
    return SHARED_REAL


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on a shared 2-core machine run fastest on one thread: with two, thread hand-offs made
    a forward 5-50x slower (measured). Modules opt in with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def one_line_error(res, code: int, *needles: str) -> str:
    """The gx invocation `res` exited with `code` and printed exactly one "Error:" line, holding every needle, and no traceback."""
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output, res.output
    err = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(err) == 1, res.output
    for n in needles:
        assert n in err[0], err[0]
    return err[0]


def invoke(runner, *args: str):
    """Run gx in-process; returns the click Result (stdout and stderr both captured)."""
    from gesture_cli.cli.app import app

    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
