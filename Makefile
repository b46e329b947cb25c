# Two entry points for a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
# The CPU build of torch; override with TORCH_SPEC=torch for a CUDA machine.
TORCH_SPEC ?= torch==2.13.0

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# The runtime alone (what `make demo` needs).
$(VENV)/.installed: $(VENV)/bin/python pyproject.toml setup.py
	$(VENV)/bin/pip install -q "$(TORCH_SPEC)" -e .
	touch $@

# Plus the test extras (transformers as the reference, the openai client, triton's interpreter).
$(VENV)/.installed-test: $(VENV)/.installed
	$(VENV)/bin/pip install -q "$(TORCH_SPEC)" -e '.[test]'
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
