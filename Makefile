# Two entry points for a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
# The CPU build of torch; override with TORCH_SPEC=torch for a CUDA machine.
TORCH_SPEC ?= torch==2.13.0

$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q "$(TORCH_SPEC)" -e '.[test]'
	touch $@

.PHONY: setup demo test
setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/qwen35 plan --model Qwen3.5-27B --gpu auto --fallback-gpu H100:1

# pytest exits 5 when it collects no tests: that is not a failure of the suite.
test: setup
	$(VENV)/bin/python -m pytest -q tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc
