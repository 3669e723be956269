# proteinflow: `make demo` runs the main job, `make test` runs the test suite.
# Both create .venv and install CPU torch first, then the package (see README).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
PDB_DIR ?= ../shared/data/cath_s20/train
OUT ?= outputs/demo
export OMP_NUM_THREADS ?= 2

.PHONY: setup demo test lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==$(TORCH_VERSION)
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/proteinflow train --config configs/toy_8gaussians_moons.yaml --out $(OUT)
	$(BIN)/proteinflow sample --ckpt $(OUT)/last.ckpt --num 1000 --solver euler --steps 20 --out $(OUT)/samples
	@echo "demo outputs in $(OUT)"

test: setup
	$(BIN)/ruff check proteinflow tests scripts
	$(BIN)/python -m pytest -q -x --durations=15

lint: setup
	$(BIN)/ruff check proteinflow tests scripts
	$(BIN)/ruff format --check proteinflow tests scripts

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
