"""`make install`: the torch it puts on a CPU machine and on a GPU box is one tested version, inside the range
pyproject.toml allows."""

from __future__ import annotations

import re

import pytest
from packaging.requirements import Requirement

from tests.conftest import REPO


def _make_default(name: str) -> str:
    """The value of `NAME ?= value` in the Makefile."""
    found = re.search(rf"^{name}\s*\?=\s*(.+?)\s*$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert found, f"no `{name} ?=` in the Makefile"
    return found.group(1)


def test_cpu_and_gpu_installs_pin_the_same_torch_that_pyproject_allows():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    cpu, gpu = Requirement(_make_default("TORCH_CPU")), Requirement(_make_default("TORCH_GPU"))
    assert cpu.name == gpu.name == "torch"
    pins = [str(r.specifier) for r in (cpu, gpu)]
    assert pins[0] == pins[1] and pins[0].startswith("=="), f"TORCH_CPU {pins[0]!r} and TORCH_GPU {pins[1]!r} must pin one version"
    version = pins[0].removeprefix("==")
    deps = [Requirement(d) for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]]
    allowed = next(d.specifier for d in deps if d.name == "torch")
    assert allowed.contains(version), f"torch {version} is outside pyproject's torch{allowed}"
