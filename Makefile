# Two entry points for a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
# Which torch build: auto (CUDA where nvidia-smi lists an NVIDIA GPU, else CPU), cpu or cuda.
# The CPU build comes from PyTorch's CPU index (PyPI's Linux wheels are CUDA builds, several GB);
# where that index is unreachable, from the configured index, and the install says so.
# TORCH_CUDA_INDEX picks a CUDA release, e.g. https://download.pytorch.org/whl/cu128 (default: PyPI's).
TORCH ?= auto
TORCH_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_CUDA_INDEX ?=
PIP = $(VENV)/bin/python -m pip install --progress-bar on

$(VENV)/bin/python:
	@echo "==> creating the virtual environment $(VENV)"
	$(PYTHON) -m venv $(VENV)

# torch first, so that qwen35's `torch>=2.4` finds the build chosen here.
$(VENV)/.torch: $(VENV)/bin/python scripts/install_torch.py
	$(VENV)/bin/python scripts/install_torch.py --build $(TORCH) --version $(TORCH_VERSION) \
		--cpu-index "$(TORCH_CPU_INDEX)" --cuda-index "$(TORCH_CUDA_INDEX)"
	touch $@

# The runtime alone (what `make demo` needs).
$(VENV)/.installed: $(VENV)/.torch pyproject.toml setup.py
	@echo "==> installing qwen35 and its dependencies into $(VENV)"
	$(PIP) -e .
	touch $@

# Plus the test extras (transformers as the reference, the openai client, triton's interpreter).
$(VENV)/.installed-test: $(VENV)/.installed
	@echo "==> installing the test extras (pytest, transformers, openai, triton)"
	$(PIP) -e '.[test]'
	touch $@

.PHONY: setup demo test
setup: $(VENV)/.installed

# Writes the tiny demo checkpoint once, then serves it with the bundled runtime on CPU.
demo: setup
	@test -f demo-model/config.json || $(VENV)/bin/qwen35 demo-model ./demo-model
	$(VENV)/bin/qwen35 launch --profile qwen35-demo-cpu

# pytest exits 5 when it collects no tests: that is not a failure of the suite.
test: $(VENV)/.installed-test
	$(VENV)/bin/python -m pytest -q tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc
