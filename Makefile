# gx — quick start: `make demo` (runs the toolchain on synthetic data) and `make test`.
# Both create a local virtualenv in .venv and install gx into it on first use.

VENV      ?= .venv
PYTHON    ?= python3
PY        := $(VENV)/bin/python
GX        := $(VENV)/bin/gx
STAMP     := $(VENV)/.gx-installed
# Machines without an NVIDIA GPU take the CPU build of torch; GPU boxes take the normal (CUDA) wheel.
# Both pin the torch the suite is tested with (within pyproject's torch>=2.4): unpinned, a GPU box would
# get whatever torch is newest that day, which no test has run. A driver that needs another CUDA build:
# make install TORCH_GPU='torch==X.Y.Z'.
TORCH_CPU ?= torch==2.13.0
TORCH_GPU ?= torch==2.13.0
PYTEST_ARGS ?=

# timm needs torchvision, and torchvision has no build beside the CPU torch: the timm backbone path
# is tested in a second virtualenv with a matching torch/torchvision pair.
TIMM_VENV ?= .venv-timm
TORCH_TIMM ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install install-holistic test test-fast test-timm demo lint bench gpu-check clean help

help:
	@echo "make demo     run every gx command on synthetic data with tiny backbones (offline) into runs/demo, with runs/demo/report.html"
	@echo "make test     run the whole test suite as a CPU without native bf16 (fp32 by default), then the fast tests and the demo"
	@echo "              test as one with it (bf16 by default); make test-fast runs the fast tests once, as this CPU is"
	@echo "make install-holistic  MediaPipe Holistic for gx pose-extract (make install already adds it)"
	@echo "make lint     ruff, then lint-imports: the import rules of DESIGN section 1 (pyproject [tool.importlinter])"
	@echo "make bench    benchmarks/*.py (CPU)"
	@echo "make gpu-check  on a CUDA machine: every command in bf16 and fp16, plus the LoRA and extraction benchmarks -> gpu-check.json"

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  echo "NVIDIA GPU found: installing $(TORCH_GPU)"; $(PY) -m pip install -q "$(TORCH_GPU)"; \
	else \
	  echo "no NVIDIA GPU: installing $(TORCH_CPU)"; $(PY) -m pip install -q "$(TORCH_CPU)"; \
	fi
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,holistic]"
	@touch $(STAMP)

# MediaPipe Holistic for gx pose-extract (make install already includes it; this adds it to an older .venv)
install-holistic: install
	$(PY) -m pip install -q -c constraints.txt -e ".[holistic]"

# The suite's result must not depend on the CPU it runs on: `--precision auto` means bf16 where the CPU
# multiplies bf16 natively and fp32 elsewhere, so the suite runs once as each kind of machine
# (GX_NATIVE_BF16 forces the detection; DESIGN section 8).
test: install
	GX_NATIVE_BF16=0 $(PY) -m pytest -q $(PYTEST_ARGS)
	GX_NATIVE_BF16=1 $(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)
	GX_NATIVE_BF16=1 $(PY) -m pytest -q tests/test_demo.py $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-timm:
	test -x $(TIMM_VENV)/bin/python || $(PYTHON) -m venv $(TIMM_VENV)
	$(TIMM_VENV)/bin/python -m pip install -q $(TORCH_TIMM)
	$(TIMM_VENV)/bin/python -m pip install -q -c constraints.txt -e ".[dev]" timm
	$(TIMM_VENV)/bin/python -m pytest -q tests/test_backbones.py -k timm

demo: install
	$(GX) demo -r runs/demo

lint: install
	$(VENV)/bin/ruff check gesture_cli tests benchmarks
	$(VENV)/bin/lint-imports

bench: install
	@for b in benchmarks/*.py; do [ "$$b" = benchmarks/gpu_check.py ] && continue; echo "== $$b"; $(PY) $$b || exit 1; done

gpu-check: install
	$(PY) benchmarks/gpu_check.py --out gpu-check.json

clean:
	rm -rf $(VENV) $(TIMM_VENV) runs/demo .pytest_cache
