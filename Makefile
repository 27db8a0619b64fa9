# `make test` and `make run` both start by building .venv: torch (the CPU wheel where no NVIDIA GPU
# is present, the CUDA build otherwise), then this project with its test extras.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_CPU := torch==2.13.0

.PHONY: setup test test-fast lint run bench gpu-check clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "NVIDIA GPU found: installing the CUDA build of torch"; \
		$(PIP) install -q 'torch>=2.4'; \
	else \
		echo "no NVIDIA GPU: installing the CPU build $(TORCH_CPU)"; \
		$(PIP) install -q $(TORCH_CPU) || $(PIP) install -q $(TORCH_CPU) --index-url https://download.pytorch.org/whl/cpu; \
	fi
	$(PIP) install -q -e '.[test]'
	touch $@

# Everything CI runs: the linters and type checker, then the whole suite.
test: setup lint
	$(PY) -m pytest -q

# The inner loop (< 2 minutes on 2 cores): the suite without the tests marked slow.
test-fast: setup
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check hrm hrm_tui tests bench
	$(VENV)/bin/ruff format --check hrm hrm_tui tests bench
	$(VENV)/bin/mypy

run: setup
	$(VENV)/bin/hrm-tui

bench: setup
	$(PY) bench/step.py

# Verifies a GPU box in under 10 minutes (CUDA tests, both paper presets at the batch that fits,
# bench/step.py --cuda, 2-GPU torchrun when present) and prints one table; `--dry-run` shows the plan.
gpu-check: setup
	$(PY) bench/gpu_check.py

clean:
	rm -rf $(VENV) build *.egg-info
