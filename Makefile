# The zoo's commands. `make demo` and `make test` work on a fresh clone: they create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Tests and demos run headless: MuJoCo renders with EGL, matplotlib without a display.
export MUJOCO_GL ?= egl
export MPLBACKEND ?= Agg
export PYTHONHASHSEED ?= 0

.PHONY: venv demo test bench lint zoo datasets clean

venv: $(VENV)/.installed

# torch is pinned and installed first from its CPU wheel, so that nothing pulls a CUDA build.
$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

demo: venv
	$(BIN)/python -m runners.demo

test: venv
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

bench: venv
	$(BIN)/python -m runners.bench all

lint: venv
	$(BIN)/ruff check .

zoo: venv
	$(BIN)/python -m runners.zoo verify

# The offline datasets of DT/RADT (D4RL layout, 1M transitions each), rolled out from the zoo's SAC behaviour
# policies: identical on every machine for the same seed. Writes datasets/<env>-<quality>.npz.
DATASET_ENVS := hopper halfcheetah walker2d
DATASET_QUALITIES := medium medium-replay expert medium-expert
datasets: venv
	@for env in $(DATASET_ENVS); do for quality in $(DATASET_QUALITIES); do \
		$(BIN)/python -m runners.dataset env=$$env quality=$$quality || exit 1; done; done

clean:
	rm -rf runs .pytest_cache
