# The two commands of the README: `make demo` and `make test`. Both start from nothing:
# they create the virtual environment in .venv when it is missing and install into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_OUT ?= mdcvkit-demo

.PHONY: demo test docs lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# PyTorch first: the CPU build where no CUDA device is present (a bare `torch` requirement
# would pull a multi-GB CUDA build), the default build where there is one.
$(VENV)/.torch: | $(PY)
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		$(PY) -m pip install --quiet torch; \
	else \
		$(PY) -m pip install --quiet torch==2.13.0; \
	fi
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/mdcvkit demo --output $(DEMO_OUT)

test: $(VENV)/.installed-test
	$(VENV)/bin/ruff check mdcvkit tests benchmarks data tutorials
	$(PY) -m pytest -q --durations=15

$(VENV)/.installed-docs: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install --quiet -e ".[docs]"
	touch $@ $(VENV)/.installed

# the documentation site (docs/_build/html); warnings are errors, notebooks are not executed
docs: $(VENV)/.installed-docs
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

# mlcolvar pins scikit-learn<1.8: install its other requirements, then mlcolvar without them
bench: $(VENV)/.installed-test
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) -m pip install --quiet --no-deps "mlcolvar>=1.2"
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) build dist *.egg-info docs/_build docs/api
