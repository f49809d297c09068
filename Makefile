# lit_loops: one command each. Every target creates the environment if it is missing.
PYTHON ?= python3
VENV   ?= .venv
# Torch is installed first so that the package's torch requirement is already met.
# GPU users: make install TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
TORCH  ?= torch==2.13.0
CONFIG ?= configs/oocl/cpu.yaml
ARGS   ?=
BIN     = $(VENV)/bin

.PHONY: install run test test-full lint fit validate sweep bench bench-deps bench-gpu clean

$(BIN)/lit-loops: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev,baselines]"
	touch $@

install: $(BIN)/lit-loops

# The main job: the OOCL CPU config, trained to its end; prints the run name and final metrics.
run: install
	$(BIN)/lit-loops fit --config configs/oocl/cpu.yaml $(ARGS)

# Fast tier: unit tests, every config through the CLI, short learning tests.
test: install
	$(BIN)/python -m pytest -q -m "not slow"

# Everything, including long learning runs and multi-process tests.
test-full: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check lit_loops tests benchmarks scripts
	$(BIN)/ruff format --check lit_loops tests benchmarks scripts

fit: install
	$(BIN)/lit-loops fit --config $(CONFIG) $(ARGS)

validate: install
	@test -n "$(CKPT)" || (echo "usage: make validate CONFIG=configs/<exp>/<variant>.yaml CKPT=path/to.ckpt" && exit 2)
	$(BIN)/lit-loops validate --config $(CONFIG) --ckpt_path $(CKPT) $(ARGS)

# A wandb sweep file run locally, no server: make sweep SWEEP=configs/sweeps/oocl_linkage.yaml WORKERS=2
# (COUNT=N for random and bayes sweeps). Started again, it resumes. See lit_loops/sweep.py.
SWEEP   ?= configs/sweeps/oocl_linkage.yaml
WORKERS ?= 1
COUNT   ?=
sweep: install
	$(BIN)/lit-loops sweep $(SWEEP) --workers $(WORKERS) $(if $(COUNT),--count $(COUNT))

# The references we measure against, installed on demand (never runtime dependencies):
# Hugging Face transformers (GPT2Model, ICL), TransformerLens (OOCL; 4.x dropped HookedTransformer)
# and the block-recurrent
# package (without its memorizing-transformers dependency, which it does not import).
# pandas < 3 and pyarrow < 21 (TransformerLens imports datasets, datasets pyarrow): both
# need numpy 2 from there on, and the sweep engine (sweeps) pins numpy < 2
BENCH_DEPS = einops beartype transformers "transformer-lens<4" better-abc "pandas<3" "pyarrow<21"
bench-deps: install
	$(BIN)/python -m pip install -q --disable-pip-version-check $(BENCH_DEPS)
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps block-recurrent-transformer-pytorch==0.4.4

# Side-by-side benchmarks (BENCHMARKS.md, benchmarks/results.json); BENCH_ARGS="--quick" for one repeat.
BENCH_ARGS ?=
bench: bench-deps
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

# The GPU section alone: every paper config's steps/s and peak memory under bf16-mixed,
# eager and compiled, in at most 10 minutes (BENCHMARKS.md's gpu section). Needs a CUDA
# build of torch (make install TORCH=..., above); without a GPU it says so and succeeds.
bench-gpu: install
	$(BIN)/python -m benchmarks.run --only gpu

clean:
	rm -rf runs .pytest_cache .ruff_cache
