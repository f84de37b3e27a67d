# Set-up and main jobs. `make test` and `make demo` each create .venv and install
# everything they need (Python packages, and Fashion-MNIST from Debian where apt exists).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: install data test test-slurm lint demo study bench clean

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
	$(VENV)/bin/lint-imports

# the whole suite, including tests/slurm: a real one-node SLURM cluster that the tests
# install (apt-get install slurm-wlm munge), start and stop; it skips, saying why, without
# root or apt-get
test: install data
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

test-slurm: install data
	$(PY) -m pytest -q -m slurm tests/slurm

demo: install data
	$(VENV)/bin/abc-lab train

# The Fashion-MNIST study (sweeps/fmnist_study.yaml, 12 trainings): resumable, so running
# it again continues where it stopped; then the report in reports/fashion-mnist-resnet20/.
STUDY := sweeps/fmnist_study.yaml
study: install data
	$(VENV)/bin/abc-lab sweep $(STUDY)
	$(VENV)/bin/abc-lab report "$$($(VENV)/bin/abc-lab sweep $(STUDY) --where)/runs" \
	  --name fashion-mnist-resnet20 --keep-records --notes reports/fashion-mnist-resnet20/findings.md

bench: install
	$(VENV)/bin/abc-lab bench

clean:
	rm -rf $(VENV) outputs multirun
