# fedimg: `make demo` and `make test` build the virtualenv themselves.
#
# TORCH_SPEC: the torch requirement installed before fedimg. Without an NVIDIA GPU it is
# the CPU wheel torch==2.13.0; with one (nvidia-smi present) plain "torch". Bring your own
# build with `make TORCH_SPEC="torch==2.x.y+cu12z" ...` or install it into .venv first
# (an importable torch is kept as it is).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# bench: the peers (Flower, SimpleITK) that the tests of the benchmarks/ scripts run against.
EXTRAS ?= test,bench
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCH_SPEC ?= $(if $(HAS_GPU),torch,torch==2.13.0)
STAMP := $(VENV)/.fedimg-installed
DEMO_DIR ?= demo
PYTEST_ARGS ?=

.PHONY: venv demo test bench compare clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-$$(nproc)} bash scripts/demo.sh "$(DEMO_DIR)"

test: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} NUMBA_ENABLE_CUDASIM=$${NUMBA_ENABLE_CUDASIM:-0} \
	  $(BIN)/python -m pytest $(PYTEST_ARGS)

# fedimg's own numbers on this machine (quick runs; JSON under bench-results/).
bench: $(STAMP)
	$(BIN)/fedimg bench all --json-dir bench-results

# fedimg against its peers (Flower, NVFlare, SimpleITK, the MONAI tutorial loop), quick runs.
compare: $(STAMP)
	for b in train_throughput aggregate deface federation tiles; do \
	  $(BIN)/python benchmarks/$$b.py --quick --json bench-results/compare-$$b.json || exit 1; done

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache build *.egg-info
