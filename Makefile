# Set-up and main jobs. `make test` and `make demo` each create .venv and install
# everything they need (Python packages, and Fashion-MNIST from Debian where apt exists).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: install data test lint demo bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,sweeps]'
	touch $@

install: $(VENV)/.installed

data:
	@if [ -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null; \
	else echo "Fashion-MNIST not found: install the Debian package dataset-fashion-mnist or pass data.download=true"; fi

lint: install
	$(VENV)/bin/ruff check src tests

test: install data
	$(VENV)/bin/ruff check src tests
	$(PY) -m pytest -q

demo: install data
	$(VENV)/bin/abc-lab train

bench: install
	$(VENV)/bin/abc-lab bench

clean:
	rm -rf $(VENV) outputs multirun
